#pragma once
// What every optimizer shares: the abstract interface a trainer drives, and the state it saves so
// training resumes bit-for-bit.
//
//   Optimizer<T>       step() / zero_grad() / lr() / set_lr() / step_count() / state() /
//   load_state() OptimizerState<T>  kind + named tensors + named scalars, the whole of an
//   optimizer's memory
//
// Semantics shared by all optimizers (they follow torch.optim):
//   - An optimizer takes Params. A Param whose trainable() is false when step() runs is skipped:
//   its
//     value, its state and its own step count stay as they are (PyTorch skips a parameter whose
//     .grad is None). At least one Param must be trainable at construction ("nothing to train").
//   - Each Param keeps its own step count (bias corrections and Adafactor's schedules use it);
//     step_count() counts calls to step().
//   - State is allocated at construction for every Param, named "<param name>.<slot>", e.g.
//     "prompt.exp_avg". Param names must therefore be unique within one optimizer.
//
// State scalars: "step" (step_count), "lr" (when the optimizer has an external learning rate),
// "<param name>.step" (each Param's step count) and "option.<name>" (every option an exact resume
// depends on; booleans are 0/1). load_state() checks the kind, every tensor name and shape, and
// every option before it changes anything, and throws ConfigError / ShapeError naming what differs.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"

namespace softprompt::optim {

/// Everything an optimizer remembers between steps. Copy it out with Optimizer::state(), store it
/// (e.g. in a training-state file), and give it to load_state() of an optimizer built over Params
/// with the same names and shapes and with the same options: the next updates are bit-identical.
template <class T>
struct OptimizerState {
    std::string kind;                                     // "sgd", "adam", "adamw", "adafactor"
    std::vector<std::pair<std::string, Mat<T>>> tensors;  // "<param name>.<slot>", in Param order
    std::map<std::string, double> scalars;  // "step", "lr", "<param>.step", "option.*"

    /// The tensor called `name`, or nullptr.
    const Mat<T>* find(std::string_view name) const {
        for (const auto& [n, m] : tensors)
            if (n == name) return &m;
        return nullptr;
    }
};

namespace detail {

/// Shortest text that reads back as the same double ("0.001", "1e-08", "0.9").
inline std::string format_double(double v) {
    if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
    for (int precision = 1;; ++precision) {
        std::ostringstream out;
        out.precision(precision);
        out << v;
        const std::string text = out.str();
        if (precision >= 17 || std::strtod(text.c_str(), nullptr) == v) return text;
    }
}

inline constexpr double kInf = std::numeric_limits<double>::infinity();

/// ConfigError "<who>: option <name> must be <rule>, got <value>".
inline ConfigError bad_option(std::string_view who, std::string_view name, std::string_view rule,
                              double value) {
    return ConfigError(std::string(who) + ": option " + std::string(name) + " must be " +
                       std::string(rule) + ", got " + format_double(value));
}

/// Throws unless lo <= value (< hi or <= hi); NaN always fails.
inline void check_range(std::string_view who, std::string_view name, double value, double lo,
                        double hi, bool hi_inclusive) {
    const bool ok =
        std::isfinite(value) && value >= lo && (hi_inclusive ? value <= hi : value < hi);
    if (ok) return;
    std::string rule = std::isinf(hi) ? ">= " + format_double(lo)
                                      : "in [" + format_double(lo) + ", " + format_double(hi) +
                                            (hi_inclusive ? "]" : ")");
    throw bad_option(who, name, rule, value);
}

}  // namespace detail

/// The interface a trainer holds: any optimizer, driven by a learning-rate schedule.
template <class T>
class Optimizer {
public:
    using ParamList = std::vector<autograd::Param<T>*>;

    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// "sgd", "adam", "adamw" or "adafactor" (also OptimizerState::kind).
    const std::string& kind() const { return kind_; }

    /// Apply one update to every trainable Param from its accumulated gradient (the gradients are
    /// left as they are; call zero_grad() before the next backward pass).
    virtual void step() = 0;

    /// Clear the gradients of all Params given to this optimizer.
    virtual void zero_grad() {
        for (auto* p : params_) p->zero_grad();
    }

    /// The learning rate the next step() uses.
    virtual double lr() const { return lr_; }

    /// Set the learning rate for the following steps (a schedule calls this before each step).
    /// Throws ConfigError for a negative or non-finite value.
    virtual void set_lr(double lr) {
        detail::check_range(kind_, "lr", lr, 0.0, detail::kInf, false);
        lr_ = lr;
    }

    /// Number of step() calls so far (restored by load_state).
    std::int64_t step_count() const { return steps_; }

    /// The Params this optimizer updates, in the order given.
    const ParamList& params() const { return params_; }

    /// A copy of everything needed to continue training exactly (see OptimizerState).
    virtual OptimizerState<T> state() const {
        OptimizerState<T> s;
        s.kind = kind_;
        s.tensors = tensors_;
        s.scalars["step"] = double(steps_);
        if (has_external_lr()) s.scalars["lr"] = lr_;
        for (std::size_t i = 0; i < params_.size(); ++i)
            s.scalars[params_[i]->name() + ".step"] = double(param_steps_[i]);
        for (const auto& [name, value] : resume_options()) s.scalars["option." + name] = value;
        return s;
    }

    /// Restore a state saved by state(). Checks everything first and changes nothing on error:
    /// ConfigError for another kind, a missing or unexpected tensor or scalar, a different option
    /// or a bad step count; ShapeError when a tensor's shape differs.
    virtual void load_state(const OptimizerState<T>& s) {
        const std::string who = kind_ + "::load_state";
        if (s.kind != kind_)
            throw ConfigError(who + ": the state is from a '" + s.kind + "' optimizer, not '" +
                              kind_ + "'");
        // Tensors: the same set of names, each with the same shape.
        std::vector<const Mat<T>*> source(tensors_.size(), nullptr);
        std::set<std::string> known;
        for (std::size_t k = 0; k < tensors_.size(); ++k) {
            const std::string& name = tensors_[k].first;
            known.insert(name);
            const Mat<T>* m = s.find(name);
            if (m == nullptr)
                throw ConfigError(who + ": the state has no tensor '" + name + "' (it has " +
                                  std::to_string(s.tensors.size()) + " tensor(s); expected " +
                                  std::to_string(tensors_.size()) + ")");
            const Mat<T>& want = tensors_[k].second;
            if (m->rows() != want.rows() || m->cols() != want.cols())
                throw ShapeError::mismatch(who, "tensor '" + name + "'", want.rows(), want.cols(),
                                           m->rows(), m->cols());
            source[k] = m;
        }
        for (const auto& [name, m] : s.tensors)
            if (known.count(name) == 0)
                throw ConfigError(
                    who + ": the state has a tensor '" + name +
                    "' that this optimizer does not have (different Params or options?)");
        // Scalars: step counts and options.
        auto scalar = [&](const std::string& name) -> double {
            const auto it = s.scalars.find(name);
            if (it == s.scalars.end())
                throw ConfigError(who + ": the state has no scalar '" + name + "'");
            return it->second;
        };
        auto count = [&](const std::string& name) -> std::int64_t {
            const double v = scalar(name);
            if (!(v >= 0) || v != std::floor(v) || v > 9007199254740992.0)
                throw ConfigError(who + ": scalar '" + name + "' must be a step count, got " +
                                  detail::format_double(v));
            return std::int64_t(v);
        };
        const std::int64_t steps = count("step");
        std::vector<std::int64_t> param_steps(params_.size());
        for (std::size_t i = 0; i < params_.size(); ++i)
            param_steps[i] = count(params_[i]->name() + ".step");
        std::set<std::string> expected_scalars = {"step"};
        for (auto* p : params_) expected_scalars.insert(p->name() + ".step");
        for (const auto& [name, value] : resume_options()) {
            const std::string key = "option." + name;
            expected_scalars.insert(key);
            const double saved = scalar(key);
            if (!(saved == value))
                throw ConfigError(who + ": option " + name + " is " + detail::format_double(value) +
                                  " here but " + detail::format_double(saved) +
                                  " in the saved state; an exact resume needs the same options");
        }
        double lr = lr_;
        if (has_external_lr()) {
            expected_scalars.insert("lr");
            lr = scalar("lr");
            detail::check_range(who, "lr", lr, 0.0, detail::kInf, false);
        }
        for (const auto& [name, value] : s.scalars)
            if (expected_scalars.count(name) == 0)
                throw ConfigError(who + ": the state has a scalar '" + name +
                                  "' that this optimizer does not have");
        // Everything checked: copy in.
        for (std::size_t k = 0; k < tensors_.size(); ++k) tensors_[k].second = *source[k];
        steps_ = steps;
        param_steps_ = std::move(param_steps);
        lr_ = lr;
    }

protected:
    /// Validates the Params: none null, none twice, unique names, at least one trainable.
    Optimizer(std::string kind, ParamList params, double lr)
        : kind_(std::move(kind)), params_(std::move(params)), param_steps_(params_.size(), 0) {
        std::size_t trainable = 0;
        std::set<const autograd::Param<T>*> seen;
        std::set<std::string> names;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            const auto* p = params_[i];
            if (p == nullptr)
                throw ConfigError(kind_ + ": Param pointer " + std::to_string(i) + " is null");
            if (!seen.insert(p).second)
                throw ConfigError(kind_ + ": Param '" + p->name() + "' is given twice");
            if (!names.insert(p->name()).second)
                throw ConfigError(kind_ + ": two Params are named '" + p->name() +
                                  "'; optimizer state is saved by name, so names must be unique");
            if (p->grad().rows() != p->value().rows() || p->grad().cols() != p->value().cols())
                throw ShapeError::operands(kind_, "Param '" + p->name() + "'", "value",
                                           p->value().rows(), p->value().cols(), "gradient",
                                           p->grad().rows(), p->grad().cols());
            trainable += p->trainable() ? 1 : 0;
        }
        if (trainable == 0)
            throw ConfigError("nothing to train: " + kind_ + " was given " +
                              std::to_string(params_.size()) +
                              " Param(s) and none is trainable (pass the Params to train, with "
                              "trainable() true)");
        detail::check_range(kind_, "lr", lr, 0.0, detail::kInf, false);
        lr_ = lr;
    }

    /// Add a zero state tensor "<param name>.<slot>" shaped like the Param (or rows x cols);
    /// returns its index for tensor().
    std::size_t add_tensor(std::size_t param, std::string_view slot, Index rows, Index cols) {
        tensors_.emplace_back(params_[param]->name() + "." + std::string(slot),
                              Mat<T>::Zero(rows, cols));
        return tensors_.size() - 1;
    }
    std::size_t add_tensor(std::size_t param, std::string_view slot) {
        const Mat<T>& v = params_[param]->value();
        return add_tensor(param, slot, v.rows(), v.cols());
    }
    Mat<T>& tensor(std::size_t index) { return tensors_[index].second; }

    /// The options an exact resume depends on, by name (booleans as 0/1). The learning rate is
    /// not one of them: schedules change it, and state() saves it separately.
    virtual std::vector<std::pair<std::string, double>> resume_options() const = 0;

    /// Whether lr() is an external learning rate (saved in the state, settable); Adafactor with
    /// relative_step computes its own.
    virtual bool has_external_lr() const { return true; }

    /// Throws ShapeError when a Param's value or gradient no longer has the shape its state has.
    void check_param_shape(std::size_t i, const Mat<T>& state_like) const {
        const autograd::Param<T>& p = *params_[i];
        if (p.value().rows() != state_like.rows() || p.value().cols() != state_like.cols())
            throw ShapeError::mismatch(kind_ + "::step", "Param '" + p.name() + "'",
                                       state_like.rows(), state_like.cols(), p.value().rows(),
                                       p.value().cols());
        if (p.grad().rows() != p.value().rows() || p.grad().cols() != p.value().cols())
            throw ShapeError::operands(kind_ + "::step", "Param '" + p.name() + "'", "value",
                                       p.value().rows(), p.value().cols(), "gradient",
                                       p.grad().rows(), p.grad().cols());
    }

    std::string kind_;
    ParamList params_;
    std::vector<std::int64_t> param_steps_;  // each Param's own step count
    std::int64_t steps_ = 0;                 // calls to step()
    double lr_ = 0;

private:
    std::vector<std::pair<std::string, Mat<T>>> tensors_;
};

}  // namespace softprompt::optim
