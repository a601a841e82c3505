#pragma once
// A frozen model: its configuration, read-only views of its weights, and whatever keeps the viewed
// memory alive (a mapped file or an owned buffer). Architectures (`Gpt2`, `Llama`) define the weight
// layout and the stages of a block; the forward passes are written once over them.

#include <memory>

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

}  // namespace softprompt::nn
