#pragma once
// The common face of every parameter-efficient method: its trainable Params, what it feeds the
// frozen model's forward pass, and PEFT's parameter summary.
//
// Threads: a Method belongs to one thread, even for calls that look read-only. input() hands its
// Params to a tape whose backward writes their gradients, and the exports (PTuning::virtual_tokens,
// PrefixTuning::fold) switch the Params' trainable flags while they run (EvaluationOnly). To serve
// a method from several threads, export its plain value once (embeddings or a prefix matrix, then
// a PromptCache; or Lora::merge's model) and share that.

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/nn/forward.hpp"
#include "softprompt/nn/weights.hpp"

namespace softprompt::peft {

enum class MethodKind { kPromptTuning, kPrefixTuning, kPTuning, kLora };

inline const char* method_name(MethodKind kind) {
    switch (kind) {
        case MethodKind::kPromptTuning:
            return "PROMPT_TUNING";
        case MethodKind::kPrefixTuning:
            return "PREFIX_TUNING";
        case MethodKind::kPTuning:
            return "P_TUNING";
        case MethodKind::kLora:
            return "LORA";
    }
    return "UNKNOWN";
}

/// While alive, the given Params enter tapes as constants, so a forward pass records nothing (an
/// evaluation); their trainable flags are restored afterwards.
template <class T>
class EvaluationOnly {
public:
    explicit EvaluationOnly(std::vector<autograd::Param<T>*> params) : params_(std::move(params)) {
        for (auto* p : params_) {
            was_.push_back(p->trainable());
            p->set_trainable(false);
        }
    }
    ~EvaluationOnly() {
        for (std::size_t i = 0; i < params_.size(); ++i) params_[i]->set_trainable(was_[i]);
    }
    EvaluationOnly(const EvaluationOnly&) = delete;
    EvaluationOnly& operator=(const EvaluationOnly&) = delete;

private:
    std::vector<autograd::Param<T>*> params_;
    std::vector<bool> was_;
};

template <class T>
class Method {
public:
    virtual ~Method() = default;
    virtual MethodKind kind() const = 0;
    /// Every Param the method trains (and an optimizer updates).
    virtual std::vector<autograd::Param<T>*> parameters() = 0;
    /// Build the method's contribution to one forward pass on `tape`.
    virtual nn::AdapterInput<T> input(autograd::Tape<T>& tape) = 0;
    /// Virtual tokens placed before the input (0 for LoRA).
    virtual Index num_virtual_tokens() const { return 0; }

    Index trainable_count() {
        Index n = 0;
        for (auto* p : parameters()) n += p->trainable() ? p->size() : 0;
        return n;
    }
};

/// Number of frozen parameters of a model (a tied head counted once).
template <class Arch, class T>
Index frozen_parameter_count(const nn::Model<Arch, T>& model) {
    Index n = 0;
    Arch::for_each_weight(
        model.weights, model.config,
        [&n](const nn::WeightSpec&, const Weight<T>& w) { n += w.rows * w.cols; });
    return n;
}

struct ParameterSummary {
    Index trainable = 0;
    Index total = 0;  // trainable + frozen

    double percent() const { return total == 0 ? 0.0 : 100.0 * double(trainable) / double(total); }
    /// "trainable params: 1,280 || all params: 265,728 || trainable%: 0.4817", as PEFT prints it.
    std::string to_string() const {
        auto grouped = [](Index v) {
            std::string digits = std::to_string(v), out;
            for (std::size_t i = 0; i < digits.size(); ++i) {
                if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
                out += digits[i];
            }
            return out;
        };
        char pct[32];
        std::snprintf(pct, sizeof pct, "%.4f", percent());
        return "trainable params: " + grouped(trainable) + " || all params: " + grouped(total) +
               " || trainable%: " + pct;
    }
};

template <class Arch, class T>
ParameterSummary summarize(Method<T>& method, const nn::Model<Arch, T>& model) {
    const Index trainable = method.trainable_count();
    return {trainable, trainable + frozen_parameter_count(model)};
}

}  // namespace softprompt::peft
