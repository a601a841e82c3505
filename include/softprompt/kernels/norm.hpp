#pragma once
// Row normalisations as forward/backward pairs. The gain and bias are frozen weights.
//   x, y, dy, dx: [N, C]    gamma, beta: [1, C]    mean, rstd: [N]
// Statistics are accumulated in double so float inputs normalise as accurately as a reference.

#include <cmath>

#include "softprompt/core/tensor.hpp"
#include "softprompt/kernels/parallel.hpp"

namespace softprompt::kernels {

// Rows are independent: each loop below splits them across OpenMP threads when the matrix is large
// enough (a training batch, not a decode step).

/// LayerNorm: y = (x − mean) · rstd · gamma + beta, rstd = 1/√(var + eps), biased variance.
/// Writes the per-row mean and rstd that backward needs.
template <class T>
void layer_norm_forward(ConstRef<T> x, const WeightView<T>& gamma, const WeightView<T>& beta, T eps,
                        MatRef<T> y, Eigen::Ref<Eigen::VectorX<T>> mean,
                        Eigen::Ref<Eigen::VectorX<T>> rstd) {
    const Index width = x.cols();
#pragma omp parallel for schedule(static) if (x.rows() * x.cols() >= kParallelMinElements)
    for (Index r = 0; r < x.rows(); ++r) {
        double sum = 0;
        for (Index c = 0; c < width; ++c) sum += double(x(r, c));
        const double mu = sum / double(width);
        double sq = 0;
        for (Index c = 0; c < width; ++c) {
            const double d = double(x(r, c)) - mu;
            sq += d * d;
        }
        const double rs = 1.0 / std::sqrt(sq / double(width) + double(eps));
        mean(r) = T(mu);
        rstd(r) = T(rs);
        for (Index c = 0; c < width; ++c)
            y(r, c) = T((double(x(r, c)) - mu) * rs) * gamma(0, c) + beta(0, c);
    }
}

/// dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)), g = dy ⊙ gamma, x̂ the normalised input.
template <class T>
void layer_norm_backward(ConstRef<T> x, const WeightView<T>& gamma, const Eigen::VectorX<T>& mean,
                         const Eigen::VectorX<T>& rstd, ConstRef<T> dy, MatRef<T> dx) {
    const Index width = x.cols();
#pragma omp parallel for schedule(static) if (x.rows() * x.cols() >= kParallelMinElements)
    for (Index r = 0; r < x.rows(); ++r) {
        T g_mean = 0, gx_mean = 0;
        for (Index c = 0; c < width; ++c) {
            const T g = dy(r, c) * gamma(0, c);
            const T xhat = (x(r, c) - mean(r)) * rstd(r);
            g_mean += g;
            gx_mean += g * xhat;
        }
        g_mean /= T(width);
        gx_mean /= T(width);
        for (Index c = 0; c < width; ++c) {
            const T g = dy(r, c) * gamma(0, c);
            const T xhat = (x(r, c) - mean(r)) * rstd(r);
            dx(r, c) += rstd(r) * (g - g_mean - xhat * gx_mean);
        }
    }
}

/// RMSNorm: y = x · rstd · gamma, rstd = 1/√(mean(x²) + eps). Writes rstd for backward.
template <class T>
void rms_norm_forward(ConstRef<T> x, const WeightView<T>& gamma, T eps, MatRef<T> y,
                      Eigen::Ref<Eigen::VectorX<T>> rstd) {
    const Index width = x.cols();
#pragma omp parallel for schedule(static) if (x.rows() * x.cols() >= kParallelMinElements)
    for (Index r = 0; r < x.rows(); ++r) {
        double sq = 0;
        for (Index c = 0; c < width; ++c) sq += double(x(r, c)) * double(x(r, c));
        const T rs = T(1.0 / std::sqrt(sq / double(width) + double(eps)));
        rstd(r) = rs;
        for (Index c = 0; c < width; ++c) y(r, c) = x(r, c) * rs * gamma(0, c);
    }
}

/// dx += rstd · g − x · rstd³ · mean(g ⊙ x), g = dy ⊙ gamma.
template <class T>
void rms_norm_backward(ConstRef<T> x, const WeightView<T>& gamma, const Eigen::VectorX<T>& rstd,
                       ConstRef<T> dy, MatRef<T> dx) {
    const Index width = x.cols();
#pragma omp parallel for schedule(static) if (x.rows() * x.cols() >= kParallelMinElements)
    for (Index r = 0; r < x.rows(); ++r) {
        T gx_mean = 0;
        for (Index c = 0; c < width; ++c) gx_mean += dy(r, c) * gamma(0, c) * x(r, c);
        gx_mean /= T(width);
        const T rs = rstd(r);
        const T rs3 = rs * rs * rs;
        for (Index c = 0; c < width; ++c)
            dx(r, c) += rs * dy(r, c) * gamma(0, c) - x(r, c) * rs3 * gx_mean;
    }
}

}  // namespace softprompt::kernels
