#pragma once
// Row softmax and cross-entropy as forward/backward pairs.
//   x, y, dy, dx, logits, dlogits: [N, V]    targets: [N] (negative = ignored)    lse: [N]

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "softprompt/core/tensor.hpp"

namespace softprompt::kernels {

/// y = softmax(x) along each row (max-subtracted; −inf entries give 0).
template <class T>
void softmax_forward(ConstRef<T> x, MatRef<T> y) {
    for (Index r = 0; r < x.rows(); ++r) {
        const T m = x.row(r).maxCoeff();
        y.row(r) = (x.row(r).array() - m).exp();
        y.row(r) /= y.row(r).sum();
    }
}

/// dx += y ⊙ (dy − Σ dy ⊙ y)
template <class T>
void softmax_backward(ConstRef<T> y, ConstRef<T> dy, MatRef<T> dx) {
    for (Index r = 0; r < y.rows(); ++r) {
        const T dot = y.row(r).dot(dy.row(r));
        dx.row(r).array() += y.row(r).array() * (dy.row(r).array() - dot);
    }
}

/// log Σ exp(row), stable.
template <class T, class Row>
T log_sum_exp(const Row& row) {
    const T m = row.maxCoeff();
    return m + std::log((row.array() - m).exp().sum());
}

/// Mean over non-ignored rows of −log softmax(logits)[target]. Writes each counted row's
/// log-sum-exp (backward recomputes the softmax from it instead of keeping an [N, V] copy) and
/// returns the number of counted rows through `count`.
template <class T>
T cross_entropy_forward(ConstRef<T> logits, std::span<const std::int32_t> targets,
                        Eigen::Ref<Eigen::VectorX<T>> lse, Index& count) {
    double total = 0;
    count = 0;
    for (Index r = 0; r < logits.rows(); ++r) {
        const std::int32_t t = targets[std::size_t(r)];
        if (t < 0) continue;
        lse(r) = log_sum_exp<T>(logits.row(r));
        total += double(lse(r)) - double(logits(r, t));
        ++count;
    }
    return count == 0 ? T(0) : T(total / double(count));
}

/// dlogits += scale · (softmax(logits) − onehot(target)) on counted rows; scale = dloss / count.
template <class T>
void cross_entropy_backward(ConstRef<T> logits, std::span<const std::int32_t> targets,
                            const Eigen::VectorX<T>& lse, T scale, MatRef<T> dlogits) {
    for (Index r = 0; r < logits.rows(); ++r) {
        const std::int32_t t = targets[std::size_t(r)];
        if (t < 0) continue;
        dlogits.row(r).array() += scale * (logits.row(r).array() - lse(r)).exp();
        dlogits(r, t) -= scale;
    }
}

}  // namespace softprompt::kernels
