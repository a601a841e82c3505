#pragma once
// Elementwise activations as forward/backward pairs on whole matrices.
//   x, gate, up, y, dy: [N, C]

#include <cmath>

#include "softprompt/core/tensor.hpp"

namespace softprompt::kernels {

namespace detail {
template <class T>
constexpr T gelu_coeff = T(0.044715);
template <class T>
inline T sqrt_2_over_pi() {
    return T(std::sqrt(2.0 / 3.14159265358979323846));
}
template <class T>
inline T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
}
}  // namespace detail

/// GELU, tanh form (GPT-2's "gelu_new"): y = x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³))).
template <class T>
void gelu_forward(ConstRef<T> x, MatRef<T> y) {
    const T c = detail::sqrt_2_over_pi<T>();
    y = x.unaryExpr([c](T v) {
        return T(0.5) * v * (T(1) + std::tanh(c * (v + detail::gelu_coeff<T> * v * v * v)));
    });
}

/// dx += dy · gelu'(x)
template <class T>
void gelu_backward(ConstRef<T> x, ConstRef<T> dy, MatRef<T> dx) {
    const T c = detail::sqrt_2_over_pi<T>();
    dx += dy.binaryExpr(x, [c](T g, T v) {
        const T t = std::tanh(c * (v + detail::gelu_coeff<T> * v * v * v));
        const T dinner = c * (T(1) + T(3) * detail::gelu_coeff<T> * v * v);
        return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * dinner);
    });
}

/// SiLU (swish): y = x · σ(x).
template <class T>
void silu_forward(ConstRef<T> x, MatRef<T> y) {
    y = x.unaryExpr([](T v) { return v * detail::sigmoid(v); });
}

/// dx += dy · σ(x)(1 + x(1 − σ(x)))
template <class T>
void silu_backward(ConstRef<T> x, ConstRef<T> dy, MatRef<T> dx) {
    dx += dy.binaryExpr(x, [](T g, T v) {
        const T s = detail::sigmoid(v);
        return g * s * (T(1) + v * (T(1) - s));
    });
}

/// SwiGLU: y = silu(gate) ⊙ up (LLaMA's feed-forward gate).
template <class T>
void swiglu_forward(ConstRef<T> gate, ConstRef<T> up, MatRef<T> y) {
    y = gate.binaryExpr(up, [](T g, T u) { return g * detail::sigmoid(g) * u; });
}

/// dgate += dy ⊙ up ⊙ silu'(gate); dup += dy ⊙ silu(gate). Either output may be skipped by
/// passing an empty matrix.
template <class T>
void swiglu_backward(ConstRef<T> gate, ConstRef<T> up, ConstRef<T> dy, MatRef<T> dgate,
                     MatRef<T> dup) {
    for (Index r = 0; r < gate.rows(); ++r) {
        for (Index c = 0; c < gate.cols(); ++c) {
            const T g = gate(r, c);
            const T s = detail::sigmoid(g);
            if (dgate.size() != 0) dgate(r, c) += dy(r, c) * up(r, c) * s * (T(1) + g * (T(1) - s));
            if (dup.size() != 0) dup(r, c) += dy(r, c) * g * s;
        }
    }
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
    y = x.unaryExpr([](T v) { return detail::sigmoid(v); });
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
