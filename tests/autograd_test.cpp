// Autograd core: every op's gradient against finite differences in double, forward values against
// direct formulas, and the frozen-weight guarantees (read-only bytes, no weight gradients).

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <softprompt/softprompt.hpp>
#include <vector>

namespace {

using namespace softprompt;
using namespace softprompt::autograd;
using D = double;

constexpr double kGradTolerance = 1e-6;

Mat<D> random_matrix(Index rows, Index cols, std::uint32_t seed, double scale = 1.0) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, scale);
    Mat<D> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
    return m;
}

// A loss with O(1) gradient everywhere: Σ out ⊙ R for a fixed random R.
Var<D> probe(Tape<D>& tape, const Var<D>& out, std::uint32_t seed = 99) {
    return sum(tape, mul(tape, out, tape.constant(random_matrix(out.rows(), out.cols(), seed))));
}

void expect_gradients_match(const std::vector<Param<D>*>& params,
                            const std::function<Var<D>(Tape<D>&)>& loss) {
    const GradcheckReport report = gradcheck<D>(params, loss);
    EXPECT_GT(report.checked, 0u);
    EXPECT_LE(report.max_rel_error, kGradTolerance) << report.describe();
    // The analytic gradient must not be trivially zero, or the check proves nothing.
    double norm = 0;
    for (auto* p : params) norm += p->grad().squaredNorm();
    EXPECT_GT(norm, 1e-6) << "all analytic gradients are zero";
}

// ------------------------------------------------------------------------------------------------
// Gradient checks, one per op (and per layout/variant).

TEST(Gradcheck, MatmulWithFrozenWeightBothLayouts) {
    Param<D> x("x", random_matrix(3, 4, 1));
    const Mat<D> w_out_in = random_matrix(5, 4, 2);
    const Mat<D> w_in_out = random_matrix(4, 5, 3);
    expect_gradients_match(
        {&x}, [&](Tape<D>& t) { return probe(t, matmul_wt(t, t.param(x), frozen(w_out_in))); });
    expect_gradients_match(
        {&x}, [&](Tape<D>& t) { return probe(t, matmul(t, t.param(x), frozen(w_in_out))); });
}

TEST(Gradcheck, MatmulWithTrainableRightOperandBothLayouts) {
    Param<D> x("x", random_matrix(3, 4, 4));
    Param<D> w1("w_out_in", random_matrix(5, 4, 5));
    Param<D> w2("w_in_out", random_matrix(4, 5, 6));
    expect_gradients_match(
        {&x, &w1}, [&](Tape<D>& t) { return probe(t, matmul_wt(t, t.param(x), t.param(w1))); });
    expect_gradients_match(
        {&x, &w2}, [&](Tape<D>& t) { return probe(t, matmul(t, t.param(x), t.param(w2))); });
}

TEST(Gradcheck, BiasAddFrozenAndTrainable) {
    Param<D> x("x", random_matrix(3, 4, 7));
    Param<D> b("b", random_matrix(1, 4, 8));
    const Mat<D> frozen_bias = random_matrix(1, 4, 9);
    expect_gradients_match({&x}, [&](Tape<D>& t) {
        return probe(t, gelu(t, add_bias(t, t.param(x), frozen(frozen_bias))));
    });
    expect_gradients_match({&x, &b}, [&](Tape<D>& t) {
        return probe(t, gelu(t, add_bias(t, t.param(x), t.param(b))));
    });
}

TEST(Gradcheck, AddScaleMul) {
    Param<D> a("a", random_matrix(3, 4, 10));
    Param<D> b("b", random_matrix(3, 4, 11));
    expect_gradients_match({&a, &b}, [&](Tape<D>& t) {
        Var<D> va = t.param(a), vb = t.param(b);
        return probe(t, mul(t, add(t, va, scale(t, vb, 0.7)), vb));
    });
}

TEST(Gradcheck, Activations) {
    Param<D> x("x", random_matrix(4, 6, 12, 2.0));
    Param<D> up("up", random_matrix(4, 6, 13));
    expect_gradients_match({&x}, [&](Tape<D>& t) { return probe(t, gelu(t, t.param(x))); });
    expect_gradients_match({&x}, [&](Tape<D>& t) { return probe(t, silu(t, t.param(x))); });
    expect_gradients_match(
        {&x, &up}, [&](Tape<D>& t) { return probe(t, swiglu(t, t.param(x), t.param(up))); });
}

TEST(Gradcheck, TanhSigmoidRelu) {
    Param<D> x("x", random_matrix(4, 6, 80, 1.5));
    expect_gradients_match({&x}, [&](Tape<D>& t) { return probe(t, tanh(t, t.param(x))); });
    expect_gradients_match({&x}, [&](Tape<D>& t) { return probe(t, sigmoid(t, t.param(x))); });
    // ReLU's kink at 0 is never within a finite-difference step of these entries.
    Mat<D> away = random_matrix(4, 6, 81, 1.5);
    for (Index i = 0; i < away.size(); ++i)
        if (std::abs(away.data()[i]) < 0.05) away.data()[i] = 0.5;
    Param<D> y("y", away);
    expect_gradients_match({&y}, [&](Tape<D>& t) { return probe(t, relu(t, t.param(y))); });
}

TEST(Gradcheck, Norms) {
    Param<D> x("x", random_matrix(4, 6, 14, 1.5));
    const Mat<D> gamma = random_matrix(1, 6, 15);
    const Mat<D> beta = random_matrix(1, 6, 16);
    expect_gradients_match({&x}, [&](Tape<D>& t) {
        return probe(t, layer_norm(t, t.param(x), frozen(gamma), frozen(beta), 1e-5));
    });
    expect_gradients_match(
        {&x}, [&](Tape<D>& t) { return probe(t, rms_norm(t, t.param(x), frozen(gamma), 1e-5)); });
}

TEST(Gradcheck, HeadRmsNormNormalisesEachHeadOnItsOwn) {
    Param<D> x("x", random_matrix(3, 12, 82, 1.5));  // 3 heads of 4 per row
    const Mat<D> gamma = random_matrix(1, 4, 83);
    expect_gradients_match({&x}, [&](Tape<D>& t) {
        return probe(t, head_rms_norm(t, t.param(x), frozen(gamma), 1e-6));
    });
    // Forward: each [4] block is rms_norm of that block alone.
    Tape<D> t;
    const Mat<D> y = head_rms_norm(t, t.constant(x.value()), frozen(gamma), 1e-6).value();
    for (Index h = 0; h < 3; ++h) {
        Tape<D> u;
        const Mat<D> block = x.value().middleCols(h * 4, 4);
        const Mat<D> want = rms_norm(u, u.constant(block), frozen(gamma), 1e-6).value();
        EXPECT_LE((y.middleCols(h * 4, 4) - want).cwiseAbs().maxCoeff(), 1e-15);
    }
    Tape<D> bad;
    EXPECT_THROW(head_rms_norm(bad, bad.constant(Mat<D>(2, 10)), frozen(gamma), 1e-6), ShapeError);
}

TEST(Gradcheck, Softmax) {
    Param<D> x("x", random_matrix(3, 7, 17, 2.0));
    expect_gradients_match({&x}, [&](Tape<D>& t) { return probe(t, softmax(t, t.param(x))); });
}

TEST(Gradcheck, GatherConcatSlice) {
    Param<D> table("table", random_matrix(6, 4, 18));
    Param<D> other("other", random_matrix(2, 4, 19));
    const std::vector<std::int32_t> ids = {3, 0, 3, 5};  // a repeated id accumulates twice
    expect_gradients_match({&table, &other}, [&](Tape<D>& t) {
        Var<D> gathered = gather_rows(t, t.param(table), std::span<const std::int32_t>(ids));
        Var<D> joined = concat_rows(t, {t.param(other), gathered});
        Var<D> rows = slice_rows(t, joined, 1, 4);
        return probe(t, slice_cols(t, rows, 1, 2));
    });
}

TEST(Gradcheck, RopeWithLinearAndLlama3Scaling) {
    Param<D> x("x", random_matrix(6, 16, 84));  // 2 heads of 8: four frequencies per head
    const std::vector<std::int32_t> positions = batch_positions(2, 3, /*offset=*/40);
    for (const kernels::RopeScaling& scaling :
         {kernels::RopeScaling::linear(4.0), kernels::RopeScaling::llama3(8.0, 1.0, 4.0, 256)}) {
        const RopeSpec spec{.head_dim = 8,
                            .rotary_dim = 0,
                            .theta = 707.0,
                            .layout = RopeLayout::kHalfSplit,
                            .scaling = scaling};
        expect_gradients_match(
            {&x}, [&](Tape<D>& t) { return probe(t, rope(t, t.param(x), spec, positions)); });
    }
    // Linear scaling by f is position p / f exactly.
    const RopeSpec linear{.head_dim = 8,
                          .rotary_dim = 0,
                          .theta = 707.0,
                          .layout = RopeLayout::kHalfSplit,
                          .scaling = kernels::RopeScaling::linear(4.0)};
    RopeSpec plain = linear;
    plain.scaling = {};
    Mat<D> c1, s1, c2, s2;
    kernels::rope_tables<D>(std::vector<std::int32_t>{8, 12}, linear, c1, s1);
    kernels::rope_tables<D>(std::vector<std::int32_t>{2, 3}, plain, c2, s2);
    EXPECT_LE((c1 - c2).cwiseAbs().maxCoeff(), 1e-15);
    EXPECT_LE((s1 - s2).cwiseAbs().maxCoeff(), 1e-15);
}

TEST(Gradcheck, RopeBothLayoutsWithOffsetAndPartialRotary) {
    Param<D> x("x", random_matrix(6, 8, 20));  // 2 heads of 4
    const std::vector<std::int32_t> positions = batch_positions(2, 3, /*offset=*/5);
    for (RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalfSplit}) {
        for (Index rotary : {Index(4), Index(2)}) {
            const RopeSpec spec{.head_dim = 4,
                                .rotary_dim = rotary,
                                .theta = 100.0,
                                .layout = layout,
                                .scaling = {}};
            expect_gradients_match(
                {&x}, [&](Tape<D>& t) { return probe(t, rope(t, t.param(x), spec, positions)); });
        }
    }
}

TEST(Gradcheck, AttentionPlain) {
    const AttentionSpec spec{.batch = 2, .seq = 4, .n_heads = 2, .n_kv_heads = 2, .head_dim = 3};
    Param<D> q("q", random_matrix(8, 6, 21)), k("k", random_matrix(8, 6, 22)),
        v("v", random_matrix(8, 6, 23));
    expect_gradients_match({&q, &k, &v}, [&](Tape<D>& t) {
        return probe(t, attention(t, t.param(q), t.param(k), t.param(v), spec));
    });
}

TEST(Gradcheck, AttentionWithPrefixGroupedHeadsAndPadding) {
    const AttentionSpec spec{.batch = 3, .seq = 4, .n_heads = 4, .n_kv_heads = 2, .head_dim = 3};
    const std::vector<std::int32_t> lengths = {4, 2, 3};
    Param<D> q("q", random_matrix(12, 12, 24)), k("k", random_matrix(12, 6, 25)),
        v("v", random_matrix(12, 6, 26)), pk("prefix_k", random_matrix(2, 6, 27)),
        pv("prefix_v", random_matrix(2, 6, 28));
    expect_gradients_match({&q, &k, &v, &pk, &pv}, [&](Tape<D>& t) {
        return probe(t, attention(t, t.param(q), t.param(k), t.param(v), spec, lengths, t.param(pk),
                                  t.param(pv)));
    });
}

TEST(Gradcheck, AttentionPrefixOnlyTrainable) {
    // Prefix tuning's first layer: the tokens' q/k/v are constants, only the prefix trains.
    const AttentionSpec spec{.batch = 2, .seq = 3, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4};
    Param<D> pk("prefix_k", random_matrix(3, 4, 29)), pv("prefix_v", random_matrix(3, 4, 30));
    const Mat<D> q = random_matrix(6, 8, 31), k = random_matrix(6, 4, 32),
                 v = random_matrix(6, 4, 33);
    expect_gradients_match({&pk, &pv}, [&](Tape<D>& t) {
        return probe(t, attention(t, t.constant(q), t.constant(k), t.constant(v), spec, {},
                                  t.param(pk), t.param(pv)));
    });
}

TEST(Gradcheck, CrossEntropyWithIgnoredPositions) {
    Param<D> logits("logits", random_matrix(5, 7, 34, 2.0));
    const std::vector<std::int32_t> targets = {1, -100, 6, 0, -1};
    expect_gradients_match({&logits},
                           [&](Tape<D>& t) { return cross_entropy(t, t.param(logits), targets); });
}

TEST(Gradcheck, LinearCrossEntropyFusedWithAFrozenHead) {
    Param<D> h("h", random_matrix(5, 4, 36));
    const Mat<D> head = random_matrix(7, 4, 37, 1.5);
    const std::vector<std::int32_t> targets = {1, -100, 6, 0, -1};
    expect_gradients_match({&h}, [&](Tape<D>& t) {
        return scale(t, linear_cross_entropy(t, t.param(h), frozen(head), targets), 1.7);
    });
}

TEST(Gradcheck, FrozenMatmulWithBias) {
    Param<D> x("x", random_matrix(3, 4, 38));
    const Mat<D> w = random_matrix(4, 5, 39), bias = random_matrix(1, 5, 40);
    expect_gradients_match(
        {&x}, [&](Tape<D>& t) { return probe(t, matmul(t, t.param(x), frozen(w), frozen(bias))); });
    Tape<D> t;
    const Mat<D> expected = (x.value() * w).rowwise() + bias.row(0);
    EXPECT_LT((matmul(t, t.constant(x.value()), frozen(w), frozen(bias)).value() - expected)
                  .cwiseAbs()
                  .maxCoeff(),
              1e-14);
    EXPECT_THROW(matmul(t, t.constant(x.value()), frozen(w), frozen(Mat<D>(bias.leftCols(4)))),
                 ShapeError);
}

TEST(Gradcheck, MeanAndSum) {
    Param<D> x("x", random_matrix(3, 4, 35));
    expect_gradients_match({&x}, [&](Tape<D>& t) {
        Var<D> sq = mul(t, t.param(x), t.param(x));
        return add(t, mean(t, sq), scale(t, sum(t, gelu(t, t.param(x))), 0.3));
    });
}

TEST(Gradcheck, SmallTransformerBlockEndToEnd) {
    // A LLaMA-style block on a soft prompt: rms_norm → q/k/v → rope → attention with GQA →
    // output projection → residual → rms_norm → swiglu MLP → cross-entropy head.
    const Index d = 8, hd = 4, heads = 2, kv_heads = 1, P = 2, S = 3, B = 2, vocab = 5;
    const Mat<D> emb = random_matrix(vocab, d, 40), g1 = random_matrix(1, d, 41),
                 wq = random_matrix(heads * hd, d, 42, 0.5),
                 wk = random_matrix(kv_heads * hd, d, 43, 0.5),
                 wv = random_matrix(kv_heads * hd, d, 44, 0.5), wo = random_matrix(d, d, 45, 0.5),
                 w1 = random_matrix(6, d, 46, 0.5), w3 = random_matrix(6, d, 47, 0.5),
                 w2 = random_matrix(d, 6, 48, 0.5);
    Param<D> prompt("prompt", random_matrix(P, d, 49));
    const std::vector<std::int32_t> ids = {1, 2, 3, 4, 0, 0};
    const std::vector<std::int32_t> lengths = {3, 2};
    const std::vector<std::int32_t> targets = {2, 3, 4, 0, -100, -100};
    const RopeSpec rope_spec{.head_dim = hd,
                             .rotary_dim = 0,
                             .theta = 10000.0,
                             .layout = RopeLayout::kHalfSplit,
                             .scaling = {}};
    auto block = [&](Tape<D>& t, const Var<D>& x, std::span<const std::int32_t> pos,
                     const AttentionSpec& spec, std::span<const std::int32_t> lens,
                     const Var<D>& pk, const Var<D>& pv, Var<D>* k_out, Var<D>* v_out) {
        Var<D> h = rms_norm(t, x, frozen(g1), 1e-5);
        Var<D> q = rope(t, matmul_wt(t, h, frozen(wq)), rope_spec, pos);
        Var<D> k = rope(t, matmul_wt(t, h, frozen(wk)), rope_spec, pos);
        Var<D> v = matmul_wt(t, h, frozen(wv));
        if (k_out) *k_out = k;
        if (v_out) *v_out = v;
        Var<D> a = attention(t, q, k, v, spec, lens, pk, pv);
        Var<D> r = add(t, x, matmul_wt(t, a, frozen(wo)));
        Var<D> m = rms_norm(t, r, frozen(g1), 1e-5);
        return add(t, r,
                   matmul_wt(t, swiglu(t, matmul_wt(t, m, frozen(w1)), matmul_wt(t, m, frozen(w3))),
                             frozen(w2)));
    };
    expect_gradients_match({&prompt}, [&](Tape<D>& t) {
        // Virtual tokens run once (positions 0..P-1); their keys/values prefix every row.
        Var<D> pk, pv;
        const auto prompt_pos = batch_positions(1, P, 0);
        block(t, t.param(prompt), prompt_pos,
              {.batch = 1, .seq = P, .n_heads = heads, .n_kv_heads = kv_heads, .head_dim = hd}, {},
              {}, {}, &pk, &pv);
        Var<D> x = gather_rows(t, frozen(emb), ids);
        const auto pos = batch_positions(B, S, std::int32_t(P));
        Var<D> y =
            block(t, x, pos,
                  {.batch = B, .seq = S, .n_heads = heads, .n_kv_heads = kv_heads, .head_dim = hd},
                  lengths, pk, pv, nullptr, nullptr);
        return cross_entropy(t, matmul_wt(t, y, frozen(emb)), targets);
    });
}

// ------------------------------------------------------------------------------------------------
// Forward values against direct formulas.

TEST(Forward, GeluAndSiluKnownValues) {
    Tape<D> t;
    Mat<D> x(1, 3);
    x << -1.0, 0.0, 1.0;
    const Mat<D> g = gelu(t, t.constant(x)).value();
    EXPECT_NEAR(g(0, 0), -0.15880800939172324, 1e-12);  // tanh-form GELU(−1)
    EXPECT_NEAR(g(0, 1), 0.0, 1e-15);
    EXPECT_NEAR(g(0, 2), 0.8411919906082768, 1e-12);
    const Mat<D> s = silu(t, t.constant(x)).value();
    EXPECT_NEAR(s(0, 2), 1.0 / (1.0 + std::exp(-1.0)), 1e-15);
}

TEST(Forward, LayerNormAndRmsNormStatistics) {
    Tape<D> t;
    const Mat<D> x = random_matrix(4, 16, 50, 3.0);
    const Mat<D> ones = Mat<D>::Ones(1, 16), zeros = Mat<D>::Zero(1, 16);
    const Mat<D> y = layer_norm(t, t.constant(x), frozen(ones), frozen(zeros), 0.0).value();
    for (Index r = 0; r < 4; ++r) {
        EXPECT_NEAR(y.row(r).mean(), 0.0, 1e-12);
        EXPECT_NEAR(y.row(r).squaredNorm() / 16.0, 1.0, 1e-12);
    }
    const Mat<D> z = rms_norm(t, t.constant(x), frozen(ones), 0.0).value();
    for (Index r = 0; r < 4; ++r) EXPECT_NEAR(z.row(r).squaredNorm() / 16.0, 1.0, 1e-12);
}

TEST(Forward, LinearCrossEntropyEqualsTheUnfusedHeadForEveryBlockSize) {
    const Mat<D> h = random_matrix(7, 4, 52), head = random_matrix(9, 4, 53, 1.5);
    const std::vector<std::int32_t> targets = {3, -100, 8, 0, -100, 2, 5};
    Tape<D> t;
    Param<D> hp("h", h);
    Var<D> loss = cross_entropy(t, matmul_wt(t, t.param(hp), frozen(head)), targets);
    t.backward(loss);
    for (Index block : {1, 2, 3, 7, 100}) {
        Mat<D> dh;
        const D fused = kernels::linear_cross_entropy<D>(
            h, frozen(head), targets, kernels::counted_targets(targets), &dh, block);
        EXPECT_NEAR(fused, loss.item(), 1e-13) << "block " << block;
        EXPECT_LT((dh - hp.grad()).cwiseAbs().maxCoeff(), 1e-14) << "block " << block;
        EXPECT_EQ(dh.row(1).cwiseAbs().maxCoeff(), 0.0) << "an ignored row has no gradient";
    }
    const std::vector<std::int32_t> none(7, -100), outside = {3, -100, 9, 0, -100, 2, 5};
    EXPECT_THROW(linear_cross_entropy(t, t.constant(h), frozen(head), none), NumericError);
    EXPECT_THROW(linear_cross_entropy(t, t.constant(h), frozen(head), outside), ShapeError);
    EXPECT_THROW(linear_cross_entropy(t, t.constant(h), frozen(Mat<D>(head.leftCols(3))), targets),
                 ShapeError);
}

TEST(Forward, CrossEntropyMatchesDirectFormula) {
    Tape<D> t;
    const Mat<D> logits = random_matrix(3, 5, 51, 2.0);
    const std::vector<std::int32_t> targets = {4, -100, 1};
    double expected = 0;
    for (int r : {0, 2}) {
        double z = 0;
        for (Index c = 0; c < 5; ++c) z += std::exp(logits(r, c));
        expected += std::log(z) - logits(r, targets[std::size_t(r)]);
    }
    expected /= 2;
    EXPECT_NEAR(cross_entropy(t, t.constant(logits), targets).item(), expected, 1e-12);
    const std::vector<std::int32_t> none = {-100, -100, -100};
    EXPECT_THROW(cross_entropy(t, t.constant(logits), none), NumericError);
}

TEST(Forward, RopeLayoutsAreColumnPermutationsOfEachOther) {
    // Half-split RoPE on a head equals interleaved RoPE on the head with columns (i, i+half)
    // moved to (2i, 2i+1): the same rotation of the same pairs.
    Tape<D> t;
    const Index hd = 6, heads = 2;
    const Mat<D> x = random_matrix(3, heads * hd, 52);
    Mat<D> x_interleaved(3, heads * hd);
    for (Index h = 0; h < heads; ++h)
        for (Index i = 0; i < hd / 2; ++i) {
            x_interleaved.col(h * hd + 2 * i) = x.col(h * hd + i);
            x_interleaved.col(h * hd + 2 * i + 1) = x.col(h * hd + i + hd / 2);
        }
    const std::vector<std::int32_t> pos = {0, 7, 31};
    const Mat<D> half = rope(t, t.constant(x),
                             {.head_dim = hd,
                              .rotary_dim = 0,
                              .theta = 10000.0,
                              .layout = RopeLayout::kHalfSplit,
                              .scaling = {}},
                             pos)
                            .value();
    const Mat<D> inter = rope(t, t.constant(x_interleaved),
                              {.head_dim = hd,
                               .rotary_dim = 0,
                               .theta = 10000.0,
                               .layout = RopeLayout::kInterleaved,
                               .scaling = {}},
                              pos)
                             .value();
    for (Index h = 0; h < heads; ++h)
        for (Index i = 0; i < hd / 2; ++i) {
            EXPECT_LT((half.col(h * hd + i) - inter.col(h * hd + 2 * i)).norm(), 1e-12);
            EXPECT_LT((half.col(h * hd + i + hd / 2) - inter.col(h * hd + 2 * i + 1)).norm(),
                      1e-12);
        }
    // Position 0 is the identity; norms are preserved everywhere.
    EXPECT_LT((half.row(0) - x.row(0)).norm(), 1e-15);
    EXPECT_NEAR(half.row(2).norm(), x.row(2).norm(), 1e-12);
}

// Direct attention with explicit loops: keys = prefix then the row's real tokens 0..i.
Mat<D> reference_attention(const Mat<D>& q, const Mat<D>& k, const Mat<D>& v, const Mat<D>& pk,
                           const Mat<D>& pv, const AttentionSpec& s,
                           const std::vector<std::int32_t>& lengths) {
    Mat<D> out = Mat<D>::Zero(q.rows(), q.cols());
    const Index P = pk.rows(), hd = s.head_dim;
    for (Index b = 0; b < s.batch; ++b)
        for (Index h = 0; h < s.n_heads; ++h) {
            const Index kh = h * s.n_kv_heads / s.n_heads;
            for (Index i = 0; i < lengths[std::size_t(b)]; ++i) {
                std::vector<double> score;
                std::vector<const double*> values;
                for (Index j = 0; j < P + i + 1; ++j) {
                    const double* key = j < P ? &pk(j, kh * hd) : &k(b * s.seq + j - P, kh * hd);
                    values.push_back(j < P ? &pv(j, kh * hd) : &v(b * s.seq + j - P, kh * hd));
                    double dot = 0;
                    for (Index c = 0; c < hd; ++c) dot += q(b * s.seq + i, h * hd + c) * key[c];
                    score.push_back(dot / std::sqrt(double(hd)));
                }
                double z = 0;
                for (double& e : score) z += (e = std::exp(e));
                for (std::size_t j = 0; j < score.size(); ++j)
                    for (Index c = 0; c < hd; ++c)
                        out(b * s.seq + i, h * hd + c) += score[j] / z * values[j][c];
            }
        }
    return out;
}

TEST(Forward, AttentionMatchesDirectLoopsWithPrefixGqaAndPadding) {
    const AttentionSpec spec{.batch = 2, .seq = 5, .n_heads = 6, .n_kv_heads = 2, .head_dim = 4};
    const std::vector<std::int32_t> lengths = {5, 3};
    const Mat<D> q = random_matrix(10, 24, 53), k = random_matrix(10, 8, 54),
                 v = random_matrix(10, 8, 55), pk = random_matrix(3, 8, 56),
                 pv = random_matrix(3, 8, 57);
    Tape<D> t;
    const Mat<D> got = attention(t, t.constant(q), t.constant(k), t.constant(v), spec, lengths,
                                 t.constant(pk), t.constant(pv))
                           .value();
    const Mat<D> want = reference_attention(q, k, v, pk, pv, spec, lengths);
    EXPECT_LT((got - want).cwiseAbs().maxCoeff(), 1e-12);
    EXPECT_EQ(got.row(9).norm(), 0.0) << "padded query rows must output zero";
    // Without a prefix the first query of a row sees only itself: output = its own value.
    const Mat<D> alone = attention(t, t.constant(q), t.constant(k), t.constant(v), spec).value();
    EXPECT_LT((alone.block(0, 0, 1, 4) - v.block(0, 0, 1, 4)).norm(), 1e-12);
}

TEST(Forward, FloatAgreesWithDouble) {
    const Mat<D> xd = random_matrix(6, 8, 58), wd = random_matrix(8, 8, 59, 0.3);
    const Mat<D> gd = Mat<D>::Ones(1, 8);
    const Mat<float> xf = xd.cast<float>(), wf = wd.cast<float>(), gf = gd.cast<float>();
    const AttentionSpec spec{.batch = 2, .seq = 3, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4};
    auto run = [&](auto& tape, const auto& x, const auto& w, const auto& g) {
        auto h = rms_norm(tape, tape.constant(x), frozen(g), decltype(x(0, 0))(1e-5));
        auto qkv = matmul_wt(tape, h, frozen(w));
        auto q = slice_cols(tape, qkv, 0, 8);
        auto k = slice_cols(tape, qkv, 0, 4);
        auto y = attention(tape, q, k, k, spec);
        return layer_norm(tape, gelu(tape, y), frozen(g),
                          frozen(Mat<std::decay_t<decltype(x(0, 0))>>::Zero(1, 8).eval()),
                          decltype(x(0, 0))(1e-5))
            .value();
    };
    Tape<D> td;
    Tape<float> tf;
    const Mat<D> yd = run(td, xd, wd, gd);
    const Mat<float> yf = run(tf, xf, wf, gf);
    EXPECT_LT((yf.cast<D>() - yd).cwiseAbs().maxCoeff(), 1e-5);
}

// ------------------------------------------------------------------------------------------------
// Frozen weights: read-only, never differentiated, never given gradient storage.

// Weights in pages that the process itself cannot write: any write would fault.
struct ReadOnlyWeight {
    std::size_t bytes = 0;
    void* pages = MAP_FAILED;
    ReadOnlyWeight(const Mat<float>& source) : bytes(std::size_t(source.size()) * sizeof(float)) {
        pages = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        std::memcpy(pages, source.data(), bytes);
        mprotect(pages, bytes, PROT_READ);
    }
    ~ReadOnlyWeight() { munmap(pages, bytes); }
    const float* data() const { return static_cast<const float*>(pages); }
};

TEST(Frozen, ValuesNoBackwardReadsAreFreedWhenTheForwardPassDropsThem) {
    Param<D> x("x", random_matrix(4, 6, 60));
    const Mat<D> w1 = random_matrix(8, 6, 61), w2 = random_matrix(3, 8, 62);
    Tape<D> tape;
    std::shared_ptr<detail::Node<D>> pre_node, post_node;
    Var<D> loss;
    {
        Var<D> pre = matmul_wt(tape, tape.param(x), frozen(w1));  // gelu's backward reads it
        Var<D> post = gelu(tape, pre);  // read by nothing: a frozen product needs no input
        Var<D> out = matmul_wt(tape, post, frozen(w2));
        loss = probe(tape, out);
        pre_node = pre.node();
        post_node = post.node();
        EXPECT_FALSE(post_node->released) << "a Var still refers to it";
    }
    EXPECT_TRUE(post_node->released) << "no Var and no backward refers to it";
    EXPECT_EQ(post_node->owned.size(), 0);
    EXPECT_FALSE(pre_node->released) << "gelu's backward reads it";
    EXPECT_THROW(post_node->value(), ConfigError);
    tape.backward(loss);

    // The gradient is the one of the same computation with every value kept alive.
    Tape<D> again;
    Param<D> x2("x", x.value());
    Var<D> pre = matmul_wt(again, again.param(x2), frozen(w1));
    Var<D> post = gelu(again, pre);
    again.backward(probe(again, matmul_wt(again, post, frozen(w2))));
    EXPECT_EQ((x.grad() - x2.grad()).cwiseAbs().maxCoeff(), 0.0);
}

TEST(Frozen, WeightBytesUnchangedAfter100OptimizerSteps) {
    const Index d = 16, P = 4, S = 6;
    const Mat<float> w1_init = random_matrix(3 * d, d, 60, 0.3).cast<float>();
    const Mat<float> w2_init = random_matrix(d, d, 61, 0.3).cast<float>();
    const Mat<float> gain_init = Mat<float>::Ones(1, d);
    ReadOnlyWeight w1(w1_init), w2(w2_init), gain(gain_init);
    ASSERT_NE(w1.pages, MAP_FAILED);
    ConstMap<float> W1(w1.data(), 3 * d, d), W2(w2.data(), d, d), G(gain.data(), 1, d);

    Param<float> prompt("prompt", random_matrix(P, d, 62).cast<float>());
    optim::Sgd<float> sgd({&prompt}, {.lr = 0.1, .momentum = 0.9});
    const Mat<float> tokens = random_matrix(S, d, 63).cast<float>();
    const std::vector<std::int32_t> targets = {1, 2, 3, 4, 5, 6};
    const AttentionSpec spec{.batch = 1, .seq = S, .n_heads = 2, .n_kv_heads = 2, .head_dim = 8};
    auto step = [&]() {
        Tape<float> t;
        Var<float> x = concat_rows(t, {t.param(prompt), t.constant(tokens)});
        Var<float> h = rms_norm(t, x, frozen(G), 1e-5f);
        Var<float> qkv = matmul_wt(t, h, frozen(W1));
        Var<float> vp = slice_rows(t, slice_cols(t, qkv, 2 * d, d), 0, P);
        Var<float> kp = slice_rows(t, slice_cols(t, qkv, d, d), 0, P);
        Var<float> q = slice_rows(t, slice_cols(t, qkv, 0, d), P, S);
        Var<float> k = slice_rows(t, slice_cols(t, qkv, d, d), P, S);
        Var<float> v = slice_rows(t, slice_cols(t, qkv, 2 * d, d), P, S);
        Var<float> a = attention(t, q, k, v, spec, {}, kp, vp);
        Var<float> loss = cross_entropy(t, matmul_wt(t, a, frozen(W2)), targets);
        const float value = loss.item();
        t.backward(loss);
        EXPECT_EQ(t.stats().weight_grad_products, 0u);
        sgd.step();
        sgd.zero_grad();
        return value;
    };
    const float first = step();
    float last = first;
    for (int i = 1; i < 100; ++i) last = step();
    EXPECT_LT(last, 0.5f * first) << "the prompt should learn through the frozen weights";
    EXPECT_EQ(std::memcmp(w1.data(), w1_init.data(), w1.bytes), 0);
    EXPECT_EQ(std::memcmp(w2.data(), w2_init.data(), w2.bytes), 0);
    EXPECT_EQ(std::memcmp(gain.data(), gain_init.data(), gain.bytes), 0);
}

TEST(Frozen, BackwardRunsOnlyInputGradientProducts) {
    const Mat<D> w1 = random_matrix(32, 16, 64), w2 = random_matrix(16, 32, 65);
    const Mat<D> tokens = random_matrix(5, 16, 66);
    Param<D> shift("shift", random_matrix(1, 32, 67));
    Tape<D> t;
    // tokens·W1ᵀ needs no gradient: computed, not recorded, never differentiated.
    Var<D> h = matmul_wt(t, t.constant(tokens), frozen(w1));
    EXPECT_FALSE(h.requires_grad());
    EXPECT_EQ(t.recorded(), 0u);
    Var<D> y = matmul_wt(t, gelu(t, add_bias(t, h, t.param(shift))), frozen(w2));
    Var<D> z = matmul(t, y, frozen(w2));  // the [in, out] layout: 16 → 32
    t.backward(sum(t, z));
    EXPECT_EQ(t.stats().forward_products, 3u);
    EXPECT_EQ(t.stats().input_grad_products, 2u);
    EXPECT_EQ(t.stats().weight_grad_products, 0u);
    EXPECT_EQ(t.recorded(), 0u) << "backward leaves the tape empty";

    // The same chain with W2 trainable does form its weight gradient.
    Param<D> w2_param("w2", w2);
    Tape<D> u;
    Var<D> h2 = matmul_wt(u, u.constant(tokens), frozen(w1));
    Var<D> y2 = matmul_wt(u, gelu(u, add_bias(u, h2, u.param(shift))), u.param(w2_param));
    u.backward(sum(u, y2));
    EXPECT_EQ(u.stats().weight_grad_products, 1u);
    EXPECT_EQ(u.stats().input_grad_products, 1u);
}

TEST(Frozen, NoGradientStorageForFrozenWeights) {
    // A big frozen weight and a tiny trainable input: backward's gradient storage is the size of
    // the activations, far below the weight's; a trainable copy of the weight costs its full size.
    const Index n_in = 256, n_out = 256;
    const Mat<D> w = random_matrix(n_out, n_in, 68);
    Param<D> x("x", random_matrix(2, n_in, 69));
    const std::size_t weight_bytes = std::size_t(w.size()) * sizeof(D);

    Tape<D> frozen_tape;
    frozen_tape.backward(sum(frozen_tape, matmul_wt(frozen_tape, frozen_tape.param(x), frozen(w))));
    EXPECT_GT(frozen_tape.stats().grad_bytes, 0u);
    EXPECT_LT(frozen_tape.stats().grad_bytes, weight_bytes / 10);

    Param<D> w_param("w", w);
    Tape<D> trainable_tape;
    trainable_tape.backward(sum(trainable_tape, matmul_wt(trainable_tape, trainable_tape.param(x),
                                                          trainable_tape.param(w_param))));
    EXPECT_GE(trainable_tape.stats().grad_bytes, weight_bytes);
}

TEST(Frozen, UntrainableParamEntersAsConstant) {
    Param<D> p("p", random_matrix(2, 3, 70));
    p.set_trainable(false);
    Tape<D> t;
    Var<D> v = t.param(p);
    EXPECT_FALSE(v.requires_grad());
    EXPECT_EQ(t.recorded(), 0u);
}

TEST(Frozen, BackwardFreesGradientsAndCaches) {
    Param<D> x("x", random_matrix(3, 4, 71));
    Tape<D> t;
    Var<D> hidden = gelu(t, t.param(x));
    Var<D> loss = sum(t, hidden);
    EXPECT_EQ(t.recorded(), 3u);  // param leaf, gelu, sum
    t.backward(loss);
    EXPECT_EQ(hidden.node()->grad.size(), 0) << "intermediate gradient kept after backward";
    EXPECT_FALSE(bool(hidden.node()->backward)) << "backward closure (and its caches) kept";
    EXPECT_GT(x.grad().norm(), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Errors a user can act on.

TEST(Errors, NothingToTrain) {
    Tape<D> t;
    Var<D> loss = sum(t, t.constant(random_matrix(2, 2, 72)));
    try {
        t.backward(loss);
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("nothing to train"), std::string::npos) << e.what();
    }
    Param<D> p("p", random_matrix(1, 1, 73));
    p.set_trainable(false);
    EXPECT_THROW(optim::Sgd<D>({&p}, {}), ConfigError);
    EXPECT_THROW(optim::Sgd<D>({}, {}), ConfigError);
}

TEST(Errors, ShapeMismatchNamesOpAndBothShapes) {
    Tape<D> t;
    const Mat<D> w = random_matrix(4, 5, 74);
    try {
        matmul_wt(t, t.constant(random_matrix(2, 3, 75)), frozen(w));
        FAIL() << "expected ShapeError";
    } catch (const ShapeError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("matmul_wt"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[2 x 3]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[4 x 5]"), std::string::npos) << msg;
    }
    EXPECT_THROW(add(t, t.constant(Mat<D>::Zero(2, 2)), t.constant(Mat<D>::Zero(2, 3))),
                 ShapeError);
    const AttentionSpec spec{.batch = 1, .seq = 2, .n_heads = 3, .n_kv_heads = 2, .head_dim = 2};
    EXPECT_THROW(attention(t, t.constant(Mat<D>::Zero(2, 6)), t.constant(Mat<D>::Zero(2, 4)),
                           t.constant(Mat<D>::Zero(2, 4)), spec),
                 ShapeError);  // 3 heads cannot share 2 KV heads
    const std::vector<std::int32_t> too_long = {3};
    const AttentionSpec ok{.batch = 1, .seq = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 2};
    EXPECT_THROW(attention(t, t.constant(Mat<D>::Zero(2, 4)), t.constant(Mat<D>::Zero(2, 2)),
                           t.constant(Mat<D>::Zero(2, 2)), ok, too_long),
                 ShapeError);
    const std::vector<std::int32_t> bad_id = {7};
    EXPECT_THROW(gather_rows(t, frozen(w), bad_id), ShapeError);
}

TEST(Errors, NonFiniteLossIsRefused) {
    Param<D> p("p", Mat<D>::Constant(1, 1, std::numeric_limits<double>::quiet_NaN()));
    Tape<D> t;
    EXPECT_THROW(t.backward(sum(t, t.param(p))), NumericError);
}

}  // namespace
