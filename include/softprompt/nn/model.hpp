#pragma once
// A frozen model: its configuration, read-only views of its weights, and whatever keeps the viewed
// memory alive (a mapped file or an owned buffer). Architectures (`Gpt2`, `Llama`) define the
// weight layout and the stages of a block; the forward passes are written once over them.
//
// Threads. A loaded Model is immutable: any number of threads may use one `const Model&` at once
// (generate, advance, cache_prompt, forward and backward on each thread's own tape, Lora::merge,
// the init_* functions). Its weights are only read (a PROT_READ mapping or a buffer nothing
// writes), nothing caches or keeps scratch in it or in a static, and copies share `storage` through
// an atomic reference count. What a computation writes belongs to one thread at a time: Tape, Var,
// Param, Method, Optimizer, Trainer, Sequence (a KV cache), Sampler. Values built once and then
// only read (a PromptCache, a tokenizer, a Dataset) may be shared. Do not rebind or modify a
// model's weights while other threads use it. tests/concurrency_test.cpp checks all of this,
// bit for bit against a serial run, under ThreadSanitizer.

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "softprompt/autograd/ops.hpp"
#include "softprompt/autograd/tape.hpp"
#include "softprompt/nn/config.hpp"

namespace softprompt::nn {

template <class Arch, class T>
struct Model {
    using Scalar = T;
    using Architecture = Arch;

    Config config;
    typename Arch::template Weights<T> weights;
    /// Owner of the memory the weights view; shared so that copies of a Model stay valid.
    std::shared_ptr<const void> storage;
};

/// A block's attention inputs for N rows: q [N, H*hd], k and v [N, Hkv*hd] (RoPE already applied).
template <class T>
struct AttentionInputs {
    autograd::Var<T> q, k, v;
};

/// A low-rank update of one frozen projection (LoRA): y += scale · (x·Aᵀ)·Bᵀ with A [r, in] and
/// B [out, r], whatever layout the frozen weight itself is stored in. It updates the pass's rows
/// [first_row, first_row + rows), or all of them when `rows` is negative: a batch served with
/// several adapters gives each sequence's rows its own update (or none) on the shared weights.
template <class T>
struct LoraDelta {
    autograd::Var<T> a, b;
    T scale = T(1);
    Index first_row = 0, rows = -1;

    bool active() const { return a.defined(); }
};

/// A projection's updates: none, one for every row (training one adapter), or several on disjoint
/// row ranges in increasing order (serving a mixed batch).
template <class T>
using LoraDeltas = std::vector<LoraDelta<T>>;

/// LoRA updates of one layer's attention projections; empty entries leave a projection frozen.
/// GPT-2 has one fused QKV projection: its update is `q` (B is [3d, r]); `k` and `v` are unused.
template <class T>
struct LayerLora {
    LoraDeltas<T> q, k, v, o;
};

/// y + the updates of `deltas` for input x (y unchanged when there is none).
template <class T>
autograd::Var<T> with_lora(autograd::Tape<T>& tape, const autograd::Var<T>& x, autograd::Var<T> y,
                           const LoraDeltas<T>* deltas) {
    using namespace autograd;
    if (deltas == nullptr || deltas->empty()) return y;
    auto update = [&](const LoraDelta<T>& d, const Var<T>& rows) {
        return scale(tape, matmul_wt(tape, matmul_wt(tape, rows, d.a), d.b), d.scale);
    };
    if (deltas->size() == 1 && deltas->front().rows < 0)
        return add(tape, y, update(deltas->front(), x));
    // Row ranges: each range's update, zeros between them, stacked to y's shape.
    std::vector<Var<T>> parts;
    Index at = 0;
    auto zeros_until = [&](Index row) {
        if (row > at) parts.push_back(tape.constant(Mat<T>::Zero(row - at, y.cols())));
        at = row;
    };
    for (const LoraDelta<T>& d : *deltas) {
        if (d.rows < 0 || d.first_row < at || d.first_row + d.rows > y.rows())
            throw ShapeError("with_lora: update rows [" + std::to_string(d.first_row) + ", " +
                             std::to_string(d.first_row + d.rows) +
                             ") are not disjoint, increasing ranges within the " +
                             std::to_string(y.rows()) + " rows");
        zeros_until(d.first_row);
        parts.push_back(update(d, slice_rows(tape, x, d.first_row, d.rows)));
        at += d.rows;
    }
    zeros_until(y.rows());
    return add(tape, y, concat_rows(tape, parts));
}

/// A LoRA adapter as plain values, for serving: per layer, the update of each adapted projection
/// in LayerLora's slot order (q, k, v, o; GPT-2: c_attn in q, c_proj in o). Built once and then
/// only read, it may be shared by any number of sequences on any threads.
template <class T>
struct LoraWeights {
    struct Update {
        Mat<T> a, b;  // [r, in], [out, r]; empty when the projection is not adapted
        T scale = T(1);
    };
    std::vector<std::array<Update, 4>> layers;
};

}  // namespace softprompt::nn
