#pragma once
// Loader for llama2.c checkpoints (the "legacy" format written by llama2.c's export).
//
// Bytes (little-endian):
//   header   7 × int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//            vocab_size > 0: the classifier is tied to the token embedding; < 0: an untied
//            classifier follows the other weights and the vocabulary is |vocab_size|.
//   weights  float32, row-major, [out, in] matrices, in this order (L = n_layers, hd = dim/n_heads,
//            kv = n_kv_heads·hd):
//              token_embedding [V, dim]      rms_att [L, dim]
//              wq [L, dim, dim]  wk [L, kv, dim]  wv [L, kv, dim]  wo [L, dim, dim]
//              rms_ffn [L, dim]  w1 [L, hidden, dim]  w2 [L, dim, hidden]  w3 [L, hidden, dim]
//              rms_final [dim]   freq_cis_real [seq_len, hd/2]  freq_cis_imag [seq_len, hd/2]
//              (legacy RoPE tables, skipped)   wcls [V, dim] only when untied
// The file must end exactly there. RoPE rotates interleaved pairs (θ = 10000), RMSNorm eps 1e-5.
// For T = float the weights are views into a read-only mapping of the file (no copy); for other
// scalar types they are converted into one owned buffer.
//
// Threads: load_llama2c keeps no state between calls; the Model it returns is shared as
// nn/model.hpp says.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/mmap.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/nn/model.hpp"

namespace softprompt::io {

/// Read a llama2.c header and weights; throws FormatError (naming the file, byte offset and
/// problem) for a truncated, oversized or inconsistent file, IoError when it cannot be read.
template <class T = float>
nn::Model<nn::Llama, T> load_llama2c(const std::string& path) {
    auto file = std::make_shared<MappedFile>(path);
    ByteReader in(file->bytes(), path);
    const char* names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                            "n_kv_heads", "vocab_size", "seq_len"};
    std::int32_t h[7];
    for (int i = 0; i < 7; ++i) {
        h[i] = in.read<std::int32_t>();
        if (h[i] == 0 || (h[i] < 0 && i != 5) || h[i] == INT32_MIN)
            in.fail_at(std::size_t(4 * i), std::string("header field ") + names[i] + " is " +
                                               std::to_string(h[i]) +
                                               "; expected a positive count");
    }
    nn::Config c;
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    c.vocab_size = h[5] < 0 ? -Index(h[5]) : Index(h[5]);
    c.max_seq_len = h[6];
    c.tied_head = h[5] > 0;
    c.norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.rope_layout = kernels::RopeLayout::kInterleaved;
    try {
        c.validate();
    } catch (const ConfigError& e) {
        in.fail_at(0, std::string("inconsistent header: ") + e.what());
    }

    const std::uint64_t d = std::uint64_t(c.dim), L = std::uint64_t(c.n_layers),
                        kv = std::uint64_t(c.kv_dim()), hid = std::uint64_t(c.hidden_dim),
                        V = std::uint64_t(c.vocab_size), hd = std::uint64_t(c.head_dim()),
                        seq = std::uint64_t(c.max_seq_len);
    // Header fields below 2^31 still multiply past 2^64 (L·d·d with every field near 2^31), and a
    // count that wrapped around could match a tiny file: every product and sum is checked.
    bool overflow = false;
    auto mul = [&](std::uint64_t a, std::uint64_t b) {
        std::uint64_t r = 0;
        overflow |= __builtin_mul_overflow(a, b, &r);
        return r;
    };
    auto add = [&](std::uint64_t a, std::uint64_t b) {
        std::uint64_t r = 0;
        overflow |= __builtin_add_overflow(a, b, &r);
        return r;
    };
    std::uint64_t floats = 0;
    for (const std::uint64_t n :
         {mul(V, d), mul(L, d), mul(mul(L, d), d), mul(mul(mul(2, L), kv), d), mul(mul(L, d), d),
          mul(L, d), mul(mul(mul(3, L), hid), d), d, mul(seq, hd), c.tied_head ? 0 : mul(V, d)})
        floats = add(floats, n);
    const std::uint64_t expected = add(28, mul(4, floats));
    if (overflow)
        in.fail_at(0, "the header describes more than 2^64 bytes of weights (dim " +
                          std::to_string(d) + ", hidden_dim " + std::to_string(hid) +
                          ", n_layers " + std::to_string(L) + ", vocab_size " + std::to_string(V) +
                          "); the file has " + std::to_string(file->size()));
    if (file->size() != expected)
        in.fail_at(file->size() < expected ? file->size() : expected,
                   std::string(file->size() < expected ? "truncated" : "trailing bytes") +
                       ": the header describes " + std::to_string(expected) +
                       " bytes of weights and header, the file has " +
                       std::to_string(file->size()));

    // Views (or converted copies) of consecutive tensors, in file order.
    const float* base = reinterpret_cast<const float*>(file->data() + 28);
    std::shared_ptr<std::vector<T>> owned;
    if constexpr (!std::is_same_v<T, float>) {
        owned = std::make_shared<std::vector<T>>(floats);
        for (std::uint64_t i = 0; i < floats; ++i) (*owned)[i] = T(base[i]);
    }
    std::uint64_t at = 0;
    auto take = [&](Index rows, Index cols) {
        const T* data;
        if constexpr (std::is_same_v<T, float>) {
            data = base + at;
        } else {
            data = owned->data() + at;
        }
        at += std::uint64_t(rows) * std::uint64_t(cols);
        return Weight<T>{data, rows, cols};
    };
    nn::Model<nn::Llama, T> model;
    model.config = c;
    auto& w = model.weights;
    w.layers.resize(std::size_t(c.n_layers));
    const Index q_width = c.n_heads * c.head_dim();
    w.embed = take(c.vocab_size, c.dim);
    for (auto& l : w.layers) l.attn_norm = take(1, c.dim);
    for (auto& l : w.layers) l.wq = take(q_width, c.dim);
    for (auto& l : w.layers) l.wk = take(c.kv_dim(), c.dim);
    for (auto& l : w.layers) l.wv = take(c.kv_dim(), c.dim);
    for (auto& l : w.layers) l.wo = take(c.dim, q_width);
    for (auto& l : w.layers) l.ffn_norm = take(1, c.dim);
    for (auto& l : w.layers) l.gate = take(c.hidden_dim, c.dim);
    for (auto& l : w.layers) l.down = take(c.dim, c.hidden_dim);
    for (auto& l : w.layers) l.up = take(c.hidden_dim, c.dim);
    w.final_norm = take(1, c.dim);
    take(c.max_seq_len, c.head_dim());  // legacy freq_cis_real and freq_cis_imag
    w.head = c.tied_head ? w.embed : take(c.vocab_size, c.dim);
    if (owned) {
        model.storage = owned;
    } else {
        model.storage = file;
    }
    return model;
}

}  // namespace softprompt::io
