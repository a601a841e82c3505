#pragma once
// The GPT-2 family: LayerNorm, GELU (tanh) feed-forward, learned positions, fused QKV with bias in
// Conv1D [in, out] layout, tied head. Each function is one stage of a block on a tape.
//   x, r: [N, d]    q, k, v: [N, d]    positions: [N]

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

struct Gpt2 {
    static constexpr const char* kName = "gpt2";
    /// Positions index a learned table of max_seq_len rows.
    static constexpr bool kLearnedPositions = true;

    template <class T>
    struct Layer {
        Weight<T> ln1_gain, ln1_bias;     // [1, d]
        Weight<T> qkv, qkv_bias;          // [d, 3d], [1, 3d]  (Conv1D: x·W + b)
        Weight<T> proj, proj_bias;        // [d, d], [1, d]
        Weight<T> ln2_gain, ln2_bias;     // [1, d]
        Weight<T> fc, fc_bias;            // [d, h], [1, h]
        Weight<T> fc_proj, fc_proj_bias;  // [h, d], [1, d]
    };

    template <class T>
    struct Weights {
        Weight<T> wte;  // [V, d]
        Weight<T> wpe;  // [max_seq_len, d]
        std::vector<Layer<T>> layers;
        Weight<T> lnf_gain, lnf_bias;  // [1, d]
        Weight<T> head;                // [V, d] = wte
    };

    template <class T>
    static const Weight<T>& token_embedding(const Weights<T>& w) {
        return w.wte;
    }

    /// Every frozen tensor once (the tied head is the embedding), with its Hugging Face name.
    template <class T, class F>
    static void for_each_weight(Weights<T>& w, const Config&, F&& f) {
        f("wte.weight", w.wte);
        f("wpe.weight", w.wpe);
        for (std::size_t i = 0; i < w.layers.size(); ++i) {
            const std::string p = "h." + std::to_string(i) + ".";
            Layer<T>& l = w.layers[i];
            f(p + "ln_1.weight", l.ln1_gain);
            f(p + "ln_1.bias", l.ln1_bias);
            f(p + "attn.c_attn.weight", l.qkv);
            f(p + "attn.c_attn.bias", l.qkv_bias);
            f(p + "attn.c_proj.weight", l.proj);
            f(p + "attn.c_proj.bias", l.proj_bias);
            f(p + "ln_2.weight", l.ln2_gain);
            f(p + "ln_2.bias", l.ln2_bias);
            f(p + "mlp.c_fc.weight", l.fc);
            f(p + "mlp.c_fc.bias", l.fc_bias);
            f(p + "mlp.c_proj.weight", l.fc_proj);
            f(p + "mlp.c_proj.bias", l.fc_proj_bias);
        }
        f("ln_f.weight", w.lnf_gain);
        f("ln_f.bias", w.lnf_bias);
    }

    /// Token embeddings plus the learned embeddings of their positions.
    template <class T>
    static autograd::Var<T> embed(autograd::Tape<T>& tape, const Config&, const Weights<T>& w,
                                  std::span<const std::int32_t> ids,
                                  std::span<const std::int32_t> positions) {
        return autograd::add(tape, autograd::gather_rows(tape, w.wte, ids),
                             autograd::gather_rows(tape, w.wpe, positions));
    }

    /// Virtual tokens get position embeddings like any input embedding.
    template <class T>
    static autograd::Var<T> place(autograd::Tape<T>& tape, const Config&, const Weights<T>& w,
                                  const autograd::Var<T>& x,
                                  std::span<const std::int32_t> positions) {
        return autograd::add(tape, x, autograd::gather_rows(tape, w.wpe, positions));
    }

    template <class T>
    static AttentionInputs<T> attention_inputs(autograd::Tape<T>& tape, const Config& c,
                                               const Layer<T>& l, const autograd::Var<T>& x,
                                               std::span<const std::int32_t>,
                                               const LayerLora<T>* lora = nullptr) {
        using namespace autograd;
        Var<T> h = layer_norm(tape, x, l.ln1_gain, l.ln1_bias, T(c.norm_eps));
        Var<T> qkv =
            with_lora(tape, h, matmul(tape, h, l.qkv, l.qkv_bias), lora ? &lora->q : nullptr);
        return {slice_cols(tape, qkv, 0, c.dim), slice_cols(tape, qkv, c.dim, c.dim),
                slice_cols(tape, qkv, 2 * c.dim, c.dim)};
    }

    /// Output projection, residual, GELU feed-forward, residual.
    template <class T>
    static autograd::Var<T> finish_layer(autograd::Tape<T>& tape, const Config& c,
                                         const Layer<T>& l, const autograd::Var<T>& x,
                                         const autograd::Var<T>& attn,
                                         const LayerLora<T>* lora = nullptr) {
        using namespace autograd;
        Var<T> proj = matmul(tape, attn, l.proj, l.proj_bias);
        Var<T> r = add(tape, x, with_lora(tape, attn, proj, lora ? &lora->o : nullptr));
        Var<T> h = layer_norm(tape, r, l.ln2_gain, l.ln2_bias, T(c.norm_eps));
        Var<T> ff = gelu(tape, matmul(tape, h, l.fc, l.fc_bias));
        return add(tape, r, matmul(tape, ff, l.fc_proj, l.fc_proj_bias));
    }

    template <class T>
    static autograd::Var<T> final_norm(autograd::Tape<T>& tape, const Config& c,
                                       const Weights<T>& w, const autograd::Var<T>& x) {
        return autograd::layer_norm(tape, x, w.lnf_gain, w.lnf_bias, T(c.norm_eps));
    }

    /// Bind Hugging Face GPT-2 names (`wte.weight`, `h.N.attn.c_attn.weight`, ...).
    template <class T>
    static Weights<T> bind_hf(const Config& c, const WeightLookup<T>& get) {
        const Index d = c.dim, h = c.hidden_dim;
        Weights<T> w;
        w.wte = get("wte.weight", c.vocab_size, d);
        w.wpe = get("wpe.weight", c.max_seq_len, d);
        for (Index i = 0; i < c.n_layers; ++i) {
            const std::string p = "h." + std::to_string(i) + ".";
            w.layers.push_back({.ln1_gain = get(p + "ln_1.weight", 1, d),
                                .ln1_bias = get(p + "ln_1.bias", 1, d),
                                .qkv = get(p + "attn.c_attn.weight", d, 3 * d),
                                .qkv_bias = get(p + "attn.c_attn.bias", 1, 3 * d),
                                .proj = get(p + "attn.c_proj.weight", d, d),
                                .proj_bias = get(p + "attn.c_proj.bias", 1, d),
                                .ln2_gain = get(p + "ln_2.weight", 1, d),
                                .ln2_bias = get(p + "ln_2.bias", 1, d),
                                .fc = get(p + "mlp.c_fc.weight", d, h),
                                .fc_bias = get(p + "mlp.c_fc.bias", 1, h),
                                .fc_proj = get(p + "mlp.c_proj.weight", h, d),
                                .fc_proj_bias = get(p + "mlp.c_proj.bias", 1, d)});
        }
        w.lnf_gain = get("ln_f.weight", 1, d);
        w.lnf_bias = get("ln_f.bias", 1, d);
        w.head = w.wte;
        return w;
    }
};

}  // namespace softprompt::nn
