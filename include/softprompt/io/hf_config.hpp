#pragma once
// Hugging Face `config.json` <-> nn::Config, for the families the library runs.
//
//   model_type "gpt2"      n_embd, n_layer, n_head, vocab_size, n_positions and layer_norm_epsilon
//                          required; n_inner null/absent -> 4·n_embd; tie_word_embeddings defaults
//                          to true; activation_function (default gelu_new) must be a tanh GELU.
//   the LLaMA family       hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
//                          vocab_size, max_position_embeddings and rms_norm_eps required;
//                          num_key_value_heads null/absent -> heads; head_dim null/absent ->
//                          hidden_size / heads; rope_theta defaults to 10000; tie_word_embeddings
//                          to false; hidden_act (default silu) must be silu; RoPE is half-split;
//                          rope_scaling null, {"rope_type": "default"}, "linear" (factor) or
//                          "llama3" (factor, low_freq_factor, high_freq_factor,
//                          original_max_position_embeddings; `type` is read as `rope_type`).
//     "llama"              Llama 2 and 3.x, TinyLlama, SmolLM2 (all plain).
//     "mistral"            sliding_window (null = none, absent = 4096) -> Config::sliding_window.
//     "qwen2"              biases on q/k/v (always, as Qwen2's modelling code has them).
//     "qwen3"              RMSNorm of each query and key head (q_norm, k_norm); head_dim.
//   Qwen's use_sliding_window true sets Config::sliding_window to sliding_window when some layer
//   is windowed (max_window_layers, default 28, below num_hidden_layers).
// Defaults are transformers' own. Settings this library does not implement are refused rather than
// silently ignored, naming the key and its value: other rope_scaling types (dynamic, yarn,
// longrope, ...), attention_bias true (biases on every projection, o_proj's too) or mlp_bias true,
// GPT-2's scale_attn_by_inverse_layer_idx or unscaled attention. Sequences longer than a sliding
// window are refused at run time (Config::check_positions). Errors are ConfigError naming the file
// and the key (FormatError when the file is not JSON, IoError when it cannot be read).

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
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
    std::string model_type;  // as written ("gpt2", "llama", "mistral", "qwen2", "qwen3")
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

/// A `rope_scaling` object: {"rope_type" (or "type"): "linear" | "llama3" | "default", ...}.
inline kernels::RopeScaling rope_scaling(const nlohmann::json& j, const ConfigFields& parent) {
    using Kind = kernels::RopeScaling::Kind;
    if (!j.is_object()) parent.fail("rope_scaling is " + j.dump() + ", expected an object or null");
    const ConfigFields f(j, "rope_scaling");
    const std::string type = f.string_or("rope_type", f.string_or("type", ""));
    kernels::RopeScaling s;
    if (type == "default") return s;
    if (type != "linear" && type != "llama3")
        parent.fail("rope_scaling " + j.dump() + ": rope_type \"" + type +
                    "\" is not supported (supported: default, linear, llama3)");
    try {
        if (type == "linear") {
            s.kind = Kind::kLinear;
            s.factor = f.number("factor");
        } else {  // llama3
            s.kind = Kind::kLlama3;
            s.factor = f.number("factor");
            s.low_freq_factor = f.number("low_freq_factor");
            s.high_freq_factor = f.number("high_freq_factor");
            s.original_max_positions = double(f.count("original_max_position_embeddings"));
        }
        s.validate();
    } catch (const ConfigError& e) {
        parent.fail(std::string(e.what()));
    }
    return s;
}

/// The `rope_scaling` object that describes `s` (null for none).
inline nlohmann::json rope_scaling_json(const kernels::RopeScaling& s) {
    using Kind = kernels::RopeScaling::Kind;
    switch (s.kind) {
        case Kind::kNone:
            return nullptr;
        case Kind::kLinear:
            return {{"rope_type", "linear"}, {"factor", s.factor}};
        case Kind::kLlama3:
            return {{"rope_type", "llama3"},
                    {"factor", s.factor},
                    {"low_freq_factor", s.low_freq_factor},
                    {"high_freq_factor", s.high_freq_factor},
                    {"original_max_position_embeddings", std::int64_t(s.original_max_positions)}};
        case Kind::kFactors:
            // Only the frequencies are known (a GGUF's rope_freqs tensor), not the rule that
            // made them; config.json has no way to list them.
            throw ConfigError(
                "rope_scaling: per-frequency RoPE divisors (from a GGUF rope_freqs tensor) have no "
                "config.json form; save the Hugging Face checkpoint this GGUF was converted from");
    }
    return nullptr;
}

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
    } else if (out.model_type == "llama" || out.model_type == "mistral" ||
               out.model_type == "qwen2" || out.model_type == "qwen3") {
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
            c.rope_scaling = detail::rope_scaling(*s, f);
        // head_dim equal to hidden / heads is the default written out; anything else is a head
        // width of its own (Qwen3's 128 with hidden 1024 and 16 heads).
        const Index implied = c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0;
        const Index head_dim = f.count_or("head_dim", implied);
        if (head_dim == 0)
            f.fail("hidden_size " + std::to_string(c.dim) + " is not a multiple of " +
                   "num_attention_heads " + std::to_string(c.n_heads) +
                   " and no head_dim is given");
        if (head_dim != implied) c.explicit_head_dim = head_dim;
        if (f.boolean_or("attention_bias", false))
            f.fail(
                "attention_bias true (biases on every attention projection, o_proj's too) is "
                "not supported");
        if (f.boolean_or("mlp_bias", false)) f.fail("mlp_bias true is not supported");
        c.qkv_bias = out.model_type == "qwen2";
        c.qk_norm = out.model_type == "qwen3";
        if (out.model_type == "mistral") {
            // Absent: MistralConfig's default 4096; null: no window.
            c.sliding_window = !j.contains("sliding_window")      ? 4096
                               : j.at("sliding_window").is_null() ? 0
                                                                  : f.count("sliding_window");
        } else if (f.boolean_or("use_sliding_window", false) &&
                   f.count_or("max_window_layers", 28) < c.n_layers) {
            // Qwen windows the layers from max_window_layers on (default 28); below, attention
            // is full.
            c.sliding_window = f.count("sliding_window");
        }
    } else {
        f.fail("model_type \"" + out.model_type +
               "\" is not supported (expected gpt2, llama, mistral, qwen2 or qwen3)");
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
        // The variant decides the model_type: Qwen3 (q/k norms), Qwen2 (q/k/v biases), Mistral
        // (a sliding window), else Llama.
        if (c.qk_norm && c.qkv_bias)
            throw ConfigError(
                "hf_config_json: q/k/v biases together with q/k norms are no Hugging Face family");
        const char* type = c.qk_norm              ? "qwen3"
                           : c.qkv_bias           ? "qwen2"
                           : c.sliding_window > 0 ? "mistral"
                                                  : "llama";
        const std::map<std::string, std::string> architectures = {{"llama", "LlamaForCausalLM"},
                                                                  {"mistral", "MistralForCausalLM"},
                                                                  {"qwen2", "Qwen2ForCausalLM"},
                                                                  {"qwen3", "Qwen3ForCausalLM"}};
        const std::string& architecture = architectures.at(type);
        j = {{"architectures", {architecture}},
             {"model_type", type},
             {"hidden_act", "silu"},
             {"hidden_size", c.dim},
             {"intermediate_size", c.hidden_dim},
             {"num_hidden_layers", c.n_layers},
             {"num_attention_heads", c.n_heads},
             {"num_key_value_heads", c.n_kv_heads},
             {"head_dim", c.head_dim()},
             {"vocab_size", c.vocab_size},
             {"max_position_embeddings", c.max_seq_len},
             {"rms_norm_eps", c.norm_eps},
             {"rope_theta", c.rope_theta},
             {"rope_scaling", detail::rope_scaling_json(c.rope_scaling)},
             {"attention_bias", false},
             {"tie_word_embeddings", c.tied_head},
             {"torch_dtype", torch_dtype}};
        const std::string_view t = type;
        if (t == "mistral") j["sliding_window"] = c.sliding_window;
        if (t == "qwen2" || t == "qwen3") {
            j["use_sliding_window"] = c.sliding_window > 0;
            j["sliding_window"] =
                c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
        }
    }
    return j;
}

}  // namespace softprompt::io
