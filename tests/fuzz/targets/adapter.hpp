#pragma once
// PEFT adapter folders: load_adapter (adapter_config.json checks, then adapter_model.safetensors
// against the model's shapes), then building the method it describes. The input is
// adapter_config.json and adapter_model.safetensors joined by softprompt_fuzz::kSplit.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../fuzz_util.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/peft/adapter_io.hpp"

namespace softprompt_fuzz::adapter_detail {

// A small LLaMA shape with grouped-query attention (Dkv = 4 != d = 8), so that prompt and prefix
// widths differ. The seeds are adapters saved by the library for this shape.
inline softprompt::nn::Config small_config() {
    softprompt::nn::Config c;
    c.dim = 8;
    c.hidden_dim = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.vocab_size = 16;
    c.max_seq_len = 32;
    return c;
}

}  // namespace softprompt_fuzz::adapter_detail

namespace softprompt_fuzz {

/// One input of the adapter target (see the top of this file).
inline void adapter(std::string_view input) {
    using namespace softprompt;
    static const nn::Config config = adapter_detail::small_config();
    const auto [json, weights] = softprompt_fuzz::split(input);
    softprompt_fuzz::scratch_file(peft::kAdapterConfig, json);
    softprompt_fuzz::scratch_file(peft::kAdapterWeights, weights);
    try {
        const peft::LoadedAdapter a =
            peft::load_adapter(softprompt_fuzz::scratch_dir().string(), config);
        if (a.kind == peft::MethodKind::kLora)
            (void)peft::lora_method<nn::Llama>(a, config);
        else
            (void)peft::prompt_method<nn::Llama>(a, config);
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
