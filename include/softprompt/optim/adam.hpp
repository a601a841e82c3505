#pragma once
// Adam and AdamW, exactly as torch.optim.Adam / torch.optim.AdamW (PyTorch 1.13, single-tensor
// path). For a Param at its step t (counted per Param, from 1):
//
//   Adam:   g = g + λ·p                           (weight_decay λ: L2, added to the gradient)
//   AdamW:  p = p·(1 − lr·λ)                      (decoupled decay, before the moments)
//   m = β1·m + (1 − β1)·g
//   v = β2·v + (1 − β2)·g²
//   v̂ = max(v̂, v)                                 (amsgrad only)
//   p = p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)       (v̂ in place of v with amsgrad)
//
// ε is added outside the square root, after the bias correction, as PyTorch does.
// State: "<param>.exp_avg", "<param>.exp_avg_sq", and "<param>.max_exp_avg_sq" with amsgrad.

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::optim {

/// torch.optim.Adam defaults.
struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9;       // [0, 1)
    double beta2 = 0.999;     // [0, 1)
    double eps = 1e-8;        // >= 0
    double weight_decay = 0;  // >= 0, L2 added to the gradient
    bool amsgrad = false;
};

/// torch.optim.AdamW defaults (weight decay 1e-2, decoupled).
struct AdamWOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;  // >= 0, decoupled: p *= 1 - lr * weight_decay
    bool amsgrad = false;
};

namespace detail {

/// The shared implementation; `decoupled` selects AdamW's weight decay.
template <class T>
class AdamCore : public Optimizer<T> {
public:
    using typename Optimizer<T>::ParamList;

    void step() override {
        const double lr = this->lr_;
        const T b1 = T(beta1_), b2 = T(beta2_), eps = T(eps_), wd = T(weight_decay_);
        const T one_minus_b1 = T(1.0 - beta1_), one_minus_b2 = T(1.0 - beta2_);
        const T decay = T(1.0 - lr * weight_decay_);  // AdamW's p *= 1 - lr*λ
        for (std::size_t i = 0; i < this->params_.size(); ++i) {
            autograd::Param<T>& param = *this->params_[i];
            if (!param.trainable()) continue;
            this->check_param_shape(i, param.value());
            const std::int64_t t = ++this->param_steps_[i];
            const double bias_correction1 = 1.0 - std::pow(beta1_, double(t));
            const double bias_correction2 = 1.0 - std::pow(beta2_, double(t));
            const T step_size = T(lr / bias_correction1);
            const T bias_correction2_sqrt = T(std::sqrt(bias_correction2));

            T* p = param.value().data();
            const T* g = param.grad().data();
            T* m = this->tensor(exp_avg_[i]).data();
            T* v = this->tensor(exp_avg_sq_[i]).data();
            T* vmax = amsgrad_ ? this->tensor(max_exp_avg_sq_[i]).data() : nullptr;
            const Index n = param.value().size();
            for (Index k = 0; k < n; ++k) {
                T grad = g[k];
                if (weight_decay_ != 0) {
                    if (decoupled_)
                        p[k] = p[k] * decay;
                    else
                        grad = grad + wd * p[k];
                }
                m[k] = m[k] * b1 + one_minus_b1 * grad;
                v[k] = v[k] * b2 + one_minus_b2 * grad * grad;
                T second = v[k];
                if (vmax != nullptr) {
                    vmax[k] =
                        (vmax[k] < v[k] || std::isnan(v[k])) ? v[k] : vmax[k];  // torch.maximum
                    second = vmax[k];
                }
                const T denom = std::sqrt(second) / bias_correction2_sqrt + eps;
                p[k] = p[k] + (-step_size) * m[k] / denom;
            }
        }
        ++this->steps_;
    }

protected:
    template <class Options>
    AdamCore(const char* kind, bool decoupled, ParamList params, const Options& o)
        : Optimizer<T>(kind, std::move(params), o.lr),
          decoupled_(decoupled),
          beta1_(o.beta1),
          beta2_(o.beta2),
          eps_(o.eps),
          weight_decay_(o.weight_decay),
          amsgrad_(o.amsgrad) {
        check_range(kind, "beta1", beta1_, 0.0, 1.0, false);
        check_range(kind, "beta2", beta2_, 0.0, 1.0, false);
        check_range(kind, "eps", eps_, 0.0, kInf, false);
        check_range(kind, "weight_decay", weight_decay_, 0.0, kInf, false);
        for (std::size_t i = 0; i < this->params_.size(); ++i) {
            exp_avg_.push_back(this->add_tensor(i, "exp_avg"));
            exp_avg_sq_.push_back(this->add_tensor(i, "exp_avg_sq"));
            if (amsgrad_) max_exp_avg_sq_.push_back(this->add_tensor(i, "max_exp_avg_sq"));
        }
    }

    std::vector<std::pair<std::string, double>> resume_options() const override {
        return {{"beta1", beta1_},
                {"beta2", beta2_},
                {"eps", eps_},
                {"weight_decay", weight_decay_},
                {"amsgrad", amsgrad_ ? 1.0 : 0.0}};
    }

private:
    bool decoupled_;
    double beta1_, beta2_, eps_, weight_decay_;
    bool amsgrad_;
    std::vector<std::size_t> exp_avg_, exp_avg_sq_, max_exp_avg_sq_;  // state tensor indices
};

}  // namespace detail

/// torch.optim.Adam: L2 weight decay added to the gradient.
template <class T>
class Adam final : public detail::AdamCore<T> {
public:
    /// Throws ConfigError when no Param is trainable or an option is out of range.
    Adam(std::vector<autograd::Param<T>*> params, AdamOptions options = {})
        : detail::AdamCore<T>("adam", false, std::move(params), options), options_(options) {}
    const AdamOptions& options() const { return options_; }

private:
    AdamOptions options_;
};

/// torch.optim.AdamW: decoupled weight decay, p *= 1 - lr * weight_decay before the Adam update.
template <class T>
class AdamW final : public detail::AdamCore<T> {
public:
    /// Throws ConfigError when no Param is trainable or an option is out of range.
    AdamW(std::vector<autograd::Param<T>*> params, AdamWOptions options = {})
        : detail::AdamCore<T>("adamw", true, std::move(params), options), options_(options) {}
    const AdamWOptions& options() const { return options_; }

private:
    AdamWOptions options_;
};

}  // namespace softprompt::optim
