#pragma once
// The training forward pass: a right-padded batch of token ids, optionally with a soft prompt
// (prompt tuning's virtual tokens or prefix tuning's per-layer keys/values), through a frozen model
// on a tape, to a loss and, on request, logits of the real positions.
//
// Semantics follow Hugging Face PEFT. With P virtual tokens, real tokens take positions P..P+S-1.
// Virtual tokens are causal among themselves and see nothing else, so their per-layer keys/values
// are the same for every row: they are computed once per batch (batch 1, positions 0..P-1) and
// enter every row's attention as a prefix, whose gradient sums over the batch. Prefix tuning's
// keys/values are used as they are (no RoPE). Logits are never formed for virtual positions or
// padding, and without a request for logits only the labelled rows reach the LM head.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "softprompt/autograd/checkpoint.hpp"
#include "softprompt/autograd/nn_ops.hpp"
#include "softprompt/autograd/ops.hpp"
#include "softprompt/nn/model.hpp"

namespace softprompt::nn {

/// A right-padded batch: `batch` rows of `seq` slots, row b holding lengths[b] real tokens.
struct TokenBatch {
    Index batch = 0;
    Index seq = 0;
    std::vector<std::int32_t> ids;      // [B*S]; padding slots may hold any valid id
    std::vector<std::int32_t> lengths;  // [B]; empty means every row is full
    std::vector<std::int32_t>
        targets;  // [B*S] token to predict at each slot, < 0 ignored; may be empty

    Index length(Index b) const { return lengths.empty() ? seq : Index(lengths[std::size_t(b)]); }

    /// Throws ShapeError naming the first inconsistency.
    void validate(const Config& c) const {
        const std::size_t slots = std::size_t(batch * seq);
        if (batch <= 0 || seq <= 0)
            throw ShapeError("TokenBatch: batch and seq must be > 0, got " + std::to_string(batch) +
                             " x " + std::to_string(seq));
        if (ids.size() != slots)
            throw ShapeError("TokenBatch: " + std::to_string(ids.size()) + " ids for " +
                             std::to_string(batch) + " x " + std::to_string(seq) + " slots");
        if (!lengths.empty() && lengths.size() != std::size_t(batch))
            throw ShapeError("TokenBatch: " + std::to_string(lengths.size()) +
                             " lengths for a batch of " + std::to_string(batch));
        if (!targets.empty() && targets.size() != slots)
            throw ShapeError("TokenBatch: " + std::to_string(targets.size()) + " targets for " +
                             std::to_string(slots) + " slots");
        for (Index b = 0; b < batch; ++b) {
            if (length(b) < 0 || length(b) > seq)
                throw ShapeError("TokenBatch: length " + std::to_string(length(b)) + " of row " +
                                 std::to_string(b) + " is outside [0, " + std::to_string(seq) +
                                 "]");
            for (Index s = 0; s < length(b); ++s) {
                const std::int32_t id = ids[std::size_t(b * seq + s)];
                if (id < 0 || id >= c.vocab_size)
                    throw ShapeError("TokenBatch: id " + std::to_string(id) + " at row " +
                                     std::to_string(b) + ", position " + std::to_string(s) +
                                     " is outside the vocabulary of " +
                                     std::to_string(c.vocab_size));
                const std::int32_t t = targets.empty() ? -1 : targets[std::size_t(b * seq + s)];
                if (t >= c.vocab_size)
                    throw ShapeError("TokenBatch: target " + std::to_string(t) + " at row " +
                                     std::to_string(b) + ", position " + std::to_string(s) +
                                     " is outside the vocabulary of " +
                                     std::to_string(c.vocab_size));
            }
        }
    }
};

/// What an adapter adds to a forward pass: virtual-token embeddings or per-layer key/value
/// prefixes (not both), and/or low-rank updates of the attention projections.
template <class T>
struct AdapterInput {
    autograd::Var<T> prompt;                     // prompt tuning, P-tuning: [P, d]
    std::vector<autograd::Var<T>> keys, values;  // prefix tuning: n_layers × [P, Hkv*hd]
    std::vector<LayerLora<T>> lora;              // LoRA: empty, or one entry per layer

    const LayerLora<T>* lora_of(Index layer) const {
        return lora.empty() ? nullptr : &lora[std::size_t(layer)];
    }

    Index virtual_tokens() const {
        if (prompt.defined()) return prompt.rows();
        return keys.empty() ? 0 : keys.front().rows();
    }
};

template <class T>
struct ForwardOutput {
    autograd::Var<T> loss;           // [1, 1]; empty when the batch has no targets
    autograd::Var<T> logits;         // [rows.size(), V]; empty when no row was requested and
                                     // with LogitsRequest::kLossOnly
    std::vector<std::int32_t> rows;  // the batch slot (b*S + s) of each logits row
};

enum class LogitsRequest {
    kLabelledOnly,   // the rows whose target is not ignored: all the loss needs
    kRealPositions,  // every real position of every row
    kLossOnly,       // no logits: the LM head is fused with the loss (training; needs targets)
};

/// Split a PEFT prefix-tuning tensor [P, L*2*Dkv] into per-layer keys and values; column
/// ((2l + kv)·Hkv + h)·hd + j holds layer l's key (kv = 0) or value (kv = 1), head h, element j.
template <class T>
AdapterInput<T> split_prefix(autograd::Tape<T>& tape, const Config& c,
                             const autograd::Var<T>& prefix) {
    const Index kv = c.kv_dim();
    if (prefix.cols() != c.n_layers * 2 * kv)
        throw ShapeError::mismatch("split_prefix", "prefix", prefix.rows(), c.n_layers * 2 * kv,
                                   prefix.rows(), prefix.cols());
    AdapterInput<T> out;
    for (Index l = 0; l < c.n_layers; ++l) {
        out.keys.push_back(autograd::slice_cols(tape, prefix, (2 * l) * kv, kv));
        out.values.push_back(autograd::slice_cols(tape, prefix, (2 * l + 1) * kv, kv));
    }
    return out;
}

/// The per-layer keys and values of P virtual tokens [P, d] at positions 0..P-1 (prompt tuning's
/// prefix). The last layer's attention output and feed-forward are not needed and not computed.
template <class Arch, class T>
AdapterInput<T> virtual_token_kv(autograd::Tape<T>& tape, const Model<Arch, T>& model,
                                 const autograd::Var<T>& prompt,
                                 const std::vector<LayerLora<T>>& lora = {}) {
    const Config& c = model.config;
    if (prompt.cols() != c.dim)
        throw ShapeError::mismatch("virtual_token_kv", "prompt", prompt.rows(), c.dim,
                                   prompt.rows(), prompt.cols());
    const Index P = prompt.rows();
    if (Arch::kLearnedPositions && P > c.max_seq_len)
        throw ShapeError("virtual_token_kv: " + std::to_string(P) +
                         " virtual tokens exceed max_seq_len " + std::to_string(c.max_seq_len));
    c.check_positions("virtual_token_kv", P);
    const std::vector<std::int32_t> positions = autograd::batch_positions(1, P, 0);
    const autograd::AttentionSpec spec{.batch = 1,
                                       .seq = P,
                                       .n_heads = c.n_heads,
                                       .n_kv_heads = c.n_kv_heads,
                                       .head_dim = c.head_dim()};
    AdapterInput<T> out;
    autograd::Var<T> x = Arch::place(tape, c, model.weights, prompt, positions);
    for (Index l = 0; l < c.n_layers; ++l) {
        const auto& layer = model.weights.layers[std::size_t(l)];
        const LayerLora<T>* delta = lora.empty() ? nullptr : &lora[std::size_t(l)];
        AttentionInputs<T> in = Arch::attention_inputs(tape, c, layer, x, positions, delta);
        out.keys.push_back(in.k);
        out.values.push_back(in.v);
        if (l + 1 == c.n_layers) break;
        x = Arch::finish_layer(tape, c, layer, x, autograd::attention(tape, in.q, in.k, in.v, spec),
                               delta);
    }
    return out;
}

namespace detail {

/// Layers first..first+count-1 of a forward pass, as a function of their input x [B*S, d] alone:
/// it owns what the layers read besides the model (positions, lengths, the runs' prefix keys and
/// values and LoRA updates), so that a checkpoint can run it again in backward.
template <class Arch, class T>
struct LayerRun {
    const Model<Arch, T>* model = nullptr;
    Index first = 0, count = 0;
    std::vector<std::int32_t> positions{}, lengths{};
    autograd::AttentionSpec spec{};
    std::vector<autograd::Var<T>> keys{}, values{};  // per layer of the run; empty without a prefix
    std::vector<LayerLora<T>> lora{};                // per layer of the run; empty without LoRA

    autograd::Var<T> operator()(autograd::Tape<T>& tape,
                                const std::vector<autograd::Var<T>>& in) const {
        const Config& c = model->config;
        autograd::Var<T> x = in.front();
        for (Index i = 0; i < count; ++i) {
            const auto& layer = model->weights.layers[std::size_t(first + i)];
            const LayerLora<T>* delta = lora.empty() ? nullptr : &lora[std::size_t(i)];
            AttentionInputs<T> qkv = Arch::attention_inputs(tape, c, layer, x, positions, delta);
            const autograd::Var<T> a =
                keys.empty() ? autograd::attention(tape, qkv.q, qkv.k, qkv.v, spec, lengths)
                             : autograd::attention(tape, qkv.q, qkv.k, qkv.v, spec, lengths,
                                                   keys[std::size_t(i)], values[std::size_t(i)]);
            x = Arch::finish_layer(tape, c, layer, x, a, delta);
        }
        return x;
    }
};

}  // namespace detail

/// Forward a batch through the frozen model with an optional soft prompt. The loss is the mean
/// cross-entropy over slots whose target is not negative.
///
/// `checkpoint_every` > 0 checkpoints the layers in runs of that many (autograd/checkpoint.hpp):
/// backward recomputes each run's forward pass instead of keeping its activations, with the same
/// loss and gradients. 0 keeps every activation backward reads.
template <class Arch, class T>
ForwardOutput<T> forward(autograd::Tape<T>& tape, const Model<Arch, T>& model,
                         const TokenBatch& batch, const AdapterInput<T>& soft = {},
                         LogitsRequest request = LogitsRequest::kLabelledOnly,
                         Index checkpoint_every = 0) {
    using namespace autograd;
    const Config& c = model.config;
    batch.validate(c);
    if (request == LogitsRequest::kLossOnly && batch.targets.empty())
        throw ConfigError("forward: LogitsRequest::kLossOnly needs a batch with targets");
    if (soft.prompt.defined() && !soft.keys.empty())
        throw ConfigError(
            "forward: give either a prompt (prompt tuning) or keys/values (prefix "
            "tuning), not both");
    if (soft.keys.size() != soft.values.size() ||
        (!soft.keys.empty() && soft.keys.size() != std::size_t(c.n_layers)))
        throw ShapeError("forward: prefix tuning needs keys and values for each of the " +
                         std::to_string(c.n_layers) + " layers, got " +
                         std::to_string(soft.keys.size()) + " and " +
                         std::to_string(soft.values.size()));
    if (!soft.lora.empty() && soft.lora.size() != std::size_t(c.n_layers))
        throw ShapeError("forward: LoRA needs one entry per layer (" + std::to_string(c.n_layers) +
                         "), got " + std::to_string(soft.lora.size()));
    const Index P = soft.virtual_tokens();
    if (Arch::kLearnedPositions && P + batch.seq > c.max_seq_len)
        throw ShapeError("forward: " + std::to_string(P) + " virtual + " +
                         std::to_string(batch.seq) + " real positions exceed max_seq_len " +
                         std::to_string(c.max_seq_len));

    c.check_positions("forward", P + batch.seq);
    if (checkpoint_every < 0)
        throw ConfigError("forward: checkpoint_every is " + std::to_string(checkpoint_every) +
                          "; give 0 (no checkpointing) or a number of layers per run");

    // Zero virtual tokens is the base model exactly: the same ops on the same values.
    const AdapterInput<T> prefix = soft.prompt.defined() && P > 0
                                       ? virtual_token_kv(tape, model, soft.prompt, soft.lora)
                                       : soft;
    const std::vector<std::int32_t> positions =
        batch_positions(batch.batch, batch.seq, std::int32_t(P));
    const AttentionSpec spec{.batch = batch.batch,
                             .seq = batch.seq,
                             .n_heads = c.n_heads,
                             .n_kv_heads = c.n_kv_heads,
                             .head_dim = c.head_dim()};
    std::vector<std::int32_t> lengths(std::size_t(batch.batch));
    for (Index b = 0; b < batch.batch; ++b) lengths[std::size_t(b)] = std::int32_t(batch.length(b));

    Var<T> x = Arch::embed(tape, c, model.weights, batch.ids, positions);
    // The layers in runs of `checkpoint_every` (all of them in one run without checkpointing).
    const Index run_length = checkpoint_every > 0 ? checkpoint_every : c.n_layers;
    for (Index first = 0; first < c.n_layers; first += run_length) {
        detail::LayerRun<Arch, T> run{.model = &model,
                                      .first = first,
                                      .count = std::min(run_length, c.n_layers - first),
                                      .positions = positions,
                                      .lengths = lengths,
                                      .spec = spec};
        for (Index l = first; l < first + run.count; ++l) {
            if (P > 0) {
                run.keys.push_back(prefix.keys[std::size_t(l)]);
                run.values.push_back(prefix.values[std::size_t(l)]);
            }
            if (!soft.lora.empty()) run.lora.push_back(soft.lora[std::size_t(l)]);
        }
        x = checkpoint_every > 0 ? checkpoint(tape, {x}, std::move(run)) : run(tape, {x});
    }

    // Only the rows whose logits are needed reach the final norm and the LM head.
    ForwardOutput<T> out;
    std::vector<std::int32_t> row_targets;
    for (Index b = 0; b < batch.batch; ++b)
        for (Index s = 0; s < batch.length(b); ++s) {
            const std::int32_t slot = std::int32_t(b * batch.seq + s);
            const std::int32_t t = batch.targets.empty() ? -1 : batch.targets[std::size_t(slot)];
            if (request == LogitsRequest::kRealPositions || t >= 0) {
                out.rows.push_back(slot);
                row_targets.push_back(t);
            }
        }
    if (out.rows.empty()) {
        if (!batch.targets.empty())
            throw NumericError(
                "forward: every target of the batch is ignored; the loss is undefined");
        return out;
    }
    const bool all_rows = out.rows.size() == std::size_t(batch.batch * batch.seq);
    Var<T> h = all_rows ? x : gather_rows(tape, x, std::span<const std::int32_t>(out.rows));
    if (request == LogitsRequest::kLossOnly) {
        out.loss = linear_cross_entropy(tape, Arch::final_norm(tape, c, model.weights, h),
                                        model.weights.head, row_targets);
        return out;
    }
    Var<T> logits =
        matmul_wt(tape, Arch::final_norm(tape, c, model.weights, h), model.weights.head);
    if (!batch.targets.empty()) out.loss = cross_entropy(tape, logits, row_targets);
    out.logits = logits;
    return out;
}

}  // namespace softprompt::nn
