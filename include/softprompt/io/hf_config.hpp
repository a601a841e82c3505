#pragma once
// Hugging Face `config.json` <-> nn::Config, for the two families the library runs.
//
//   model_type "gpt2"               n_embd, n_layer, n_head, vocab_size, n_positions and
//                                   layer_norm_epsilon required; n_inner null/absent -> 4·n_embd;
//                                   tie_word_embeddings defaults to true; activation_function
//                                   (default gelu_new) must be a tanh GELU.
//   model_type "llama", "mistral"   hidden_size, intermediate_size, num_hidden_layers,
//                                   num_attention_heads, vocab_size, max_position_embeddings and
//                                   rms_norm_eps required; num_key_value_heads null/absent ->
//                                   heads; rope_theta defaults to 10000; tie_word_embeddings to
//                                   false; hidden_act (default silu) must be silu; RoPE is
//                                   half-split.
// Defaults are transformers' own. Settings this library does not implement are refused rather than
// silently ignored: rope_scaling other than null, a head_dim other than hidden/heads, attention or
// MLP biases in LLaMA, GPT-2's scale_attn_by_inverse_layer_idx or unscaled attention. A Mistral
// sliding window only matters for sequences longer than the window, so max_seq_len is capped to it.
// Errors are ConfigError naming the file and the key (FormatError when the file is not JSON,
// IoError when it cannot be read).

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "softprompt/error.hpp"
#include "softprompt/kernels/rope.hpp"
#include "softprompt/nn/config.hpp"

namespace softprompt::io {

enum class HfFamily { kGpt2, kLlama };

/// "gpt2" or "llama" (the names of nn::Gpt2::kName and nn::Llama::kName).
constexpr std::string_view family_name(HfFamily f) {
    return f == HfFamily::kGpt2 ? "gpt2" : "llama";
}

/// What a config.json describes.
struct HfConfig {
    HfFamily family = HfFamily::kLlama;
    std::string model_type;  // as written ("gpt2", "llama", "mistral")
    nn::Config config;
};

namespace detail {

/// Typed access to a config object; every error names the source file and the key.
class ConfigFields {
public:
    ConfigFields(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {}

    /// The value of `key`, or nullptr when absent or null.
    const nlohmann::json* find(const char* key) const {
        const auto it = j_.find(key);
        return it == j_.end() || it->is_null() ? nullptr : &*it;
    }
    const nlohmann::json& required(const char* key) const {
        const nlohmann::json* v = find(key);
        if (!v) fail(std::string("missing required key \"") + key + "\"");
        return *v;
    }
    Index count(const char* key) const { return as_count(key, required(key)); }
    Index count_or(const char* key, Index fallback) const {
        const nlohmann::json* v = find(key);
        return v ? as_count(key, *v) : fallback;
    }
    double number(const char* key) const { return as_number(key, required(key)); }
    double number_or(const char* key, double fallback) const {
        const nlohmann::json* v = find(key);
        return v ? as_number(key, *v) : fallback;
    }
    bool boolean_or(const char* key, bool fallback) const {
        const nlohmann::json* v = find(key);
        if (!v) return fallback;
        if (!v->is_boolean())
            fail(std::string("\"") + key + "\" is " + v->dump() + ", expected true or false");
        return v->get<bool>();
    }
    std::string string_or(const char* key, const std::string& fallback) const {
        const nlohmann::json* v = find(key);
        if (!v) return fallback;
        if (!v->is_string())
            fail(std::string("\"") + key + "\" is " + v->dump() + ", expected a string");
        return v->get<std::string>();
    }

    [[noreturn]] void fail(const std::string& what) const {
        throw ConfigError(source_ + ": " + what);
    }

private:
    Index as_count(const char* key, const nlohmann::json& v) const {
        // Integers only (a 768.0 is a sign of a broken file), positive, and small enough to be a
        // size.
        if (!v.is_number_integer() || v.get<std::int64_t>() <= 0 ||
            v.get<std::int64_t>() > (std::int64_t(1) << 40))
            fail(std::string("\"") + key + "\" is " + v.dump() + ", expected a positive integer");
        return Index(v.get<std::int64_t>());
    }
    double as_number(const char* key, const nlohmann::json& v) const {
        if (!v.is_number())
            fail(std::string("\"") + key + "\" is " + v.dump() + ", expected a number");
        return v.get<double>();
    }

    const nlohmann::json& j_;
    std::string source_;
};

}  // namespace detail

/// Interpret a parsed config.json; `source` names it in errors.
inline HfConfig parse_hf_config(const nlohmann::json& j, const std::string& source) {
    if (!j.is_object())
        throw ConfigError(source + ": expected a JSON object, found a " + j.type_name());
    const detail::ConfigFields f(j, source);
    HfConfig out;
    const nlohmann::json& type = f.required("model_type");
    if (!type.is_string()) f.fail("\"model_type\" is " + type.dump() + ", expected a string");
    out.model_type = type.get<std::string>();
    nn::Config& c = out.config;
    if (out.model_type == "gpt2") {
        out.family = HfFamily::kGpt2;
        c.dim = f.count("n_embd");
        c.n_layers = f.count("n_layer");
        c.n_heads = f.count("n_head");
        c.n_kv_heads = c.n_heads;
        c.hidden_dim = f.count_or("n_inner", 4 * c.dim);
        c.vocab_size = f.count("vocab_size");
        c.max_seq_len = f.count("n_positions");
        c.norm_eps = f.number("layer_norm_epsilon");
        c.tied_head = f.boolean_or("tie_word_embeddings", true);
        // gelu_new, gelu_fast and gelu_pytorch_tanh are the same tanh approximation.
        const std::string act = f.string_or("activation_function", "gelu_new");
        if (act != "gelu_new" && act != "gelu_fast" && act != "gelu_pytorch_tanh")
            f.fail("activation_function \"" + act +
                   "\" is not supported (GPT-2 here uses the tanh "
                   "GELU: gelu_new)");
        if (!f.boolean_or("scale_attn_weights", true))
            f.fail("scale_attn_weights false (unscaled attention) is not supported");
        if (f.boolean_or("scale_attn_by_inverse_layer_idx", false))
            f.fail("scale_attn_by_inverse_layer_idx true is not supported");
    } else if (out.model_type == "llama" || out.model_type == "mistral") {
        out.family = HfFamily::kLlama;
        c.dim = f.count("hidden_size");
        c.hidden_dim = f.count("intermediate_size");
        c.n_layers = f.count("num_hidden_layers");
        c.n_heads = f.count("num_attention_heads");
        c.n_kv_heads = f.count_or("num_key_value_heads", c.n_heads);
        c.vocab_size = f.count("vocab_size");
        c.max_seq_len = f.count("max_position_embeddings");
        c.norm_eps = f.number("rms_norm_eps");
        c.rope_theta = f.number_or("rope_theta", 10000.0);
        c.tied_head = f.boolean_or("tie_word_embeddings", false);
        c.rope_layout =
            kernels::RopeLayout::kHalfSplit;  // HF LLaMA rotates the two halves of a head
        const std::string act = f.string_or("hidden_act", "silu");
        if (act != "silu") f.fail("hidden_act \"" + act + "\" is not supported (expected silu)");
        if (const nlohmann::json* s = f.find("rope_scaling"))
            f.fail("rope_scaling " + s->dump() + " is not supported (only null)");
        if (c.dim % c.n_heads == 0 &&
            f.count_or("head_dim", c.dim / c.n_heads) != c.dim / c.n_heads)
            f.fail("head_dim " + f.find("head_dim")->dump() + " differs from hidden_size / " +
                   "num_attention_heads = " + std::to_string(c.dim / c.n_heads) +
                   "; not supported");
        if (f.boolean_or("attention_bias", false)) f.fail("attention_bias true is not supported");
        if (f.boolean_or("mlp_bias", false)) f.fail("mlp_bias true is not supported");
        // Attention limited to a window of W keys equals full attention on sequences of at most W.
        if (out.model_type == "mistral")
            c.max_seq_len = std::min(c.max_seq_len, f.count_or("sliding_window", c.max_seq_len));
    } else {
        f.fail("model_type \"" + out.model_type +
               "\" is not supported (expected gpt2, llama or mistral)");
    }
    try {
        c.validate();
    } catch (const ConfigError& e) {
        throw ConfigError(source + ": " + e.what());
    }
    return out;
}

/// Read and interpret `path` (a config.json).
inline HfConfig read_hf_config(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError("cannot open '" + path + "'");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw IoError("cannot read '" + path + "'");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        throw FormatError::at(path, e.byte == 0 ? 0 : e.byte - 1,
                              std::string("not valid JSON: ") + e.what());
    } catch (const nlohmann::json::exception& e) {
        // nlohmann reports a number too large for a double (1e400) as out_of_range.
        throw FormatError(path + ": not valid JSON: " + e.what());
    }
    return parse_hf_config(j, path);
}

/// The config.json that describes `c` to transformers (keys sorted, as save_pretrained writes
/// them). `torch_dtype` is informational ("float32", "float16", "bfloat16").
inline nlohmann::json hf_config_json(HfFamily family, const nn::Config& c,
                                     const std::string& torch_dtype = "float32") {
    c.validate();
    nlohmann::json j;
    if (family == HfFamily::kGpt2) {
        if (c.n_kv_heads != c.n_heads)
            throw ConfigError("hf_config_json: GPT-2 has no grouped-query attention (n_kv_heads " +
                              std::to_string(c.n_kv_heads) + " != n_heads " +
                              std::to_string(c.n_heads) + ")");
        j = {{"architectures", {"GPT2LMHeadModel"}},
             {"model_type", "gpt2"},
             {"activation_function", "gelu_new"},
             {"n_embd", c.dim},
             {"n_layer", c.n_layers},
             {"n_head", c.n_heads},
             {"n_inner", c.hidden_dim},
             {"vocab_size", c.vocab_size},
             {"n_positions", c.max_seq_len},
             {"n_ctx", c.max_seq_len},
             {"layer_norm_epsilon", c.norm_eps},
             {"tie_word_embeddings", c.tied_head},
             {"torch_dtype", torch_dtype}};
    } else {
        j = {{"architectures", {"LlamaForCausalLM"}},
             {"model_type", "llama"},
             {"hidden_act", "silu"},
             {"hidden_size", c.dim},
             {"intermediate_size", c.hidden_dim},
             {"num_hidden_layers", c.n_layers},
             {"num_attention_heads", c.n_heads},
             {"num_key_value_heads", c.n_kv_heads},
             {"vocab_size", c.vocab_size},
             {"max_position_embeddings", c.max_seq_len},
             {"rms_norm_eps", c.norm_eps},
             {"rope_theta", c.rope_theta},
             {"rope_scaling", nullptr},
             {"attention_bias", false},
             {"tie_word_embeddings", c.tied_head},
             {"torch_dtype", torch_dtype}};
    }
    return j;
}

}  // namespace softprompt::io
