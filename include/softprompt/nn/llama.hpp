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
        Weight<T> attn_norm;       // [1, d]
        Weight<T> wq, wk, wv, wo;  // [H*hd, d], [Hkv*hd, d], [Hkv*hd, d], [d, H*hd]
        Weight<T> ffn_norm;        // [1, d]
        Weight<T> gate, up, down;  // [h, d], [h, d], [d, h]
    };

    template <class T>
    struct Weights {
        Weight<T> embed;  // [V, d]
        std::vector<Layer<T>> layers;
        Weight<T> final_norm;  // [1, d]
        Weight<T> head;        // [V, d]; the embedding itself when tied
    };

    template <class T>
    static const Weight<T>& token_embedding(const Weights<T>& w) {
        return w.embed;
    }

    /// Every frozen tensor once (a tied head is not repeated), with its Hugging Face name.
    template <class T, class F>
    static void for_each_weight(Weights<T>& w, const Config& c, F&& f) {
        f("model.embed_tokens.weight", w.embed);
        for (std::size_t i = 0; i < w.layers.size(); ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            Layer<T>& l = w.layers[i];
            f(p + "input_layernorm.weight", l.attn_norm);
            f(p + "self_attn.q_proj.weight", l.wq);
            f(p + "self_attn.k_proj.weight", l.wk);
            f(p + "self_attn.v_proj.weight", l.wv);
            f(p + "self_attn.o_proj.weight", l.wo);
            f(p + "post_attention_layernorm.weight", l.ffn_norm);
            f(p + "mlp.gate_proj.weight", l.gate);
            f(p + "mlp.up_proj.weight", l.up);
            f(p + "mlp.down_proj.weight", l.down);
        }
        f("model.norm.weight", w.final_norm);
        if (!c.tied_head) f("lm_head.weight", w.head);
    }

    /// Token embeddings (positions act later, through RoPE).
    template <class T>
    static autograd::Var<T> embed(autograd::Tape<T>& tape, const Config&, const Weights<T>& w,
                                  std::span<const std::int32_t> ids,
                                  std::span<const std::int32_t>) {
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
                                               std::span<const std::int32_t> positions,
                                               const LayerLora<T>* lora = nullptr) {
        using namespace autograd;
        const RopeSpec rope_spec{.head_dim = c.head_dim(),
                                 .rotary_dim = 0,
                                 .theta = c.rope_theta,
                                 .layout = c.rope_layout};
        Var<T> h = rms_norm(tape, x, l.attn_norm, T(c.norm_eps));
        Var<T> q = with_lora(tape, h, matmul_wt(tape, h, l.wq), lora ? &lora->q : nullptr);
        Var<T> k = with_lora(tape, h, matmul_wt(tape, h, l.wk), lora ? &lora->k : nullptr);
        Var<T> v = with_lora(tape, h, matmul_wt(tape, h, l.wv), lora ? &lora->v : nullptr);
        return {rope(tape, q, rope_spec, positions), rope(tape, k, rope_spec, positions), v};
    }

    /// Output projection, residual, SwiGLU feed-forward, residual.
    template <class T>
    static autograd::Var<T> finish_layer(autograd::Tape<T>& tape, const Config& c,
                                         const Layer<T>& l, const autograd::Var<T>& x,
                                         const autograd::Var<T>& attn,
                                         const LayerLora<T>* lora = nullptr) {
        using namespace autograd;
        Var<T> r = add(
            tape, x, with_lora(tape, attn, matmul_wt(tape, attn, l.wo), lora ? &lora->o : nullptr));
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
