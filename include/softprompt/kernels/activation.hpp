#pragma once
// Elementwise activations as forward/backward pairs on whole matrices.
//   x, gate, up, y, dy: [N, C]

#include <cmath>

#include "softprompt/core/tensor.hpp"
#include "softprompt/kernels/parallel.hpp"

namespace softprompt::kernels {

namespace detail {
template <class T>
constexpr T gelu_coeff = T(0.044715);
template <class T>
inline T sqrt_2_over_pi() {
    return T(std::sqrt(2.0 / 3.14159265358979323846));
}
// An elementwise temporary (row-major like every matrix here).
template <class T>
using Arr = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace detail

// The kernels below are Eigen array expressions, so that tanh, exp and the logistic function use
// Eigen's vectorised implementations (float) rather than a scalar call per element.

/// GELU, tanh form (GPT-2's "gelu_new"): y = x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³))).
template <class T>
void gelu_forward(ConstRef<T> x, MatRef<T> y) {
    const T c = detail::sqrt_2_over_pi<T>(), a = detail::gelu_coeff<T>;
    for_row_blocks(x.rows(), x.cols(), [&](Index r0, Index n) {
        const auto v = x.middleRows(r0, n).array();
        y.middleRows(r0, n).array() = T(0.5) * v * (T(1) + (c * (v + a * v.cube())).tanh());
    });
}

/// dx += dy · gelu'(x), gelu'(x) = (1 + t)/2 + x(1 − t²)/2 · √(2/π)(1 + 3·0.044715 x²)
template <class T>
void gelu_backward(ConstRef<T> x, ConstRef<T> dy, MatRef<T> dx) {
    const T c = detail::sqrt_2_over_pi<T>(), a = detail::gelu_coeff<T>;
    for_row_blocks(x.rows(), x.cols(), [&](Index r0, Index n) {
        const auto v = x.middleRows(r0, n).array();
        const detail::Arr<T> t = (c * (v + a * v.cube())).tanh();
        dx.middleRows(r0, n).array() +=
            dy.middleRows(r0, n).array() *
            (T(0.5) * (T(1) + t) +
             T(0.5) * v * (T(1) - t.square()) * c * (T(1) + T(3) * a * v.square()));
    });
}

/// SiLU (swish): y = x · σ(x).
template <class T>
void silu_forward(ConstRef<T> x, MatRef<T> y) {
    for_row_blocks(x.rows(), x.cols(), [&](Index r0, Index n) {
        const auto v = x.middleRows(r0, n).array();
        y.middleRows(r0, n).array() = v * v.logistic();
    });
}

/// dx += dy · σ(x)(1 + x(1 − σ(x)))
template <class T>
void silu_backward(ConstRef<T> x, ConstRef<T> dy, MatRef<T> dx) {
    for_row_blocks(x.rows(), x.cols(), [&](Index r0, Index n) {
        const auto v = x.middleRows(r0, n).array();
        const detail::Arr<T> s = v.logistic();
        dx.middleRows(r0, n).array() += dy.middleRows(r0, n).array() * s * (T(1) + v * (T(1) - s));
    });
}

/// SwiGLU: y = silu(gate) ⊙ up (LLaMA's feed-forward gate).
template <class T>
void swiglu_forward(ConstRef<T> gate, ConstRef<T> up, MatRef<T> y) {
    for_row_blocks(gate.rows(), gate.cols(), [&](Index r0, Index n) {
        const auto g = gate.middleRows(r0, n).array();
        y.middleRows(r0, n).array() = g * g.logistic() * up.middleRows(r0, n).array();
    });
}

/// dgate += dy ⊙ up ⊙ silu'(gate); dup += dy ⊙ silu(gate). Either output may be skipped by
/// passing an empty matrix.
template <class T>
void swiglu_backward(ConstRef<T> gate, ConstRef<T> up, ConstRef<T> dy, MatRef<T> dgate,
                     MatRef<T> dup) {
    for_row_blocks(gate.rows(), gate.cols(), [&](Index r0, Index n) {
        const auto g = gate.middleRows(r0, n).array();
        const auto d = dy.middleRows(r0, n).array();
        const detail::Arr<T> s = g.logistic();
        if (dgate.size() != 0)
            dgate.middleRows(r0, n).array() +=
                d * up.middleRows(r0, n).array() * s * (T(1) + g * (T(1) - s));
        if (dup.size() != 0) dup.middleRows(r0, n).array() += d * g * s;
    });
}

/// tanh: y = tanh(x); backward uses the output: dx += dy · (1 − y²).
template <class T>
void tanh_forward(ConstRef<T> x, MatRef<T> y) {
    y = x.array().tanh().matrix();
}
template <class T>
void tanh_backward(ConstRef<T> y, ConstRef<T> dy, MatRef<T> dx) {
    dx.array() += dy.array() * (T(1) - y.array().square());
}

/// Logistic sigmoid: y = σ(x); backward uses the output: dx += dy · y(1 − y).
template <class T>
void sigmoid_forward(ConstRef<T> x, MatRef<T> y) {
    y.array() = x.array().logistic();
}
template <class T>
void sigmoid_backward(ConstRef<T> y, ConstRef<T> dy, MatRef<T> dx) {
    dx.array() += dy.array() * y.array() * (T(1) - y.array());
}

/// ReLU: y = max(x, 0); dx += dy where x > 0.
template <class T>
void relu_forward(ConstRef<T> x, MatRef<T> y) {
    y = x.cwiseMax(T(0));
}
template <class T>
void relu_backward(ConstRef<T> x, ConstRef<T> dy, MatRef<T> dx) {
    dx.array() += (x.array() > T(0)).select(dy.array(), T(0));
}

}  // namespace softprompt::kernels
