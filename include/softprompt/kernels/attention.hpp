#pragma once
// Causal scaled-dot-product attention over a right-padded batch, with an optional key/value prefix
// that every query sees and grouped key/value heads.
//   q, out, dq: [B*S, H*hd]     k, v, dk, dv: [B*S, Hkv*hd]     prefix_k, prefix_v: [P, Hkv*hd]
//   lengths: [B] real tokens per row (right padding)    probs: B*H matrices of [len_b, P + len_b]
// Query head h reads key/value head h / (H / Hkv), as Hugging Face's repeat_kv does. The prefix is
// shared by every row of the batch, so its gradient sums over the batch. Padded query rows output
// zero and receive no gradient; real queries never see padded keys because the mask is causal.

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/kernels/gemm.hpp"
#include "softprompt/kernels/parallel.hpp"

namespace softprompt::kernels {

struct AttentionSpec {
    Index batch = 1;
    Index seq = 0;
    Index n_heads = 1;
    Index n_kv_heads = 1;
    Index head_dim = 0;

    Index q_width() const { return n_heads * head_dim; }
    Index kv_width() const { return n_kv_heads * head_dim; }
    Index group() const { return n_heads / n_kv_heads; }
};

/// Real length of batch row b (all of `seq` when no lengths are given).
inline Index attention_length(std::span<const std::int32_t> lengths, const AttentionSpec& spec,
                              Index b) {
    return lengths.empty() ? spec.seq : Index(lengths[std::size_t(b)]);
}

/// Validate every operand against the spec; throws ShapeError naming the operand.
template <class T>
void attention_check(const char* op, ConstRef<T> q, ConstRef<T> k, ConstRef<T> v,
                     ConstRef<T> prefix_k, ConstRef<T> prefix_v, const AttentionSpec& spec,
                     std::span<const std::int32_t> lengths) {
    if (spec.n_kv_heads <= 0 || spec.n_heads % spec.n_kv_heads != 0)
        throw ShapeError(std::string(op) + ": n_heads " + std::to_string(spec.n_heads) +
                         " is not a multiple of n_kv_heads " + std::to_string(spec.n_kv_heads));
    const Index rows = spec.batch * spec.seq;
    if (q.rows() != rows || q.cols() != spec.q_width())
        throw ShapeError::mismatch(op, "q", rows, spec.q_width(), q.rows(), q.cols());
    if (k.rows() != rows || k.cols() != spec.kv_width())
        throw ShapeError::mismatch(op, "k", rows, spec.kv_width(), k.rows(), k.cols());
    if (v.rows() != rows || v.cols() != spec.kv_width())
        throw ShapeError::mismatch(op, "v", rows, spec.kv_width(), v.rows(), v.cols());
    if (prefix_k.rows() != prefix_v.rows())
        throw ShapeError::operands(op, "prefix keys and values differ", "prefix_k", prefix_k.rows(),
                                   prefix_k.cols(), "prefix_v", prefix_v.rows(), prefix_v.cols());
    if (prefix_k.rows() > 0 &&
        (prefix_k.cols() != spec.kv_width() || prefix_v.cols() != spec.kv_width()))
        throw ShapeError::mismatch(op, "prefix_k", prefix_k.rows(), spec.kv_width(),
                                   prefix_k.rows(), prefix_k.cols());
    if (!lengths.empty() && Index(lengths.size()) != spec.batch)
        throw ShapeError(std::string(op) + ": " + std::to_string(lengths.size()) +
                         " lengths for a batch of " + std::to_string(spec.batch));
    for (std::size_t b = 0; b < lengths.size(); ++b)
        if (lengths[b] < 0 || lengths[b] > spec.seq)
            throw ShapeError(std::string(op) + ": length " + std::to_string(lengths[b]) +
                             " of batch row " + std::to_string(b) + " is outside [0, " +
                             std::to_string(spec.seq) + "]");
}

/// out = softmax(q kᵀ/√hd + causal mask) v per (row, head), keys = [prefix; row's keys].
/// `probs`, when given, receives the attention probabilities that backward needs.
template <class T>
void attention_forward(ConstRef<T> q, ConstRef<T> k, ConstRef<T> v, ConstRef<T> prefix_k,
                       ConstRef<T> prefix_v, const AttentionSpec& spec,
                       std::span<const std::int32_t> lengths, MatRef<T> out,
                       std::vector<Mat<T>>* probs) {
    const Index hd = spec.head_dim, P = prefix_k.rows();
    const T scale = T(1) / std::sqrt(T(hd));
    if (probs != nullptr) probs->assign(std::size_t(spec.batch * spec.n_heads), Mat<T>());
    out.setZero();
    // (row, head) pairs are independent: each writes its own block of `out` and its own `probs`.
    const Index pairs = spec.batch * spec.n_heads;
    // Read only by the OpenMP pragma: unused when built without OpenMP.
    [[maybe_unused]] const bool split =
        pairs > 1 && pairs * spec.seq * (P + spec.seq) * hd >= kParallelMinFlops;
#pragma omp parallel for schedule(dynamic) if (split)
    for (Index pair = 0; pair < pairs; ++pair) {
        const Index b = pair / spec.n_heads, h = pair % spec.n_heads;
        const Index L = attention_length(lengths, spec, b);
        if (L == 0) continue;
        const Index kh = h / spec.group();
        Mat<T> local;
        Mat<T>& p = probs != nullptr ? (*probs)[std::size_t(pair)] : local;
        p.resize(L, P + L);
        const auto Q = q.block(b * spec.seq, h * hd, L, hd);
        const auto K = k.block(b * spec.seq, kh * hd, L, hd);
        const auto V = v.block(b * spec.seq, kh * hd, L, hd);
        if (P > 0) gemm(p.leftCols(P), Q, prefix_k.block(0, kh * hd, P, hd).transpose());
        gemm(p.rightCols(L), Q, K.transpose());
        p *= scale;
        for (Index i = 0; i < L; ++i) {
            // causal: query i sees the prefix and real keys 0..i
            p.row(i).tail(L - 1 - i).setConstant(-std::numeric_limits<T>::infinity());
            const T m = p.row(i).head(P + i + 1).maxCoeff();
            p.row(i).head(P + i + 1) = (p.row(i).head(P + i + 1).array() - m).exp();
            p.row(i).head(P + i + 1) /= p.row(i).head(P + i + 1).sum();
            p.row(i).tail(L - 1 - i).setZero();
        }
        auto O = out.block(b * spec.seq, h * hd, L, hd);
        gemm(O, p.rightCols(L), V);
        if (P > 0) gemm_accumulate(O, p.leftCols(P), prefix_v.block(0, kh * hd, P, hd));
    }
}

/// Gradients of attention_forward, added into every non-empty output (an empty matrix is skipped).
template <class T>
void attention_backward(ConstRef<T> q, ConstRef<T> k, ConstRef<T> v, ConstRef<T> prefix_k,
                        ConstRef<T> prefix_v, const AttentionSpec& spec,
                        std::span<const std::int32_t> lengths, const std::vector<Mat<T>>& probs,
                        ConstRef<T> dout, MatRef<T> dq, MatRef<T> dk, MatRef<T> dv,
                        MatRef<T> dprefix_k, MatRef<T> dprefix_v) {
    const Index hd = spec.head_dim, P = prefix_k.rows();
    const T scale = T(1) / std::sqrt(T(hd));
    const bool need_scores = dq.size() != 0 || dk.size() != 0 || dprefix_k.size() != 0;
    // One task per key/value head: the heads of its group are the only writers of its columns of
    // dk, dv and the prefix gradients (which sum over batch rows), so the tasks never collide.
    [[maybe_unused]] const bool split =
        spec.n_kv_heads > 1 &&
        spec.batch * spec.n_heads * spec.seq * (P + spec.seq) * hd >= kParallelMinFlops;
#pragma omp parallel for schedule(dynamic) if (split)
    for (Index kh = 0; kh < spec.n_kv_heads; ++kh) {
        for (Index b = 0; b < spec.batch; ++b) {
            const Index L = attention_length(lengths, spec, b);
            if (L == 0) continue;
            Mat<T> dp;
            for (Index h = kh * spec.group(); h < (kh + 1) * spec.group(); ++h) {
                const Mat<T>& p = probs[std::size_t(b * spec.n_heads + h)];
                const auto dO = dout.block(b * spec.seq, h * hd, L, hd);
                if (dv.size() != 0)
                    gemm_accumulate(dv.block(b * spec.seq, kh * hd, L, hd),
                                    p.rightCols(L).transpose(), dO);
                if (P > 0 && dprefix_v.size() != 0)
                    gemm_accumulate(dprefix_v.block(0, kh * hd, P, hd), p.leftCols(P).transpose(),
                                    dO);
                if (!need_scores) continue;
                // dP = dO · [Vp; V]ᵀ, then the softmax backward dS = P ⊙ (dP − Σ dP ⊙ P), scaled.
                dp.resize(L, P + L);
                gemm(dp.rightCols(L), dO, v.block(b * spec.seq, kh * hd, L, hd).transpose());
                if (P > 0) gemm(dp.leftCols(P), dO, prefix_v.block(0, kh * hd, P, hd).transpose());
                for (Index i = 0; i < L; ++i) {
                    const T dot = p.row(i).dot(dp.row(i));
                    dp.row(i) = (p.row(i).array() * (dp.row(i).array() - dot) * scale).matrix();
                }
                const auto Q = q.block(b * spec.seq, h * hd, L, hd);
                if (dq.size() != 0) {
                    auto dQ = dq.block(b * spec.seq, h * hd, L, hd);
                    gemm_accumulate(dQ, dp.rightCols(L), k.block(b * spec.seq, kh * hd, L, hd));
                    if (P > 0)
                        gemm_accumulate(dQ, dp.leftCols(P), prefix_k.block(0, kh * hd, P, hd));
                }
                if (dk.size() != 0)
                    gemm_accumulate(dk.block(b * spec.seq, kh * hd, L, hd),
                                    dp.rightCols(L).transpose(), Q);
                if (P > 0 && dprefix_k.size() != 0)
                    gemm_accumulate(dprefix_k.block(0, kh * hd, P, hd), dp.leftCols(P).transpose(),
                                    Q);
            }
        }
    }
}

}  // namespace softprompt::kernels

namespace softprompt::kernels {

/// Attention of n new queries of one sequence over its cache, for inference (no backward).
///   q, out: [n, H*hd]   keys, values: [past + n, Hkv*hd] (the new rows already appended)
///   prefix_k, prefix_v: [P, Hkv*hd] (an adapter's cached virtual-token keys/values, may be empty)
/// New query i sees the whole prefix and cache rows 0..past+i.
template <class T>
void attention_cached(ConstRef<T> q, ConstRef<T> keys, ConstRef<T> values, ConstRef<T> prefix_k,
                      ConstRef<T> prefix_v, Index past, const AttentionSpec& spec, MatRef<T> out) {
    const Index hd = spec.head_dim, P = prefix_k.rows(), n = q.rows(), total = past + n;
    const T scale = T(1) / std::sqrt(T(hd));
    // Heads are independent; a prefill's heads are worth a thread each, a decode step's one query
    // row is not worth waking them.
    [[maybe_unused]] const bool split =
        spec.n_heads > 1 && spec.n_heads * n * (P + total) * hd >= kParallelMinFlops;
#pragma omp parallel for schedule(dynamic) if (split)
    for (Index h = 0; h < spec.n_heads; ++h) {
        const Index kh = h / spec.group();
        Mat<T> p(n, P + total);
        const auto Q = q.block(0, h * hd, n, hd);
        if (P > 0) gemm(p.leftCols(P), Q, prefix_k.block(0, kh * hd, P, hd).transpose());
        gemm(p.rightCols(total), Q, keys.block(0, kh * hd, total, hd).transpose());
        p *= scale;
        for (Index i = 0; i < n; ++i) {
            const Index visible = P + past + i + 1;
            const T m = p.row(i).head(visible).maxCoeff();
            p.row(i).head(visible) = (p.row(i).head(visible).array() - m).exp();
            p.row(i).head(visible) /= p.row(i).head(visible).sum();
            p.row(i).tail(P + total - visible).setZero();
        }
        auto O = out.block(0, h * hd, n, hd);
        gemm(O, p.rightCols(total), values.block(0, kh * hd, total, hd));
        if (P > 0) gemm_accumulate(O, p.leftCols(P), prefix_v.block(0, kh * hd, P, hd));
    }
}

}  // namespace softprompt::kernels
