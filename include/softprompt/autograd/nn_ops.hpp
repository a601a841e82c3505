#pragma once
// Neural-network ops on a tape: activations, normalisations, softmax, RoPE, attention with a
// key/value prefix, cross-entropy, and cross-entropy fused with the LM head. Each wraps a
// forward/backward kernel pair from kernels/ and records only when an input needs a gradient. Norm
// gains and biases are frozen weights.

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "softprompt/autograd/ops.hpp"
#include "softprompt/autograd/tape.hpp"
#include "softprompt/kernels/activation.hpp"
#include "softprompt/kernels/attention.hpp"
#include "softprompt/kernels/lm_loss.hpp"
#include "softprompt/kernels/norm.hpp"
#include "softprompt/kernels/rope.hpp"
#include "softprompt/kernels/softmax.hpp"

namespace softprompt::autograd {

using kernels::AttentionSpec;
using kernels::RopeLayout;
using kernels::RopeSpec;

// ---------------------------------------------------------------------------------------------
// Activations. x, gate, up, y: [N, C]

/// GELU, tanh form.
template <class T>
Var<T> gelu(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("gelu", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::gelu_forward<T>(x.value(), y);
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record("gelu", std::move(y), x.requires_grad(), [xn](const Mat<T>& dy) {
        kernels::gelu_backward<T>(xn->value(), dy, detail::grad_buffer(*xn));
    });
}

/// SiLU: x·σ(x).
template <class T>
Var<T> silu(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("silu", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::silu_forward<T>(x.value(), y);
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record("silu", std::move(y), x.requires_grad(), [xn](const Mat<T>& dy) {
        kernels::silu_backward<T>(xn->value(), dy, detail::grad_buffer(*xn));
    });
}

/// tanh (the prefix reparameterisation's nonlinearity, LSTM cells).
template <class T>
Var<T> tanh(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("tanh", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::tanh_forward<T>(x.value(), y);
    if (!x.requires_grad()) return tape.constant(std::move(y));
    auto xn = x.node();
    Mat<T> kept = y;  // backward needs the output
    return tape.record("tanh", std::move(y), true, [xn, kept = std::move(kept)](const Mat<T>& dy) {
        kernels::tanh_backward<T>(kept, dy, detail::grad_buffer(*xn));
    });
}

/// Logistic sigmoid (LSTM gates).
template <class T>
Var<T> sigmoid(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("sigmoid", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::sigmoid_forward<T>(x.value(), y);
    if (!x.requires_grad()) return tape.constant(std::move(y));
    auto xn = x.node();
    Mat<T> kept = y;
    return tape.record("sigmoid", std::move(y), true,
                       [xn, kept = std::move(kept)](const Mat<T>& dy) {
                           kernels::sigmoid_backward<T>(kept, dy, detail::grad_buffer(*xn));
                       });
}

/// ReLU (P-tuning's MLP prompt encoder).
template <class T>
Var<T> relu(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("relu", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::relu_forward<T>(x.value(), y);
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record("relu", std::move(y), x.requires_grad(), [xn](const Mat<T>& dy) {
        kernels::relu_backward<T>(xn->value(), dy, detail::grad_buffer(*xn));
    });
}

/// SwiGLU: silu(gate) ⊙ up.
template <class T>
Var<T> swiglu(Tape<T>& tape, const Var<T>& gate, const Var<T>& up) {
    detail::require_defined("swiglu", gate, "gate");
    detail::require_defined("swiglu", up, "up");
    if (gate.rows() != up.rows() || gate.cols() != up.cols())
        throw ShapeError::operands("swiglu", "shapes differ", "gate", gate.rows(), gate.cols(),
                                   "up", up.rows(), up.cols());
    Mat<T> y(gate.rows(), gate.cols());
    kernels::swiglu_forward<T>(gate.value(), up.value(), y);
    const bool any_grad = gate.requires_grad() || up.requires_grad();
    auto gn = any_grad ? detail::keep_value(gate) : gate.node();
    auto un = any_grad ? detail::keep_value(up) : up.node();
    return tape.record("swiglu", std::move(y), gate.requires_grad() || up.requires_grad(),
                       [gn, un](const Mat<T>& dy) {
                           Mat<T> none;
                           kernels::swiglu_backward<T>(
                               gn->value(), un->value(), dy,
                               gn->requires_grad ? detail::grad_buffer(*gn) : none,
                               un->requires_grad ? detail::grad_buffer(*un) : none);
                       });
}

// ---------------------------------------------------------------------------------------------
// Normalisations. x, y: [N, C]   gamma, beta: [1, C] (frozen)

namespace detail {
template <class T>
void check_gain(const char* op, const char* name, const WeightView<T>& w, Index width) {
    if (w.rows() != 1 || w.cols() != width)
        throw ShapeError::mismatch(op, name, 1, width, w.rows(), w.cols());
}
}  // namespace detail

/// LayerNorm over each row with frozen gain and bias.
template <class T>
Var<T> layer_norm(Tape<T>& tape, const Var<T>& x, WeightArg<T> gamma, WeightArg<T> beta,
                  std::type_identity_t<T> eps) {
    detail::require_defined("layer_norm", x, "x");
    detail::check_gain("layer_norm", "gamma", gamma, x.cols());
    detail::check_gain("layer_norm", "beta", beta, x.cols());
    Mat<T> y(x.rows(), x.cols());
    Eigen::VectorX<T> mean(x.rows()), rstd(x.rows());
    kernels::layer_norm_forward<T>(x.value(), gamma, beta, eps, y, mean, rstd);
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record(
        "layer_norm", std::move(y), x.requires_grad(),
        [xn, gamma, mean = std::move(mean), rstd = std::move(rstd)](const Mat<T>& dy) {
            kernels::layer_norm_backward<T>(xn->value(), gamma, mean, rstd, dy,
                                            detail::grad_buffer(*xn));
        });
}

/// RMSNorm over each row with a frozen gain.
template <class T>
Var<T> rms_norm(Tape<T>& tape, const Var<T>& x, WeightArg<T> gamma, std::type_identity_t<T> eps) {
    detail::require_defined("rms_norm", x, "x");
    detail::check_gain("rms_norm", "gamma", gamma, x.cols());
    Mat<T> y(x.rows(), x.cols());
    Eigen::VectorX<T> rstd(x.rows());
    kernels::rms_norm_forward<T>(x.value(), gamma, eps, y, rstd);
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record("rms_norm", std::move(y), x.requires_grad(),
                       [xn, gamma, rstd = std::move(rstd)](const Mat<T>& dy) {
                           kernels::rms_norm_backward<T>(xn->value(), gamma, rstd, dy,
                                                         detail::grad_buffer(*xn));
                       });
}

/// RMSNorm of every head of every row (Qwen3's q_norm/k_norm): each [hd] block of a row is a row
/// of its own. A row-major [N, H*hd] matrix is a row-major [N*H, hd] one in the same memory, so the
/// row kernels run on that view.
///   x, y: [N, H*hd]   gamma: [1, hd] (frozen)
template <class T>
Var<T> head_rms_norm(Tape<T>& tape, const Var<T>& x, WeightArg<T> gamma,
                     std::type_identity_t<T> eps) {
    detail::require_defined("head_rms_norm", x, "x");
    const Index hd = gamma.cols();
    if (gamma.rows() != 1 || hd <= 0 || x.cols() % hd != 0)
        throw ShapeError("head_rms_norm: gain [" + std::to_string(gamma.rows()) + " x " +
                         std::to_string(hd) + "] does not split rows of width " +
                         std::to_string(x.cols()) + " into heads");
    const Index heads = x.rows() * (x.cols() / hd);
    Mat<T> y(x.rows(), x.cols());
    Eigen::VectorX<T> rstd(heads);
    {
        Eigen::Map<const Mat<T>> xh(x.value().data(), heads, hd);
        Eigen::Map<Mat<T>> yh(y.data(), heads, hd);
        kernels::rms_norm_forward<T>(xh, gamma, eps, yh, rstd);
    }
    auto xn = x.requires_grad() ? detail::keep_value(x) : x.node();
    return tape.record("head_rms_norm", std::move(y), x.requires_grad(),
                       [xn, gamma, heads, hd, rstd = std::move(rstd)](const Mat<T>& dy) {
                           Eigen::Map<const Mat<T>> xh(xn->value().data(), heads, hd);
                           Eigen::Map<const Mat<T>> dyh(dy.data(), heads, hd);
                           Mat<T>& dx = detail::grad_buffer(*xn);
                           Eigen::Map<Mat<T>> dxh(dx.data(), heads, hd);
                           kernels::rms_norm_backward<T>(xh, gamma, rstd, dyh, dxh);
                       });
}

/// Softmax along each row.
template <class T>
Var<T> softmax(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("softmax", x, "x");
    Mat<T> y(x.rows(), x.cols());
    kernels::softmax_forward<T>(x.value(), y);
    auto xn = x.node();
    if (!x.requires_grad()) return tape.constant(std::move(y));
    // Backward needs the output; keep a copy rather than a reference to this op's own node.
    Mat<T> kept = y;
    return tape.record("softmax", std::move(y), true,
                       [xn, kept = std::move(kept)](const Mat<T>& dy) {
                           kernels::softmax_backward<T>(kept, dy, detail::grad_buffer(*xn));
                       });
}

// ---------------------------------------------------------------------------------------------
// RoPE. x: [N, H*hd]   positions: [N] (each row's absolute position)

/// Rotate each head of each row by its position. Backward rotates the gradient back.
template <class T>
Var<T> rope(Tape<T>& tape, const Var<T>& x, const RopeSpec& spec,
            std::span<const std::int32_t> positions) {
    detail::require_defined("rope", x, "x");
    kernels::rope_check("rope", x.rows(), x.cols(), positions.size(), spec);
    Mat<T> cos, sin;
    kernels::rope_tables<T>(positions, spec, cos, sin);
    Mat<T> y = x.value();
    kernels::rope_rotate<T>(y, spec, cos, sin, /*inverse=*/false);
    auto xn = x.node();
    return tape.record("rope", std::move(y), x.requires_grad(),
                       [xn, spec, cos = std::move(cos), sin = std::move(sin)](const Mat<T>& dy) {
                           Mat<T> back = dy;
                           kernels::rope_rotate<T>(back, spec, cos, sin, /*inverse=*/true);
                           detail::accumulate_grad(*xn, back);
                       });
}

/// Positions offset, offset+1, ... for each of `batch` rows of `seq` tokens: the [B*S] positions
/// of a right-padded batch whose real tokens start at `offset` (P, after P virtual tokens).
inline std::vector<std::int32_t> batch_positions(Index batch, Index seq, std::int32_t offset) {
    std::vector<std::int32_t> pos(std::size_t(batch * seq));
    for (Index b = 0; b < batch; ++b)
        for (Index s = 0; s < seq; ++s) pos[std::size_t(b * seq + s)] = offset + std::int32_t(s);
    return pos;
}

// ---------------------------------------------------------------------------------------------
// Attention. q: [B*S, H*hd]   k, v: [B*S, Hkv*hd]   prefix_k, prefix_v: [P, Hkv*hd] or empty
//            lengths: [B] or empty (all rows full)   y: [B*S, H*hd]

/// Causal attention over a right-padded batch; an optional key/value prefix (shared by every row,
/// visible to every query, taken as-is) is prepended to each row's keys and values.
template <class T>
Var<T> attention(Tape<T>& tape, const Var<T>& q, const Var<T>& k, const Var<T>& v,
                 const AttentionSpec& spec, std::span<const std::int32_t> lengths = {},
                 const Var<T>& prefix_k = {}, const Var<T>& prefix_v = {}) {
    detail::require_defined("attention", q, "q");
    detail::require_defined("attention", k, "k");
    detail::require_defined("attention", v, "v");
    if (prefix_k.defined() != prefix_v.defined())
        throw ShapeError("attention: a prefix needs both keys and values; only one was given");
    const Mat<T> no_prefix(0, spec.kv_width());
    const Mat<T>& pk = prefix_k.defined() ? prefix_k.value() : no_prefix;
    const Mat<T>& pv = prefix_v.defined() ? prefix_v.value() : no_prefix;
    kernels::attention_check<T>("attention", q.value(), k.value(), v.value(), pk, pv, spec,
                                lengths);

    const bool any_grad = q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                          prefix_k.requires_grad() || prefix_v.requires_grad();
    Mat<T> y(q.rows(), q.cols());
    std::vector<Mat<T>> probs;
    kernels::attention_forward<T>(q.value(), k.value(), v.value(), pk, pv, spec, lengths, y,
                                  any_grad ? &probs : nullptr);
    if (!any_grad) return tape.constant(std::move(y));

    auto qn = detail::keep_value(q), kn = detail::keep_value(k), vn = detail::keep_value(v);
    auto pkn = detail::keep_value(prefix_k), pvn = detail::keep_value(prefix_v);
    std::vector<std::int32_t> kept(lengths.begin(), lengths.end());
    return tape.record(
        "attention", std::move(y), true,
        [qn, kn, vn, pkn, pvn, spec, kept = std::move(kept),
         probs = std::move(probs)](const Mat<T>& dy) {
            Mat<T> none, empty_prefix(0, spec.kv_width());
            auto grad_of = [&none](const std::shared_ptr<detail::Node<T>>& n) -> Mat<T>& {
                return n && n->requires_grad ? detail::grad_buffer(*n) : none;
            };
            kernels::attention_backward<T>(
                qn->value(), kn->value(), vn->value(), pkn ? pkn->value() : empty_prefix,
                pvn ? pvn->value() : empty_prefix, spec, kept, probs, dy, grad_of(qn), grad_of(kn),
                grad_of(vn), grad_of(pkn), grad_of(pvn));
        });
}

// ---------------------------------------------------------------------------------------------
// Loss. logits: [N, V]   targets: [N], negative = ignored (PyTorch's ignore_index −100 included)

/// Mean cross-entropy over the positions whose target is not ignored. Throws NumericError when
/// every target is ignored (the mean is undefined).
template <class T>
Var<T> cross_entropy(Tape<T>& tape, const Var<T>& logits, std::span<const std::int32_t> targets) {
    detail::require_defined("cross_entropy", logits, "logits");
    if (Index(targets.size()) != logits.rows())
        throw ShapeError("cross_entropy: " + std::to_string(targets.size()) + " targets for " +
                         std::to_string(logits.rows()) + " rows of logits");
    for (std::size_t i = 0; i < targets.size(); ++i)
        if (targets[i] >= logits.cols())
            throw ShapeError("cross_entropy: target " + std::to_string(targets[i]) + " at row " +
                             std::to_string(i) + " is outside the " +
                             std::to_string(logits.cols()) + " classes");
    Eigen::VectorX<T> lse = Eigen::VectorX<T>::Zero(logits.rows());
    Index count = 0;
    Mat<T> loss(1, 1);
    loss(0, 0) = kernels::cross_entropy_forward<T>(logits.value(), targets, lse, count);
    if (count == 0)
        throw NumericError("cross_entropy: all " + std::to_string(targets.size()) +
                           " targets are ignored; the mean loss is undefined");
    auto ln = logits.requires_grad() ? detail::keep_value(logits) : logits.node();
    std::vector<std::int32_t> kept(targets.begin(), targets.end());
    return tape.record("cross_entropy", std::move(loss), logits.requires_grad(),
                       [ln, kept = std::move(kept), lse = std::move(lse), count](const Mat<T>& dy) {
                           kernels::cross_entropy_backward<T>(ln->value(), kept, lse,
                                                              dy(0, 0) / T(count),
                                                              detail::grad_buffer(*ln));
                       });
}

/// cross_entropy(h·headᵀ, targets) with a frozen head [V, d] and h [N, d], without the [N, V]
/// logits: rows go through the head a block at a time (kernels/lm_loss.hpp). When h needs a
/// gradient it is formed during this forward pass and backward only scales it. Use it when only
/// the loss is wanted; the value equals the unfused composition up to summation order.
template <class T>
Var<T> linear_cross_entropy(Tape<T>& tape, const Var<T>& h, WeightArg<T> head,
                            std::span<const std::int32_t> targets) {
    detail::require_defined("linear_cross_entropy", h, "h");
    if (h.cols() != head.cols())
        throw ShapeError::operands("linear_cross_entropy",
                                   "h.cols must equal head.cols (head is [V, d])", "h", h.rows(),
                                   h.cols(), "head", head.rows(), head.cols());
    if (Index(targets.size()) != h.rows())
        throw ShapeError("linear_cross_entropy: " + std::to_string(targets.size()) +
                         " targets for " + std::to_string(h.rows()) + " rows");
    for (std::size_t i = 0; i < targets.size(); ++i)
        if (targets[i] >= head.rows())
            throw ShapeError("linear_cross_entropy: target " + std::to_string(targets[i]) +
                             " at row " + std::to_string(i) + " is outside the " +
                             std::to_string(head.rows()) + " classes");
    const Index count = kernels::counted_targets(targets);
    if (count == 0)
        throw NumericError("linear_cross_entropy: all " + std::to_string(targets.size()) +
                           " targets are ignored; the mean loss is undefined");
    Mat<T> loss(1, 1);
    if (!h.requires_grad()) {
        loss(0, 0) = kernels::linear_cross_entropy<T>(h.value(), head, targets, count, nullptr);
        return tape.constant(std::move(loss));
    }
    Mat<T> dh;
    loss(0, 0) = kernels::linear_cross_entropy<T>(h.value(), head, targets, count, &dh);
    ++tape.stats().forward_products;
    ++tape.stats().input_grad_products;
    auto hn = h.node();
    return tape.record("linear_cross_entropy", std::move(loss), true,
                       [hn, dh = std::move(dh)](const Mat<T>& dy) {
                           detail::accumulate_grad(*hn, dh * dy(0, 0));
                       });
}

}  // namespace softprompt::autograd
