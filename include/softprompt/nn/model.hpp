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

#include <memory>

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
/// B [out, r], whatever layout the frozen weight itself is stored in.
template <class T>
struct LoraDelta {
    autograd::Var<T> a, b;
    T scale = T(1);

    bool active() const { return a.defined(); }
};

/// LoRA updates of one layer's attention projections; inactive entries leave a projection frozen.
/// GPT-2 has one fused QKV projection: its update is `q` (B is [3d, r]); `k` and `v` are unused.
template <class T>
struct LayerLora {
    LoraDelta<T> q, k, v, o;
};

/// y + the update of `delta` for input x (y unchanged when there is no active update).
template <class T>
autograd::Var<T> with_lora(autograd::Tape<T>& tape, const autograd::Var<T>& x, autograd::Var<T> y,
                           const LoraDelta<T>* delta) {
    if (delta == nullptr || !delta->active()) return y;
    using namespace autograd;
    return add(tape, y,
               scale(tape, matmul_wt(tape, matmul_wt(tape, x, delta->a), delta->b), delta->scale));
}

}  // namespace softprompt::nn
