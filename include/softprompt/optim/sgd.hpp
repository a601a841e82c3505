#pragma once
// Stochastic gradient descent, exactly as torch.optim.SGD (PyTorch 1.13):
//
//   d = g + λ·p                                   (weight_decay λ: L2, added to the gradient)
//   b = d                     on a Param's first step,
//   b = μ·b + (1 − τ)·d       afterwards          (momentum μ, dampening τ)
//   d = d + μ·b  (Nesterov)   or   d = b          (when μ ≠ 0)
//   p = p − lr·d
//
// State: "<param>.momentum_buffer" (only when momentum ≠ 0).

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::optim {

struct SgdOptions {
    double lr = 1e-2;
    double momentum = 0;      // [0, 1)
    double weight_decay = 0;  // >= 0, added to the gradient (L2), as torch.optim.SGD
    double dampening = 0;     // [0, 1]
    bool nesterov = false;    // needs momentum > 0 and dampening 0
};

template <class T>
class Sgd final : public Optimizer<T> {
public:
    using typename Optimizer<T>::ParamList;

    /// Throws ConfigError when no Param is trainable ("nothing to train") or an option is out of
    /// range.
    Sgd(ParamList params, SgdOptions options = {})
        : Optimizer<T>("sgd", std::move(params), options.lr), options_(options) {
        const char* who = "sgd";
        detail::check_range(who, "momentum", options_.momentum, 0.0, 1.0, false);
        detail::check_range(who, "weight_decay", options_.weight_decay, 0.0, detail::kInf, false);
        detail::check_range(who, "dampening", options_.dampening, 0.0, 1.0, true);
        if (options_.nesterov && (options_.momentum <= 0 || options_.dampening != 0))
            throw ConfigError(
                "sgd: option nesterov needs momentum > 0 and dampening 0, got momentum " +
                detail::format_double(options_.momentum) + " and dampening " +
                detail::format_double(options_.dampening));
        if (options_.momentum != 0)
            for (std::size_t i = 0; i < this->params_.size(); ++i)
                buffer_.push_back(this->add_tensor(i, "momentum_buffer"));
    }

    const SgdOptions& options() const { return options_; }

    void step() override {
        const T lr = T(this->lr_), mu = T(options_.momentum), wd = T(options_.weight_decay);
        const T keep = T(1.0 - options_.dampening);
        const bool momentum = options_.momentum != 0, nesterov = options_.nesterov;
        for (std::size_t i = 0; i < this->params_.size(); ++i) {
            autograd::Param<T>& param = *this->params_[i];
            if (!param.trainable()) continue;
            this->check_param_shape(i, param.value());
            const bool first = this->param_steps_[i] == 0;
            T* p = param.value().data();
            const T* g = param.grad().data();
            T* b = momentum ? this->tensor(buffer_[i]).data() : nullptr;
            const Index n = param.value().size();
            for (Index k = 0; k < n; ++k) {
                T d = g[k];
                if (wd != T(0)) d = d + wd * p[k];
                if (momentum) {
                    b[k] = first ? d : b[k] * mu + keep * d;
                    d = nesterov ? d + mu * b[k] : b[k];
                }
                p[k] = p[k] - lr * d;
            }
            ++this->param_steps_[i];
        }
        ++this->steps_;
    }

protected:
    std::vector<std::pair<std::string, double>> resume_options() const override {
        return {{"momentum", options_.momentum},
                {"weight_decay", options_.weight_decay},
                {"dampening", options_.dampening},
                {"nesterov", options_.nesterov ? 1.0 : 0.0}};
    }

private:
    SgdOptions options_;
    std::vector<std::size_t> buffer_;  // state tensor index per Param (momentum only)
};

}  // namespace softprompt::optim
