#pragma once
// The GPT-2 family: LayerNorm, GELU (tanh) feed-forward, learned positions, fused QKV with bias in
// Conv1D [in, out] layout, tied head. Each function is one stage of a block on a tape.
//   x, r: [N, d]    q, k, v: [N, d]    positions: [N]

#include <cstdint>
#include <span>
#include <string>
#include <utility>
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
    /// One fused c_attn projection makes q, k and v (LoRA adapts it as a whole).
    static constexpr bool kFusedQkv = true;
    /// Projections are Conv1D weights stored [in, out] (PEFT's fan_in_fan_out).
    static constexpr bool kConv1dWeights = true;
    /// What GPT2LMHeadModel puts before the weight table's module names ("transformer.h.0...."):
    /// PEFT's adapter keys carry it.
    static constexpr const char* kHfModelPrefix = "transformer.";

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

    /// The weight table (see nn/weights.hpp): every frozen tensor once, a tied head not repeated.
    /// Hugging Face names without the `transformer.` prefix that GPT2LMHeadModel adds (loaders
    /// accept both); Conv1D weights are [in, out], and GGUF (llama.cpp's "gpt2") stores them
    /// transposed. W is Weights<T> or const Weights<T>; f(const WeightSpec&, W's Weight<T>&).
    template <class W, class F>
    static void for_each_weight(W& w, const Config& c, F&& f) {
        const Index d = c.dim, h = c.hidden_dim;
        using S = WeightSpec;
        f(S::matrix("wte.weight", "token_embd.weight", c.vocab_size, d), w.wte);
        f(S::matrix("wpe.weight", "position_embd.weight", c.max_seq_len, d), w.wpe);
        for (std::size_t i = 0; i < w.layers.size(); ++i) {
            const std::string p = "h." + std::to_string(i) + ".";
            const std::string g = "blk." + std::to_string(i) + ".";
            auto& l = w.layers[i];
            f(S::vector(p + "ln_1.weight", g + "attn_norm.weight", d), l.ln1_gain);
            f(S::vector(p + "ln_1.bias", g + "attn_norm.bias", d), l.ln1_bias);
            f(S::conv1d(p + "attn.c_attn.weight", g + "attn_qkv.weight", d, 3 * d), l.qkv);
            f(S::vector(p + "attn.c_attn.bias", g + "attn_qkv.bias", 3 * d), l.qkv_bias);
            f(S::conv1d(p + "attn.c_proj.weight", g + "attn_output.weight", d, d), l.proj);
            f(S::vector(p + "attn.c_proj.bias", g + "attn_output.bias", d), l.proj_bias);
            f(S::vector(p + "ln_2.weight", g + "ffn_norm.weight", d), l.ln2_gain);
            f(S::vector(p + "ln_2.bias", g + "ffn_norm.bias", d), l.ln2_bias);
            f(S::conv1d(p + "mlp.c_fc.weight", g + "ffn_up.weight", d, h), l.fc);
            f(S::vector(p + "mlp.c_fc.bias", g + "ffn_up.bias", h), l.fc_bias);
            f(S::conv1d(p + "mlp.c_proj.weight", g + "ffn_down.weight", h, d), l.fc_proj);
            f(S::vector(p + "mlp.c_proj.bias", g + "ffn_down.bias", d), l.fc_proj_bias);
        }
        f(S::vector("ln_f.weight", "output_norm.weight", d), w.lnf_gain);
        f(S::vector("ln_f.bias", "output_norm.bias", d), w.lnf_bias);
        if (!c.tied_head) f(S::matrix("lm_head.weight", "output.weight", c.vocab_size, d), w.head);
    }

    /// Throws ConfigError for a setting of the LLaMA family, which this architecture has not.
    static void check_config(const Config& c) {
        const std::pair<bool, const char*> llama_only[] = {
            {c.qkv_bias, "qkv_bias"},
            {c.qk_norm, "qk_norm"},
            {c.explicit_head_dim > 0, "explicit_head_dim"},
            {c.sliding_window > 0, "sliding_window"},
            {c.rope_scaling.kind != kernels::RopeScaling::Kind::kNone, "rope_scaling"}};
        for (const auto& [set, name] : llama_only)
            if (set)
                throw ConfigError(std::string("GPT-2: Config.") + name +
                                  " is a LLaMA-family setting; GPT-2 has no such variant");
    }

    /// The frozen weight that LoRA slot `slot` updates (LayerLora's order): 0 the fused c_attn,
    /// 3 c_proj; null for 1 and 2 (key and value are inside c_attn). L is Layer<T>, maybe const.
    template <class L>
    static auto* lora_target(L& layer, int slot) {
        return slot == 0 ? &layer.qkv : slot == 3 ? &layer.proj : nullptr;
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
        check_config(c);
        return bind_hf_weights<Gpt2, T>(c, get);
    }
};

}  // namespace softprompt::nn
