// Whole-model benchmarks on a GPT-2-small-shaped model with random weights (d 768, 12 layers,
// 12 heads, vocab 50257): one AdamW training step of prompt tuning, prefix tuning, P-tuning and
// LoRA (batch 4 × 128 real tokens, 20 virtual tokens, rank 8), the prompt-tuning step on a tiny
// model, and prefill of 128 tokens and batch-1 decoding, each with no adapter, a cached 20-token
// soft prompt, and a 20-token prefix. Peak resident memory is reported as a counter (process-wide
// high-water mark, so run one benchmark per process to read it per workload:
// --benchmark_filter=<name>; bench/compare/run.py does). The names are the ones bench/compare
// pairs with its PyTorch workloads. BM_DecodePairedPromptOverhead measures the cached prompt's
// cost per decoded token against no adapter within one process, token by token, and
// BM_DecodePairedThreads batch-1 decoding on one thread against all of them.
// BM_ServeTenLoraAdapters compares, in one process, the peak memory and time of a batch served
// with ten LoRA adapters (one per row) and with none.

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

namespace {

using namespace softprompt;

// A GPT-2-family model with uniform(±0.02) weights and unit norm gains, owning its tensors.
struct RandomGpt2 {
    nn::Config config;
    std::vector<Mat<float>> tensors;
    nn::Model<nn::Gpt2, float> model;

    explicit RandomGpt2(const nn::Config& shape) : config(shape) {
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

nn::Config gpt2_shape(Index dim, Index layers, Index heads, Index vocab) {
    nn::Config c;
    c.dim = dim;
    c.hidden_dim = 4 * dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = heads;
    c.vocab_size = vocab;
    c.max_seq_len = 1024;
    c.norm_eps = 1e-5;
    return c;
}

const RandomGpt2& gpt2_small() {
    static const RandomGpt2 model(gpt2_shape(768, 12, 12, 50257));
    return model;
}

const RandomGpt2& gpt2_tiny() {
    static const RandomGpt2 model(gpt2_shape(64, 2, 4, 512));
    return model;
}

double peak_rss_mb() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_maxrss) / 1024.0;
}

nn::TokenBatch training_batch(const nn::Config& c, Index batch, Index seq) {
    nn::TokenBatch b;
    b.batch = batch;
    b.seq = seq;
    Rng rng(2);
    for (Index i = 0; i < b.batch * b.seq; ++i)
        b.ids.push_back(std::int32_t(rng.below(std::uint64_t(c.vocab_size))));
    for (std::size_t i = 0; i < b.ids.size(); ++i)
        b.targets.push_back(i + 1 < b.ids.size() ? b.ids[i + 1] : -100);
    return b;
}

enum class Workload { kPromptTuning, kPrefixTuning, kPTuning, kLora };

std::unique_ptr<peft::Method<float>> make_method(Workload w, const nn::Config& c, Index tokens) {
    Rng rng(3);
    switch (w) {
        case Workload::kPromptTuning:
            return std::make_unique<peft::PromptTuning<float>>(
                c, peft::init_normal<float>(tokens, c.dim, 0.02, rng));
        case Workload::kPrefixTuning:
            return std::make_unique<peft::PrefixTuning<float>>(
                c, peft::init_normal<float>(tokens, c.n_layers * 2 * c.kv_dim(), 0.02, rng));
        case Workload::kPTuning:
            return std::make_unique<peft::PTuning<float>>(
                c, peft::PTuningOptions{.num_virtual_tokens = tokens}, rng);
        case Workload::kLora:
            return std::make_unique<peft::Lora<nn::Gpt2, float>>(c, peft::LoraOptions{}, rng);
    }
    return nullptr;
}

// One AdamW step (forward with the LM head fused into the loss, backward, update) per iteration.
void run_training_steps(benchmark::State& state, const RandomGpt2& m, Workload workload,
                        Index batch_rows, Index seq, Index virtual_tokens) {
    const nn::TokenBatch batch = training_batch(m.config, batch_rows, seq);
    const auto method = make_method(workload, m.config, virtual_tokens);
    optim::AdamW<float> adamw(method->parameters(), {.lr = 1e-3, .weight_decay = 0});
    for (auto _ : state) {
        autograd::Tape<float> tape;
        auto out =
            nn::forward(tape, m.model, batch, method->input(tape), nn::LogitsRequest::kLossOnly);
        tape.backward(out.loss);
        adamw.step();
        adamw.zero_grad();
    }
    state.counters["peak_rss_MB"] = peak_rss_mb();
    state.counters["tokens/s"] = benchmark::Counter(double(batch.batch * batch.seq),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStep(benchmark::State& state, Workload workload) {
    run_training_steps(state, gpt2_small(), workload, 4, 128, 20);
}
BENCHMARK_CAPTURE(BM_TrainStep, prompt_tuning, Workload::kPromptTuning)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(5.0);
BENCHMARK_CAPTURE(BM_TrainStep, prefix_tuning, Workload::kPrefixTuning)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(5.0);
BENCHMARK_CAPTURE(BM_TrainStep, p_tuning, Workload::kPTuning)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(5.0);
BENCHMARK_CAPTURE(BM_TrainStep, lora, Workload::kLora)->Unit(benchmark::kMillisecond)->MinTime(5.0);

// The same step on a tiny model (d 64, 2 layers, vocab 512; batch 4 × 64, 8 virtual tokens), where
// per-op overhead rather than arithmetic sets the time.
void BM_TinyTrainStep(benchmark::State& state, Workload workload) {
    run_training_steps(state, gpt2_tiny(), workload, 4, 64, 8);
}
BENCHMARK_CAPTURE(BM_TinyTrainStep, prompt_tuning, Workload::kPromptTuning)
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(2.0);

enum class DecodeAdapter { kNone, kCachedPrompt, kPrefix };

// An adapter's keys/values, computed once and shared by every request (empty for kNone).
nn::PromptCache<float> adapter_cache(const RandomGpt2& m, DecodeAdapter adapter) {
    const nn::Config& c = m.config;
    Rng rng(6);
    switch (adapter) {
        case DecodeAdapter::kNone:
            return {};
        case DecodeAdapter::kCachedPrompt:
            return nn::cache_prompt(m.model, peft::init_normal<float>(20, c.dim, 0.02, rng));
        case DecodeAdapter::kPrefix:
            return nn::cache_prefix(
                c, peft::init_normal<float>(20, c.n_layers * 2 * c.kv_dim(), 0.02, rng));
    }
    return {};
}

// One request's prefill of 128 tokens (its KV cache and the last position's logits), after the
// adapter's cached keys/values when there is one.
void BM_Prefill128(benchmark::State& state, DecodeAdapter adapter) {
    const auto& m = gpt2_small();
    const nn::PromptCache<float> cache = adapter_cache(m, adapter);
    std::vector<std::int32_t> ids(128);
    Rng rng(5);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    for (auto _ : state) {
        nn::Sequence<float> seq;
        seq.prompt = adapter == DecodeAdapter::kNone ? nullptr : &cache;
        nn::Sequence<float>* one[] = {&seq};
        benchmark::DoNotOptimize(
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids}));
    }
    state.counters["peak_rss_MB"] = peak_rss_mb();
    state.counters["tokens/s"] =
        benchmark::Counter(128.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_Prefill128, none, DecodeAdapter::kNone)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(BM_Prefill128, cached_prompt, DecodeAdapter::kCachedPrompt)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(BM_Prefill128, prefix, DecodeAdapter::kPrefix)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

// Per request: prefill 128 tokens (untimed), then greedy-decode 128 tokens one at a time; each
// iteration is one decoded token. A soft prompt or prefix is computed once and shared (cached).
void BM_Decode(benchmark::State& state, DecodeAdapter adapter) {
    const auto& m = gpt2_small();
    const nn::Config& c = m.config;
    const nn::PromptCache<float> cache = adapter_cache(m, adapter);
    Rng rng(7);
    std::vector<std::int32_t> ids(128);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(c.vocab_size)));
    nn::Sequence<float> seq;
    nn::Sequence<float>* one[] = {&seq};
    const auto start_request = [&] {
        seq = nn::Sequence<float>();
        seq.prompt = adapter == DecodeAdapter::kNone ? nullptr : &cache;
        const Mat<float> logits =
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids});
        Index best = 0;
        logits.row(0).maxCoeff(&best);
        return std::int32_t(best);
    };
    std::int32_t next = start_request();
    Index decoded = 0;
    for (auto _ : state) {
        if (decoded == 128) {
            state.PauseTiming();
            next = start_request();
            decoded = 0;
            state.ResumeTiming();
        }
        const Mat<float> logits =
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {{next}});
        Index best = 0;
        logits.row(0).maxCoeff(&best);
        next = std::int32_t(best);
        ++decoded;
    }
    state.counters["peak_rss_MB"] = peak_rss_mb();
    state.counters["tokens/s"] =
        benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_Decode, none, DecodeAdapter::kNone)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(BM_Decode, cached_prompt, DecodeAdapter::kCachedPrompt)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(BM_Decode, prefix, DecodeAdapter::kPrefix)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

// Two GPT-2-small requests decoding side by side in one process (prefill 128 tokens, untimed, then
// 128 greedy tokens, again), each token of one timed right after the same token of the other
// (A B A B, who goes first alternating), so that a slow stretch of a shared host hits both.
// `prompts[i]` is request i's cached prompt (or null); `before(i)` runs, untimed, before each of
// request i's tokens. Returns the median ms per token of each request.
std::array<double, 2> paired_decode(benchmark::State& state,
                                    const std::array<const nn::PromptCache<float>*, 2>& prompts,
                                    const std::function<void(int)>& before) {
    const auto& m = gpt2_small();
    Rng rng(7);
    std::vector<std::int32_t> ids(128);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    struct Request {
        nn::Sequence<float> seq;
        std::int32_t next = 0;
        std::vector<double> ms;
    };
    Request requests[2];
    const auto step = [&](Request& r, const std::vector<std::int32_t>& tokens) {
        nn::Sequence<float>* one[] = {&r.seq};
        const Mat<float> logits =
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {tokens});
        Index best = 0;
        logits.row(0).maxCoeff(&best);
        r.next = std::int32_t(best);
    };
    const auto start_requests = [&] {
        for (int i = 0; i < 2; ++i) {
            requests[i].seq = nn::Sequence<float>();
            requests[i].seq.prompt = prompts[std::size_t(i)];
            before(i);
            step(requests[i], ids);
        }
    };
    start_requests();
    Index decoded = 0;
    for (auto _ : state) {
        if (decoded == 128) {
            state.PauseTiming();
            start_requests();
            decoded = 0;
            state.ResumeTiming();
        }
        for (int i = 0; i < 2; ++i) {
            const int which = (decoded % 2 == 0) ? i : 1 - i;
            before(which);
            const auto t0 = std::chrono::steady_clock::now();
            step(requests[which], {requests[which].next});
            requests[which].ms.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count());
        }
        ++decoded;
    }
    const auto median = [](std::vector<double> v) {
        std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
        return v[v.size() / 2];
    };
    return {median(requests[0].ms), median(requests[1].ms)};
}

// The cached soft prompt's cost per decoded token, paired against no adapter. Counters: the
// median ms per token of each and their ratio (prompt / none); the target is at most 1.03. Timed
// per token by hand; the benchmark's own time is that of both.
void BM_DecodePairedPromptOverhead(benchmark::State& state) {
    const nn::PromptCache<float> cache = adapter_cache(gpt2_small(), DecodeAdapter::kCachedPrompt);
    const auto [none, prompt] = paired_decode(state, {nullptr, &cache}, [](int) {});
    state.counters["none_ms"] = none;
    state.counters["prompt_ms"] = prompt;
    state.counters["ratio"] = prompt / none;
}
BENCHMARK(BM_DecodePairedPromptOverhead)->Unit(benchmark::kMillisecond)->MinTime(10.0);

// Batch-1 decoding on one thread against all of OpenMP's threads (OMP_NUM_THREADS, or every
// core), paired: the products of one row by a weight matrix split their columns across threads,
// so that every core streams its share of the weights. Counters: the median ms per token of each
// and their ratio (one thread / all: the speed-up). Without OpenMP both run on one thread.
void BM_DecodePairedThreads(benchmark::State& state) {
#if defined(_OPENMP)
    const int all = omp_get_max_threads();
    const auto threads_for = [all](int request) { omp_set_num_threads(request == 0 ? 1 : all); };
#else
    const int all = 1;
    const auto threads_for = [](int) {};
#endif
    const auto [one, many] = paired_decode(state, {nullptr, nullptr}, threads_for);
#if defined(_OPENMP)
    omp_set_num_threads(all);
#endif
    state.counters["threads"] = all;
    state.counters["one_thread_ms"] = one;
    state.counters["all_threads_ms"] = many;
    state.counters["speedup"] = one / many;
}
BENCHMARK(BM_DecodePairedThreads)->Unit(benchmark::kMillisecond)->MinTime(10.0);

// Resets the resident-memory high-water mark to the current resident size (Linux: clear_refs 5).
bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return bool(out);
}

// The resident-memory high-water mark since the last reset_peak_rss(), in MB.
double peak_rss_since_reset_mb() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return peak_rss_mb();
}

// Ten LoRA adapters served on one GPT-2-small model, a different one on each row of a 10-row batch,
// against the same batch with no adapter (prompts of 32 tokens, 8 greedy new tokens per row). The
// adapters (rank 8 on c_attn and c_proj, random B) are saved in PEFT's format and registered from
// their folders, as a server would. Counters: the peak resident memory of each phase in one
// process, the high-water mark reset before each (the ten adapters' phase last, so it also holds
// whatever their creation left), their ratio (target: at most 1.05; merging each adapter into a
// copy of the weights would add 113 MB per adapter here), and the median ms per batch of each,
// timed alternately (A B A B).
void BM_ServeTenLoraAdapters(benchmark::State& state) {
    namespace fs = std::filesystem;
    const auto& m = gpt2_small();
    const nn::Config& c = m.config;
    using Registry = peft::Registry<nn::Gpt2>;
    Rng rng(9);
    std::vector<Registry::Request> none(10);
    for (auto& r : none) {
        for (int i = 0; i < 32; ++i)
            r.generation.prompt.push_back(std::int32_t(rng.below(std::uint64_t(c.vocab_size))));
        r.generation.max_new_tokens = 8;
    }
    Registry idle(m.model);
    idle.generate(none);  // warm-up
    const bool reset = reset_peak_rss();
    idle.generate(none);
    const double none_peak = peak_rss_since_reset_mb();

    const fs::path dir =
        fs::temp_directory_path() / ("softprompt_bench_lora_" + std::to_string(::getpid()));
    std::vector<Registry::Request> with = none;
    for (int i = 0; i < 10; ++i) {
        peft::Lora<nn::Gpt2, float> lora(c, {.rank = 8, .alpha = 16, .output = true}, rng);
        for (auto& u : lora.updates())
            for (Index k = 0; k < u.b->value().size(); ++k)
                u.b->value().data()[k] = float(rng.uniform(-0.02, 0.02));
        with[std::size_t(i)].adapter = "lora_" + std::to_string(i);
        peft::save_adapter((dir / with[std::size_t(i)].adapter).string(), lora, m.model);
    }
    reset_peak_rss();
    Registry registry(m.model);
    for (const auto& r : with) registry.add_folder((dir / r.adapter).string());
    registry.generate(with);
    const double lora_peak = peak_rss_since_reset_mb();
    fs::remove_all(dir);

    std::vector<double> ms[2];
    bool first = true;
    for (auto _ : state) {
        for (int k = 0; k < 2; ++k) {
            const int which = first ? k : 1 - k;  // alternate who goes first
            const auto t0 = std::chrono::steady_clock::now();
            benchmark::DoNotOptimize(registry.generate(which == 0 ? none : with));
            ms[which].push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count());
        }
        first = !first;
    }
    const auto median = [](std::vector<double> v) {
        std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
        return v[v.size() / 2];
    };
    state.counters["peak_reset"] = reset ? 1 : 0;  // 0: the peaks are since the process started
    state.counters["none_peak_MB"] = none_peak;
    state.counters["lora10_peak_MB"] = lora_peak;
    state.counters["peak_ratio"] = lora_peak / none_peak;
    state.counters["none_ms"] = median(ms[0]);
    state.counters["lora10_ms"] = median(ms[1]);
    state.counters["time_ratio"] = median(ms[1]) / median(ms[0]);
}
BENCHMARK(BM_ServeTenLoraAdapters)->Unit(benchmark::kMillisecond)->MinTime(5.0);

}  // namespace
