#pragma once
// A family's weight table and binding by name. Each architecture lists its frozen tensors once, in
// `Arch::for_each_weight`: per tensor its Hugging Face and GGUF names, its shape, and how files
// store it (a WeightSpec). Binding (safetensors, GGUF, test fixtures), saving (save_hf) and
// parameter counts all read that one table. Loaders provide a lookup: given a spec, a read-only
// view, or a FormatError naming the tensor and both shapes.

#include <functional>
#include <string>
#include <utility>

#include "softprompt/core/tensor.hpp"
#include "softprompt/nn/config.hpp"

namespace softprompt::nn {

/// One row of a weight table.
struct WeightSpec {
    std::string hf;    // Hugging Face name: "model.layers.0.self_attn.q_proj.weight"
    std::string gguf;  // GGUF name (llama.cpp's): "blk.0.attn_q.weight"; empty when none
    Index rows = 0, cols = 0;
    bool one_dimensional = false;  // 1-D in files (a bias or a norm gain), [1, n] here
    bool rope_rows = false;        // rows of RoPE heads (q/k projections and biases): their
                                   // order follows the RoPE layout, so converting layouts
                                   // permutes them
    bool gguf_transposed = false;  // GGUF stores [cols x rows]: llama.cpp turns Conv1D [in, out]
                                   // weights into [out, in] matrices

    static WeightSpec matrix(std::string hf, std::string gguf, Index rows, Index cols,
                             bool rope_rows = false) {
        return {std::move(hf), std::move(gguf), rows, cols, false, rope_rows, false};
    }
    static WeightSpec conv1d(std::string hf, std::string gguf, Index in, Index out) {
        return {std::move(hf), std::move(gguf), in, out, false, false, true};
    }
    static WeightSpec vector(std::string hf, std::string gguf, Index n, bool rope_rows = false) {
        return {std::move(hf), std::move(gguf), 1, n, true, rope_rows, false};
    }
};

/// (name, expected rows, expected cols) -> view. 1-D tensors are expected as [1, n].
template <class T>
using WeightLookup = std::function<Weight<T>(const std::string& name, Index rows, Index cols)>;

/// Bind every tensor of the table of `Arch` for config `c`: get(const WeightSpec&) -> Weight<T>.
/// A tied head is the token embedding.
template <class Arch, class T, class Get>
typename Arch::template Weights<T> bind_weights(const Config& c, Get&& get) {
    typename Arch::template Weights<T> w;
    w.layers.resize(std::size_t(c.n_layers));
    Arch::for_each_weight(w, c, [&](const WeightSpec& spec, Weight<T>& slot) { slot = get(spec); });
    if (c.tied_head) w.head = Arch::token_embedding(w);
    return w;
}

/// Bind by Hugging Face names.
template <class Arch, class T>
typename Arch::template Weights<T> bind_hf_weights(const Config& c, const WeightLookup<T>& get) {
    return bind_weights<Arch, T>(
        c, [&](const WeightSpec& spec) { return get(spec.hf, spec.rows, spec.cols); });
}

}  // namespace softprompt::nn
