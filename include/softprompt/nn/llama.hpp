#pragma once
// The LLaMA family: RMSNorm, SwiGLU feed-forward, RoPE (interleaved or half-split, optionally
// scaled), grouped-query attention, tied or untied head. The variants of the family are switches of
// the Config, not types: Llama 2/3, TinyLlama, SmolLM2 and Mistral are plain; Qwen2 adds biases to
// the q/k/v projections; Qwen3 normalises every query and key head (RMSNorm over hd, before RoPE)
// and has a head width of its own. Each function is one stage of a block on a tape.
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
    /// Separate q_proj, k_proj and v_proj.
    static constexpr bool kFusedQkv = false;
    /// Projections are nn.Linear weights stored [out, in].
    static constexpr bool kConv1dWeights = false;
    /// The weight table's module names are LlamaForCausalLM's own ("model.layers.0...."), as
    /// PEFT's adapter keys have them.
    static constexpr const char* kHfModelPrefix = "";

    template <class T>
    struct Layer {
        Weight<T> attn_norm;       // [1, d]
        Weight<T> wq, wk, wv, wo;  // [H*hd, d], [Hkv*hd, d], [Hkv*hd, d], [d, H*hd]
        Weight<T> bq, bk, bv;      // [1, H*hd], [1, Hkv*hd], [1, Hkv*hd] (qkv_bias; else empty)
        Weight<T> q_norm, k_norm;  // [1, hd] (qk_norm; else empty)
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

    /// The weight table (see nn/weights.hpp): every frozen tensor once, a tied head not repeated.
    /// W is Weights<T> or const Weights<T>; f(const WeightSpec&, W's Weight<T>&).
    template <class W, class F>
    static void for_each_weight(W& w, const Config& c, F&& f) {
        const Index d = c.dim, q = c.q_dim(), kv = c.kv_dim(), h = c.hidden_dim, hd = c.head_dim();
        using S = WeightSpec;
        f(S::matrix("model.embed_tokens.weight", "token_embd.weight", c.vocab_size, d), w.embed);
        for (std::size_t i = 0; i < w.layers.size(); ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            const std::string b = "blk." + std::to_string(i) + ".";
            auto& l = w.layers[i];
            f(S::vector(p + "input_layernorm.weight", b + "attn_norm.weight", d), l.attn_norm);
            f(S::matrix(p + "self_attn.q_proj.weight", b + "attn_q.weight", q, d, true), l.wq);
            f(S::matrix(p + "self_attn.k_proj.weight", b + "attn_k.weight", kv, d, true), l.wk);
            f(S::matrix(p + "self_attn.v_proj.weight", b + "attn_v.weight", kv, d), l.wv);
            if (c.qkv_bias) {
                f(S::vector(p + "self_attn.q_proj.bias", b + "attn_q.bias", q, true), l.bq);
                f(S::vector(p + "self_attn.k_proj.bias", b + "attn_k.bias", kv, true), l.bk);
                f(S::vector(p + "self_attn.v_proj.bias", b + "attn_v.bias", kv), l.bv);
            }
            if (c.qk_norm) {
                f(S::vector(p + "self_attn.q_norm.weight", b + "attn_q_norm.weight", hd, true),
                  l.q_norm);
                f(S::vector(p + "self_attn.k_norm.weight", b + "attn_k_norm.weight", hd, true),
                  l.k_norm);
            }
            f(S::matrix(p + "self_attn.o_proj.weight", b + "attn_output.weight", d, q), l.wo);
            f(S::vector(p + "post_attention_layernorm.weight", b + "ffn_norm.weight", d),
              l.ffn_norm);
            f(S::matrix(p + "mlp.gate_proj.weight", b + "ffn_gate.weight", h, d), l.gate);
            f(S::matrix(p + "mlp.up_proj.weight", b + "ffn_up.weight", h, d), l.up);
            f(S::matrix(p + "mlp.down_proj.weight", b + "ffn_down.weight", d, h), l.down);
        }
        f(S::vector("model.norm.weight", "output_norm.weight", d), w.final_norm);
        if (!c.tied_head) f(S::matrix("lm_head.weight", "output.weight", c.vocab_size, d), w.head);
    }

    /// The frozen weight that LoRA slot `slot` updates (LayerLora's order: q, k, v, o_proj), null
    /// for a slot outside 0..3. L is Layer<T>, maybe const.
    template <class L>
    static auto* lora_target(L& layer, int slot) {
        return slot == 0   ? &layer.wq
               : slot == 1 ? &layer.wk
               : slot == 2 ? &layer.wv
               : slot == 3 ? &layer.wo
                           : nullptr;
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
                                 .layout = c.rope_layout,
                                 .scaling = c.rope_scaling};
        // A projection, its bias when the model has one, and its LoRA delta (PEFT wraps the whole
        // nn.Linear, bias included, so the delta adds to x·Wᵀ + b).
        const Var<T> h = rms_norm(tape, x, l.attn_norm, T(c.norm_eps));
        auto project = [&](const Weight<T>& weight, const Weight<T>& bias,
                           const LoraDeltas<T>* delta) {
            Var<T> y = matmul_wt(tape, h, weight);
            if (!bias.empty()) y = add_bias(tape, y, bias);
            return with_lora(tape, h, y, delta);
        };
        Var<T> q = project(l.wq, l.bq, lora ? &lora->q : nullptr);
        Var<T> k = project(l.wk, l.bk, lora ? &lora->k : nullptr);
        Var<T> v = project(l.wv, l.bv, lora ? &lora->v : nullptr);
        if (c.qk_norm) {
            q = head_rms_norm(tape, q, l.q_norm, T(c.norm_eps));
            k = head_rms_norm(tape, k, l.k_norm, T(c.norm_eps));
        }
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

    /// Bind Hugging Face LLaMA-family names (`model.layers.N.self_attn.q_proj.weight`, ...).
    template <class T>
    static Weights<T> bind_hf(const Config& c, const WeightLookup<T>& get) {
        return bind_hf_weights<Llama, T>(c, get);
    }
};

}  // namespace softprompt::nn
