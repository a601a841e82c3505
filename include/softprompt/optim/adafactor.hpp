#pragma once
// Adafactor (Shazeer & Stern 2018), with the same math as Hugging Face
// transformers.optimization.Adafactor (itself from fairseq) — the optimizer of the prompt-tuning
// paper (Lester et al. 2021). For a Param p with gradient g at its step t (counted per Param, from
// 1):
//
//   ρ_t  = min(1e-6·t if warmup_init else 1e-2, 1/√t)   if relative_step, else the external lr
//   α_t  = max(ε2, RMS(p)) · ρ_t                         if scale_parameter, else ρ_t
//   β2_t = 1 − t^decay_rate
//   q    = g² + ε1
//   matrix [R x C] (factored second moment, O(R + C) memory):
//     r = β2_t·r + (1 − β2_t)·mean_cols(q)      [R x 1]   ("exp_avg_sq_row")
//     c = β2_t·c + (1 − β2_t)·mean_rows(q)      [1 x C]   ("exp_avg_sq_col")
//     u = g / √(r / mean(r)) / √c   (outer product of the two factors)
//   vector [1 x n] or [n x 1] (HF's 1-D tensors: biases, gains):
//     v = β2_t·v + (1 − β2_t)·q                            ("exp_avg_sq")
//     u = g / √v
//   u = u / max(RMS(u) / clip_threshold, 1) · α_t
//   m = β1·m + (1 − β1)·u;  u = m                          (only when beta1 is set; "exp_avg")
//   p = p − weight_decay·α_t·p                             (when weight_decay ≠ 0)
//   p = p − u
// with RMS(x) = ‖x‖₂ / √numel(x).
//
// With relative_step the optimizer computes its own step size: set_lr() throws, and lr() reports
// ρ for the next step. For an external schedule use relative_step = false with an lr (and, as
// the paper and HF recommend, scale_parameter = false).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::optim {

/// Hugging Face Adafactor defaults; `eps1, eps2` are HF's `eps = (1e-30, 1e-3)`.
struct AdafactorOptions {
    std::optional<double> lr = std::nullopt;     // external lr; unset when relative_step is true
    double eps1 = 1e-30;                         // added to g² (>= 0)
    double eps2 = 1e-3;                          // floor of the parameter scale RMS(p) (>= 0)
    double clip_threshold = 1.0;                 // > 0: cap on RMS of the normalised update
    double decay_rate = -0.8;                    // [-1, 0]: β2_t = 1 - t^decay_rate
    std::optional<double> beta1 = std::nullopt;  // [0, 1) when set: first moment of the update
    double weight_decay = 0;                     // >= 0, p -= weight_decay * α_t * p
    bool scale_parameter = true;                 // multiply the step size by max(eps2, RMS(p))
    bool relative_step = true;                   // step size min(1e-2, 1/√t), not an external lr
    bool warmup_init = false;  // relative step min(1e-6·t, 1/√t); needs relative_step
};

template <class T>
class Adafactor final : public Optimizer<T> {
public:
    using typename Optimizer<T>::ParamList;

    /// Throws ConfigError when no Param is trainable or the options are out of range or
    /// inconsistent (lr together with relative_step, warmup_init without relative_step, no lr
    /// without relative_step).
    Adafactor(ParamList params, AdafactorOptions options = {})
        : Optimizer<T>("adafactor", std::move(params), options.lr.value_or(0.0)),
          options_(options) {
        const char* who = "adafactor";
        if (options_.lr && options_.relative_step)
            throw ConfigError("adafactor: option lr (" + detail::format_double(*options_.lr) +
                              ") cannot be combined with relative_step = true; set "
                              "relative_step = false to use an external lr");
        if (!options_.lr && !options_.relative_step)
            throw ConfigError("adafactor: option relative_step = false needs an lr");
        if (options_.warmup_init && !options_.relative_step)
            throw ConfigError("adafactor: option warmup_init = true needs relative_step = true");
        detail::check_range(who, "eps1", options_.eps1, 0.0, detail::kInf, false);
        detail::check_range(who, "eps2", options_.eps2, 0.0, detail::kInf, false);
        if (!(options_.clip_threshold > 0) || !std::isfinite(options_.clip_threshold))
            throw detail::bad_option(who, "clip_threshold", "> 0", options_.clip_threshold);
        detail::check_range(who, "decay_rate", options_.decay_rate, -1.0, 0.0, true);
        if (options_.beta1) detail::check_range(who, "beta1", *options_.beta1, 0.0, 1.0, false);
        detail::check_range(who, "weight_decay", options_.weight_decay, 0.0, detail::kInf, false);

        slots_.resize(this->params_.size());
        for (std::size_t i = 0; i < this->params_.size(); ++i) {
            const Mat<T>& v = this->params_[i]->value();
            Slots& s = slots_[i];
            s.factored = factored(v);
            if (options_.beta1) s.exp_avg = this->add_tensor(i, "exp_avg");
            if (s.factored) {
                s.row = this->add_tensor(i, "exp_avg_sq_row", v.rows(), 1);
                s.col = this->add_tensor(i, "exp_avg_sq_col", 1, v.cols());
            } else {
                s.sq = this->add_tensor(i, "exp_avg_sq");
            }
        }
    }

    const AdafactorOptions& options() const { return options_; }

    /// A matrix with more than one row and column keeps factored second moments; a vector
    /// ([1 x n], [n x 1]) keeps a full one, as HF does for 1-D tensors.
    static bool factored(const Mat<T>& value) { return value.rows() > 1 && value.cols() > 1; }

    /// The external lr, or with relative_step the relative step size ρ of the next step
    /// (step_count() + 1), before scale_parameter's factor.
    double lr() const override {
        return options_.relative_step ? relative_step_size(this->steps_ + 1) : this->lr_;
    }

    /// Throws ConfigError with relative_step (the step size is computed, not set).
    void set_lr(double lr) override {
        if (options_.relative_step)
            throw ConfigError("adafactor: set_lr(" + detail::format_double(lr) +
                              ") needs relative_step = false (with relative_step the optimizer "
                              "computes its own step size)");
        Optimizer<T>::set_lr(lr);
    }

    void step() override {
        const double eps1 = options_.eps1;
        const double clip = options_.clip_threshold;
        for (std::size_t i = 0; i < this->params_.size(); ++i) {
            autograd::Param<T>& param = *this->params_[i];
            if (!param.trainable()) continue;
            this->check_param_shape(i, param.value());
            const std::int64_t t = ++this->param_steps_[i];
            const Slots& s = slots_[i];
            const Index rows = param.value().rows(), cols = param.value().cols();
            const Index n = rows * cols;
            if (n == 0) continue;
            T* p = param.value().data();
            const T* g = param.grad().data();

            // Step size α_t from the parameter's RMS before this update.
            double rho = options_.relative_step ? relative_step_size(t) : this->lr_;
            double alpha = rho;
            if (options_.scale_parameter) alpha = std::max(options_.eps2, rms(p, n)) * rho;
            const double beta2t = 1.0 - std::pow(double(t), options_.decay_rate);
            const T b2 = T(beta2t), one_minus_b2 = T(1.0 - beta2t), e1 = T(eps1);

            // Second moments, and the per-element normaliser of the gradient.
            if (s.factored) {
                T* r = this->tensor(s.row).data();
                T* c = this->tensor(s.col).data();
                col_mean_.assign(std::size_t(cols), 0.0);
                for (Index a = 0; a < rows; ++a) {
                    double row_sum = 0;
                    for (Index b = 0; b < cols; ++b) {
                        const T gv = g[a * cols + b];
                        const T q = gv * gv + e1;
                        row_sum += double(q);
                        col_mean_[std::size_t(b)] += double(q);
                    }
                    r[a] = r[a] * b2 + one_minus_b2 * T(row_sum / double(cols));
                }
                for (Index b = 0; b < cols; ++b)
                    c[b] = c[b] * b2 + one_minus_b2 * T(col_mean_[std::size_t(b)] / double(rows));
                double r_sum = 0;
                for (Index a = 0; a < rows; ++a) r_sum += double(r[a]);
                const T r_mean = T(r_sum / double(rows));
                r_factor_.resize(std::size_t(rows));
                c_factor_.resize(std::size_t(cols));
                for (Index a = 0; a < rows; ++a)
                    r_factor_[std::size_t(a)] = T(1) / std::sqrt(r[a] / r_mean);
                for (Index b = 0; b < cols; ++b) c_factor_[std::size_t(b)] = T(1) / std::sqrt(c[b]);
            } else {
                T* v = this->tensor(s.sq).data();
                for (Index k = 0; k < n; ++k) v[k] = v[k] * b2 + one_minus_b2 * (g[k] * g[k] + e1);
            }
            // The normalised update u at element k (computed twice, identically: once for its
            // RMS, once to apply it).
            auto update = [&](Index k) -> T {
                if (s.factored) {
                    const Index a = k / cols, b = k % cols;
                    return (r_factor_[std::size_t(a)] * c_factor_[std::size_t(b)]) * g[k];
                }
                return (T(1) / std::sqrt(this->tensor(s.sq).data()[k])) * g[k];
            };
            double u_sq = 0;
            for (Index k = 0; k < n; ++k) {
                const T u = update(k);
                u_sq += double(u) * double(u);
            }
            const T clip_div = T(std::max(std::sqrt(u_sq) / std::sqrt(double(n)) / clip, 1.0));
            const T a_t = T(alpha);
            const T decay = T(-options_.weight_decay * alpha);
            T* m = options_.beta1 ? this->tensor(s.exp_avg).data() : nullptr;
            const T b1 = T(options_.beta1.value_or(0.0)),
                    one_minus_b1 = T(1.0 - options_.beta1.value_or(0.0));
            for (Index k = 0; k < n; ++k) {
                T u = update(k) / clip_div * a_t;
                if (m != nullptr) {
                    m[k] = m[k] * b1 + one_minus_b1 * u;
                    u = m[k];
                }
                if (options_.weight_decay != 0) p[k] = p[k] + decay * p[k];
                p[k] = p[k] - u;
            }
        }
        ++this->steps_;
    }

protected:
    std::vector<std::pair<std::string, double>> resume_options() const override {
        std::vector<std::pair<std::string, double>> o = {
            {"eps1", options_.eps1},
            {"eps2", options_.eps2},
            {"clip_threshold", options_.clip_threshold},
            {"decay_rate", options_.decay_rate},
            {"weight_decay", options_.weight_decay},
            {"scale_parameter", options_.scale_parameter ? 1.0 : 0.0},
            {"relative_step", options_.relative_step ? 1.0 : 0.0},
            {"warmup_init", options_.warmup_init ? 1.0 : 0.0},
            {"use_beta1", options_.beta1 ? 1.0 : 0.0}};
        if (options_.beta1) o.emplace_back("beta1", *options_.beta1);
        return o;
    }

    bool has_external_lr() const override { return !options_.relative_step; }

private:
    struct Slots {
        bool factored = false;
        std::size_t exp_avg = 0, row = 0, col = 0, sq = 0;  // state tensor indices
    };

    double relative_step_size(std::int64_t t) const {
        const double min_step = options_.warmup_init ? 1e-6 * double(t) : 1e-2;
        return std::min(min_step, 1.0 / std::sqrt(double(t)));
    }

    static double rms(const T* x, Index n) {
        double sum = 0;
        for (Index k = 0; k < n; ++k) sum += double(x[k]) * double(x[k]);
        return std::sqrt(sum) / std::sqrt(double(n));
    }

    AdafactorOptions options_;
    std::vector<Slots> slots_;
    // Scratch reused across steps (not state: recomputed from the state every step).
    std::vector<double> col_mean_;
    std::vector<T> r_factor_, c_factor_;
};

}  // namespace softprompt::optim
