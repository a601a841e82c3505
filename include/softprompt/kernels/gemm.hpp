#pragma once
// The one place every large matrix product goes through, so that a faster backend can replace
// Eigen's without touching the ops. Operands are Eigen expressions of row-major matrices, blocks or
// maps, optionally `.transpose()`d.
//
// With SOFTPROMPT_USE_CBLAS defined (and a CBLAS, e.g. OpenBLAS, linked), float and double
// products of at least kCblasMinRows output rows and kCblasMinWork multiply-adds go to
// cblas_?gemm; smaller ones, and matrix–vector products of batch-1 decoding where Eigen is
// faster, stay with Eigen. Off by default: the library itself needs only Eigen. OpenBLAS keeps its
// own threads: run with OMP_WAIT_POLICY=PASSIVE so that idle OpenMP threads do not spin against
// them.
//   out: [m, n]   a: [m, k]   b: [k, n]
//
// A single row times a large matrix (batch-1 decoding) is bound by streaming the matrix from
// memory, and Eigen runs it on one thread; with OpenMP it is split by output columns across the
// threads, so that every core streams its share of the weights.
//
// Threads: products from several user threads may run at once; Eigen keeps no state between calls,
// and OpenBLAS (0.3 and later) may be called from several threads. ThreadSanitizer does not see
// inside OpenBLAS or OpenMP: the tsan preset builds without both.

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#if defined(SOFTPROMPT_USE_CBLAS)
#include <cblas.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace softprompt::kernels {

namespace detail {

/// Weights (k·n) from which a one-row product is split across threads: a 1 MB float matrix takes
/// tens of microseconds to stream, well above the cost of waking a team.
inline constexpr Eigen::Index kSplitRowMinWeights = Eigen::Index(1) << 18;

/// out (+)= a·b for a one-row `a`, split by columns of b across the OpenMP threads: false (nothing
/// done) when it is not such a product, is too small, or runs inside a parallel region already.
///   out: [1, n]   a: [1, k]   b: [k, n]
template <class Out, class A, class B>
bool split_row_product([[maybe_unused]] Out& out, [[maybe_unused]] const A& a,
                       [[maybe_unused]] const B& b, [[maybe_unused]] bool accumulate) {
#if defined(_OPENMP)
    const Eigen::Index n = out.cols(), k = a.cols();
    if (out.rows() != 1 || n * k < kSplitRowMinWeights || omp_in_parallel()) return false;
    const int threads = omp_get_max_threads();
    if (threads < 2) return false;
    // Column chunks in multiples of 16, so that each thread's share starts on a whole packet of
    // the output and of b's rows.
    const Eigen::Index chunk = ((n + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < threads; ++t) {
        const Eigen::Index first = Eigen::Index(t) * chunk;
        if (first >= n) continue;
        const Eigen::Index cols = std::min(chunk, n - first);
        if (accumulate)
            out.middleCols(first, cols).noalias() += a * b.middleCols(first, cols);
        else
            out.middleCols(first, cols).noalias() = a * b.middleCols(first, cols);
    }
    return true;
#else
    return false;
#endif
}

}  // namespace detail

#if defined(SOFTPROMPT_USE_CBLAS)
namespace detail {

inline constexpr Eigen::Index kCblasMinRows = 8;
inline constexpr Eigen::Index kCblasMinWork = Eigen::Index(1) << 18;

// A product operand as CBLAS sees it. Eigen's blas_traits find the stored expression under a
// scalar factor; a `.transpose()` of row-major storage is a direct-access column-major expression
// over the same bytes, which CBLAS reads as the row-major original with the Trans flag.
template <class X>
struct CblasOperand {
    using Traits = Eigen::internal::blas_traits<X>;
    using Stored = std::remove_cvref_t<typename Traits::ExtractType>;
    static constexpr bool kDirect = (int(Stored::Flags) & Eigen::DirectAccessBit) != 0;
    static constexpr bool kTransposed = (int(Stored::Flags) & Eigen::RowMajorBit) == 0;
};

template <class Out, class A, class B>
bool cblas_product(Out& out, const A& a, const B& b, bool accumulate) {
    using T = typename std::remove_cvref_t<Out>::Scalar;
    using OA = CblasOperand<A>;
    using OB = CblasOperand<B>;
    if constexpr (!(std::is_same_v<T, float> || std::is_same_v<T, double>) || !OA::kDirect ||
                  !OB::kDirect || !(int(std::remove_cvref_t<Out>::Flags) & Eigen::RowMajorBit) ||
                  !(int(std::remove_cvref_t<Out>::Flags) & Eigen::DirectAccessBit)) {
        return false;
    } else {
        const Eigen::Index m = out.rows(), n = out.cols(), k = a.cols();
        if (m < kCblasMinRows || n < kCblasMinRows || m * n * k < kCblasMinWork) return false;
#if defined(_OPENMP)
        // Inside a parallel loop (attention heads) each thread's product stays single-threaded
        // Eigen rather than waking the CBLAS thread pool from every thread at once.
        if (omp_in_parallel()) return false;
#endif
        const auto& sa = OA::Traits::extract(a);
        const auto& sb = OB::Traits::extract(b);
        if (out.innerStride() != 1 || sa.innerStride() != 1 || sb.innerStride() != 1) return false;
        if (OA::Traits::HasScalarFactor || OB::Traits::HasScalarFactor) return false;
        const auto ta = OA::kTransposed ? CblasTrans : CblasNoTrans;
        const auto tb = OB::kTransposed ? CblasTrans : CblasNoTrans;
        const T beta = accumulate ? T(1) : T(0);
        const auto lda = int(sa.outerStride()), ldb = int(sb.outerStride());
        if constexpr (std::is_same_v<T, float>)
            cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0f, sa.data(), lda,
                        sb.data(), ldb, beta, out.data(), int(out.outerStride()));
        else
            cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0, sa.data(), lda,
                        sb.data(), ldb, beta, out.data(), int(out.outerStride()));
        return true;
    }
}

}  // namespace detail
#endif

/// out = a · b
template <class Out, class A, class B>
void gemm(Out&& out, const A& a, const B& b) {
#if defined(SOFTPROMPT_USE_CBLAS)
    if (detail::cblas_product(out, a, b, false)) return;
#endif
    if (detail::split_row_product(out, a, b, false)) return;
    out.noalias() = a * b;
}

/// out += a · b
template <class Out, class A, class B>
void gemm_accumulate(Out&& out, const A& a, const B& b) {
#if defined(SOFTPROMPT_USE_CBLAS)
    if (detail::cblas_product(out, a, b, true)) return;
#endif
    if (detail::split_row_product(out, a, b, true)) return;
    out.noalias() += a * b;
}

}  // namespace softprompt::kernels
