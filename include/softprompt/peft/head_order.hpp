#pragma once
// The order of the elements of a query/key head in adapter files. PEFT's files follow the Hugging
// Face checkpoints, whose LLaMA-family q_proj and k_proj rows are in RoPE's half-split order: head
// element j pairs with j + hd/2. A LLaMA model read from llama2.c or GGUF keeps Meta's order, in
// which element 2j pairs with 2j + 1 (RopeLayout::kInterleaved), so the rows of its q/k projections
// are a permutation of the Hugging Face twin's. What an adapter holds along those rows or columns
// (LoRA's lora_B of q_proj and k_proj, prefix tuning's key columns) is permuted in the same way when
// it is saved from or loaded into such a model, so that one file serves both twins.
//   half-split element h·hd + s·hd/2 + j  <->  interleaved element h·hd + 2j + s   (s = 0, 1)

#include <type_traits>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/nn/config.hpp"
#include "softprompt/nn/llama.hpp"

namespace softprompt::peft {

/// Whether a model's q/k head elements are in another order than PEFT's files: the LLaMA family
/// with interleaved RoPE.
template <class Arch>
bool heads_interleaved(const nn::Config& c) {
    return std::is_same_v<Arch, nn::Llama> && c.rope_layout == kernels::RopeLayout::kInterleaved;
}

enum class HeadOrder {
    kToFile,    // the model's interleaved order -> the file's half-split order
    kFromFile,  // the file's half-split order -> the model's interleaved order
};

/// For each element of `heads` heads of width hd in the order `order` produces, the element of
/// the other order it comes from (the mapping at the top of this file).
inline std::vector<Index> head_sources(Index heads, Index hd, HeadOrder order) {
    std::vector<Index> source(std::size_t(heads * hd));
    for (Index h = 0; h < heads; ++h)
        for (Index s = 0; s < 2; ++s)
            for (Index j = 0; j < hd / 2; ++j) {
                const Index file = h * hd + s * (hd / 2) + j, model = h * hd + 2 * j + s;
                if (order == HeadOrder::kToFile)
                    source[std::size_t(file)] = model;
                else
                    source[std::size_t(model)] = file;
            }
    return source;
}

/// Reorder `heads` heads of width hd along the rows of m, starting at row `first` (LoRA's lora_B).
template <class T>
void reorder_head_rows(Mat<T>& m, Index first, Index heads, Index hd, HeadOrder order) {
    const Mat<T> in = m.middleRows(first, heads * hd);
    const std::vector<Index> source = head_sources(heads, hd, order);
    for (std::size_t i = 0; i < source.size(); ++i) m.row(first + Index(i)) = in.row(source[i]);
}

/// Reorder `heads` heads of width hd along the columns of m, starting at column `first` (a
/// prefix's keys).
template <class T>
void reorder_head_cols(Mat<T>& m, Index first, Index heads, Index hd, HeadOrder order) {
    const Mat<T> in = m.middleCols(first, heads * hd);
    const std::vector<Index> source = head_sources(heads, hd, order);
    for (std::size_t i = 0; i < source.size(); ++i) m.col(first + Index(i)) = in.col(source[i]);
}

/// A PEFT prefix [P, L·2·Dkv] with every layer's key columns reordered (values stay as they are).
template <class T>
void reorder_prefix_keys(Mat<T>& prefix, const nn::Config& c, HeadOrder order) {
    for (Index l = 0; l < c.n_layers; ++l)
        reorder_head_cols(prefix, 2 * l * c.kv_dim(), c.n_kv_heads, c.head_dim(), order);
}

}  // namespace softprompt::peft
