#pragma once
// Hugging Face checkpoint folders: load a GPT-2 or LLaMA model from `config.json` plus either
// `model.safetensors` or the shards listed by `model.safetensors.index.json`, and write a model
// back in the same layout.
//
//   <dir>/config.json                      see hf_config.hpp
//   <dir>/model.safetensors                every tensor, or else
//   <dir>/model.safetensors.index.json     {"metadata": {...}, "weight_map": {"<tensor>": "<shard
//                                          file in dir>", ...}}; each shard is opened once
//
// Tensors are bound by name through `Arch::bind_hf` (GPT-2 names may carry the `transformer.`
// prefix that GPT2LMHeadModel adds; GPT-2's lm_head is tied to wte unless tie_word_embeddings is
// false). Tensors the model does not use (GPT-2's attention-mask buffers, rotary inv_freq) are
// ignored. F32 weights read as float are views into the read-only mappings (nothing is copied or
// read until used); F16/BF16 (or T = double) are converted once. The model's `storage` holds a
// TensorStore with the mappings and buffers.

#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/hf_config.hpp"
#include "softprompt/io/safetensors.hpp"
#include "softprompt/nn/gpt2.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/nn/model.hpp"

namespace softprompt::io {

/// The family an architecture's checkpoints declare in config.json.
template <class Arch>
constexpr HfFamily hf_family_of() {
    static_assert(std::is_same_v<Arch, nn::Gpt2> || std::is_same_v<Arch, nn::Llama>,
                  "Hugging Face checkpoints: nn::Gpt2 or nn::Llama");
    return std::is_same_v<Arch, nn::Gpt2> ? HfFamily::kGpt2 : HfFamily::kLlama;
}

/// The tensors of a checkpoint folder, from one file or from shards, by name.
class HfCheckpointTensors {
public:
    /// Opens `<dir>/model.safetensors` if present, else every shard named by
    /// `<dir>/model.safetensors.index.json`. IoError when neither exists (or a shard cannot be
    /// opened), FormatError for a malformed file or an index entry its shard does not hold.
    explicit HfCheckpointTensors(const std::string& dir) {
        namespace fs = std::filesystem;
        const fs::path single = fs::path(dir) / "model.safetensors";
        const fs::path index = fs::path(dir) / "model.safetensors.index.json";
        std::error_code ec;  // the non-throwing overload: errors surface as IoError when opening
        if (fs::exists(single, ec)) {
            source_ = single.string();
            files_.push_back(std::make_shared<const SafetensorsFile>(source_));
            for (const auto& [name, info] : files_.back()->tensors())
                where_[name] = files_.back().get();
        } else if (fs::exists(index, ec)) {
            source_ = index.string();
            open_shards(fs::path(dir));
        } else {
            throw IoError("no model.safetensors or model.safetensors.index.json in '" + dir + "'");
        }
    }

    /// model.safetensors or the index: where the tensor names come from (for messages).
    const std::string& source() const { return source_; }
    std::size_t file_count() const { return files_.size(); }
    bool contains(const std::string& name) const { return where_.count(name) != 0; }
    std::size_t count() const { return where_.size(); }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [name, file] : where_) out.push_back(name);
        return out;
    }

    /// The file holding `name`; FormatError naming the tensor when none does.
    const SafetensorsFile& file_of(const std::string& name) const {
        const auto it = where_.find(name);
        if (it == where_.end()) throw FormatError(source_ + ": no tensor '" + name + "'");
        return *it->second;
    }

    /// See SafetensorsFile::weight.
    template <class T>
    Weight<T> weight(const std::string& name, Index rows, Index cols, TensorStore& store) const {
        return file_of(name).template weight<T>(name, rows, cols, store);
    }

private:
    void open_shards(const std::filesystem::path& dir) {
        std::ifstream in(source_, std::ios::binary);
        if (!in) throw IoError("cannot open '" + source_ + "'");
        const std::string text((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(text);
        } catch (const nlohmann::json::parse_error& e) {
            throw FormatError::at(source_, e.byte == 0 ? 0 : e.byte - 1,
                                  std::string("not valid JSON: ") + e.what());
        } catch (const nlohmann::json::exception& e) {
            // nlohmann reports a number too large for a double (1e400) as out_of_range.
            throw FormatError(source_ + ": not valid JSON: " + e.what());
        }
        auto fail = [&](const std::string& what) { throw FormatError(source_ + ": " + what); };
        if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            fail("expected an object with a \"weight_map\" object");
        if (j["weight_map"].empty()) fail("\"weight_map\" lists no tensors");
        std::map<std::string, const SafetensorsFile*> shards;  // file name -> opened once
        for (const auto& [name, shard] : j["weight_map"].items()) {
            if (!shard.is_string())
                fail("\"weight_map\" entry '" + name + "' is " + shard.dump() +
                     ", expected a file name");
            const std::string file = shard.get<std::string>();
            // A plain file name in the same folder: an index must not reach elsewhere.
            if (file.empty() || file == "." || file == ".." ||
                file.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
                fail("\"weight_map\" entry '" + name + "' names shard \"" + file +
                     "\", expected a file name in the checkpoint folder");
            auto it = shards.find(file);
            if (it == shards.end()) {
                files_.push_back(std::make_shared<const SafetensorsFile>((dir / file).string()));
                it = shards.emplace(file, files_.back().get()).first;
            }
            if (!it->second->contains(name))
                fail("\"weight_map\" puts tensor '" + name + "' in '" + it->second->path() +
                     "', which has no such tensor");
            where_[name] = it->second;
        }
    }

    std::string source_;
    std::vector<std::shared_ptr<const SafetensorsFile>> files_;
    std::map<std::string, const SafetensorsFile*> where_;
};

/// Load a Hugging Face checkpoint folder as a frozen model, `hf` being its config.json as
/// read_hf_config read it. Throws ConfigError when config.json
/// describes another family or an unsupported setting, FormatError naming the file and tensor for
/// a missing tensor or a wrong shape, IoError when a file cannot be opened.
template <class Arch, class T = float>
nn::Model<Arch, T> load_hf(const std::string& dir, const HfConfig& hf) {
    const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
    if (hf.family != hf_family_of<Arch>())
        throw ConfigError(config_path + ": model_type \"" + hf.model_type + "\" is a " +
                          std::string(family_name(hf.family)) + " model; it cannot load as " +
                          Arch::kName);
    const HfCheckpointTensors tensors(dir);
    // Every layer has tensors of its own: a layer count beyond the checkpoint's tensor count
    // cannot bind, and refusing it here keeps the per-layer tables from being sized by it.
    if (std::size_t(hf.config.n_layers) > tensors.count())
        throw ConfigError(config_path + ": " +
                          (hf.family == HfFamily::kGpt2 ? "n_layer" : "num_hidden_layers") +
                          " is " + std::to_string(hf.config.n_layers) + " but " + tensors.source() +
                          " holds only " + std::to_string(tensors.count()) +
                          " tensors (each layer has several of its own)");
    auto store = std::make_shared<TensorStore>();
    const nn::WeightLookup<T> get = [&](const std::string& name, Index rows, Index cols) {
        if constexpr (std::is_same_v<Arch, nn::Gpt2>) {
            if (!tensors.contains(name)) {
                const std::string prefixed = "transformer." + name;
                if (tensors.contains(prefixed))
                    return tensors.weight<T>(prefixed, rows, cols, *store);
                throw FormatError(tensors.source() + ": no tensor '" + name + "' (nor '" +
                                  prefixed + "')");
            }
        }
        return tensors.weight<T>(name, rows, cols, *store);
    };
    nn::Model<Arch, T> model;
    model.config = hf.config;
    model.weights = Arch::template bind_hf<T>(model.config, get);
    model.storage = std::move(store);
    return model;
}

/// The same, reading `dir`/config.json.
template <class Arch, class T = float>
nn::Model<Arch, T> load_hf(const std::string& dir) {
    return load_hf<Arch, T>(dir,
                            read_hf_config((std::filesystem::path(dir) / "config.json").string()));
}

namespace detail {

/// The tensors of a model under their HF names, as float (converted or re-ordered copies where
/// needed, views otherwise), ready for write_safetensors.
template <class T>
class HfExport {
public:
    /// One tensor of a weight table: 2-D, or 1-D for a one-dimensional spec (held as a [1, n] weight).
    /// With `rope_head_dim` > 0 the rows of each head (a vector's elements) are re-ordered from
    /// interleaved RoPE pairs (2j, 2j+1) to HF's half-split layout (j, j + hd/2): the permutation
    /// transformers' convert_llama_weights_to_hf applies to q_proj and k_proj.
    void add(const nn::WeightSpec& spec, const Weight<T>& w, Index rope_head_dim = 0) {
        if (spec.one_dimensional) {
            if (w.rows != 1)
                throw ShapeError::mismatch("save_hf", spec.hf, 1, w.cols, w.rows, w.cols);
            // A vector's elements are the rows the permutation moves: view it as a column.
            add(spec.hf, {std::uint64_t(w.cols)}, Weight<T>{w.data, w.cols, 1}, rope_head_dim);
        } else {
            add(spec.hf, {std::uint64_t(w.rows), std::uint64_t(w.cols)}, w, rope_head_dim);
        }
    }

    std::map<std::string, TensorSource> sources(Dtype dtype) const {
        std::map<std::string, TensorSource> out;
        for (const auto& e : entries_) out.emplace(e.name, TensorSource(dtype, e.shape, e.data));
        return out;
    }

private:
    struct Entry {
        std::string name;
        std::vector<std::uint64_t> shape;
        const float* data;
    };

    void add(const std::string& name, std::vector<std::uint64_t> shape, const Weight<T>& w,
             Index rope_head_dim) {
        if (w.empty()) throw ConfigError("save_hf: weight " + name + " is not bound");
        const std::size_t rows = std::size_t(w.rows), cols = std::size_t(w.cols);
        if constexpr (std::is_same_v<T, float>) {
            if (rope_head_dim == 0) {
                entries_.push_back({name, std::move(shape), w.data});
                return;
            }
        }
        if (rope_head_dim % 2 != 0 || (rope_head_dim > 0 && w.rows % rope_head_dim != 0))
            throw ConfigError("save_hf: " + name + ": cannot re-order " + std::to_string(w.rows) +
                              " rows into RoPE heads of " + std::to_string(rope_head_dim));
        std::vector<float>& out = buffers_.emplace_back(rows * cols);
        const std::size_t hd = std::size_t(rope_head_dim);
        for (std::size_t r = 0; r < rows; ++r) {
            // Destination row h·hd + half·hd/2 + j takes source row h·hd + 2j + half.
            std::size_t src = r;
            if (hd > 0) {
                const std::size_t h = r / hd, in_head = r % hd, half = in_head / (hd / 2),
                                  j = in_head % (hd / 2);
                src = h * hd + 2 * j + half;
            }
            for (std::size_t c = 0; c < cols; ++c)
                out[r * cols + c] = float(w.data[src * cols + c]);
        }
        entries_.push_back({name, std::move(shape), out.data()});
    }

    std::vector<Entry> entries_;
    std::deque<std::vector<float>> buffers_;  // deque: growing it never moves a buffer
};

}  // namespace detail

/// Write `model` as a Hugging Face checkpoint folder: `<dir>/model.safetensors` (tensors as
/// `dtype`: F32, F16 or BF16; `__metadata__ {"format": "pt"}` like save_pretrained) and
/// `<dir>/config.json`. The folder is created if needed; each file is replaced atomically (weights
/// first, then the config). A tied head is not written (transformers re-ties it). A LLaMA model
/// with interleaved RoPE (llama2.c, GGUF) gets its q/k rows re-ordered to HF's half-split layout,
/// so the saved checkpoint computes the same function.
template <class Arch, class T>
void save_hf(const std::string& dir, const nn::Model<Arch, T>& model, Dtype dtype = Dtype::kF32) {
    namespace fs = std::filesystem;
    const nn::Config& c = model.config;
    const nlohmann::json config = hf_config_json(hf_family_of<Arch>(), c,
                                                 dtype == Dtype::kF32   ? "float32"
                                                 : dtype == Dtype::kF16 ? "float16"
                                                                        : "bfloat16");
    // Weights from llama2.c or GGUF rotate interleaved pairs: their q/k rows are re-ordered to
    // HF's half-split layout.
    const Index rope_hd = c.rope_layout == kernels::RopeLayout::kInterleaved ? c.head_dim() : 0;
    detail::HfExport<T> out;
    Arch::for_each_weight(model.weights, c, [&](const nn::WeightSpec& spec, const Weight<T>& w) {
        out.add(spec, w, spec.rope_rows ? rope_hd : 0);
    });
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw IoError("cannot create folder '" + dir + "': " + ec.message());
    write_safetensors((fs::path(dir) / "model.safetensors").string(), out.sources(dtype),
                      {{"format", "pt"}});
    const std::string text = config.dump(2) + "\n";
    detail::AtomicFile file((fs::path(dir) / "config.json").string());
    file.write(text.data(), text.size());
    file.commit();
}

}  // namespace softprompt::io
