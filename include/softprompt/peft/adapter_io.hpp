#pragma once
// Adapter files in Hugging Face PEFT's format.
//
// PEFT adapter folder:
//   adapter_model.safetensors   F32, metadata {"format": "pt"}
//     prompt tuning, P-tuning:  "prompt_embeddings" [P, d] (P-tuning: the prompt encoder's output)
//     prefix tuning:            "prompt_embeddings" [P, L·2·Dkv], column ((2l + kv)·Hkv + h)·hd + j
//                               (a reparameterised prefix is folded first)
//     LoRA:                     "base_model.model.<module>.lora_A.weight" [r, in] and
//                               ".lora_B.weight" [out, r] for each adapted module, <module> the
//                               model class's path: "model.layers.0.self_attn.q_proj"
//                               (LlamaForCausalLM), "transformer.h.0.attn.c_attn" (GPT2LMHeadModel)
//                               as PEFT's get_peft_model_state_dict names them. target_modules
//                               is a list of names or one regular expression; rank_pattern and
//                               alpha_pattern give modules their own rank and alpha; use_rslora
//                               scales by α/√r. Config fields that would change the computation
//                               in ways not implemented (use_dora, modules_to_save,
//                               layers_to_transform, ...) are refused, naming the field.
//     q/k head elements are in the Hugging Face checkpoints' order; a LLaMA with interleaved
//     RoPE (llama2.c, GGUF) converts its LoRA q/k lora_B rows and prefix keys
//     (peft/head_order.hpp).
//   adapter_config.json         the fields of PEFT's config (kPeftVersion; LoRA: all of them) in
//                               sorted order, as save_pretrained writes them: peft_type,
//                               task_type "CAUSAL_LM", inference_mode true, and the method's
//                               fields; prefix tuning writes token_dim = Dkv and
//                               num_attention_heads = Hkv (grouped-query attention), as PEFT does.
//                               tests/data/peft/ holds PEFT's own files of every method.
// Saving over an existing adapter, each file is replaced atomically (temporary file, fsync,
// rename), the weights first, then the config. What a process killed at any instant of
// save_adapter leaves (tests/crash_test.cpp kills 200 saves of the first kind below):
//   - each file whole: the old one or the new one, never a mix of their bytes;
//   - when the new config text equals the old one (the same method and sizes, only values
//     differ, as every save of one training run), the config is not rewritten, and the folder
//     holds the old adapter or the new one: new weights beside the identical config are the new
//     adapter;
//   - when the config changes, the old adapter_config.json is removed before the new weights go in
//     place, so a pair from two different saves is never left: the folder holds the old adapter,
//     the new one, or no config at all (load_adapter then throws IoError; save again).
// A killed save may leave its `<file>.tmp-XXXXXXXX` beside the files; loads never read it and the
// next save of that file removes it (see io/safetensors.hpp).
//
// The training state saved beside an adapter (training_state.safetensors) is
// train/training_state.hpp's.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "softprompt/io/safetensors.hpp"
#include "softprompt/peft/head_order.hpp"
#include "softprompt/peft/lora.hpp"
#include "softprompt/peft/method.hpp"
#include "softprompt/peft/p_tuning.hpp"
#include "softprompt/peft/prefix_tuning.hpp"
#include "softprompt/peft/prompt_tuning.hpp"

namespace softprompt::peft {

inline constexpr const char* kAdapterWeights = "adapter_model.safetensors";
inline constexpr const char* kAdapterConfig = "adapter_config.json";
/// The PEFT release whose adapter_config.json fields save_adapter writes (LoRA: every field of its
/// LoraConfig); load_adapter reads the files of every release since 0.6.
inline constexpr const char* kPeftVersion = "0.19.1";

namespace detail {

inline void write_text_atomically(const std::string& path, const std::string& text) {
    io::detail::AtomicFile out(path);
    out.write(text.data(), text.size());
    out.commit();
}

// The bytes of a regular file, or nothing when it cannot be read (absent, unreadable).
inline std::optional<std::string> read_whole_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return std::nullopt;
    return text;
}

// Makes a removal in `dir` durable before what follows it (best effort, like AtomicFile's).
inline void sync_folder(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
}

inline nlohmann::ordered_json base_config(MethodKind kind, const nn::Config& c,
                                          const std::string& base_model) {
    nlohmann::ordered_json j;
    j["peft_type"] = method_name(kind);
    j["task_type"] = "CAUSAL_LM";
    j["inference_mode"] = true;
    j["base_model_name_or_path"] =
        base_model.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(base_model);
    j["revision"] = nullptr;
    j["peft_version"] = kPeftVersion;
    j["auto_mapping"] = nullptr;
    if (kind != MethodKind::kLora) {
        j["num_transformer_submodules"] = 1;
        j["num_layers"] = c.n_layers;
        j["token_dim"] = c.dim;
        j["num_attention_heads"] = c.n_heads;
    }
    return j;
}

/// PEFT's key of a module: "base_model.model." + the model class's own module path.
template <class Arch>
std::string lora_key_prefix() {
    return std::string("base_model.model.") + Arch::kHfModelPrefix;
}

/// The name a target_modules list gives a module so that PEFT's suffix match selects exactly it:
/// the last component, except GPT-2's attention c_proj ("attn.c_proj"), whose last component
/// alone also matches the feed-forward's mlp.c_proj.
template <class Arch>
std::string lora_target_name(const std::string& module) {
    const std::string last = module.substr(module.rfind('.') + 1);
    if (Arch::kFusedQkv && last == "c_proj") return "attn.c_proj";
    return last;
}

}  // namespace detail

/// A PEFT adapter as a plain value: what its two files hold, tensors in the file's order (PEFT's
/// names and head order). load_adapter reads one from a folder, export_adapter makes one from a
/// trained method, save_adapter writes one, prompt_method / lora_method / Registry use one.
struct Adapter {
    MethodKind kind = MethodKind::kPromptTuning;
    nlohmann::ordered_json config;              // in the file's order (rank_pattern's first match)
    Mat<float> prompt_embeddings;               // prompt-based methods
    std::map<std::string, Mat<float>> tensors;  // LoRA: every lora_A / lora_B, by file key
};
/// The name of earlier releases.
using LoadedAdapter = Adapter;

/// The adapter a trained method saves: its PEFT config (base_model recorded as
/// base_model_name_or_path when given) and its tensors as PEFT stores them (a reparameterised
/// prefix folded, P-tuning's encoder run, q/k heads in PEFT's order).
template <class Arch>
Adapter export_adapter(Method<float>& method, const nn::Model<Arch, float>& model,
                       const std::string& base_model = {}) {
    const nn::Config& c = model.config;
    Adapter a;
    a.kind = method.kind();
    nlohmann::ordered_json& config = a.config;
    config = detail::base_config(method.kind(), c, base_model);
    const bool reorder = heads_interleaved<Arch>(c);  // q/k heads in the file's order
    switch (method.kind()) {
        case MethodKind::kPromptTuning: {
            auto& m = static_cast<PromptTuning<float>&>(method);
            a.prompt_embeddings = m.embeddings().value();
            config["num_virtual_tokens"] = m.num_virtual_tokens();
            const PromptInit& init = m.init();
            config["prompt_tuning_init"] = prompt_init_name(init.kind);
            config["prompt_tuning_init_text"] = nullptr;
            config["tokenizer_name_or_path"] = nullptr;
            if (init.kind == PromptInit::Kind::kText) {
                // PEFT runs the TEXT initialisation again when it loads the adapter: it needs
                // the text and a tokenizer it can load (save_adapter checks there is one).
                const std::string tokenizer = init.tokenizer.empty() ? base_model : init.tokenizer;
                config["prompt_tuning_init_text"] = init.text;
                if (!tokenizer.empty()) config["tokenizer_name_or_path"] = tokenizer;
            }
            config["tokenizer_kwargs"] = nullptr;
            break;
        }
        case MethodKind::kPTuning: {
            auto& m = static_cast<PTuning<float>&>(method);
            a.prompt_embeddings = m.virtual_tokens();
            config["num_virtual_tokens"] = m.num_virtual_tokens();
            config["encoder_reparameterization_type"] =
                m.options().encoder == PromptEncoderType::kLstm ? "LSTM" : "MLP";
            config["encoder_hidden_size"] = m.hidden_size();
            config["encoder_num_layers"] = m.options().encoder_num_layers;
            config["encoder_dropout"] = 0.0;
            break;
        }
        case MethodKind::kPrefixTuning: {
            auto& m = static_cast<PrefixTuning<float>&>(method);
            a.prompt_embeddings = m.fold();
            if (reorder) reorder_prefix_keys(a.prompt_embeddings, c, HeadOrder::kToFile);
            config["num_virtual_tokens"] = m.num_virtual_tokens();
            config["token_dim"] = c.kv_dim();
            config["num_attention_heads"] = c.n_kv_heads;
            config["encoder_hidden_size"] = c.dim;
            config["prefix_projection"] = false;  // stored folded: a plain prefix
            break;
        }
        case MethodKind::kLora: {
            auto& m = static_cast<Lora<Arch, float>&>(method);
            std::set<std::string> targets;
            for (const auto& u : m.updates()) {
                const std::string key = detail::lora_key_prefix<Arch>() + u.module;
                a.tensors[key + ".lora_A.weight"] = u.a->value();
                Mat<float>& b = a.tensors[key + ".lora_B.weight"] = u.b->value();
                if (reorder && (u.slot == 0 || u.slot == 1))  // q_proj, k_proj
                    reorder_head_rows(b, 0, u.slot == 0 ? c.n_heads : c.n_kv_heads, c.head_dim(),
                                      HeadOrder::kToFile);
                targets.insert(detail::lora_target_name<Arch>(u.module));
            }
            config["r"] = m.options().rank;
            config["lora_alpha"] = m.options().alpha;
            config["use_rslora"] = m.options().rslora;
            config["lora_dropout"] = 0.0;
            config["bias"] = "none";
            config["fan_in_fan_out"] = Arch::kConv1dWeights;
            if (m.options().target_regex.empty())
                config["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
            else
                config["target_modules"] = m.options().target_regex;
            nlohmann::ordered_json ranks = nlohmann::ordered_json::object(),
                                   alphas = nlohmann::ordered_json::object();
            for (const auto& [pattern, r] : m.options().rank_pattern) ranks[pattern] = r;
            for (const auto& [pattern, alpha] : m.options().alpha_pattern) alphas[pattern] = alpha;
            config["rank_pattern"] = ranks;
            config["alpha_pattern"] = alphas;
            config["init_lora_weights"] = true;
            config["use_dora"] = false;
            config["use_qalora"] = false;
            config["qalora_group_size"] = 16;
            config["lora_bias"] = false;
            config["use_bdlora"] = nullptr;
            config["ensure_weight_tying"] = false;
            config["megatron_core"] = "megatron.core";
            config["loftq_config"] = nlohmann::ordered_json::object();
            for (const char* unset :
                 {"alora_invocation_tokens", "arrow_config", "corda_config", "eva_config",
                  "exclude_modules", "layer_replication", "layers_pattern", "layers_to_transform",
                  "lora_ga_config", "megatron_config", "modules_to_save", "target_parameters",
                  "trainable_token_indices"})
                config[unset] = nullptr;
            break;
        }
    }
    // Top-level fields in sorted order, as PEFT's save_pretrained writes them (json sort_keys);
    // patterns keep their order, which decides the first match.
    std::vector<std::string> keys;
    for (const auto& item : config.items()) keys.push_back(item.key());
    std::sort(keys.begin(), keys.end());
    nlohmann::ordered_json sorted;
    for (const std::string& key : keys) sorted[key] = config[key];
    config = std::move(sorted);
    return a;
}

/// Write an adapter as a PEFT adapter folder (created if needed).
inline void save_adapter(const std::string& dir, const Adapter& adapter) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw IoError("save_adapter: cannot create folder '" + dir + "': " + ec.message());
    auto text_or_empty = [&](const char* key) {
        const auto it = adapter.config.find(key);
        return it != adapter.config.end() && it->is_string() ? it->get<std::string>()
                                                             : std::string();
    };
    if (text_or_empty("prompt_tuning_init") == "TEXT" &&
        text_or_empty("prompt_tuning_init_text").empty())
        throw ConfigError("save_adapter: '" + dir +
                          "': prompt tuning initialised from text needs the text (PEFT re-runs "
                          "the initialisation when it loads the adapter)");
    if (text_or_empty("prompt_tuning_init") == "TEXT" &&
        text_or_empty("tokenizer_name_or_path").empty())
        throw ConfigError(
            "save_adapter: '" + dir +
            "': prompt tuning initialised from text needs a tokenizer name, or PEFT cannot load "
            "the adapter (PromptInit::tokenizer, or the base model's name)");
    std::map<std::string, io::TensorSource> tensors;
    if (adapter.kind == MethodKind::kLora) {
        for (const auto& [key, m] : adapter.tensors) tensors.emplace(key, io::TensorSource(m));
    } else {
        tensors.emplace("prompt_embeddings", io::TensorSource(adapter.prompt_embeddings));
    }
    // The weights and the config are two files, replaced one after the other (the guarantee is
    // spelled out at the top of this file). A config that changes is retracted first, so that a
    // crash between the two renames cannot pair new weights with an old, different config.
    const std::string config_path = (fs::path(dir) / kAdapterConfig).string();
    const std::string config_text = adapter.config.dump(2) + "\n";
    const std::optional<std::string> old_config = detail::read_whole_file(config_path);
    if (old_config && *old_config != config_text) {
        if (::unlink(config_path.c_str()) != 0 && errno != ENOENT)
            throw io::detail::io_error("save_adapter: cannot replace", config_path, errno);
        detail::sync_folder(dir);
    }
    io::write_safetensors((fs::path(dir) / kAdapterWeights).string(), tensors, {{"format", "pt"}});
    if (old_config != config_text) detail::write_text_atomically(config_path, config_text);
}

/// Save a trained method as a PEFT adapter folder: save_adapter(dir, export_adapter(...)).
template <class Arch>
void save_adapter(const std::string& dir, Method<float>& method,
                  const nn::Model<Arch, float>& model, const std::string& base_model = {}) {
    save_adapter(dir, export_adapter(method, model, base_model));
}

namespace detail {

// Fields PEFT writes for prompt-learning and LoRA configs; anything else is reported.
inline const std::set<std::string>& known_config_fields() {
    static const std::set<std::string> known = {"peft_type",
                                                "task_type",
                                                "inference_mode",
                                                "base_model_name_or_path",
                                                "revision",
                                                "auto_mapping",
                                                "num_virtual_tokens",
                                                "token_dim",
                                                "num_transformer_submodules",
                                                "num_attention_heads",
                                                "num_layers",
                                                "prompt_tuning_init",
                                                "prompt_tuning_init_text",
                                                "tokenizer_name_or_path",
                                                "tokenizer_kwargs",
                                                "encoder_hidden_size",
                                                "prefix_projection",
                                                "encoder_reparameterization_type",
                                                "encoder_num_layers",
                                                "encoder_dropout",
                                                "r",
                                                "lora_alpha",
                                                "lora_dropout",
                                                "bias",
                                                "fan_in_fan_out",
                                                "target_modules",
                                                "init_lora_weights",
                                                "modules_to_save",
                                                "layers_to_transform",
                                                "layers_pattern",
                                                "rank_pattern",
                                                "alpha_pattern",
                                                "use_rslora",
                                                "use_dora",
                                                "megatron_config",
                                                "megatron_core",
                                                "loftq_config",
                                                "layer_replication",
                                                "exclude_modules",
                                                "lora_bias",
                                                "runtime_config",
                                                "eva_config",
                                                "trainable_token_indices",
                                                "corda_config",
                                                "target_parameters",
                                                "use_qalora",
                                                "qalora_group_size",
                                                "alora_invocation_tokens",
                                                "arrow_config",
                                                "ensure_weight_tying",
                                                "peft_version",
                                                "lora_ga_config",
                                                "use_bdlora"};
    return known;
}

template <class V>
V required(const nlohmann::ordered_json& j, const std::string& key, const std::string& file) {
    if (!j.contains(key) || j.at(key).is_null())
        throw ConfigError(file + ": missing field '" + key + "'");
    // nlohmann converts a float to an integer with a plain cast: undefined behaviour for 1e300.
    if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
        if (!j.at(key).is_number_integer())
            throw ConfigError(file + ": field '" + key + "' is " + io::detail::brief(j.at(key)) +
                              ", expected an integer");
    }
    try {
        return j.at(key).get<V>();
    } catch (const nlohmann::json::exception&) {
        throw ConfigError(file + ": field '" + key + "' has the wrong type: " + j.at(key).dump());
    }
}

/// LoRA config fields that would change what the adapter computes, in a way this library does not
/// implement: each must be absent or hold its default (null, false, empty, or bias "none"). The
/// other fields PEFT writes only describe training or initialisation (lora_dropout,
/// init_lora_weights, loftq/eva/corda/lora_ga configs, qalora_group_size without use_qalora,
/// megatron_core, ensure_weight_tying, peft_version, ...).
inline void refuse_unimplemented_lora_fields(const nlohmann::ordered_json& config,
                                             const std::string& file) {
    static const std::pair<const char*, const char*> fields[] = {
        {"use_dora", "DoRA (weight-decomposed LoRA)"},
        {"use_qalora", "QA-LoRA"},
        {"lora_bias", "a bias on lora_B"},
        {"modules_to_save", "modules saved whole beside the adapter"},
        {"layers_to_transform", "adapting only some layers"},
        {"layers_pattern", "adapting only some layers"},
        {"exclude_modules", "excluded modules"},
        {"layer_replication", "replicated layers"},
        {"target_parameters", "adapted parameters (not modules)"},
        {"trainable_token_indices", "trainable token embeddings"},
        {"megatron_config", "Megatron parallel layers"},
        {"alora_invocation_tokens", "activated LoRA"},
        {"arrow_config", "Arrow routing"},
        {"use_bdlora", "block-diagonal LoRA"}};
    for (const auto& [key, what] : fields) {
        const auto it = config.find(key);
        if (it == config.end() || it->is_null() || (it->is_boolean() && !it->get<bool>()) ||
            (it->is_array() && it->empty()) || (it->is_object() && it->empty()))
            continue;
        throw ConfigError(file + ": field '" + key + "' is " + io::detail::brief(*it) + ": " +
                          what + " is not supported");
    }
    if (const auto it = config.find("bias"); it != config.end() && !it->is_null() && *it != "none")
        throw ConfigError(file + ": field 'bias' is " + io::detail::brief(*it) +
                          ": trained biases are not supported (only \"none\")");
}

}  // namespace detail

/// Read a PEFT adapter folder and check it fits `config` (layers, widths, heads); errors name the
/// file, the field or tensor, what the model needs and what the file has.
inline Adapter load_adapter(const std::string& dir, const nn::Config& c) {
    namespace fs = std::filesystem;
    const std::string config_path = (fs::path(dir) / kAdapterConfig).string();
    std::ifstream in(config_path);
    if (!in) throw IoError("load_adapter: cannot open '" + config_path + "'");
    Adapter a;
    try {
        a.config = nlohmann::ordered_json::parse(in);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
        throw FormatError(config_path + ": not valid JSON (" + e.what() + ")");
    }
    if (!a.config.is_object()) throw FormatError(config_path + ": expected a JSON object");
    for (const auto& [key, value] : a.config.items())
        if (detail::known_config_fields().count(key) == 0)
            throw ConfigError(config_path + ": unknown field '" + key + "'");
    const std::string type = detail::required<std::string>(a.config, "peft_type", config_path);
    if (type == "PROMPT_TUNING")
        a.kind = MethodKind::kPromptTuning;
    else if (type == "PREFIX_TUNING")
        a.kind = MethodKind::kPrefixTuning;
    else if (type == "P_TUNING")
        a.kind = MethodKind::kPTuning;
    else if (type == "LORA")
        a.kind = MethodKind::kLora;
    else
        throw ConfigError(config_path + ": peft_type '" + type +
                          "' is not supported (PROMPT_TUNING, PREFIX_TUNING, "
                          "P_TUNING, LORA)");
    if (a.config.contains("task_type") && !a.config["task_type"].is_null() &&
        a.config["task_type"] != "CAUSAL_LM")
        throw ConfigError(config_path + ": task_type " + a.config["task_type"].dump() +
                          " is not CAUSAL_LM");

    const fs::path weights_path = fs::path(dir) / kAdapterWeights;
    if (!fs::exists(weights_path) && fs::exists(fs::path(dir) / "adapter_model.bin"))
        throw IoError(
            "load_adapter: '" + dir +
            "' holds adapter_model.bin, PyTorch's pickle format, which is not read (unpickling "
            "runs code). Convert it to safetensors with PyTorch: python3 -c \"import torch; "
            "from safetensors.torch import save_file; save_file(torch.load('adapter_model.bin'), "
            "'adapter_model.safetensors', metadata={'format': 'pt'})\"");
    const io::SafetensorsFile weights(weights_path.string());
    if (a.kind == MethodKind::kLora) {
        for (const std::string& name : weights.names())
            a.tensors.emplace(name, weights.matrix<float>(name));
        return a;
    }
    const bool prefix = a.kind == MethodKind::kPrefixTuning;
    const Index P = detail::required<Index>(a.config, "num_virtual_tokens", config_path);
    auto expect = [&](const char* key, Index want) {
        if (!a.config.contains(key) || a.config[key].is_null()) return;
        const Index have = detail::required<Index>(a.config, key, config_path);
        if (have != want)
            throw ConfigError(config_path + ": " + key + " is " + std::to_string(have) +
                              " but the model needs " + std::to_string(want));
    };
    expect("num_layers", c.n_layers);
    expect("token_dim", prefix ? c.kv_dim() : c.dim);
    if (prefix) expect("num_attention_heads", c.n_kv_heads);
    // Not json::value(): it throws nlohmann's type_error for a non-boolean.
    bool projection = false;
    if (const auto it = a.config.find("prefix_projection");
        it != a.config.end() && !it->is_null()) {
        if (!it->is_boolean())
            throw ConfigError(config_path + ": field 'prefix_projection' is " + it->dump() +
                              ", expected true or false");
        projection = it->get<bool>();
    }
    if (prefix && projection && !weights.contains("prompt_embeddings"))
        throw ConfigError(
            config_path +
            ": a prefix saved with its projection network (prefix_projection true, no "
            "prompt_embeddings) cannot be served; save it folded (inference_mode)");
    a.prompt_embeddings = weights.matrix<float>("prompt_embeddings");
    const Index width = prefix ? c.n_layers * 2 * c.kv_dim() : c.dim;
    if (a.prompt_embeddings.rows() != P || a.prompt_embeddings.cols() != width)
        throw ShapeError::mismatch(weights.path(), "tensor 'prompt_embeddings'", P, width,
                                   a.prompt_embeddings.rows(), a.prompt_embeddings.cols());
    return a;
}

/// A loaded prefix-tuning adapter's prefix [P, L·2·Dkv] in the order of a model of family Arch
/// (peft/head_order.hpp: the key columns of an interleaved-RoPE LLaMA are reordered).
template <class Arch>
Mat<float> prefix_for_model(const Adapter& a, const nn::Config& c) {
    if (a.kind != MethodKind::kPrefixTuning)
        throw ConfigError("prefix_for_model: the adapter is not prefix tuning");
    const Index width = c.n_layers * 2 * c.kv_dim();
    if (a.prompt_embeddings.rows() <= 0 || a.prompt_embeddings.cols() != width)
        throw ShapeError::mismatch("prefix_for_model", "prefix", a.prompt_embeddings.rows(), width,
                                   a.prompt_embeddings.rows(), a.prompt_embeddings.cols());
    Mat<float> prefix = a.prompt_embeddings;
    if (heads_interleaved<Arch>(c)) reorder_prefix_keys(prefix, c, HeadOrder::kFromFile);
    return prefix;
}

/// A method built from a loaded adapter for a model of family Arch, ready to serve or to train
/// further: prompt tuning and P-tuning become prompt tuning over the stored embeddings, prefix
/// tuning a direct prefix.
template <class Arch>
std::unique_ptr<Method<float>> prompt_method(const Adapter& a, const nn::Config& c) {
    if (a.kind == MethodKind::kPrefixTuning)
        return std::make_unique<PrefixTuning<float>>(c, prefix_for_model<Arch>(a, c));
    if (a.kind == MethodKind::kLora)
        throw ConfigError("prompt_method: the adapter is LoRA; use lora_method");
    PromptInit init;  // recorded, so that saving again writes what PEFT wrote
    if (a.kind == MethodKind::kPromptTuning) {
        auto text_field = [&](const char* key) {
            const auto it = a.config.find(key);
            return it != a.config.end() && it->is_string() ? it->get<std::string>() : std::string();
        };
        const std::string kind = text_field("prompt_tuning_init");
        init.kind = kind == "TEXT"           ? PromptInit::Kind::kText
                    : kind == "SAMPLE_VOCAB" ? PromptInit::Kind::kSampleVocab
                                             : PromptInit::Kind::kRandom;
        if (init.kind == PromptInit::Kind::kText) {
            init.text = text_field("prompt_tuning_init_text");
            init.tokenizer = text_field("tokenizer_name_or_path");
        }
    }
    return std::make_unique<PromptTuning<float>>(c, a.prompt_embeddings, init);
}

namespace detail {

// A config field holding an object of name -> number (rank_pattern, alpha_pattern), in file order;
// absent or null is empty.
template <class V>
std::vector<std::pair<std::string, V>> pattern_field(const nlohmann::ordered_json& config,
                                                     const char* key, const std::string& file) {
    std::vector<std::pair<std::string, V>> out;
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return out;
    if (!it->is_object())
        throw ConfigError(file + ": field '" + key + "' is " + io::detail::brief(*it) +
                          ", expected an object of module patterns");
    for (const auto& [pattern, value] : it->items()) {
        const bool ok = std::is_integral_v<V> ? value.is_number_integer() : value.is_number();
        if (!ok)
            throw ConfigError(file + ": field '" + key + "': pattern '" + pattern + "' has " +
                              io::detail::brief(value) + ", expected " +
                              (std::is_integral_v<V> ? "an integer" : "a number"));
        out.emplace_back(pattern, value.template get<V>());
    }
    return out;
}

}  // namespace detail

/// A LoRA method over `model` holding the adapter's matrices (each checked by name and shape).
/// target_modules is PEFT's: a list of names (each selecting the modules it ends), or one regular
/// expression matched whole against the full module names; rank_pattern and alpha_pattern give
/// modules their own rank and alpha, use_rslora scales by α/√r.
template <class Arch>
std::unique_ptr<Lora<Arch, float>> lora_method(const Adapter& a, const nn::Config& c) {
    if (a.kind != MethodKind::kLora) throw ConfigError("lora_method: the adapter is not LoRA");
    const std::string file = kAdapterConfig;
    LoraOptions options;
    options.rank = detail::required<Index>(a.config, "r", file);
    options.alpha = detail::required<double>(a.config, "lora_alpha", file);
    detail::refuse_unimplemented_lora_fields(a.config, file);
    if (const auto it = a.config.find("use_rslora"); it != a.config.end() && !it->is_null()) {
        if (!it->is_boolean())
            throw ConfigError(file + ": field 'use_rslora' is " + it->dump() +
                              ", expected true or false");
        options.rslora = it->get<bool>();
    }
    options.rank_pattern = detail::pattern_field<Index>(a.config, "rank_pattern", file);
    options.alpha_pattern = detail::pattern_field<double>(a.config, "alpha_pattern", file);
    const auto target_field = a.config.find("target_modules");
    if (target_field != a.config.end() && target_field->is_string()) {
        options.target_regex = target_field->get<std::string>();
        if (options.target_regex.empty())
            throw ConfigError(file + ": field 'target_modules' is an empty regular expression");
    } else {
        const auto targets =
            detail::required<std::vector<std::string>>(a.config, "target_modules", file);
        auto has = [&](std::initializer_list<const char*> names) {
            for (const char* n : names)
                if (std::find(targets.begin(), targets.end(), n) != targets.end()) return true;
            return false;
        };
        options.query = has({"q_proj", "c_attn", "attn.c_attn"});
        options.key = has({"k_proj"});
        options.value = has({"v_proj"}) || (Arch::kFusedQkv && options.query);
        options.output = has({"o_proj", "c_proj", "attn.c_proj"});
        if (Arch::kFusedQkv) options.key = options.value = false;
        const std::set<std::string> adaptable =
            Arch::kFusedQkv
                ? std::set<std::string>{"c_attn", "c_proj", "attn.c_attn", "attn.c_proj"}
                : std::set<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"};
        for (const auto& t : targets)
            if (adaptable.count(t) == 0)
                throw ConfigError(file + ": LoRA target module '" + t +
                                  "' is not an attention projection of this model");
    }
    // The ranks size every matrix built below: check each module's against its stored lora_A
    // tensor first, so that an "r" of 10^9 is an error rather than a 32 GB allocation.
    std::vector<typename Lora<Arch, float>::Planned> plan;
    try {
        plan = Lora<Arch, float>::plan(c, options);
    } catch (const ConfigError& e) {
        throw ConfigError(file + ": " + e.what());
    }
    // softprompt 0.1 wrote GPT-2's keys without the model class's "transformer.".
    auto stored = [&](const std::string& module, const char* matrix) {
        auto it = a.tensors.find(detail::lora_key_prefix<Arch>() + module + matrix);
        if (it == a.tensors.end()) it = a.tensors.find("base_model.model." + module + matrix);
        return it;
    };
    for (const auto& p : plan) {
        const auto it = stored(p.module, ".lora_A.weight");
        if (it == a.tensors.end())
            throw ConfigError(std::string(kAdapterWeights) + ": missing tensor '" +
                              detail::lora_key_prefix<Arch>() + p.module + ".lora_A.weight'");
        if (it->second.rows() != p.rank)
            throw ShapeError(std::string(kAdapterWeights) + ": tensor '" + it->first + "' has " +
                             std::to_string(it->second.rows()) + " rows but " + file +
                             " says r = " + std::to_string(p.rank) +
                             (p.rank != options.rank ? " (from rank_pattern)" : ""));
    }
    Rng rng(0);
    auto lora = std::make_unique<Lora<Arch, float>>(c, options, rng);
    std::set<std::string> used_keys;
    for (auto& u : lora->updates()) {
        for (const char* matrix : {".lora_A.weight", ".lora_B.weight"}) {
            autograd::Param<float>& param = matrix[6] == 'A' ? *u.a : *u.b;
            const auto it = stored(u.module, matrix);
            const std::string key = detail::lora_key_prefix<Arch>() + u.module + matrix;
            if (it == a.tensors.end())
                throw ConfigError(std::string(kAdapterWeights) + ": missing tensor '" + key + "'");
            if (it->second.rows() != param.value().rows() ||
                it->second.cols() != param.value().cols())
                throw ShapeError::mismatch(kAdapterWeights, "tensor '" + it->first + "'",
                                           param.value().rows(), param.value().cols(),
                                           it->second.rows(), it->second.cols());
            param.value() = it->second;
            if (matrix[6] == 'B' && (u.slot == 0 || u.slot == 1) && heads_interleaved<Arch>(c))
                reorder_head_rows(param.value(), 0, u.slot == 0 ? c.n_heads : c.n_kv_heads,
                                  c.head_dim(), HeadOrder::kFromFile);
            used_keys.insert(it->first);
        }
    }
    for (const auto& [key, m] : a.tensors) {
        if (used_keys.count(key)) continue;
        const bool mlp = key.find(".mlp.") != std::string::npos;
        throw ConfigError(std::string(kAdapterWeights) + ": tensor '" + key + "' (" +
                          std::to_string(a.tensors.size() - used_keys.size()) +
                          " in all) matches no adapted module of this model" +
                          (mlp ? ": LoRA on the feed-forward (PEFT's \"c_proj\" also selects "
                                 "mlp.c_proj) is not supported"
                               : ""));
    }
    return lora;
}

}  // namespace softprompt::peft
