#pragma once
// Linear-algebra and structural ops on a tape: products, bias, elementwise arithmetic, row/column
// slicing and concatenation, embedding gather, reductions. Each op checks shapes (ShapeError names
// the op and both shapes), computes its value, and records a backward only when an input needs a
// gradient. Backward forms an input's gradient only when that input requires one; a frozen weight
// (`WeightView`) never gets a gradient, so its weight-gradient product never runs.

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/kernels/gemm.hpp"

namespace softprompt::autograd {

namespace detail {

template <class T>
void require_same_shape(const char* op, const Var<T>& a, const Var<T>& b) {
    if (a.rows() != b.rows() || a.cols() != b.cols())
        throw ShapeError::operands(op, "shapes differ", "a", a.rows(), a.cols(), "b", b.rows(),
                                   b.cols());
}

template <class T>
void require_defined(const char* op, const Var<T>& x, const char* name) {
    if (!x.defined()) throw ShapeError(std::string(op) + ": " + name + " is an empty Var");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Products. x: [N, in].  `_wt` forms take W as [out, in] (x·Wᵀ, PyTorch Linear / LLaMA layout);
// the plain forms take W as [in, out] (x·W, GPT-2 Conv1D layout). y: [N, out].

/// y = x·Wᵀ with a frozen W [out, in]. Backward: dx += dy·W only.
template <class T>
Var<T> matmul_wt(Tape<T>& tape, const Var<T>& x, WeightArg<T> w) {
    detail::require_defined("matmul_wt", x, "x");
    if (x.cols() != w.cols())
        throw ShapeError::operands("matmul_wt", "x.cols must equal W.cols (W is [out, in])", "x",
                                   x.rows(), x.cols(), "W", w.rows(), w.cols());
    Mat<T> y(x.rows(), w.rows());
    kernels::gemm(y, x.value(), w.transpose());
    ++tape.stats().forward_products;
    auto xn = x.node();
    Tape<T>* counts = &tape;
    return tape.record("matmul_wt", std::move(y), x.requires_grad(),
                       [xn, w, counts](const Mat<T>& dy) {
                           detail::accumulate_product(*xn, dy, w);
                           ++counts->stats().input_grad_products;
                       });
}

/// y = x·W with a frozen W [in, out]. Backward: dx += dy·Wᵀ only.
template <class T>
Var<T> matmul(Tape<T>& tape, const Var<T>& x, WeightArg<T> w) {
    detail::require_defined("matmul", x, "x");
    if (x.cols() != w.rows())
        throw ShapeError::operands("matmul", "x.cols must equal W.rows (W is [in, out])", "x",
                                   x.rows(), x.cols(), "W", w.rows(), w.cols());
    Mat<T> y(x.rows(), w.cols());
    kernels::gemm(y, x.value(), w);
    ++tape.stats().forward_products;
    auto xn = x.node();
    Tape<T>* counts = &tape;
    return tape.record("matmul", std::move(y), x.requires_grad(),
                       [xn, w, counts](const Mat<T>& dy) {
                           detail::accumulate_product(*xn, dy, w.transpose());
                           ++counts->stats().input_grad_products;
                       });
}

/// y = x·W + bias with a frozen W [in, out] and bias [1, out] (GPT-2's Conv1D) in one op, so the
/// product is not kept next to its biased copy. Backward: dx += dy·Wᵀ only.
template <class T>
Var<T> matmul(Tape<T>& tape, const Var<T>& x, WeightArg<T> w, WeightArg<T> bias) {
    detail::require_defined("matmul", x, "x");
    if (x.cols() != w.rows())
        throw ShapeError::operands("matmul", "x.cols must equal W.rows (W is [in, out])", "x",
                                   x.rows(), x.cols(), "W", w.rows(), w.cols());
    if (bias.rows() != 1 || bias.cols() != w.cols())
        throw ShapeError::mismatch("matmul", "bias", 1, w.cols(), bias.rows(), bias.cols());
    Mat<T> y = bias.replicate(x.rows(), 1);
    kernels::gemm_accumulate(y, x.value(), w);
    ++tape.stats().forward_products;
    auto xn = x.node();
    Tape<T>* counts = &tape;
    return tape.record("matmul_bias", std::move(y), x.requires_grad(),
                       [xn, w, counts](const Mat<T>& dy) {
                           detail::accumulate_product(*xn, dy, w.transpose());
                           ++counts->stats().input_grad_products;
                       });
}

/// y = x·Wᵀ where W [out, in] is a Var (trainable or computed).
template <class T>
Var<T> matmul_wt(Tape<T>& tape, const Var<T>& x, const Var<T>& w) {
    detail::require_defined("matmul_wt", x, "x");
    detail::require_defined("matmul_wt", w, "W");
    if (x.cols() != w.cols())
        throw ShapeError::operands("matmul_wt", "x.cols must equal W.cols (W is [out, in])", "x",
                                   x.rows(), x.cols(), "W", w.rows(), w.cols());
    Mat<T> y(x.rows(), w.rows());
    kernels::gemm(y, x.value(), w.value().transpose());
    ++tape.stats().forward_products;
    // dx needs W's value and dW needs x's: keep each only when the other side trains.
    auto xn = w.requires_grad() ? detail::keep_value(x) : x.node();
    auto wn = x.requires_grad() ? detail::keep_value(w) : w.node();
    Tape<T>* counts = &tape;
    return tape.record("matmul_wt", std::move(y), x.requires_grad() || w.requires_grad(),
                       [xn, wn, counts](const Mat<T>& dy) {
                           if (xn->requires_grad) {
                               detail::accumulate_grad(*xn, dy * wn->value());
                               ++counts->stats().input_grad_products;
                           }
                           if (wn->requires_grad) {
                               detail::accumulate_grad(*wn, dy.transpose() * xn->value());
                               ++counts->stats().weight_grad_products;
                           }
                       });
}

/// y = x·W where W [in, out] is a Var (trainable or computed).
template <class T>
Var<T> matmul(Tape<T>& tape, const Var<T>& x, const Var<T>& w) {
    detail::require_defined("matmul", x, "x");
    detail::require_defined("matmul", w, "W");
    if (x.cols() != w.rows())
        throw ShapeError::operands("matmul", "x.cols must equal W.rows (W is [in, out])", "x",
                                   x.rows(), x.cols(), "W", w.rows(), w.cols());
    Mat<T> y(x.rows(), w.cols());
    kernels::gemm(y, x.value(), w.value());
    ++tape.stats().forward_products;
    // dx needs W's value and dW needs x's: keep each only when the other side trains.
    auto xn = w.requires_grad() ? detail::keep_value(x) : x.node();
    auto wn = x.requires_grad() ? detail::keep_value(w) : w.node();
    Tape<T>* counts = &tape;
    return tape.record("matmul", std::move(y), x.requires_grad() || w.requires_grad(),
                       [xn, wn, counts](const Mat<T>& dy) {
                           if (xn->requires_grad) {
                               detail::accumulate_grad(*xn, dy * wn->value().transpose());
                               ++counts->stats().input_grad_products;
                           }
                           if (wn->requires_grad) {
                               detail::accumulate_grad(*wn, xn->value().transpose() * dy);
                               ++counts->stats().weight_grad_products;
                           }
                       });
}

// ---------------------------------------------------------------------------------------------
// Bias and elementwise arithmetic. x, a, b, y: [N, C]; bias: [1, C] broadcast over rows.

/// y = x + bias with a frozen bias [1, C].
template <class T>
Var<T> add_bias(Tape<T>& tape, const Var<T>& x, WeightArg<T> bias) {
    detail::require_defined("add_bias", x, "x");
    if (bias.rows() != 1 || bias.cols() != x.cols())
        throw ShapeError::mismatch("add_bias", "bias", 1, x.cols(), bias.rows(), bias.cols());
    Mat<T> y = x.value();
    y.rowwise() += bias.row(0);
    auto xn = x.node();
    return tape.record("add_bias", std::move(y), x.requires_grad(),
                       [xn](const Mat<T>& dy) { detail::accumulate_grad(*xn, dy); });
}

/// y = x + bias where bias [1, C] is a Var; its gradient is the column sum of dy.
template <class T>
Var<T> add_bias(Tape<T>& tape, const Var<T>& x, const Var<T>& bias) {
    detail::require_defined("add_bias", x, "x");
    detail::require_defined("add_bias", bias, "bias");
    if (bias.rows() != 1 || bias.cols() != x.cols())
        throw ShapeError::mismatch("add_bias", "bias", 1, x.cols(), bias.rows(), bias.cols());
    Mat<T> y = x.value();
    y.rowwise() += bias.value().row(0);
    auto xn = x.node(), bn = bias.node();
    return tape.record("add_bias", std::move(y), x.requires_grad() || bias.requires_grad(),
                       [xn, bn](const Mat<T>& dy) {
                           if (xn->requires_grad) detail::accumulate_grad(*xn, dy);
                           if (bn->requires_grad) detail::accumulate_grad(*bn, dy.colwise().sum());
                       });
}

/// y = a + b
template <class T>
Var<T> add(Tape<T>& tape, const Var<T>& a, const Var<T>& b) {
    detail::require_defined("add", a, "a");
    detail::require_defined("add", b, "b");
    detail::require_same_shape("add", a, b);
    Mat<T> y = a.value() + b.value();
    auto an = a.node(), bn = b.node();
    return tape.record("add", std::move(y), a.requires_grad() || b.requires_grad(),
                       [an, bn](const Mat<T>& dy) {
                           if (an->requires_grad) detail::accumulate_grad(*an, dy);
                           if (bn->requires_grad) detail::accumulate_grad(*bn, dy);
                       });
}

/// y = s·x
template <class T>
Var<T> scale(Tape<T>& tape, const Var<T>& x, std::type_identity_t<T> s) {
    detail::require_defined("scale", x, "x");
    Mat<T> y = s * x.value();
    auto xn = x.node();
    return tape.record("scale", std::move(y), x.requires_grad(),
                       [xn, s](const Mat<T>& dy) { detail::accumulate_grad(*xn, s * dy); });
}

/// y = a ⊙ b (elementwise)
template <class T>
Var<T> mul(Tape<T>& tape, const Var<T>& a, const Var<T>& b) {
    detail::require_defined("mul", a, "a");
    detail::require_defined("mul", b, "b");
    detail::require_same_shape("mul", a, b);
    Mat<T> y = a.value().cwiseProduct(b.value());
    auto an = b.requires_grad() ? detail::keep_value(a) : a.node();
    auto bn = a.requires_grad() ? detail::keep_value(b) : b.node();
    return tape.record("mul", std::move(y), a.requires_grad() || b.requires_grad(),
                       [an, bn](const Mat<T>& dy) {
                           if (an->requires_grad)
                               detail::accumulate_grad(*an, dy.cwiseProduct(bn->value()));
                           if (bn->requires_grad)
                               detail::accumulate_grad(*bn, dy.cwiseProduct(an->value()));
                       });
}

// ---------------------------------------------------------------------------------------------
// Structure. Parts: [N_i, C] stacked into [ΣN_i, C]; slices are views copied out.

/// Stack the parts' rows in order (e.g. virtual-token embeddings before token embeddings).
template <class T>
Var<T> concat_rows(Tape<T>& tape, const std::vector<Var<T>>& parts) {
    if (parts.empty()) throw ShapeError("concat_rows: no parts to concatenate");
    Index rows = 0;
    bool any_grad = false;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        detail::require_defined("concat_rows", parts[i], "a part");
        if (parts[i].cols() != parts[0].cols())
            throw ShapeError::operands(
                "concat_rows", "column counts differ", "part 0", parts[0].rows(), parts[0].cols(),
                "part " + std::to_string(i), parts[i].rows(), parts[i].cols());
        rows += parts[i].rows();
        any_grad = any_grad || parts[i].requires_grad();
    }
    Mat<T> y(rows, parts[0].cols());
    std::vector<std::shared_ptr<detail::Node<T>>> nodes;
    Index at = 0;
    for (const Var<T>& part : parts) {
        y.middleRows(at, part.rows()) = part.value();
        at += part.rows();
        nodes.push_back(part.node());
    }
    return tape.record("concat_rows", std::move(y), any_grad, [nodes](const Mat<T>& dy) {
        Index offset = 0;
        for (const auto& n : nodes) {
            const Index r = n->rows;
            if (n->requires_grad) detail::accumulate_grad(*n, dy.middleRows(offset, r));
            offset += r;
        }
    });
}

/// Place the parts side by side: [N, ΣC_i] (e.g. the two directions of a bidirectional LSTM).
template <class T>
Var<T> concat_cols(Tape<T>& tape, const std::vector<Var<T>>& parts) {
    if (parts.empty()) throw ShapeError("concat_cols: no parts to concatenate");
    Index cols = 0;
    bool any_grad = false;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        detail::require_defined("concat_cols", parts[i], "a part");
        if (parts[i].rows() != parts[0].rows())
            throw ShapeError::operands(
                "concat_cols", "row counts differ", "part 0", parts[0].rows(), parts[0].cols(),
                "part " + std::to_string(i), parts[i].rows(), parts[i].cols());
        cols += parts[i].cols();
        any_grad = any_grad || parts[i].requires_grad();
    }
    Mat<T> y(parts[0].rows(), cols);
    std::vector<std::shared_ptr<detail::Node<T>>> nodes;
    Index at = 0;
    for (const Var<T>& part : parts) {
        y.middleCols(at, part.cols()) = part.value();
        at += part.cols();
        nodes.push_back(part.node());
    }
    return tape.record("concat_cols", std::move(y), any_grad, [nodes](const Mat<T>& dy) {
        Index offset = 0;
        for (const auto& n : nodes) {
            const Index c = n->cols;
            if (n->requires_grad) detail::accumulate_grad(*n, dy.middleCols(offset, c));
            offset += c;
        }
    });
}

/// Rows [start, start + count) of x.
template <class T>
Var<T> slice_rows(Tape<T>& tape, const Var<T>& x, Index start, Index count) {
    detail::require_defined("slice_rows", x, "x");
    if (start < 0 || count < 0 || start + count > x.rows())
        throw ShapeError("slice_rows: rows [" + std::to_string(start) + ", " +
                         std::to_string(start + count) + ") outside x " +
                         shape_string(x.rows(), x.cols()));
    Mat<T> y = x.value().middleRows(start, count);
    auto xn = x.node();
    return tape.record("slice_rows", std::move(y), x.requires_grad(),
                       [xn, start, count](const Mat<T>& dy) {
                           detail::grad_buffer(*xn).middleRows(start, count) += dy;
                       });
}

/// Columns [start, start + count) of x (e.g. q, k or v out of a fused QKV projection).
template <class T>
Var<T> slice_cols(Tape<T>& tape, const Var<T>& x, Index start, Index count) {
    detail::require_defined("slice_cols", x, "x");
    if (start < 0 || count < 0 || start + count > x.cols())
        throw ShapeError("slice_cols: columns [" + std::to_string(start) + ", " +
                         std::to_string(start + count) + ") outside x " +
                         shape_string(x.rows(), x.cols()));
    Mat<T> y = x.value().middleCols(start, count);
    auto xn = x.node();
    return tape.record("slice_cols", std::move(y), x.requires_grad(),
                       [xn, start, count](const Mat<T>& dy) {
                           detail::grad_buffer(*xn).middleCols(start, count) += dy;
                       });
}

// ---------------------------------------------------------------------------------------------
// Embedding gather. table: [V, d]   ids: [N]   y: [N, d]

namespace detail {
inline void check_ids(const char* op, std::span<const std::int32_t> ids, Index vocab) {
    for (std::size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= vocab)
            throw ShapeError(std::string(op) + ": id " + std::to_string(ids[i]) + " at index " +
                             std::to_string(i) + " is outside the table's " +
                             std::to_string(vocab) + " rows");
}
}  // namespace detail

/// Rows of a frozen table (token embeddings): a constant, nothing is recorded.
template <class T>
Var<T> gather_rows(Tape<T>& tape, WeightArg<T> table, std::span<const std::int32_t> ids) {
    detail::check_ids("gather_rows", ids, table.rows());
    Mat<T> y(Index(ids.size()), table.cols());
    for (std::size_t i = 0; i < ids.size(); ++i) y.row(Index(i)) = table.row(ids[i]);
    return tape.constant(std::move(y));
}

/// Rows of a Var table (a trainable embedding); backward scatter-adds into the rows it read.
template <class T>
Var<T> gather_rows(Tape<T>& tape, const Var<T>& table, std::span<const std::int32_t> ids) {
    detail::require_defined("gather_rows", table, "table");
    detail::check_ids("gather_rows", ids, table.rows());
    Mat<T> y(Index(ids.size()), table.cols());
    for (std::size_t i = 0; i < ids.size(); ++i) y.row(Index(i)) = table.value().row(ids[i]);
    auto tn = table.node();
    std::vector<std::int32_t> kept(ids.begin(), ids.end());
    return tape.record("gather_rows", std::move(y), table.requires_grad(),
                       [tn, kept = std::move(kept)](const Mat<T>& dy) {
                           Mat<T>& g = detail::grad_buffer(*tn);
                           for (std::size_t i = 0; i < kept.size(); ++i)
                               g.row(kept[i]) += dy.row(Index(i));
                       });
}

// ---------------------------------------------------------------------------------------------
// Reductions to a [1, 1] scalar.

/// Σ of every element.
template <class T>
Var<T> sum(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("sum", x, "x");
    Mat<T> y(1, 1);
    y(0, 0) = x.value().sum();
    auto xn = x.node();
    return tape.record("sum", std::move(y), x.requires_grad(), [xn](const Mat<T>& dy) {
        detail::accumulate_grad(*xn, Mat<T>::Constant(xn->rows, xn->cols, dy(0, 0)));
    });
}

/// Mean of every element.
template <class T>
Var<T> mean(Tape<T>& tape, const Var<T>& x) {
    detail::require_defined("mean", x, "x");
    if (x.value().size() == 0) throw ShapeError("mean: x is empty " + shape_string(x.rows(), 0));
    const T n = T(x.value().size());
    Mat<T> y(1, 1);
    y(0, 0) = x.value().sum() / n;
    auto xn = x.node();
    return tape.record("mean", std::move(y), x.requires_grad(), [xn, n](const Mat<T>& dy) {
        detail::accumulate_grad(*xn, Mat<T>::Constant(xn->rows, xn->cols, dy(0, 0) / n));
    });
}

}  // namespace softprompt::autograd
