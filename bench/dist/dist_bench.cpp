// Data-parallel training over MPI: one prompt-tuning step (AdamW) on a GPT-2-small-shaped model
// with random weights (d 768, 12 layers, vocab 50257), a batch of 8 sequences of 64 tokens cut into
// 8 shards, 20 virtual tokens, the Trainer given an MPI group. Run under mpirun with 1, 2 and 4
// processes (bench/dist/run.sh does, one OpenMP thread per process on a 2-core machine, 2 alone).
// Every process runs the same fixed number of iterations (collectives must match); rank 0 reports.
// Counters: the step's ms, the payload bytes this process handed to collectives per step
// (gradients as int64, the per-shard losses, the exponent bound), the trainable parameters' bytes
// in float32, and their ratio.

#include <benchmark/benchmark.h>

#include <softprompt/dist/mpi.hpp>
#include <softprompt/softprompt.hpp>
#include <vector>

#include "../random_gpt2.hpp"

namespace {

using namespace softprompt;

dist::MpiGroup* world = nullptr;

void BM_DataParallelPromptStep(benchmark::State& state) {
    static const bench::RandomGpt2 m(bench::gpt2_shape(768, 12, 12, 50257));
    Rng rng(2);
    train::Dataset data;
    for (int i = 0; i < 64; ++i) {
        std::vector<std::int32_t> ids(64);
        for (auto& id : ids) id = std::int32_t(rng.below(std::uint64_t(m.config.vocab_size)));
        data.add(train::causal_lm_example(std::move(ids)));
    }
    peft::PromptTuning<float> method(m.config,
                                     peft::init_normal<float>(20, m.config.dim, 0.02, rng));
    optim::AdamW<float> adamw(method.parameters(), {.lr = 1e-3, .weight_decay = 0});
    train::TrainerOptions options;
    options.max_steps = 1 << 20;
    options.batch_size = 8;
    options.data_parallel_shards = 8;
    options.progress = train::ProgressMode::kSilent;
    train::Trainer<nn::Gpt2, float> trainer(m.model, method, adamw, options, *world);
    trainer.fit(data, nullptr, 1);  // warm-up step
    std::int64_t step = 1;
    const std::uint64_t bytes_before = world->payload_bytes();
    for (auto _ : state) trainer.fit(data, nullptr, ++step);
    const double steps = double(state.iterations());
    std::size_t params = 0;
    for (auto* p : method.parameters()) params += std::size_t(p->value().size());
    state.counters["processes"] = world->size();
    state.counters["payload_bytes_per_step"] =
        double(world->payload_bytes() - bytes_before) / steps;
    state.counters["param_bytes_f32"] = double(params * sizeof(float));
    state.counters["payload_over_params"] =
        double(world->payload_bytes() - bytes_before) / steps / double(params * sizeof(float));
}
BENCHMARK(BM_DataParallelPromptStep)->Unit(benchmark::kMillisecond)->Iterations(4);

// Swallows every report: the ranks other than 0 run the benchmark but print nothing.
class SilentReporter final : public benchmark::BenchmarkReporter {
public:
    bool ReportContext(const Context&) override { return true; }
    void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
    dist::MpiSession mpi(argc, argv);
    dist::MpiGroup group;
    world = &group;
    return dist::run_or_abort(group, [&] {
        benchmark::Initialize(&argc, argv);
        if (group.rank() == 0) {
            benchmark::RunSpecifiedBenchmarks();
        } else {
            SilentReporter silent;
            benchmark::RunSpecifiedBenchmarks(&silent);
        }
        benchmark::Shutdown();
    });
}
