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

#include <cmath>
#include <cstddef>
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

/// Scale the gradients so that their global L2 norm is at most `max_norm` (torch semantics above);
/// returns the norm before clipping. Throws ConfigError when max_norm is not a positive finite
/// number and NumericError when the norm is not finite.
template <class T>
double clip_grad_norm(const std::vector<autograd::Param<T>*>& params, double max_norm) {
    if (!(max_norm > 0) || !std::isfinite(max_norm))
        throw detail::bad_option("clip_grad_norm", "max_norm", "> 0 and finite", max_norm);
    const double norm = grad_norm(params);
    if (!std::isfinite(norm)) {
        for (const auto* p : params) {
            if (p == nullptr || !p->trainable()) continue;
            const Mat<T>& g = p->grad();
            for (Index k = 0; k < g.size(); ++k) {
                const double v = double(g.data()[k]);
                if (std::isfinite(v)) continue;
                const Index r = g.cols() > 0 ? k / g.cols() : 0,
                            c = g.cols() > 0 ? k % g.cols() : 0;
                throw NumericError("clip_grad_norm: the gradient of Param '" + p->name() +
                                   "' is not finite (" + detail::format_double(v) + " at [" +
                                   std::to_string(r) + ", " + std::to_string(c) +
                                   "]); the global norm cannot be clipped");
            }
        }
        throw NumericError("clip_grad_norm: the global gradient norm overflowed (" +
                           detail::format_double(norm) + ") although every element is finite");
    }
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const T scale = T(coef);
        for (auto* p : params)
            if (p != nullptr && p->trainable()) p->grad() *= scale;
    }
    return norm;
}

}  // namespace softprompt::optim
