#pragma once
// The LM head fused with cross-entropy. The full logits of a GPT-2-sized vocabulary are the
// largest tensor of a training step ([512, 50257] floats is 103 MB, and their gradient as much
// again); this computes the loss a block of rows at a time so that they never exist at once. When
// the gradient is wanted it is formed in the same pass, while the block's softmax is at hand, so
// training pays no second LM-head product and keeps only dh.
//   h, dh: [N, d]   head: [V, d] (logits = h·headᵀ)   targets: [N] (negative = ignored)
//   block: [B, V] with B = block_rows

#include <cstdint>
#include <span>

#include "softprompt/core/tensor.hpp"
#include "softprompt/kernels/gemm.hpp"
#include "softprompt/kernels/parallel.hpp"
#include "softprompt/kernels/softmax.hpp"

namespace softprompt::kernels {

/// Rows with a target ≥ 0: the denominator of the mean loss.
inline Index counted_targets(std::span<const std::int32_t> targets) {
    Index count = 0;
    for (const std::int32_t t : targets) count += t >= 0 ? 1 : 0;
    return count;
}

/// Mean over counted rows of −log softmax(h·headᵀ)[target]; `count` must be
/// counted_targets(targets) > 0. With `dh` (resized to [N, d]) it also writes the gradient of that
/// mean with respect to h: (softmax − onehot(target))·head / count on counted rows, 0 elsewhere.
template <class T, class Head>
T linear_cross_entropy(ConstRef<T> h, const Head& head, std::span<const std::int32_t> targets,
                       Index count, Mat<T>* dh, Index block_rows = 128) {
    const Index n = h.rows(), vocab = head.rows();
    if (dh != nullptr) dh->resize(n, h.cols());  // every block of rows is written below
    const T scale = T(1) / T(count);
    double total = 0;
    Mat<T> block;
    for (Index r0 = 0; r0 < n; r0 += block_rows) {
        const Index rows = std::min(block_rows, n - r0);
        block.resize(rows, vocab);
        gemm(block, h.middleRows(r0, rows), head.transpose());
        // Each counted row becomes its softmax gradient in place; ignored rows become zeros.
#pragma omp parallel for reduction(+ : total) schedule(static) if (rows * vocab >= kParallelMinElements)
        for (Index r = 0; r < rows; ++r) {
            const std::int32_t t = targets[std::size_t(r0 + r)];
            if (t < 0) {
                block.row(r).setZero();
                continue;
            }
            const T lse = log_sum_exp<T>(block.row(r));
            total += double(lse) - double(block(r, t));
            if (dh == nullptr) continue;
            block.row(r) = ((block.row(r).array() - lse).exp() * scale).matrix();
            block(r, t) -= scale;
        }
        if (dh != nullptr) gemm(dh->middleRows(r0, rows), block, head);
    }
    return T(total / double(count));
}

}  // namespace softprompt::kernels
