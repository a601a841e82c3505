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
// BM_DecodeAgainstBandwidthFloor reports batch-1 decoding as a ratio to the floor that a STREAM
// triad measured in the same run implies; BM_BatchedDecode32 the throughput of 32 requests against
// one. BM_CheckpointedTrainStep measures activation checkpointing's memory and time on a 4 × 512 batch.
// BM_ServeTenLoraAdapters compares, in one process, the peak memory and time of a batch served
// with ten LoRA adapters (one per row) and with none.

#include <benchmark/benchmark.h>
#include <malloc.h>
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
#include <tuple>
#include <vector>

#include "random_gpt2.hpp"

namespace {

using namespace softprompt;
using softprompt::bench::gpt2_shape;
using softprompt::bench::RandomGpt2;

const RandomGpt2& gpt2_small() {
    static const RandomGpt2 model(gpt2_shape(768, 12, 12, 50257));
    return model;
}

const RandomGpt2& gpt2_tiny() {
    static const RandomGpt2 model(gpt2_shape(64, 2, 4, 512));
    return model;
}

// The median of some timings (the upper one of an even count).
double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
    return v[v.size() / 2];
}

// Milliseconds since t0.
double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
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
            requests[which].ms.push_back(ms_since(t0));
        }
        ++decoded;
    }
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

// STREAM's triad a = b + s·c over three arrays of 64 Mi floats (768 MB, far beyond any cache), on
// every OpenMP thread: bytes moved per pass are 3 × 256 MB (two read, one written; the
// write-allocate read not counted, as STREAM counts). Returns the median GB/s of `passes` passes.
double triad_gb_per_s(int passes) {
    constexpr std::size_t n = std::size_t(64) << 20;
    static std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
    const auto triad = [] {
        const std::ptrdiff_t count = std::ptrdiff_t(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
        for (std::ptrdiff_t i = 0; i < count; ++i)
            a[std::size_t(i)] = b[std::size_t(i)] + 0.5f * c[std::size_t(i)];
    };
    triad();  // pages touched by the same threads that time them
    std::vector<double> gbps;
    for (int p = 0; p < passes; ++p) {
        const auto t0 = std::chrono::steady_clock::now();
        triad();
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        gbps.push_back(3.0 * double(n) * sizeof(float) / s / 1e9);
    }
    benchmark::DoNotOptimize(a.data());
    std::nth_element(gbps.begin(), gbps.begin() + std::ptrdiff_t(gbps.size() / 2), gbps.end());
    return gbps[gbps.size() / 2];
}

// Batch-1 decoding against the floor that the machine's memory bandwidth sets: every token reads
// each weight once (the LM head's tied embedding included), so at B GB/s a token cannot take less
// than weight bytes / B. Rounds alternate a triad measurement (median of 5 passes) with 32 decoded
// tokens, so a slow stretch of a shared host hits both. Counters: the weights' MB, the median triad
// GB/s, the median ms per token, the floor in ms and the ratio ms / floor (target: at most 1.3).
void BM_DecodeAgainstBandwidthFloor(benchmark::State& state) {
    const auto& m = gpt2_small();
    double weight_bytes = 0;
    for (const Mat<float>& t : m.tensors) weight_bytes += double(t.size()) * sizeof(float);
    // The position table is read one row per token, not whole.
    weight_bytes -= double(m.config.max_seq_len * m.config.dim) * sizeof(float);
    Rng rng(7);
    std::vector<std::int32_t> ids(128);
    for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    std::vector<double> gbps, ms;
    for (auto _ : state) {
        gbps.push_back(triad_gb_per_s(5));
        nn::Sequence<float> seq;
        nn::Sequence<float>* one[] = {&seq};
        Mat<float> logits = nn::advance(m.model, std::span<nn::Sequence<float>* const>(one), {ids});
        for (int t = 0; t < 32; ++t) {
            Index best = 0;
            logits.row(0).maxCoeff(&best);
            const auto t0 = std::chrono::steady_clock::now();
            logits = nn::advance(m.model, std::span<nn::Sequence<float>* const>(one),
                                 {{std::int32_t(best)}});
            ms.push_back(ms_since(t0));
        }
    }
    const double bandwidth = median(gbps), token_ms = median(ms);
    const double floor_ms = weight_bytes / (bandwidth * 1e9) * 1e3;
    state.counters["weights_MB"] = weight_bytes / 1e6;
    state.counters["triad_GBps"] = bandwidth;
    state.counters["token_ms"] = token_ms;
    state.counters["floor_ms"] = floor_ms;
    state.counters["ratio_to_floor"] = token_ms / floor_ms;
}
BENCHMARK(BM_DecodeAgainstBandwidthFloor)->Unit(benchmark::kMillisecond)->Iterations(5);

// Batched decoding: 32 requests (each a 32-token prompt) stepping one token each per pass over the
// weights, against one request alone, alternating a step of each (A B A B). Counters: the median
// ms of a step of each, the tokens per second of each and their ratio (target: at least 8).
void BM_BatchedDecode32(benchmark::State& state) {
    const auto& m = gpt2_small();
    constexpr std::size_t kBatch = 32;
    Rng rng(8);
    std::vector<std::vector<std::int32_t>> prompts(kBatch, std::vector<std::int32_t>(32));
    for (auto& p : prompts)
        for (auto& id : p) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
    std::vector<nn::Sequence<float>> many(kBatch);
    std::vector<nn::Sequence<float>*> many_ptrs;
    for (auto& s : many) many_ptrs.push_back(&s);
    nn::Sequence<float> alone;
    nn::Sequence<float>* alone_ptr[] = {&alone};
    const auto greedy = [](const Mat<float>& logits) {
        std::vector<std::vector<std::int32_t>> next(std::size_t(logits.rows()));
        for (Index r = 0; r < logits.rows(); ++r) {
            Index best = 0;
            logits.row(r).maxCoeff(&best);
            next[std::size_t(r)] = {std::int32_t(best)};
        }
        return next;
    };
    const auto start = [&] {
        for (auto& s : many) s = nn::Sequence<float>();
        alone = nn::Sequence<float>();
        const auto next_many =
            greedy(nn::advance(m.model, std::span<nn::Sequence<float>* const>(many_ptrs), prompts));
        const auto next_alone = greedy(
            nn::advance(m.model, std::span<nn::Sequence<float>* const>(alone_ptr), {prompts[0]}));
        return std::make_pair(next_many, next_alone);
    };
    auto [next_many, next_alone] = start();
    std::vector<double> ms_alone, ms_many;
    Index steps = 0;
    for (auto _ : state) {
        if (steps == 64) {  // keep the caches short: every step decodes at a similar length
            state.PauseTiming();
            std::tie(next_many, next_alone) = start();
            steps = 0;
            state.ResumeTiming();
        }
        for (int k = 0; k < 2; ++k) {
            const bool batched = (steps % 2 == 0) == (k == 0);
            const auto t0 = std::chrono::steady_clock::now();
            if (batched)
                next_many = greedy(nn::advance(
                    m.model, std::span<nn::Sequence<float>* const>(many_ptrs), next_many));
            else
                next_alone = greedy(nn::advance(
                    m.model, std::span<nn::Sequence<float>* const>(alone_ptr), next_alone));
            (batched ? ms_many : ms_alone).push_back(ms_since(t0));
        }
        ++steps;
    }
    const double one_ms = median(ms_alone), batch_ms = median(ms_many);
    state.counters["batch1_step_ms"] = one_ms;
    state.counters["batch32_step_ms"] = batch_ms;
    state.counters["batch1_tok_per_s"] = 1e3 / one_ms;
    state.counters["batch32_tok_per_s"] = 1e3 * double(kBatch) / batch_ms;
    state.counters["throughput_ratio"] = (double(kBatch) / batch_ms) / (1.0 / one_ms);
}
BENCHMARK(BM_BatchedDecode32)->Unit(benchmark::kMillisecond)->MinTime(10.0);

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

// The resident size now, in MB.
double rss_now_mb() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return 0;
}

// Activation checkpointing on a long batch: one AdamW step of `workload` on GPT-2 small, batch
// 4 × 512 real tokens, 20 virtual tokens, with the layers checkpointed one by one
// (TrainerOptions::checkpoint_every = 1) against keeping every activation, alternating which goes
// first (A B A B). A step's activation memory is its peak resident size less the resident size
// before it (freed memory handed back to the system first, so that neither inherits the other's
// pages). Counters: the median ms and activation MB of each, and their ratios checkpointed / plain
// (targets: time at most 1.35, memory at most 1/3).
void BM_CheckpointedTrainStep(benchmark::State& state, Workload workload) {
    const auto& m = gpt2_small();
    const nn::TokenBatch batch = training_batch(m.config, 4, 512);
    const auto method = make_method(workload, m.config, 20);
    optim::AdamW<float> adamw(method->parameters(), {.lr = 1e-3, .weight_decay = 0});
    struct Measured {
        std::vector<double> ms, activation_mb;
    };
    Measured measured[2];  // [0]: every activation kept, [1]: layers checkpointed one by one
    const auto step = [&](int which) {
        malloc_trim(0);
        const double before = rss_now_mb();
        reset_peak_rss();
        const auto t0 = std::chrono::steady_clock::now();
        {
            autograd::Tape<float> tape;
            auto out = nn::forward(tape, m.model, batch, method->input(tape),
                                   nn::LogitsRequest::kLossOnly, Index(which));
            tape.backward(out.loss);
            adamw.step();
            adamw.zero_grad();
        }
        measured[which].ms.push_back(ms_since(t0));
        measured[which].activation_mb.push_back(peak_rss_since_reset_mb() - before);
    };
    bool plain_first = true;
    for (auto _ : state) {
        step(plain_first ? 0 : 1);
        step(plain_first ? 1 : 0);
        plain_first = !plain_first;
    }
    const double plain_ms = median(measured[0].ms), ckpt_ms = median(measured[1].ms);
    const double plain_mb = median(measured[0].activation_mb);
    const double ckpt_mb = median(measured[1].activation_mb);
    state.counters["plain_ms"] = plain_ms;
    state.counters["ckpt_ms"] = ckpt_ms;
    state.counters["time_ratio"] = ckpt_ms / plain_ms;
    state.counters["plain_act_MB"] = plain_mb;
    state.counters["ckpt_act_MB"] = ckpt_mb;
    state.counters["mem_ratio"] = ckpt_mb / plain_mb;
}
BENCHMARK_CAPTURE(BM_CheckpointedTrainStep, prompt_tuning, Workload::kPromptTuning)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK_CAPTURE(BM_CheckpointedTrainStep, prefix_tuning, Workload::kPrefixTuning)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

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
            ms[which].push_back(ms_since(t0));
        }
        first = !first;
    }
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
