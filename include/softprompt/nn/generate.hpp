#pragma once
// Text generation: token sampling (greedy, temperature, top-k, top-p) with a seeded generator, and
// batched generation in which every request may use its own adapter's prompt cache or LoRA updates
// (or none).
// Sampling is reproducible across platforms: uniform draws come from std::mt19937_64's specified
// output, not from an implementation-defined distribution.
//
// Threads: generate() keeps its state (sequences, samplers) local, so several threads may call it
// at once on one shared model and the same adapters' prompt caches. A Sampler holds its
// generator's state: one per thread, and one per request for reproducible draws.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "softprompt/nn/kv_cache.hpp"

namespace softprompt::nn {

struct SamplingOptions {
    double temperature = 0.0;  // <= 0: greedy (argmax, lowest id on ties)
    int top_k = 0;             // keep the k most likely tokens; 0 = all
    double top_p = 1.0;        // keep the smallest set whose probability reaches top_p; 1 = all
    std::uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(SamplingOptions options) : options_(options), rng_(options.seed) {
        if (options_.top_k < 0)
            throw ConfigError("Sampler: top_k must be >= 0, got " + std::to_string(options_.top_k));
        if (!(options_.top_p > 0 && options_.top_p <= 1))
            throw ConfigError("Sampler: top_p must be in (0, 1], got " +
                              std::to_string(options_.top_p));
    }

    /// Pick the next token from one row of logits.
    template <class Row>
    std::int32_t sample(const Row& logits) {
        const Index vocab = logits.size();
        if (options_.temperature <= 0) {
            Index best = 0;
            for (Index i = 1; i < vocab; ++i)
                if (logits(i) > logits(best)) best = i;
            return std::int32_t(best);
        }
        std::vector<std::int32_t> order(static_cast<std::size_t>(vocab), 0);
        std::iota(order.begin(), order.end(), 0);
        std::vector<double> prob(static_cast<std::size_t>(vocab));
        double top = -INFINITY;
        for (Index i = 0; i < vocab; ++i)
            top = std::max(top, double(logits(i)) / options_.temperature);
        for (Index i = 0; i < vocab; ++i)
            prob[std::size_t(i)] = std::exp(double(logits(i)) / options_.temperature - top);
        std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
            return prob[std::size_t(a)] > prob[std::size_t(b)];
        });
        std::size_t keep = order.size();
        if (options_.top_k > 0) keep = std::min(keep, std::size_t(options_.top_k));
        double total = 0;
        for (std::size_t i = 0; i < keep; ++i) total += prob[std::size_t(order[i])];
        if (options_.top_p < 1) {
            double cumulative = 0;
            for (std::size_t i = 0; i < keep; ++i) {
                cumulative += prob[std::size_t(order[i])] / total;
                if (cumulative >= options_.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            total = 0;
            for (std::size_t i = 0; i < keep; ++i) total += prob[std::size_t(order[i])];
        }
        const double u = double(rng_() >> 11) * 0x1.0p-53 * total;  // uniform in [0, total)
        double cumulative = 0;
        for (std::size_t i = 0; i < keep; ++i) {
            cumulative += prob[std::size_t(order[i])];
            if (u < cumulative) return order[i];
        }
        return order[keep - 1];
    }

private:
    SamplingOptions options_;
    std::mt19937_64 rng_;
};

template <class T>
struct GenerationRequest {
    std::vector<std::int32_t> prompt;         // token ids to prefill (at least one)
    const PromptCache<T>* adapter = nullptr;  // soft prompt or prefix; null = none
    const LoraWeights<T>* lora = nullptr;     // LoRA updates on this row only; null = none
    SamplingOptions sampling;
    int max_new_tokens = 64;
    std::vector<std::int32_t> stop_tokens;  // generation ends after emitting one of these
};

struct GenerationResult {
    std::vector<std::int32_t> tokens;  // generated ids (the prompt excluded; a stop token included)
    bool stopped = false;              // ended on a stop token rather than max_new_tokens
};

struct GenerationStats {
    Index prefill_tokens = 0, decode_tokens = 0;
    double prefill_seconds = 0, decode_seconds = 0;
};

/// Generate for every request at once: one batched prefill, then one batched decode step per new
/// token for the requests still running.
template <class Arch, class T>
std::vector<GenerationResult> generate(const Model<Arch, T>& model,
                                       const std::vector<GenerationRequest<T>>& requests,
                                       GenerationStats* stats = nullptr) {
    using clock = std::chrono::steady_clock;
    std::vector<Sequence<T>> sequences(requests.size());
    std::vector<Sampler> samplers;
    std::vector<GenerationResult> results(requests.size());
    std::vector<std::vector<std::int32_t>> feed;
    std::vector<Sequence<T>*> active;
    std::vector<std::size_t> active_index;
    GenerationStats local;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        if (requests[i].prompt.empty())
            throw ConfigError("generate: request " + std::to_string(i) +
                              " has an empty prompt (start it with BOS)");
        if (requests[i].max_new_tokens < 0)
            throw ConfigError("generate: request " + std::to_string(i) + " has max_new_tokens < 0");
        sequences[i].prompt = requests[i].adapter;
        sequences[i].lora = requests[i].lora;
        samplers.emplace_back(requests[i].sampling);
        if (requests[i].max_new_tokens == 0) continue;
        active.push_back(&sequences[i]);
        active_index.push_back(i);
        feed.push_back(requests[i].prompt);
        local.prefill_tokens += Index(requests[i].prompt.size());
    }
    bool prefill = true;
    while (!active.empty()) {
        const auto start = clock::now();
        const Mat<T> logits = advance(model, std::span<Sequence<T>* const>(active), feed);
        std::vector<Sequence<T>*> still;
        std::vector<std::size_t> still_index;
        std::vector<std::vector<std::int32_t>> next;
        for (std::size_t a = 0; a < active.size(); ++a) {
            const std::size_t i = active_index[a];
            const std::int32_t token = samplers[i].sample(logits.row(Index(a)));
            results[i].tokens.push_back(token);
            const auto& stops = requests[i].stop_tokens;
            if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
                results[i].stopped = true;
                continue;
            }
            if (int(results[i].tokens.size()) >= requests[i].max_new_tokens) continue;
            still.push_back(active[a]);
            still_index.push_back(i);
            next.push_back({token});
        }
        const double seconds = std::chrono::duration<double>(clock::now() - start).count();
        (prefill ? local.prefill_seconds : local.decode_seconds) += seconds;
        if (!prefill) local.decode_tokens += Index(active.size());
        prefill = false;
        active = std::move(still);
        active_index = std::move(still_index);
        feed = std::move(next);
    }
    if (stats != nullptr) *stats = local;
    return results;
}

}  // namespace softprompt::nn
