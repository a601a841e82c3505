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
    bool tied_head = true;  // LM head shares the token embedding

    Index head_dim() const { return dim / n_heads; }
    Index kv_dim() const { return n_kv_heads * head_dim(); }

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
        if (dim % n_heads != 0)
            throw ConfigError("Config: dim " + std::to_string(dim) +
                              " is not a multiple of n_heads " + std::to_string(n_heads));
        if (n_heads % n_kv_heads != 0)
            throw ConfigError("Config: n_heads " + std::to_string(n_heads) +
                              " is not a multiple of n_kv_heads " + std::to_string(n_kv_heads));
        if (!(norm_eps >= 0)) throw ConfigError("Config: norm_eps must be >= 0");
        if (!(rope_theta > 0)) throw ConfigError("Config: rope_theta must be > 0");
    }
};

}  // namespace softprompt::nn
