// The OpenBLAS path of kernels/gemm.hpp (SOFTPROMPT_USE_CBLAS): every operand form the ops pass —
// owned matrices, strided weight views, transposes, row and column blocks, accumulation — against
// a plain triple-loop product in long double. Skipped when the build found no OpenBLAS. And the
// one-row products that gemm splits across OpenMP threads, in the same forms, on 2 and 3 threads.

#include <gtest/gtest.h>

#include <random>
#include <tuple>

#if defined(_OPENMP)
#include <omp.h>
#endif
#include <softprompt/core/tensor.hpp>
#include <softprompt/kernels/gemm.hpp>

namespace {

using namespace softprompt;

template <class T>
Mat<T> random_matrix(Index rows, Index cols, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Mat<T> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(uniform(gen));
    return m;
}

// out = a·b with a: [m, k], b: [k, n] given as plain matrices.
template <class T>
Mat<T> reference_product(const Mat<T>& a, const Mat<T>& b) {
    Mat<T> out(a.rows(), b.cols());
    for (Index i = 0; i < a.rows(); ++i)
        for (Index j = 0; j < b.cols(); ++j) {
            long double s = 0;
            for (Index k = 0; k < a.cols(); ++k) s += static_cast<long double>(a(i, k)) * b(k, j);
            out(i, j) = T(s);
        }
    return out;
}

template <class T>
double max_rel(const Mat<T>& got, const Mat<T>& want) {
    return double((got - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff());
}

template <class T>
void check_every_operand_form(double tolerance) {
    // Big enough for the CBLAS path (m, n ≥ 8, m·n·k ≥ 2^18), odd sizes to catch stride mistakes.
    const Index m = 67, k = 129, n = 83;
    const Mat<T> x = random_matrix<T>(m, k, 1);
    const Mat<T> w_out_in = random_matrix<T>(n, k, 2);  // PyTorch Linear layout
    const Mat<T> w_in_out = random_matrix<T>(k, n, 3);  // GPT-2 Conv1D layout
    const WeightView<T> view_out_in = frozen(w_out_in), view_in_out = frozen(w_in_out);
    const Mat<T> want_t = reference_product<T>(x, Mat<T>(w_out_in.transpose()));
    const Mat<T> want = reference_product<T>(x, w_in_out);

    Mat<T> out(m, n);
    kernels::gemm(out, x, view_out_in.transpose());
    EXPECT_LE(max_rel(out, want_t), tolerance) << "x · viewᵀ";
    kernels::gemm(out, x, view_in_out);
    EXPECT_LE(max_rel(out, want), tolerance) << "x · view";
    kernels::gemm_accumulate(out, x, view_in_out);
    EXPECT_LE(max_rel(out, Mat<T>(2 * want)), tolerance) << "accumulate";

    // Transposed left operand (weight gradients: xᵀ·dy) and a block of a wider output.
    const Mat<T> xt = x.transpose();
    Mat<T> wide = Mat<T>::Constant(m + 5, n + 7, T(3));
    kernels::gemm(wide.block(2, 3, m, n), xt.transpose(), w_in_out);
    EXPECT_LE(max_rel(Mat<T>(wide.block(2, 3, m, n)), want), tolerance) << "xᵀᵀ into a block";
    EXPECT_EQ(wide(0, 0), T(3)) << "the product wrote outside its block";
    EXPECT_EQ(wide(m + 4, n + 6), T(3)) << "the product wrote outside its block";

    // Row and column blocks of the operands (attention's per-head slices).
    const Mat<T> big = random_matrix<T>(m + 9, k + 11, 4);
    const Mat<T> want_blocks = reference_product<T>(Mat<T>(big.block(4, 5, m, k)), w_in_out);
    kernels::gemm(out, big.block(4, 5, m, k), view_in_out);
    EXPECT_LE(max_rel(out, want_blocks), tolerance) << "a block of a wider matrix";
}

TEST(Gemm, CblasPathMatchesAReferenceProductForEveryOperandForm) {
#if !defined(SOFTPROMPT_USE_CBLAS)
    GTEST_SKIP() << "built without OpenBLAS (SOFTPROMPT_USE_CBLAS): Eigen computes every product";
#endif
    check_every_operand_form<float>(1e-5);
    check_every_operand_form<double>(1e-13);
}

TEST(Gemm, SmallProductsAndVectorsStayCorrect) {
    // Below the CBLAS thresholds (Eigen) and a matrix–vector product (batch-1 decoding).
    const Mat<float> a = random_matrix<float>(3, 5, 5), b = random_matrix<float>(5, 4, 6);
    Mat<float> out(3, 4);
    kernels::gemm(out, a, b);
    EXPECT_LE(max_rel(out, reference_product<float>(a, b)), 1e-6);
    const Mat<float> row = random_matrix<float>(1, 512, 7), w = random_matrix<float>(512, 300, 8);
    Mat<float> y(1, 300);
    kernels::gemm(y, row, frozen(w));
    EXPECT_LE(max_rel(y, reference_product<float>(row, w)), 1e-5);
}

// One-row products big enough to split (k·n ≥ 2^18) on 2 and 3 threads, with column counts that
// give each thread a share, a last share of one column, and fewer columns than threads could take.
TEST(Gemm, OneRowProductsSplitAcrossThreadsMatchTheReference) {
#if !defined(_OPENMP)
    GTEST_SKIP() << "built without OpenMP: one-row products run on one thread";
#else
    const int before = omp_get_max_threads();
    for (const int threads : {2, 3}) {
        omp_set_num_threads(threads);
        for (const auto& [k, n] : {std::tuple<Index, Index>{300, 1001}, {8000, 37}, {20000, 17}}) {
            SCOPED_TRACE("threads " + std::to_string(threads) + ", k " + std::to_string(k) +
                         ", n " + std::to_string(n));
            ASSERT_GE(k * n, kernels::detail::kSplitRowMinWeights);
            const Mat<float> x = random_matrix<float>(1, k, 11);
            const Mat<float> w_in_out = random_matrix<float>(k, n, 12);  // Conv1D layout
            const Mat<float> w_out_in = random_matrix<float>(n, k, 13);  // Linear layout
            const Mat<float> want = reference_product<float>(x, w_in_out);
            const Mat<float> want_t = reference_product<float>(x, Mat<float>(w_out_in.transpose()));
            Mat<float> y(1, n);
            kernels::gemm(y, x, frozen(w_in_out));
            EXPECT_LE(max_rel(y, want), 1e-5) << "x · view";
            kernels::gemm_accumulate(y, x, frozen(w_in_out));
            EXPECT_LE(max_rel(y, Mat<float>(2 * want)), 1e-5) << "accumulate";
            kernels::gemm(y, x, frozen(w_out_in).transpose());
            EXPECT_LE(max_rel(y, want_t), 1e-5) << "x · viewᵀ";
            // Into a row of a wider matrix, from a row of another: nothing outside is written.
            Mat<float> wide = Mat<float>::Constant(3, n + 5, 7.0f);
            const Mat<float> rows = random_matrix<float>(2, k, 14);
            kernels::gemm(wide.block(1, 2, 1, n), rows.row(1), frozen(w_in_out));
            EXPECT_LE(max_rel(Mat<float>(wide.block(1, 2, 1, n)),
                              reference_product<float>(Mat<float>(rows.row(1)), w_in_out)),
                      1e-5)
                << "a row block";
            EXPECT_EQ(wide(1, 1), 7.0f) << "the product wrote outside its block";
            EXPECT_EQ(wide(1, n + 2), 7.0f) << "the product wrote outside its block";
            EXPECT_EQ(wide.row(0), Mat<float>::Constant(1, n + 5, 7.0f)) << "row above written";
        }
    }
    omp_set_num_threads(before);
#endif
}

}  // namespace
