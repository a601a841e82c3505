#pragma once
// Stochastic gradient descent with optional momentum and decoupled weight decay.
//   v ← μ·v + g;   p ← p − lr·(v + λ·p)      (μ = 0: plain SGD)

#include <string>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"

namespace softprompt::optim {

struct SgdOptions {
    double lr = 1e-2;
    double momentum = 0;
    double weight_decay = 0;
};

template <class T>
class Sgd {
public:
    /// Throws ConfigError when no trainable Param is given: there would be nothing to train.
    Sgd(std::vector<autograd::Param<T>*> params, SgdOptions options)
        : params_(std::move(params)), options_(options) {
        std::size_t trainable = 0;
        for (auto* p : params_) {
            if (p == nullptr) throw ConfigError("Sgd: a Param pointer is null");
            trainable += p->trainable() ? 1 : 0;
            velocity_.push_back(Mat<T>::Zero(p->value().rows(), p->value().cols()));
        }
        if (trainable == 0)
            throw ConfigError("nothing to train: Sgd was given " + std::to_string(params_.size()) +
                              " Param(s) and none is trainable");
        if (!(options_.lr > 0)) throw ConfigError("Sgd: lr must be > 0, got " + std::to_string(options_.lr));
    }

    /// Apply one update from the accumulated gradients (they are left as they are).
    void step() {
        const T lr = T(options_.lr), mu = T(options_.momentum), wd = T(options_.weight_decay);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            autograd::Param<T>& p = *params_[i];
            if (!p.trainable()) continue;
            if (mu != T(0)) {
                velocity_[i] = mu * velocity_[i] + p.grad();
                p.value() -= lr * (velocity_[i] + wd * p.value());
            } else {
                p.value() -= lr * (p.grad() + wd * p.value());
            }
        }
    }

    void zero_grad() {
        for (auto* p : params_) p->zero_grad();
    }

private:
    std::vector<autograd::Param<T>*> params_;
    SgdOptions options_;
    std::vector<Mat<T>> velocity_;
};

}  // namespace softprompt::optim
