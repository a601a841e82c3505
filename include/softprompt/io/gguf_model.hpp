#pragma once
// Models stored in GGUF files (the file itself: io/gguf.hpp). Hyperparameters come from the
// architecture's keys, tensors by the GGUF names of the family's weight table (nn/weights.hpp).
//
// load_gguf_llama: `general.architecture` "llama", "qwen2" or "qwen3", keys `<arch>.` +
// `embedding_length`, `feed_forward_length`, `block_count`, `attention.head_count[_kv]`,
// `attention.layer_norm_rms_epsilon`, `rope.freq_base`, `context_length`, and Qwen3's
// `attention.key_length` for a head width that need not be dim / heads. Tensors `token_embd`,
// `blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_down,ffn_up}`, Qwen2's
// `blk.N.attn_{q,k,v}.bias`, Qwen3's `blk.N.attn_{q,k}_norm`, `output_norm` and `output` (absent:
// the head is tied to the embedding). For "llama" RoPE rotates interleaved pairs: llama.cpp's
// converters permute the q/k rows of Hugging Face checkpoints so that every GGUF llama uses the
// "normal" layout. llama.cpp runs qwen2/qwen3 with its NEOX rotation and converts them without
// permuting, so they rotate halves, as in Hugging Face. RoPE scaling: linear
// (`rope.scaling.type`, `rope.scaling.factor`), and Llama 3's as llama.cpp stores it, a
// `rope_freqs.weight` tensor of per-frequency divisors (RopeScaling::factors). Mistral converts
// to "llama" and GGUF keeps no sliding window: such a model attends to every earlier token, as
// llama.cpp's does. `context_length` becomes config.max_seq_len but bounds nothing (RoPE has no
// position table); stories260K.gguf says 128 although the model was trained at 512.
//
// load_gguf_gpt2: "gpt2", keys `gpt2.` + `embedding_length`, `feed_forward_length`,
// `block_count`, `attention.head_count`, `attention.layer_norm_epsilon`, `context_length` (the
// rows of the learned position table). Tensors `token_embd`, `position_embd`,
// `blk.N.{attn_norm,attn_qkv,attn_output,ffn_norm,ffn_up,ffn_down}.{weight,bias}`,
// `output_norm.{weight,bias}` and `output`. llama.cpp stores the Conv1D projections transposed
// ([out x in]); they are transposed back into owned memory. Its converter writes the tied head
// as a copy of `token_embd`: an `output` with the embedding's bytes is read as a tied head.
//
// F32 tensors are views into the read-only mapping (T = float); other types and scalar types are
// converted into owned memory, kept alive with the mapping by Model::storage. Every failure is a
// FormatError naming the file, the byte, and the key or tensor (both shapes for a mismatch), also
// for content these loaders cannot represent (mixture of experts, partial rotary, ...).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/gguf.hpp"
#include "softprompt/nn/config.hpp"
#include "softprompt/nn/gpt2.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/nn/model.hpp"
#include "softprompt/nn/weights.hpp"

namespace softprompt::io {

namespace detail {

/// Keeps a GGUF model's memory alive: the mapping its views point into and the buffers of
/// converted tensors (each buffer's address is stable once stored).
template <class T>
struct GgufStorage {
    std::shared_ptr<const MappedFile> mapping;
    std::vector<std::vector<T>> owned;
};

inline constexpr const char* kRopeFreqs = "rope_freqs.weight";

/// Whether a tensor's ggml dims are `want` (ggml order), ignoring trailing 1s on either side.
inline bool gguf_dims_are(const GgufTensorInfo& t, std::vector<std::uint64_t> want) {
    std::vector<std::uint64_t> ne = t.ne;
    while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
    while (want.size() > 1 && want.back() == 1) want.pop_back();
    return ne == want;
}

/// `general.architecture`, which must be one of `known` (FormatError naming the loader).
inline std::string gguf_architecture(const GgufFile& file, std::initializer_list<const char*> known,
                                     const char* loader) {
    const GgufValue& v = file.at("general.architecture");
    const std::string& arch = v.as_string();
    std::string list;
    for (const char* k : known) {
        if (arch == k) return arch;
        list += std::string(list.empty() ? "'" : ", '") + k + "'";
    }
    throw FormatError::at(file.path(), v.offset(),
                          "general.architecture is '" + arch + "'; " + loader + " reads " + list);
}

/// Reads `key` as a count in [1, 2^31).
inline Index gguf_positive(const GgufFile& file, const std::string& key) {
    const GgufValue& v = file.at(key);
    const auto n = v.as_int<std::int64_t>();
    if (n <= 0 || n > std::numeric_limits<std::int32_t>::max())
        throw FormatError::at(file.path(), v.offset(),
                              "metadata '" + key + "' is " + std::to_string(n) +
                                  "; expected a positive count below 2^31");
    return Index(n);
}

/// Reads `key` as a normalization epsilon in [0, 1).
inline double gguf_epsilon(const GgufFile& file, const std::string& key) {
    const GgufValue& eps = file.at(key);
    const double e = eps.as_number();
    if (!(e >= 0 && e < 1))
        throw FormatError::at(file.path(), eps.offset(),
                              "metadata '" + eps.key() + "' is " + eps.to_string() +
                                  "; expected a small non-negative epsilon");
    return e;
}

/// The vocabulary size from token_embd.weight, checked against `<arch>.vocab_size` when given.
inline Index gguf_vocab_size(const GgufFile& file, const std::string& p, Index dim) {
    const GgufTensorInfo& embd = file.tensor("token_embd.weight");
    if (embd.ne.size() < 2 || embd.ne[1] == 0 ||
        embd.ne[1] > std::uint64_t(std::numeric_limits<std::int32_t>::max()))
        throw FormatError::at(file.path(), embd.info_offset,
                              "tensor 'token_embd.weight' is " + embd.shape_string() +
                                  "; expected [vocab x " + std::to_string(dim) + "]");
    const Index vocab = Index(embd.ne[1]);
    if (const GgufValue* vs = file.find(p + "vocab_size");
        vs && vs->as_int<std::int64_t>() != vocab)
        throw FormatError::at(file.path(), vs->offset(),
                              "metadata '" + vs->key() + "' is " + vs->to_string() +
                                  " but token_embd.weight has " + std::to_string(vocab) + " rows");
    return vocab;
}

inline void gguf_validate(const GgufFile& file, const nn::Config& c) {
    try {
        c.validate();
    } catch (const ConfigError& e) {
        throw FormatError::at(file.path(), file.metadata_offset(),
                              std::string("inconsistent hyperparameters: ") + e.what());
    }
}

/// The hyperparameters of a "llama", "qwen2" or "qwen3" file.
inline nn::Config gguf_llama_config(const GgufFile& file, const std::string& arch) {
    const std::string& path = file.path();
    auto fail = [&](std::uint64_t offset, const std::string& what) {
        return FormatError::at(path, offset, what);
    };
    const std::string p = arch + ".";
    auto positive = [&](const std::string& key) { return gguf_positive(file, key); };
    nn::Config c;
    c.dim = positive(p + "embedding_length");
    c.hidden_dim = positive(p + "feed_forward_length");
    c.n_layers = positive(p + "block_count");
    c.n_heads = positive(p + "attention.head_count");
    c.n_kv_heads = file.contains(p + "attention.head_count_kv")
                       ? positive(p + "attention.head_count_kv")
                       : c.n_heads;
    c.max_seq_len = positive(p + "context_length");
    c.norm_eps = gguf_epsilon(file, p + "attention.layer_norm_rms_epsilon");
    c.rope_theta = 10000.0;
    if (const GgufValue* theta = file.find(p + "rope.freq_base")) {
        c.rope_theta = theta->as_number();
        if (!(c.rope_theta > 0 && c.rope_theta < 1e30))
            throw fail(theta->offset(), "metadata '" + theta->key() + "' is " + theta->to_string() +
                                            "; expected a positive RoPE base");
    }
    c.rope_layout =
        arch == "llama" ? kernels::RopeLayout::kInterleaved : kernels::RopeLayout::kHalfSplit;
    c.qkv_bias = arch == "qwen2";
    c.qk_norm = arch == "qwen3";
    // The head width: attention.key_length when given (Qwen3's need not be dim / heads).
    const GgufValue* key_length = file.find(p + "attention.key_length");
    if (key_length) {
        const Index hd = positive(key_length->key());
        if (c.dim % c.n_heads != 0 || hd != c.dim / c.n_heads) c.explicit_head_dim = hd;
    }
    if ((c.explicit_head_dim == 0 && c.dim % c.n_heads != 0) || c.n_heads % c.n_kv_heads != 0)
        throw fail(file.at(p + "attention.head_count").offset(),
                   "inconsistent heads: embedding_length " + std::to_string(c.dim) +
                       ", head_count " + std::to_string(c.n_heads) + ", head_count_kv " +
                       std::to_string(c.n_kv_heads) +
                       " (need dim % heads == 0 or attention.key_length, and heads % kv_heads "
                       "== 0)");
    // What this loader cannot represent: say so instead of computing something else.
    if (const GgufValue* rd = file.find(p + "rope.dimension_count")) {
        if (rd->as_int<std::int64_t>() != c.head_dim())
            throw fail(rd->offset(), "metadata '" + rd->key() + "' is " + rd->to_string() +
                                         " but the head dimension is " +
                                         std::to_string(c.head_dim()) +
                                         ": partial rotary embeddings are not supported");
    }
    if (const GgufValue* vl = file.find(p + "attention.value_length");
        vl && vl->as_int<std::int64_t>() != c.head_dim())
        throw fail(vl->offset(), "metadata '" + vl->key() + "' is " + vl->to_string() +
                                     ", not the key length " + std::to_string(c.head_dim()) +
                                     ": values of another width are not supported");
    if (const GgufValue* experts = file.find(p + "expert_count");
        experts && experts->as_int<std::int64_t>() > 0)
        throw fail(experts->offset(), "metadata '" + experts->key() + "' is " +
                                          experts->to_string() +
                                          ": mixture-of-experts models are not supported");
    {
        const GgufValue* type = file.find(p + "rope.scaling.type");
        const bool none = type && type->as_string() == "none";
        if (type && !none && type->as_string() != "linear")
            throw fail(type->offset(), "metadata '" + type->key() + "' is '" + type->as_string() +
                                           "': only linear RoPE scaling is supported");
        // Linear scaling: rope.scaling.factor (or the older rope.scale_linear); 0 and 1 mean none.
        for (const char* key : {"rope.scaling.factor", "rope.scale_linear"}) {
            const GgufValue* factor = file.find(p + key);
            if (!factor || none) continue;
            const double f = factor->as_number();
            if (f == 0.0 || f == 1.0) continue;
            if (!(f > 0 && f < 1e6))
                throw fail(factor->offset(), "metadata '" + factor->key() + "' is " +
                                                 factor->to_string() +
                                                 "; expected a positive RoPE scaling factor");
            c.rope_scaling.kind = kernels::RopeScaling::Kind::kLinear;
            c.rope_scaling.factor = f;
        }
    }
    // Llama 3's scaling, as llama.cpp's converter writes it: no parameters, the divisor of each
    // frequency in a tensor. A linear factor as well divides every one of them further.
    if (const GgufTensorInfo* rf = file.find_tensor(kRopeFreqs)) {
        if (!gguf_dims_are(*rf, {std::uint64_t(c.head_dim() / 2)}))
            throw fail(rf->info_offset, std::string("tensor '") + kRopeFreqs + "' is " +
                                            rf->shape_string() + "; expected [" +
                                            std::to_string(c.head_dim() / 2) +
                                            "] (one divisor per rotated pair)");
        const std::vector<double> raw = file.read_tensor<double>(kRopeFreqs);
        const double linear = c.rope_scaling.kind == kernels::RopeScaling::Kind::kLinear
                                  ? c.rope_scaling.factor
                                  : 1.0;
        std::vector<double> divisors;
        for (std::size_t i = 0; i < raw.size(); ++i) {
            if (!(raw[i] > 0) || !std::isfinite(raw[i]))
                throw fail(rf->info_offset, std::string("tensor '") + kRopeFreqs + "': divisor " +
                                                std::to_string(i) + " is " +
                                                std::to_string(raw[i]) +
                                                "; expected a finite value > 0");
            divisors.push_back(raw[i] * linear);
        }
        c.rope_scaling = kernels::RopeScaling::factors(std::move(divisors));
    }

    c.vocab_size = gguf_vocab_size(file, p, c.dim);
    c.tied_head = file.find_tensor("output.weight") == nullptr;
    gguf_validate(file, c);
    return c;
}

/// The hyperparameters of a "gpt2" file.
inline nn::Config gguf_gpt2_config(const GgufFile& file) {
    const std::string p = "gpt2.";
    nn::Config c;
    c.dim = gguf_positive(file, p + "embedding_length");
    c.hidden_dim = gguf_positive(file, p + "feed_forward_length");
    c.n_layers = gguf_positive(file, p + "block_count");
    c.n_heads = gguf_positive(file, p + "attention.head_count");
    c.n_kv_heads = c.n_heads;
    if (const GgufValue* kv = file.find(p + "attention.head_count_kv");
        kv && kv->as_int<std::int64_t>() != c.n_heads)
        throw FormatError::at(file.path(), kv->offset(),
                              "metadata '" + kv->key() + "' is " + kv->to_string() +
                                  "; GPT-2 has no grouped-query attention");
    c.max_seq_len = gguf_positive(file, p + "context_length");
    c.norm_eps = gguf_epsilon(file, p + "attention.layer_norm_epsilon");
    c.vocab_size = gguf_vocab_size(file, p, c.dim);
    c.tied_head = true;
    if (const GgufTensorInfo* out = file.find_tensor("output.weight")) {
        const GgufTensorInfo& embd = file.tensor("token_embd.weight");
        const bool copy = out->ne == embd.ne && out->type == embd.type &&
                          std::memcmp(file.tensor_bytes(*out).data(),
                                      file.tensor_bytes(embd).data(), embd.n_bytes) == 0;
        c.tied_head = copy;
    }
    gguf_validate(file, c);
    return c;
}

/// Binds every tensor of Arch's weight table for `c` by its GGUF name; any tensor of the file the
/// table does not name (nor `also_read`) is an error.
template <class Arch, class T>
nn::Model<Arch, T> bind_gguf(const GgufFile& file, const nn::Config& c, const std::string& arch,
                             const std::unordered_set<std::string>& also_read,
                             const char* what_is_read) {
    const std::string& path = file.path();
    auto fail = [&](std::uint64_t offset, const std::string& what) {
        return FormatError::at(path, offset, what);
    };
    // Every layer has tensors of its own, so a block_count beyond the file's tensor count cannot
    // bind; refusing it here keeps the per-layer tables from being sized by a forged count.
    if (std::uint64_t(c.n_layers) > file.tensors().size()) {
        const GgufValue* count = file.find(arch + ".block_count");
        throw fail(count != nullptr ? count->offset() : 0,
                   "metadata '" + arch + ".block_count' is " + std::to_string(c.n_layers) +
                       " but the file holds only " + std::to_string(file.tensors().size()) +
                       " tensors (each layer has several of its own)");
    }
    auto storage = std::make_shared<GgufStorage<T>>();
    storage->mapping = file.mapping();
    std::unordered_set<std::string> used = also_read;
    auto get = [&](const nn::WeightSpec& spec) -> Weight<T> {
        const Index rows = spec.rows, cols = spec.cols;
        const GgufTensorInfo* t = file.find_tensor(spec.gguf);
        // The file's matrix is [rows x cols], or [cols x rows] when the table says transposed.
        const Index file_rows = spec.gguf_transposed ? cols : rows;
        const Index file_cols = spec.gguf_transposed ? rows : cols;
        const std::string want = shape_string(file_rows, file_cols) + " (ggml ne [" +
                                 std::to_string(file_cols) +
                                 (file_rows == 1 ? "" : ", " + std::to_string(file_rows)) + "])";
        if (t == nullptr)
            throw fail(file.tensors_offset(),
                       "missing tensor '" + spec.gguf + "', expected " + want);
        // ggml ne must be [file_cols, file_rows] (a vector: [cols]).
        if (!gguf_dims_are(*t, {std::uint64_t(file_cols), std::uint64_t(file_rows)}))
            throw fail(t->info_offset, "tensor '" + spec.gguf + "': expected " + want + ", found " +
                                           t->shape_string());
        file.check_convertible(*t);
        used.insert(spec.gguf);
        if constexpr (std::is_same_v<T, float>) {
            if (storage->mapping && !spec.gguf_transposed) {
                if (const float* data = file.f32_data(*t)) return Weight<T>{data, rows, cols};
            }
        }
        std::vector<T>& buffer =
            storage->owned.emplace_back(static_cast<std::size_t>(t->n_elements));
        file.read_tensor<T>(*t, std::span<T>(buffer));
        if (spec.gguf_transposed) {
            using RowMajor = Eigen::Map<Mat<T>>;
            const Mat<T> back = RowMajor(buffer.data(), file_rows, file_cols).transpose();
            RowMajor(buffer.data(), rows, cols) = back;
        }
        return Weight<T>{buffer.data(), rows, cols};
    };

    nn::Model<Arch, T> model;
    model.config = c;
    model.weights = nn::bind_weights<Arch, T>(c, get);
    for (const GgufTensorInfo& t : file.tensors()) {
        if (!used.count(t.name))
            throw fail(t.info_offset, "unexpected tensor '" + t.name + "' " + t.shape_string() +
                                          " for a " + arch + " model of " +
                                          std::to_string(c.n_layers) +
                                          " layers (this loader reads " + what_is_read + ")");
    }
    if (storage->owned.empty() && storage->mapping) {
        model.storage = storage->mapping;
    } else {
        model.storage = std::move(storage);
    }
    return model;
}

}  // namespace detail

/// Loads a LLaMA-family model ("llama", "qwen2", "qwen3") from a parsed GGUF file (see the top of
/// this file). When `file` was parsed from caller-owned bytes every weight is copied, so the model
/// never points into memory it does not keep alive.
template <class T = float>
nn::Model<nn::Llama, T> load_gguf_llama(const GgufFile& file) {
    const std::string arch =
        detail::gguf_architecture(file, {"llama", "qwen2", "qwen3"}, "load_gguf_llama");
    const nn::Config c = detail::gguf_llama_config(file, arch);
    std::unordered_set<std::string> also;
    if (c.rope_scaling.kind == kernels::RopeScaling::Kind::kFactors)
        also.insert(detail::kRopeFreqs);
    return detail::bind_gguf<nn::Llama, T>(
        file, c, arch, also,
        "token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, "
        "ffn_down, ffn_up}, qwen2's attn_{q,k,v}.bias, qwen3's attn_{q,k}_norm, output_norm, "
        "output, rope_freqs");
}

/// Maps and loads a LLaMA-family GGUF model (see load_gguf_llama(const GgufFile&)).
template <class T = float>
nn::Model<nn::Llama, T> load_gguf_llama(const std::string& path) {
    return load_gguf_llama<T>(GgufFile(path));
}

/// Loads a GPT-2 model ("gpt2") from a parsed GGUF file (see the top of this file).
template <class T = float>
nn::Model<nn::Gpt2, T> load_gguf_gpt2(const GgufFile& file) {
    (void)detail::gguf_architecture(file, {"gpt2"}, "load_gguf_gpt2");
    const nn::Config c = detail::gguf_gpt2_config(file);
    std::unordered_set<std::string> also;
    if (c.tied_head && file.find_tensor("output.weight")) also.insert("output.weight");
    return detail::bind_gguf<nn::Gpt2, T>(
        file, c, "gpt2", also,
        "token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, "
        "ffn_down}.{weight, bias}, output_norm.{weight, bias}, output");
}

/// Maps and loads a GPT-2 GGUF model (see load_gguf_gpt2(const GgufFile&)).
template <class T = float>
nn::Model<nn::Gpt2, T> load_gguf_gpt2(const std::string& path) {
    return load_gguf_gpt2<T>(GgufFile(path));
}

}  // namespace softprompt::io
