// Per-op benchmarks at the shapes of a GPT-2-small training step (512 rows = batch 4 × 128 tokens,
// d 768, MLP 3072, vocab 50257): each op alone, forward only (inputs need no gradient, so nothing
// is recorded) and forward + backward (the input is trainable; the loss is Σ y ⊙ R, whose
// gradient dy = R costs one pass). GFLOP/s counters count multiply-adds × 2 of the products.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <softprompt/softprompt.hpp>
#include <vector>

namespace {

using namespace softprompt;
using namespace softprompt::autograd;

Mat<float> random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0) {
    Rng rng(seed);
    Mat<float> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = float(rng.uniform(-scale, scale));
    return m;
}

// Times `op` on trainable inputs; range(0) = 0: forward only, 1: forward + backward.
void run_op(benchmark::State& state, std::vector<Mat<float>> inputs,
            const std::function<Var<float>(Tape<float>&, const std::vector<Var<float>>&)>& op,
            double flops_forward) {
    const bool backward = state.range(0) == 1;
    std::vector<Param<float>> params;
    for (std::size_t i = 0; i < inputs.size(); ++i) params.emplace_back("input", inputs[i]);
    Mat<float> probe;
    for (auto _ : state) {
        Tape<float> tape;
        std::vector<Var<float>> vars;
        for (auto& p : params) vars.push_back(backward ? tape.param(p) : tape.constant(p.value()));
        Var<float> y = op(tape, vars);
        if (backward) {
            if (probe.rows() != y.rows() || probe.cols() != y.cols())
                probe = random_matrix(y.rows(), y.cols(), 99);
            tape.backward(sum(tape, mul(tape, y, tape.constant(probe))));
        }
        benchmark::DoNotOptimize(y.value().data());
    }
    // Backward of a product with a frozen weight costs one more product of the same size.
    const double flops = backward ? 2 * flops_forward : flops_forward;
    if (flops > 0)
        state.counters["GFLOP/s"] =
            benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

constexpr Index kRows = 512, kDim = 768, kHidden = 3072, kVocab = 50257;

void BM_MatmulFrozen(benchmark::State& state) {
    static const Mat<float> w = random_matrix(kHidden, kDim, 2, 0.02);
    run_op(
        state, {random_matrix(kRows, kDim, 1)},
        [](Tape<float>& t, const auto& x) { return matmul_wt(t, x[0], frozen(w)); },
        2.0 * kRows * kDim * kHidden);
}
BENCHMARK(BM_MatmulFrozen)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Attention with a 20-token prefix and grouped-query heads (12 query heads over 4 key/value
// heads, head_dim 64), batch 4 × 128, causal.
void BM_AttentionPrefixGqa(benchmark::State& state) {
    const Index heads = 12, kv_heads = 4, hd = 64, P = 20;
    const AttentionSpec spec{
        .batch = 4, .seq = 128, .n_heads = heads, .n_kv_heads = kv_heads, .head_dim = hd};
    run_op(
        state,
        {random_matrix(kRows, heads * hd, 3), random_matrix(kRows, kv_heads * hd, 4),
         random_matrix(kRows, kv_heads * hd, 5), random_matrix(P, kv_heads * hd, 6),
         random_matrix(P, kv_heads * hd, 7)},
        [spec](Tape<float>& t, const auto& x) {
            return attention(t, x[0], x[1], x[2], spec, {}, x[3], x[4]);
        },
        // q·kᵀ and p·v per (row, head): 2 products of [128, 64] × [64, P + 128]
        4.0 * spec.batch * heads * spec.seq * (P + spec.seq) * hd);
}
BENCHMARK(BM_AttentionPrefixGqa)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond);

void BM_LayerNorm(benchmark::State& state) {
    static const Mat<float> gain = Mat<float>::Ones(1, kDim), bias = Mat<float>::Zero(1, kDim);
    run_op(
        state, {random_matrix(kRows, kDim, 8)},
        [](Tape<float>& t, const auto& x) {
            return layer_norm(t, x[0], frozen(gain), frozen(bias), 1e-5f);
        },
        0);
}
BENCHMARK(BM_LayerNorm)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_RmsNorm(benchmark::State& state) {
    static const Mat<float> gain = Mat<float>::Ones(1, kDim);
    run_op(
        state, {random_matrix(kRows, kDim, 9)},
        [](Tape<float>& t, const auto& x) { return rms_norm(t, x[0], frozen(gain), 1e-5f); }, 0);
}
BENCHMARK(BM_RmsNorm)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_Gelu(benchmark::State& state) {
    run_op(
        state, {random_matrix(kRows, kHidden, 10)},
        [](Tape<float>& t, const auto& x) { return gelu(t, x[0]); }, 0);
}
BENCHMARK(BM_Gelu)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

std::vector<std::int32_t> next_token_targets() {
    Rng rng(11);
    std::vector<std::int32_t> targets(kRows);
    for (auto& t : targets) t = std::int32_t(rng.below(kVocab));
    return targets;
}

// The LM head and the loss as two ops: [512, 50257] logits, then cross-entropy over them.
void BM_HeadThenCrossEntropy(benchmark::State& state) {
    static const Mat<float> head = random_matrix(kVocab, kDim, 12, 0.02);
    static const std::vector<std::int32_t> targets = next_token_targets();
    run_op(
        state, {random_matrix(kRows, kDim, 13)},
        [](Tape<float>& t, const auto& x) {
            return cross_entropy(t, matmul_wt(t, x[0], frozen(head)), targets);
        },
        2.0 * kRows * kDim * kVocab);
}
BENCHMARK(BM_HeadThenCrossEntropy)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond);

// The same loss fused (linear_cross_entropy): no [512, 50257] tensor outlives a 128-row block.
void BM_LinearCrossEntropy(benchmark::State& state) {
    static const Mat<float> head = random_matrix(kVocab, kDim, 12, 0.02);
    static const std::vector<std::int32_t> targets = next_token_targets();
    run_op(
        state, {random_matrix(kRows, kDim, 13)},
        [](Tape<float>& t, const auto& x) {
            return linear_cross_entropy(t, x[0], frozen(head), targets);
        },
        2.0 * kRows * kDim * kVocab);
}
BENCHMARK(BM_LinearCrossEntropy)
    ->ArgName("backward")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
