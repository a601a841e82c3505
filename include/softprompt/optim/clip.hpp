#pragma once
// Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_ (L2 norm, PyTorch 1.13):
//
//   N = ‖(g_1, …, g_k)‖₂ over the gradients of the trainable Params (accumulated in double)
//   if max_norm / (N + 1e-6) < 1:  every g_i *= max_norm / (N + 1e-6)
//   return N (the norm before clipping)
//
// Unlike PyTorch's default, a non-finite norm is an error (error_if_nonfinite=True): it throws
// NumericError naming the first Param whose gradient holds a NaN or infinity, and leaves every
// gradient as it was.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::optim {

/// The L2 norm of all trainable Params' gradients taken together, in double. Params whose
/// trainable() is false (and null pointers) are left out, as PyTorch leaves out .grad None.
template <class T>
double grad_norm(const std::vector<autograd::Param<T>*>& params) {
    double sum = 0;
    for (const auto* p : params) {
        if (p == nullptr || !p->trainable()) continue;
        const T* g = p->grad().data();
        const Index n = p->grad().size();
        for (Index k = 0; k < n; ++k) sum += double(g[k]) * double(g[k]);
    }
    return std::sqrt(sum);
}

/// Where a trainable Param's gradient holds a NaN or an infinity: the first such element, in
/// Param order and then row-major.
template <class T>
struct NonFiniteGrad {
    const autograd::Param<T>* param = nullptr;
    Index row = 0, col = 0;
    double value = 0;

    /// "Param 'name' is nan at [r, c]", for error messages.
    std::string describe() const {
        return "Param '" + param->name() + "' is " + detail::format_double(value) + " at [" +
               std::to_string(row) + ", " + std::to_string(col) + "]";
    }
};

/// The first non-finite gradient element of the trainable Params, or nothing. A second pass, for
/// when grad_norm came out non-finite (the common, finite case pays for one pass only).
template <class T>
std::optional<NonFiniteGrad<T>> find_nonfinite_grad(
    const std::vector<autograd::Param<T>*>& params) {
    for (const auto* p : params) {
        if (p == nullptr || !p->trainable()) continue;
        const Mat<T>& g = p->grad();
        for (Index k = 0; k < g.size(); ++k) {
            const double v = double(g.data()[k]);
            if (std::isfinite(v)) continue;
            const Index cols = std::max<Index>(g.cols(), 1);
            return NonFiniteGrad<T>{p, k / cols, k % cols, v};
        }
    }
    return std::nullopt;
}

/// The scaling half of clip_grad_norm, for a caller that has the finite norm already (the Trainer
/// computes it every step to check the gradients): every gradient *= max_norm / (norm + 1e-6)
/// when that is < 1.
template <class T>
void scale_grads_to_max_norm(const std::vector<autograd::Param<T>*>& params, double norm,
                             double max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const T scale = T(coef);
        for (auto* p : params)
            if (p != nullptr && p->trainable()) p->grad() *= scale;
    }
}

/// Scale the gradients so that their global L2 norm is at most `max_norm` (torch semantics above);
/// returns the norm before clipping. Throws ConfigError when max_norm is not a positive finite
/// number and NumericError when the norm is not finite.
template <class T>
double clip_grad_norm(const std::vector<autograd::Param<T>*>& params, double max_norm) {
    if (!(max_norm > 0) || !std::isfinite(max_norm))
        throw detail::bad_option("clip_grad_norm", "max_norm", "> 0 and finite", max_norm);
    const double norm = grad_norm(params);
    if (!std::isfinite(norm)) {
        if (const auto bad = find_nonfinite_grad(params))
            throw NumericError("clip_grad_norm: the gradient of Param '" + bad->param->name() +
                               "' is not finite (" + detail::format_double(bad->value) + " at [" +
                               std::to_string(bad->row) + ", " + std::to_string(bad->col) +
                               "]); the global norm cannot be clipped");
        throw NumericError("clip_grad_norm: the global gradient norm overflowed (" +
                           detail::format_double(norm) + ") although every element is finite");
    }
    scale_grads_to_max_norm(params, norm, max_norm);
    return norm;
}

}  // namespace softprompt::optim
