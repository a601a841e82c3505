// Whole-model benchmarks on a GPT-2-small-shaped model with random weights (d 768, 12 layers,
// 12 heads, vocab 50257): one training step of prompt tuning and of prefix tuning (batch 4 × 128
// real tokens, 20 virtual tokens), prefill of 128 tokens, and batch-1 decoding with no adapter and
// with a cached 20-token soft prompt. Peak resident memory is reported as a counter (process-wide
// high-water mark, so run one benchmark per process to read it per workload:
// --benchmark_filter=<name>).

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <memory>
#include <softprompt/softprompt.hpp>
#include <vector>

namespace {

using namespace softprompt;

struct Gpt2Small {
    nn::Config config;
    std::vector<Mat<float>> tensors;
    nn::Model<nn::Gpt2, float> model;

    Gpt2Small() {
        config.dim = 768;
        config.hidden_dim = 3072;
        config.n_layers = 12;
        config.n_heads = 12;
        config.n_kv_heads = 12;
        config.vocab_size = 50257;
        config.max_seq_len = 1024;
        config.norm_eps = 1e-5;
        Rng rng(1);
        tensors.reserve(256);  // the weights view these matrices: they must never move
        model.config = config;
        model.weights =
            nn::Gpt2::bind_hf<float>(config, [&](const std::string&, Index rows, Index cols) {
                Mat<float> m(rows, cols);
                const bool gain = rows == 1 && cols == config.dim;
                for (Index i = 0; i < m.size(); ++i)
                    m.data()[i] = gain ? 1.0f : float(rng.uniform(-0.02, 0.02));
                tensors.push_back(std::move(m));
                return Weight<float>{tensors.back().data(), rows, cols};
            });
    }
};

const Gpt2Small& gpt2_small() {
    static const Gpt2Small model;
    return model;
}

double peak_rss_mb() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_maxrss) / 1024.0;
}

nn::TokenBatch training_batch(const nn::Config& c) {
    nn::TokenBatch b;
    b.batch = 4;
    b.seq = 128;
    Rng rng(2);
    for (Index i = 0; i < b.batch * b.seq; ++i)
        b.ids.push_back(std::int32_t(rng.below(std::uint64_t(c.vocab_size))));
    for (std::size_t i = 0; i < b.ids.size(); ++i)
        b.targets.push_back(i + 1 < b.ids.size() ? b.ids[i + 1] : -100);
    return b;
}

// One AdamW step of `method` on a batch of 4 × 128 tokens, timed per iteration.
void run_training_steps(benchmark::State& state, peft::Method<float>& method) {
    const auto& m = gpt2_small();
    const nn::TokenBatch batch = training_batch(m.config);
    optim::AdamW<float> adamw(method.parameters(), {.lr = 1e-3, .weight_decay = 0});
    for (auto _ : state) {
        autograd::Tape<float> tape;
        auto out = nn::forward(tape, m.model, batch, method.input(tape));
        tape.backward(out.loss);
        adamw.step();
        adamw.zero_grad();
    }
    state.counters["peak_rss_MB"] = peak_rss_mb();
    state.counters["tokens/s"] = benchmark::Counter(double(batch.batch * batch.seq),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStepPromptTuning(benchmark::State& state) {
    const auto& m = gpt2_small();
    Rng rng(3);
    peft::PromptTuning<float> method(m.config,
                                     peft::init_normal<float>(20, m.config.dim, 0.02, rng));
    run_training_steps(state, method);
}
BENCHMARK(BM_TrainStepPromptTuning)->Unit(benchmark::kMillisecond)->MinTime(5.0);

void BM_TrainStepPrefixTuning(benchmark::State& state) {
    const auto& m = gpt2_small();
    Rng rng(4);
    peft::PrefixTuning<float> method(
        m.config,
        peft::init_normal<float>(20, m.config.n_layers * 2 * m.config.kv_dim(), 0.02, rng));
    run_training_steps(state, method);
}
BENCHMARK(BM_TrainStepPrefixTuning)->Unit(benchmark::kMillisecond)->MinTime(5.0);

void BM_Prefill128(benchmark::State& state) {
    const auto& m = gpt2_small();
    std::vector<std::int32_t> ids(128);
    Rng rng(5);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    for (auto _ : state) {
        nn::Sequence<float> seq;
        nn::Sequence<float>* one[] = {&seq};
        benchmark::DoNotOptimize(
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids}));
    }
    state.counters["tokens/s"] =
        benchmark::Counter(128.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Prefill128)->Unit(benchmark::kMillisecond)->MinTime(3.0);

// Decode one token at a time after a 128-token prefill; arg 0: no adapter, 1: cached soft prompt.
void BM_Decode(benchmark::State& state) {
    const auto& m = gpt2_small();
    Rng rng(6);
    const nn::PromptCache<float> cache =
        nn::cache_prompt(m.model, peft::init_normal<float>(20, m.config.dim, 0.02, rng));
    std::vector<std::int32_t> ids(128);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    nn::Sequence<float> seq;
    seq.prompt = state.range(0) == 1 ? &cache : nullptr;
    nn::Sequence<float>* one[] = {&seq};
    nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids});
    std::int32_t next = 1;
    for (auto _ : state) {
        if (seq.next_position() >= m.config.max_seq_len - 1) {
            state.PauseTiming();
            seq = nn::Sequence<float>();
            seq.prompt = state.range(0) == 1 ? &cache : nullptr;
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids});
            state.ResumeTiming();
        }
        const Mat<float> logits =
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {{next}});
        Index best = 0;
        logits.row(0).maxCoeff(&best);
        next = std::int32_t(best);
    }
    state.counters["tokens/s"] =
        benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Decode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(3.0);

}  // namespace
