#pragma once
// Hyperparameters of a decoder-only transformer, shared by every architecture.

#include <string>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/kernels/rope.hpp"

namespace softprompt::nn {

struct Config {
    Index dim = 0;         // model width d
    Index hidden_dim = 0;  // feed-forward width
    Index n_layers = 0;
    Index n_heads = 0;
    Index n_kv_heads = 0;  // < n_heads: grouped-query attention
    Index vocab_size = 0;
    Index max_seq_len = 0;  // positions available (learned position table size for GPT-2)
    double norm_eps = 1e-5;
    double rope_theta = 10000.0;
    kernels::RopeLayout rope_layout = kernels::RopeLayout::kInterleaved;  // LLaMA family only
    kernels::RopeScaling rope_scaling = {};  // LLaMA family only (Llama 3's, linear, or GGUF's
                                             // per-frequency divisors)
    bool tied_head = true;                   // LM head shares the token embedding
    // LLaMA-family variants, all off for Llama 2 / llama2.c / TinyLlama / SmolLM2 / Mistral:
    Index explicit_head_dim = 0;  // > 0: head width independent of dim / n_heads (Qwen3)
    bool qkv_bias = false;        // biases on the q, k and v projections (Qwen2)
    bool qk_norm = false;         // RMSNorm of every query and key head before RoPE (Qwen3)
    // > 0: attention sees at most this many keys (Mistral's sliding window). Sequences longer
    // than the window are refused, where full attention would give a different result.
    Index sliding_window = 0;

    Index head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : dim / n_heads; }
    Index q_dim() const { return n_heads * head_dim(); }
    Index kv_dim() const { return n_kv_heads * head_dim(); }

    /// Throws ConfigError when a sequence of `positions` positions (virtual tokens included)
    /// would need attention beyond the sliding window; `what` names the caller.
    void check_positions(const char* what, Index positions) const {
        if (sliding_window > 0 && positions > sliding_window)
            throw ConfigError(std::string(what) + ": " + std::to_string(positions) +
                              " positions exceed the model's sliding_window of " +
                              std::to_string(sliding_window) +
                              " keys; attention limited to a window is not implemented, and "
                              "full attention would compute something else");
    }

    /// Throws ConfigError naming the first inconsistent field.
    void validate() const {
        auto positive = [](const char* name, Index v) {
            if (v <= 0)
                throw ConfigError(std::string("Config: ") + name + " must be > 0, got " +
                                  std::to_string(v));
        };
        positive("dim", dim);
        positive("hidden_dim", hidden_dim);
        positive("n_layers", n_layers);
        positive("n_heads", n_heads);
        positive("n_kv_heads", n_kv_heads);
        positive("vocab_size", vocab_size);
        positive("max_seq_len", max_seq_len);
        if (explicit_head_dim < 0)
            throw ConfigError("Config: explicit_head_dim must be >= 0, got " +
                              std::to_string(explicit_head_dim));
        if (sliding_window < 0)
            throw ConfigError("Config: sliding_window must be >= 0, got " +
                              std::to_string(sliding_window));
        if (explicit_head_dim == 0 && dim % n_heads != 0)
            throw ConfigError("Config: dim " + std::to_string(dim) +
                              " is not a multiple of n_heads " + std::to_string(n_heads));
        if (n_heads % n_kv_heads != 0)
            throw ConfigError("Config: n_heads " + std::to_string(n_heads) +
                              " is not a multiple of n_kv_heads " + std::to_string(n_kv_heads));
        if (!(norm_eps >= 0)) throw ConfigError("Config: norm_eps must be >= 0");
        if (!(rope_theta > 0)) throw ConfigError("Config: rope_theta must be > 0");
        rope_scaling.validate();
        if (rope_scaling.kind == kernels::RopeScaling::Kind::kFactors &&
            Index(rope_scaling.divisors.size()) != head_dim() / 2)
            throw ConfigError(
                "Config: rope_scaling has " + std::to_string(rope_scaling.divisors.size()) +
                " per-frequency divisors but a head of " + std::to_string(head_dim()) +
                " rotates " + std::to_string(head_dim() / 2) + " pairs");
    }
};

}  // namespace softprompt::nn
