#pragma once
// Evaluation of a method on a data set: token-level loss, perplexity and accuracy, accuracy of a
// classification read off label tokens, and exact match of generated continuations.

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "softprompt/nn/forward.hpp"
#include "softprompt/nn/generate.hpp"
#include "softprompt/peft/lora.hpp"
#include "softprompt/peft/method.hpp"
#include "softprompt/peft/p_tuning.hpp"
#include "softprompt/peft/prefix_tuning.hpp"
#include "softprompt/peft/prompt_tuning.hpp"
#include "softprompt/train/collective.hpp"
#include "softprompt/train/dataset.hpp"

namespace softprompt::train {

struct EvalResult {
    double loss = 0;            // mean cross-entropy per labelled token
    double perplexity = 0;      // exp(loss)
    double token_accuracy = 0;  // fraction of labelled tokens whose argmax is the target
    Index tokens = 0;           // labelled tokens seen
};

/// Evaluate without recording anything: the method's Params enter as constants. `method` may be
/// null (the base model). With a data-parallel `group` (train/collective.hpp), each member
/// evaluates every size-th batch and the per-batch sums are exchanged, so every member gets the
/// result that one process alone would compute, bit for bit.
template <class Arch, class T>
EvalResult evaluate(const nn::Model<Arch, T>& model, peft::Method<T>* method, const Dataset& data,
                    std::size_t batch_size = 8, Collective* group = nullptr) {
    EvalResult r;
    if (data.empty()) return r;
    std::vector<autograd::Param<T>*> params;
    if (method) params = method->parameters();
    const peft::EvaluationOnly<T> eval_only(params);
    const std::vector<std::vector<std::size_t>> batches =
        data.batches(batch_size, 0, 0, /*shuffle=*/false);
    // Per batch: the summed loss of its labelled tokens, then its right guesses and tokens.
    std::vector<double> loss_sum(batches.size(), 0.0);
    std::vector<std::int64_t> counts(2 * batches.size(), 0);
    const std::size_t members = group ? std::size_t(group->size()) : 1;
    const std::size_t me = group ? std::size_t(group->rank()) : 0;
    for (std::size_t b = me; b < batches.size(); b += members) {
        const nn::TokenBatch batch = data.batch(batches[b]);
        autograd::Tape<T> tape;
        const nn::AdapterInput<T> in = method ? method->input(tape) : nn::AdapterInput<T>{};
        const nn::ForwardOutput<T> out = nn::forward(tape, model, batch, in);
        const Mat<T>& logits = out.logits.value();
        for (std::size_t i = 0; i < out.rows.size(); ++i) {
            const std::int32_t target = batch.targets[std::size_t(out.rows[i])];
            Index best = 0;
            logits.row(Index(i)).maxCoeff(&best);
            counts[2 * b] += best == target ? 1 : 0;
        }
        counts[2 * b + 1] = std::int64_t(out.rows.size());
        loss_sum[b] = double(out.loss.item()) * double(out.rows.size());
    }
    if (group && members > 1) {  // each slot has one owner: both sums are exact
        group->sum(std::span<double>(loss_sum));
        group->sum(std::span<std::int64_t>(counts));
    }
    double total = 0;
    Index right = 0;
    for (std::size_t b = 0; b < batches.size(); ++b) {
        total += loss_sum[b];
        right += counts[2 * b];
        r.tokens += counts[2 * b + 1];
    }
    r.loss = total / double(r.tokens);
    r.perplexity = std::exp(r.loss);
    r.token_accuracy = double(right) / double(r.tokens);
    return r;
}

/// Classification by label tokens: for each example, the first labelled position is read, and the
/// prediction is the candidate label token with the largest logit.
template <class Arch, class T>
double label_accuracy(const nn::Model<Arch, T>& model, peft::Method<T>* method, const Dataset& data,
                      const std::vector<std::int32_t>& label_tokens, std::size_t batch_size = 8) {
    if (data.empty() || label_tokens.empty()) return 0;
    std::vector<autograd::Param<T>*> params;
    if (method) params = method->parameters();
    const peft::EvaluationOnly<T> eval_only(params);
    Index right = 0;
    for (const auto& which : data.batches(batch_size, 0, 0, false)) {
        const nn::TokenBatch batch = data.batch(which);
        autograd::Tape<T> tape;
        const nn::AdapterInput<T> in = method ? method->input(tape) : nn::AdapterInput<T>{};
        const nn::ForwardOutput<T> out = nn::forward(tape, model, batch, in);
        Index previous_row = -1;
        for (std::size_t i = 0; i < out.rows.size(); ++i) {
            const Index row = out.rows[i] / batch.seq;
            if (row == previous_row) continue;  // only each example's first labelled position
            previous_row = row;
            std::int32_t best = label_tokens[0];
            for (std::int32_t t : label_tokens)
                if (out.logits.value()(Index(i), t) > out.logits.value()(Index(i), best)) best = t;
            right += best == batch.targets[std::size_t(out.rows[i])] ? 1 : 0;
        }
    }
    return double(right) / double(data.size());
}

/// What serving a trained method needs: the model to run (LoRA merged into a copy) and the prompt
/// cache of a prompt-based method (empty for LoRA).
template <class Arch, class T>
struct Served {
    nn::Model<Arch, T> model;
    nn::PromptCache<T> cache;
};

template <class Arch, class T>
Served<Arch, T> serve(const nn::Model<Arch, T>& model, peft::Method<T>& method) {
    switch (method.kind()) {
        case peft::MethodKind::kPromptTuning:
            return {model,
                    nn::cache_prompt(
                        model, static_cast<peft::PromptTuning<T>&>(method).embeddings().value())};
        case peft::MethodKind::kPTuning:
            return {model, nn::cache_prompt(
                               model, static_cast<peft::PTuning<T>&>(method).virtual_tokens())};
        case peft::MethodKind::kPrefixTuning:
            return {model, nn::cache_prefix(model.config,
                                            static_cast<peft::PrefixTuning<T>&>(method).fold())};
        case peft::MethodKind::kLora:
            return {static_cast<peft::Lora<Arch, T>&>(method).merge(model), {}};
    }
    throw ConfigError("serve: unknown method");
}

/// Greedy continuation of each example's input (the tokens before its first labelled position)
/// compared with its target tokens: the fraction generated exactly.
template <class Arch, class T>
double exact_match(const nn::Model<Arch, T>& model, peft::Method<T>* method, const Dataset& data) {
    if (data.empty()) return 0;
    std::optional<Served<Arch, T>> served;
    if (method) served.emplace(serve(model, *method));
    std::vector<nn::GenerationRequest<T>> requests;
    std::vector<std::vector<std::int32_t>> expected;
    for (const Example& e : data.examples()) {
        std::size_t first = 0;
        while (e.targets[first] < 0) ++first;
        nn::GenerationRequest<T> r;
        r.prompt.assign(e.ids.begin(), e.ids.begin() + std::ptrdiff_t(first) + 1);
        r.adapter = served && served->cache.length() > 0 ? &served->cache : nullptr;
        std::vector<std::int32_t> want;
        for (std::size_t s = first; s < e.targets.size() && e.targets[s] >= 0; ++s)
            want.push_back(e.targets[s]);
        r.max_new_tokens = int(want.size());
        requests.push_back(std::move(r));
        expected.push_back(std::move(want));
    }
    const auto results = nn::generate(served ? served->model : model, requests);
    Index right = 0;
    for (std::size_t i = 0; i < results.size(); ++i)
        right += results[i].tokens == expected[i] ? 1 : 0;
    return double(right) / double(data.size());
}

}  // namespace softprompt::train
