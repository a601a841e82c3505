#pragma once
// The LLaMA family: RMSNorm, SwiGLU feed-forward, RoPE (interleaved or half-split), grouped-query
// attention, tied or untied head. Each function is one stage of a block on a tape.
//   x, r: [N, d]    q: [N, H*hd]    k, v: [N, Hkv*hd]    positions: [N]

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "softprompt/autograd/nn_ops.hpp"
#include "softprompt/autograd/ops.hpp"
#include "softprompt/nn/config.hpp"
#include "softprompt/nn/model.hpp"
#include "softprompt/nn/weights.hpp"

namespace softprompt::nn {

struct Llama {
    static constexpr const char* kName = "llama";
    /// RoPE encodes positions inside attention; there is no position table to bound them.
    static constexpr bool kLearnedPositions = false;

    template <class T>
    struct Layer {
        Weight<T> attn_norm;          // [1, d]
        Weight<T> wq, wk, wv, wo;     // [H*hd, d], [Hkv*hd, d], [Hkv*hd, d], [d, H*hd]
        Weight<T> ffn_norm;           // [1, d]
        Weight<T> gate, up, down;     // [h, d], [h, d], [d, h]
    };

    template <class T>
    struct Weights {
        Weight<T> embed;       // [V, d]
        std::vector<Layer<T>> layers;
        Weight<T> final_norm;  // [1, d]
        Weight<T> head;        // [V, d]; the embedding itself when tied
    };

    /// Token embeddings (positions act later, through RoPE).
    template <class T>
    static autograd::Var<T> embed(autograd::Tape<T>& tape, const Config&, const Weights<T>& w,
                                  std::span<const std::int32_t> ids, std::span<const std::int32_t>) {
        return autograd::gather_rows(tape, w.embed, ids);
    }

    /// Virtual-token embeddings enter as they are.
    template <class T>
    static autograd::Var<T> place(autograd::Tape<T>&, const Config&, const Weights<T>&,
                                  const autograd::Var<T>& x, std::span<const std::int32_t>) {
        return x;
    }

    template <class T>
    static AttentionInputs<T> attention_inputs(autograd::Tape<T>& tape, const Config& c,
                                               const Layer<T>& l, const autograd::Var<T>& x,
                                               std::span<const std::int32_t> positions) {
        using namespace autograd;
        const RopeSpec rope_spec{.head_dim = c.head_dim(), .rotary_dim = 0,
                                 .theta = c.rope_theta, .layout = c.rope_layout};
        Var<T> h = rms_norm(tape, x, l.attn_norm, T(c.norm_eps));
        return {rope(tape, matmul_wt(tape, h, l.wq), rope_spec, positions),
                rope(tape, matmul_wt(tape, h, l.wk), rope_spec, positions),
                matmul_wt(tape, h, l.wv)};
    }

    /// Output projection, residual, SwiGLU feed-forward, residual.
    template <class T>
    static autograd::Var<T> finish_layer(autograd::Tape<T>& tape, const Config& c,
                                         const Layer<T>& l, const autograd::Var<T>& x,
                                         const autograd::Var<T>& attn) {
        using namespace autograd;
        Var<T> r = add(tape, x, matmul_wt(tape, attn, l.wo));
        Var<T> h = rms_norm(tape, r, l.ffn_norm, T(c.norm_eps));
        Var<T> ff = swiglu(tape, matmul_wt(tape, h, l.gate), matmul_wt(tape, h, l.up));
        return add(tape, r, matmul_wt(tape, ff, l.down));
    }

    template <class T>
    static autograd::Var<T> final_norm(autograd::Tape<T>& tape, const Config& c,
                                       const Weights<T>& w, const autograd::Var<T>& x) {
        return autograd::rms_norm(tape, x, w.final_norm, T(c.norm_eps));
    }

    /// Bind Hugging Face LLaMA names (`model.layers.N.self_attn.q_proj.weight`, ...).
    template <class T>
    static Weights<T> bind_hf(const Config& c, const WeightLookup<T>& get) {
        const Index d = c.dim, q = c.n_heads * c.head_dim(), kv = c.kv_dim(), h = c.hidden_dim;
        Weights<T> w;
        w.embed = get("model.embed_tokens.weight", c.vocab_size, d);
        for (Index i = 0; i < c.n_layers; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            w.layers.push_back({.attn_norm = get(p + "input_layernorm.weight", 1, d),
                                .wq = get(p + "self_attn.q_proj.weight", q, d),
                                .wk = get(p + "self_attn.k_proj.weight", kv, d),
                                .wv = get(p + "self_attn.v_proj.weight", kv, d),
                                .wo = get(p + "self_attn.o_proj.weight", d, q),
                                .ffn_norm = get(p + "post_attention_layernorm.weight", 1, d),
                                .gate = get(p + "mlp.gate_proj.weight", h, d),
                                .up = get(p + "mlp.up_proj.weight", h, d),
                                .down = get(p + "mlp.down_proj.weight", d, h)});
        }
        w.final_norm = get("model.norm.weight", 1, d);
        w.head = c.tied_head ? w.embed : get("lm_head.weight", c.vocab_size, d);
        return w;
    }
};

}  // namespace softprompt::nn
