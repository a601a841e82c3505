#pragma once
// Learning-rate schedules, with the formulas of Hugging Face transformers.optimization (applied
// by torch's LambdaLR: lr = base_lr · factor(step)):
//
//   constant                  1                                    (get_constant_schedule)
//   warmup_constant(W)        s/W for s < W, then 1 (get_constant_schedule_with_warmup)
//   warmup_linear(W, N)       s/W for s < W, then max(0, (N − s)/(N − W))
//                                                                  (get_linear_schedule_with_warmup)
//   warmup_cosine(W, N, k)    s/W for s < W, then max(0, ½(1 + cos(π·k·2·(s − W)/(N − W))))
//                                                                  (get_cosine_schedule_with_warmup)
// (each denominator is at least 1). `step` s is the number of optimizer steps already taken — 0 for
// the first update — so a training loop does
//
//   opt.set_lr(schedule.lr(opt.step_count()));   // or schedule.apply(opt)
//   opt.step();
//
// which is what HF's Trainer does with optimizer.step(); scheduler.step(). As in HF, the cosine
// schedule is not clamped after N steps (with k = 0.5 it rises again past N); train for N steps.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include "softprompt/error.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::optim {

/// A learning-rate schedule: a small value type (copy it freely).
class LrSchedule {
public:
    enum class Kind { kConstant, kWarmupConstant, kWarmupLinear, kWarmupCosine };

    /// lr at every step.
    static LrSchedule constant(double lr) {
        check_lr("LrSchedule::constant", lr);
        return LrSchedule(Kind::kConstant, lr, 0, 0, 0);
    }

    /// Linear warm-up from 0 over `warmup_steps`, then constant.
    static LrSchedule warmup_constant(double lr, std::int64_t warmup_steps) {
        const char* who = "LrSchedule::warmup_constant";
        check_lr(who, lr);
        check_warmup(who, warmup_steps);
        return LrSchedule(Kind::kWarmupConstant, lr, warmup_steps, 0, 0);
    }

    /// Linear warm-up over `warmup_steps`, then linear decay to 0 at `total_steps`.
    static LrSchedule warmup_linear(double lr, std::int64_t warmup_steps,
                                    std::int64_t total_steps) {
        const char* who = "LrSchedule::warmup_linear";
        check_lr(who, lr);
        check_warmup(who, warmup_steps);
        check_total(who, warmup_steps, total_steps);
        return LrSchedule(Kind::kWarmupLinear, lr, warmup_steps, total_steps, 0);
    }

    /// Linear warm-up over `warmup_steps`, then `num_cycles` cosine waves over the remaining
    /// steps to `total_steps` (0.5: one half-cosine from lr down to 0).
    static LrSchedule warmup_cosine(double lr, std::int64_t warmup_steps, std::int64_t total_steps,
                                    double num_cycles = 0.5) {
        const char* who = "LrSchedule::warmup_cosine";
        check_lr(who, lr);
        check_warmup(who, warmup_steps);
        check_total(who, warmup_steps, total_steps);
        if (!(num_cycles > 0) || !std::isfinite(num_cycles))
            throw detail::bad_option(who, "num_cycles", "> 0", num_cycles);
        return LrSchedule(Kind::kWarmupCosine, lr, warmup_steps, total_steps, num_cycles);
    }

    /// The multiplier of the base lr after `step` optimizer steps (step >= 0).
    double factor(std::int64_t step) const {
        if (step < 0)
            throw ConfigError("LrSchedule::factor: step must be >= 0, got " + std::to_string(step));
        if (kind_ == Kind::kConstant) return 1.0;
        if (step < warmup_) return double(step) / double(std::max<std::int64_t>(1, warmup_));
        switch (kind_) {
            case Kind::kWarmupLinear:
                return std::max(0.0, double(total_ - step) /
                                         double(std::max<std::int64_t>(1, total_ - warmup_)));
            case Kind::kWarmupCosine: {
                const double progress =
                    double(step - warmup_) / double(std::max<std::int64_t>(1, total_ - warmup_));
                return std::max(
                    0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles_ * 2.0 * progress)));
            }
            default:
                return 1.0;
        }
    }

    /// base_lr · factor(step).
    double lr(std::int64_t step) const { return base_lr_ * factor(step); }

    /// Set `opt`'s learning rate for its next step: opt.set_lr(lr(opt.step_count())).
    template <class T>
    void apply(Optimizer<T>& opt) const {
        opt.set_lr(lr(opt.step_count()));
    }

    Kind kind() const { return kind_; }
    double base_lr() const { return base_lr_; }
    std::int64_t warmup_steps() const { return warmup_; }
    std::int64_t total_steps() const { return total_; }  // 0 for schedules without an end
    double num_cycles() const { return num_cycles_; }

    /// E.g. "warmup_linear(lr=0.3, warmup=100, total=1000)".
    std::string describe() const {
        const std::string lr = "lr=" + detail::format_double(base_lr_);
        const std::string w = ", warmup=" + std::to_string(warmup_);
        const std::string n = ", total=" + std::to_string(total_);
        switch (kind_) {
            case Kind::kConstant:
                return "constant(" + lr + ")";
            case Kind::kWarmupConstant:
                return "warmup_constant(" + lr + w + ")";
            case Kind::kWarmupLinear:
                return "warmup_linear(" + lr + w + n + ")";
            case Kind::kWarmupCosine:
                return "warmup_cosine(" + lr + w + n +
                       ", num_cycles=" + detail::format_double(num_cycles_) + ")";
        }
        return "?";
    }

private:
    LrSchedule(Kind kind, double lr, std::int64_t warmup, std::int64_t total, double num_cycles)
        : kind_(kind), base_lr_(lr), warmup_(warmup), total_(total), num_cycles_(num_cycles) {}

    static void check_lr(const char* who, double lr) {
        detail::check_range(who, "lr", lr, 0.0, detail::kInf, false);
    }
    static void check_warmup(const char* who, std::int64_t warmup) {
        if (warmup < 0)
            throw ConfigError(std::string(who) + ": warmup_steps must be >= 0, got " +
                              std::to_string(warmup));
    }
    static void check_total(const char* who, std::int64_t warmup, std::int64_t total) {
        if (total <= 0)
            throw ConfigError(std::string(who) + ": total_steps must be > 0, got " +
                              std::to_string(total));
        if (warmup > total)
            throw ConfigError(std::string(who) + ": warmup_steps (" + std::to_string(warmup) +
                              ") must not exceed total_steps (" + std::to_string(total) + ")");
    }

    Kind kind_;
    double base_lr_;
    std::int64_t warmup_;
    std::int64_t total_;
    double num_cycles_;
};

}  // namespace softprompt::optim
