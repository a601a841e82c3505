#pragma once
// Inference state: a sequence's key/value cache, an adapter's prompt cache, and `advance`, which
// feeds new tokens of several sequences through the model in one pass and returns each sequence's
// next-token logits. A sequence may also carry a LoRA adapter's updates (nn::LoraWeights): they
// apply to its own rows only, as low-rank products beside the shared frozen weights.
//
// A soft prompt's virtual tokens see only each other, so their keys/values at every layer do not
// depend on the request. A PromptCache computes them once per adapter; every sequence that uses the
// adapter attends to it as a prefix, so the soft prompt costs no prefill per request. Sequences in
// one `advance` may use different adapters (or none): projections and feed-forwards run on all
// their new rows together, attention per sequence over its own cache and prefix.
//   new rows: [N, d] (N = Σ new tokens)   cache keys/values per layer: [capacity, Hkv*hd]
//
// Threads: a PromptCache, once built, is only read; any number of sequences on any threads may
// use it (it must outlive them). A Sequence belongs to one thread: `advance` writes the cache of
// every sequence it is given, so a sequence must never be in two calls at once. The model is only
// read (see nn/model.hpp).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "softprompt/autograd/nn_ops.hpp"
#include "softprompt/autograd/ops.hpp"
#include "softprompt/kernels/attention.hpp"
#include "softprompt/nn/forward.hpp"
#include "softprompt/nn/model.hpp"

namespace softprompt::nn {

/// Per-layer keys and values of an adapter's virtual tokens: n_layers × [P, Hkv*hd].
template <class T>
struct PromptCache {
    std::vector<Mat<T>> keys, values;

    Index length() const { return keys.empty() ? 0 : keys.front().rows(); }
};

namespace detail {
/// The values of an adapter input's per-layer keys and values.
template <class T>
PromptCache<T> to_cache(const AdapterInput<T>& kv) {
    PromptCache<T> cache;
    for (std::size_t l = 0; l < kv.keys.size(); ++l) {
        cache.keys.push_back(kv.keys[l].value());
        cache.values.push_back(kv.values[l].value());
    }
    return cache;
}
}  // namespace detail

/// Prompt tuning: run the virtual tokens [P, d] once, keep their keys/values.
template <class Arch, class T>
PromptCache<T> cache_prompt(const Model<Arch, T>& model, const Mat<T>& prompt) {
    autograd::Tape<T> tape;  // nothing is trainable: nothing is recorded
    return detail::to_cache(virtual_token_kv(tape, model, tape.constant(prompt)));
}

/// Prefix tuning: split a PEFT prefix tensor [P, L*2*Hkv*hd] into the per-layer cache.
template <class T>
PromptCache<T> cache_prefix(const Config& config, const Mat<T>& prefix) {
    const Index kv = config.kv_dim();
    if (prefix.cols() != config.n_layers * 2 * kv)
        throw ShapeError::mismatch("cache_prefix", "prefix", prefix.rows(),
                                   config.n_layers * 2 * kv, prefix.rows(), prefix.cols());
    PromptCache<T> cache;  // the column layout of split_prefix (nn/forward.hpp), no tape needed
    for (Index l = 0; l < config.n_layers; ++l) {
        cache.keys.push_back(prefix.middleCols(2 * l * kv, kv));
        cache.values.push_back(prefix.middleCols((2 * l + 1) * kv, kv));
    }
    return cache;
}

/// One sequence being generated: its adapter's prompt cache (or none), its LoRA updates (or none)
/// and the keys/values of its own tokens. Real token t sits at position P + t.
template <class T>
struct Sequence {
    const PromptCache<T>* prompt = nullptr;
    const LoraWeights<T>* lora = nullptr;
    std::vector<Mat<T>> keys, values;  // per layer, [capacity, Hkv*hd]; rows [0, length) are valid
    Index length = 0;

    Index virtual_tokens() const { return prompt == nullptr ? 0 : prompt->length(); }
    Index next_position() const { return virtual_tokens() + length; }

    /// Make room for `extra` more rows in every layer (capacity doubles, so appends are amortised).
    void reserve(const Config& c, Index extra) {
        if (keys.empty()) {
            keys.assign(std::size_t(c.n_layers), Mat<T>());
            values.assign(std::size_t(c.n_layers), Mat<T>());
        }
        const Index need = length + extra;
        if (keys.front().rows() >= need) return;
        const Index capacity = std::max<Index>(need, std::max<Index>(64, 2 * keys.front().rows()));
        for (std::size_t l = 0; l < keys.size(); ++l) {
            keys[l].conservativeResize(capacity, c.kv_dim());
            values[l].conservativeResize(capacity, c.kv_dim());
        }
    }
};

namespace detail {
/// Throws ShapeError, prefixed by `what`, unless every update of `lora` fits the projection it
/// updates in `model` (LoraWeights' slot order: Arch::lora_target).
template <class Arch, class T>
void check_lora_fits(const Model<Arch, T>& model, const LoraWeights<T>& lora,
                     const std::string& what) {
    const auto& layers = model.weights.layers;
    if (lora.layers.size() != layers.size())
        throw ShapeError(what + ": LoRA updates for " + std::to_string(lora.layers.size()) +
                         " layers, the model has " + std::to_string(layers.size()));
    for (std::size_t l = 0; l < layers.size(); ++l)
        for (int slot = 0; slot < 4; ++slot) {
            const auto& u = lora.layers[l][std::size_t(slot)];
            if (u.a.size() == 0 && u.b.size() == 0) continue;
            const Weight<T>* w = Arch::lora_target(layers[l], slot);
            auto where = [&] {
                return what + ": the LoRA update of layer " + std::to_string(l) + ", slot " +
                       std::to_string(slot);
            };
            if (w == nullptr) throw ShapeError(where() + " names no projection of " + Arch::kName);
            // Conv1D weights are stored [in, out], Linear ones [out, in].
            const Index in = Arch::kConv1dWeights ? w->rows : w->cols;
            const Index out = Arch::kConv1dWeights ? w->cols : w->rows;
            if (u.a.rows() == 0 || u.a.cols() != in || u.b.rows() != out ||
                u.b.cols() != u.a.rows())
                throw ShapeError(where() + ": A " + shape_string(u.a.rows(), u.a.cols()) +
                                 " and B " + shape_string(u.b.rows(), u.b.cols()) +
                                 " do not make an update of a projection from " +
                                 std::to_string(in) + " to " + std::to_string(out));
        }
}
}  // namespace detail

/// Feed `tokens[i]` (one or more ids) to sequence i, for every i at once, and return each
/// sequence's logits after its last new token: [sequences, V].
template <class Arch, class T>
Mat<T> advance(const Model<Arch, T>& model, std::span<Sequence<T>* const> sequences,
               const std::vector<std::vector<std::int32_t>>& tokens) {
    using namespace autograd;
    const Config& c = model.config;
    if (tokens.size() != sequences.size())
        throw ShapeError("advance: " + std::to_string(tokens.size()) + " token lists for " +
                         std::to_string(sequences.size()) + " sequences");
    std::vector<std::int32_t> ids, positions, last_rows;
    std::vector<Index> offsets;
    for (std::size_t i = 0; i < sequences.size(); ++i) {
        Sequence<T>& seq = *sequences[i];
        if (tokens[i].empty())
            throw ShapeError("advance: sequence " + std::to_string(i) + " has no new tokens");
        if (seq.prompt != nullptr && (seq.prompt->keys.size() != std::size_t(c.n_layers) ||
                                      seq.prompt->keys.front().cols() != c.kv_dim()))
            throw ShapeError("advance: the prompt cache of sequence " + std::to_string(i) +
                             " does not fit this model's layers and key/value width");
        if (Arch::kLearnedPositions &&
            seq.next_position() + Index(tokens[i].size()) > c.max_seq_len)
            throw ShapeError("advance: sequence " + std::to_string(i) + " would reach position " +
                             std::to_string(seq.next_position() + Index(tokens[i].size())) +
                             ", beyond max_seq_len " + std::to_string(c.max_seq_len));
        c.check_positions("advance", seq.next_position() + Index(tokens[i].size()));
        if (seq.lora != nullptr)
            detail::check_lora_fits(model, *seq.lora, "advance: sequence " + std::to_string(i));
        offsets.push_back(Index(ids.size()));
        for (std::size_t j = 0; j < tokens[i].size(); ++j) {
            const std::int32_t id = tokens[i][j];
            if (id < 0 || id >= c.vocab_size)
                throw ShapeError("advance: id " + std::to_string(id) + " of sequence " +
                                 std::to_string(i) + " is outside the vocabulary of " +
                                 std::to_string(c.vocab_size));
            ids.push_back(id);
            positions.push_back(std::int32_t(seq.next_position() + Index(j)));
        }
        last_rows.push_back(std::int32_t(ids.size() - 1));
        seq.reserve(c, Index(tokens[i].size()));
    }

    Tape<T> tape;  // nothing trainable: ops compute values and record nothing
    const AttentionSpec spec{.batch = 1,
                             .seq = 0,
                             .n_heads = c.n_heads,
                             .n_kv_heads = c.n_kv_heads,
                             .head_dim = c.head_dim()};
    const Mat<T> no_prefix(0, c.kv_dim());
    Var<T> x = Arch::embed(tape, c, model.weights, ids, positions);
    for (Index l = 0; l < c.n_layers; ++l) {
        const auto& layer = model.weights.layers[std::size_t(l)];
        // Each sequence's LoRA updates, on its own rows only (the frozen weights stay shared).
        LayerLora<T> lora;
        bool any_lora = false;
        for (std::size_t i = 0; i < sequences.size(); ++i) {
            if (sequences[i]->lora == nullptr) continue;
            const auto& updates = sequences[i]->lora->layers[std::size_t(l)];
            LoraDeltas<T>* slots[4] = {&lora.q, &lora.k, &lora.v, &lora.o};
            for (std::size_t s = 0; s < 4; ++s) {
                if (updates[s].a.size() == 0) continue;
                slots[s]->push_back({tape.constant_view(updates[s].a),
                                     tape.constant_view(updates[s].b), updates[s].scale, offsets[i],
                                     Index(tokens[i].size())});
                any_lora = true;
            }
        }
        const LayerLora<T>* delta = any_lora ? &lora : nullptr;
        AttentionInputs<T> in = Arch::attention_inputs(tape, c, layer, x, positions, delta);
        Mat<T> attn(x.rows(), c.n_heads * c.head_dim());
        for (std::size_t i = 0; i < sequences.size(); ++i) {
            Sequence<T>& seq = *sequences[i];
            const Index n = Index(tokens[i].size()), at = offsets[i];
            Mat<T>& keys = seq.keys[std::size_t(l)];
            Mat<T>& values = seq.values[std::size_t(l)];
            keys.middleRows(seq.length, n) = in.k.value().middleRows(at, n);
            values.middleRows(seq.length, n) = in.v.value().middleRows(at, n);
            const bool has_prefix = seq.prompt != nullptr && seq.prompt->length() > 0;
            kernels::attention_cached<T>(
                in.q.value().middleRows(at, n), keys.topRows(seq.length + n),
                values.topRows(seq.length + n),
                has_prefix ? seq.prompt->keys[std::size_t(l)] : no_prefix,
                has_prefix ? seq.prompt->values[std::size_t(l)] : no_prefix, seq.length, spec,
                attn.middleRows(at, n));
        }
        x = Arch::finish_layer(tape, c, layer, x, tape.constant(std::move(attn)), delta);
    }
    for (std::size_t i = 0; i < sequences.size(); ++i)
        sequences[i]->length += Index(tokens[i].size());
    Var<T> last = gather_rows(tape, frozen(x.value()), std::span<const std::int32_t>(last_rows));
    return matmul_wt(tape, Arch::final_norm(tape, c, model.weights, last), model.weights.head)
        .value();
}

}  // namespace softprompt::nn
