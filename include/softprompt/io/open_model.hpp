#pragma once
// A model whose family the file decides, for programs that open whatever model the user gives
// them. open_model(path) reads
//   - a folder: a Hugging Face checkpoint; config.json's model_type picks nn::Gpt2 ("gpt2") or
//     nn::Llama ("llama", "mistral", "qwen2", "qwen3": Config switches of one architecture);
//   - a file starting with the bytes "GGUF": a GGUF model, an nn::Gpt2 when general.architecture
//     is "gpt2", an nn::Llama for "llama", "qwen2" and "qwen3";
//   - any other file: a llama2.c checkpoint, an nn::Llama.
// and returns an AnyModel: a std::variant of the Model types. Everything in the library that takes
// a model is a template over its architecture, so one generic lambda serves every family:
//
//     const auto any = io::open_model<float>(path);
//     std::visit([&](const auto& model) { /* nn::forward, peft methods, Trainer, generate ... */ },
//                any);
//
// Errors are the loaders' own (ConfigError naming config.json's model_type for a family the
// library does not know; FormatError or IoError naming the file).

#include <array>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>

#include "softprompt/error.hpp"
#include "softprompt/io/gguf.hpp"
#include "softprompt/io/gguf_model.hpp"
#include "softprompt/io/hf_checkpoint.hpp"
#include "softprompt/io/hf_config.hpp"
#include "softprompt/io/llama2c.hpp"
#include "softprompt/nn/gpt2.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/nn/model.hpp"

namespace softprompt::nn {

/// A model of any family the library implements (see io/open_model.hpp).
template <class T = float>
using AnyModel = std::variant<Model<Llama, T>, Model<Gpt2, T>>;

/// The configuration of whichever model `m` holds.
template <class T>
const Config& config_of(const AnyModel<T>& m) {
    return std::visit([](const auto& model) -> const Config& { return model.config; }, m);
}

/// The architecture's name ("llama", "gpt2") of whichever model `m` holds.
template <class T>
std::string_view architecture_of(const AnyModel<T>& m) {
    return std::visit(
        [](const auto& model) -> std::string_view {
            return std::decay_t<decltype(model)>::Architecture::kName;
        },
        m);
}

}  // namespace softprompt::nn

namespace softprompt::io {

/// What kind of model file `path` is, by what it holds (see the top of this file).
enum class ModelFileKind { kHfFolder, kGguf, kLlama2c };

inline ModelFileKind model_file_kind(const std::string& path) {
    namespace fs = std::filesystem;
    if (fs::is_directory(path)) return ModelFileKind::kHfFolder;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(path + ": cannot open the model file");
    std::array<char, 4> magic{};
    in.read(magic.data(), magic.size());
    if (in.gcount() == 4 && std::string_view(magic.data(), 4) == "GGUF")
        return ModelFileKind::kGguf;
    return ModelFileKind::kLlama2c;
}

/// Opens the model at `path`, of the family the file says (see the top of this file).
template <class T = float>
nn::AnyModel<T> open_model(const std::string& path) {
    switch (model_file_kind(path)) {
        case ModelFileKind::kHfFolder: {
            const HfConfig hf =
                read_hf_config((std::filesystem::path(path) / "config.json").string());
            if (hf.family == HfFamily::kGpt2) return load_hf<nn::Gpt2, T>(path, hf);
            return load_hf<nn::Llama, T>(path, hf);
        }
        case ModelFileKind::kGguf: {
            const GgufFile file(path);
            const std::string arch =
                detail::gguf_architecture(file, {"gpt2", "llama", "qwen2", "qwen3"}, "open_model");
            if (arch == "gpt2") return load_gguf_gpt2<T>(file);
            return load_gguf_llama<T>(file);
        }
        case ModelFileKind::kLlama2c:
            break;
    }
    return load_llama2c<T>(path);
}

}  // namespace softprompt::io
