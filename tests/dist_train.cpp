// Data-parallel training under mpirun, for tests/dist_train.cmake: prompt or prefix tuning of the
// stories260K model on generated token sequences, the Trainer given an MPI group
// (dist/mpi.hpp), rank 0 saving the training state every --save-every steps and the final one to
// --out. The script runs it on 1, 2 and 4 processes and compares the files byte for byte.
//
//   mpirun -n N dist_train --model stories260K.bin --method prompt|prefix --steps 20 --dir D
//          [--save-every K] [--resume] [--out FILE] [--fail-rank R --fail-at-call C]
//
// --fail-rank/--fail-at-call make rank R throw just before its C-th collective call (while the
// others wait in theirs): run_or_abort must end the whole job with the error.
//
// Before it ends, every rank checks that all ranks hold the same parameters (a checksum's max and
// min over the group) and prints the collective calls and payload bytes of its last step.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <softprompt/dist/mpi.hpp>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

namespace {

using namespace softprompt;

// Forwards to a group, but throws on rank `fail_rank` just before collective call `fail_at`.
class FailingGroup final : public train::Collective {
public:
    FailingGroup(dist::MpiGroup& group, int fail_rank, std::uint64_t fail_at)
        : group_(group), fail_rank_(fail_rank), fail_at_(fail_at) {}
    int rank() const override { return group_.rank(); }
    int size() const override { return group_.size(); }

protected:
    void sum_in_place(std::span<std::int64_t> v) override {
        before();
        group_.sum(v);
    }
    void sum_in_place(std::span<double> v) override {
        before();
        group_.sum(v);
    }
    void max_in_place(std::span<std::int64_t> v) override {
        before();
        group_.max(v);
    }

private:
    void before() {
        if (group_.rank() == fail_rank_ && ++made_ == fail_at_)
            throw IoError("injected fault: rank " + std::to_string(fail_rank_) +
                          " gives up before collective call " + std::to_string(fail_at_));
    }
    dist::MpiGroup& group_;
    int fail_rank_;
    std::uint64_t fail_at_, made_ = 0;
};

// Token sequences of 6..20 ids from a fixed seed, as next-token examples.
train::Dataset generated(std::size_t count, std::uint64_t seed, Index vocab) {
    Rng rng(seed);
    train::Dataset data;
    for (std::size_t i = 0; i < count; ++i) {
        std::vector<std::int32_t> ids(6 + std::size_t(rng.below(15)));
        for (auto& id : ids) id = std::int32_t(3 + rng.below(std::uint64_t(vocab - 3)));
        data.add(train::causal_lm_example(std::move(ids)));
    }
    return data;
}

std::int64_t checksum(const std::vector<autograd::Param<float>*>& params) {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the parameters' bytes
    for (const auto* p : params) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(p->value().data());
        for (std::size_t i = 0; i < std::size_t(p->value().size()) * sizeof(float); ++i)
            h = (h ^ bytes[i]) * 1099511628211ull;
    }
    return std::int64_t(h >> 1);
}

}  // namespace

int main(int argc, char** argv) {
    dist::MpiSession mpi(argc, argv);
    dist::MpiGroup world;

    CLI::App app{"data-parallel prompt/prefix tuning under mpirun (a test driver)"};
    std::string model_path, method_name = "prompt", dir, out;
    std::int64_t steps = 20, save_every = 0;
    bool resume = false;
    int fail_rank = -1;
    std::uint64_t fail_at = 0;
    app.add_option("--model", model_path, "llama2.c checkpoint")->required();
    app.add_option("--method", method_name)->check(CLI::IsMember({"prompt", "prefix"}));
    app.add_option("--steps", steps)->check(CLI::PositiveNumber);
    app.add_option("--dir", dir, "where rank 0 keeps the training state")->required();
    app.add_option("--save-every", save_every)->check(CLI::NonNegativeNumber);
    app.add_flag("--resume", resume);
    app.add_option("--out", out, "final training state (rank 0)");
    app.add_option("--fail-rank", fail_rank);
    app.add_option("--fail-at-call", fail_at);
    CLI11_PARSE(app, argc, argv);

    FailingGroup failing(world, fail_rank, fail_at);
    train::Collective& group = fail_rank >= 0 ? static_cast<train::Collective&>(failing) : world;
    return dist::run_or_abort(world, [&] {
        const auto model = io::load_llama2c<float>(model_path);
        const nn::Config& c = model.config;
        const train::Dataset data = generated(40, 11, c.vocab_size);
        const train::Dataset eval = generated(12, 12, c.vocab_size);

        Rng rng(5);
        std::unique_ptr<peft::Method<float>> method;
        if (method_name == "prompt")
            method = std::make_unique<peft::PromptTuning<float>>(
                c, peft::init_normal<float>(4, c.dim, 0.5, rng));
        else
            method = std::make_unique<peft::PrefixTuning<float>>(
                c, peft::PrefixTuningOptions{.num_virtual_tokens = 4}, rng);
        optim::AdamW<float> optimizer(method->parameters(), {.lr = 0.01, .weight_decay = 0.01});
        train::TrainerOptions options;
        options.max_steps = steps;
        options.batch_size = 8;
        options.grad_accumulation = 2;
        options.data_parallel_shards = 4;
        options.max_grad_norm = 1.0;
        options.eval_every = 5;
        options.seed = 3;
        options.progress = train::ProgressMode::kSilent;
        train::Trainer<nn::Llama, float> trainer(model, *method, optimizer, options, group);

        if (world.rank() == 0) std::filesystem::create_directories(dir);
        const std::string state_path =
            (std::filesystem::path(dir) / train::kTrainingState).string();
        std::int64_t step = 0;
        if (resume) {
            trainer.load_state(train::load_training_state(state_path));
            step = trainer.state().step;
        }
        const std::int64_t chunk = save_every > 0 ? save_every : steps;
        std::uint64_t calls = 0, bytes = 0;
        while (step < steps) {
            calls = group.calls();
            bytes = group.payload_bytes();
            trainer.fit(data, &eval, std::min(steps, step + chunk));
            step = trainer.state().step;
            if (world.rank() == 0)
                train::save_training_state(state_path, trainer.state(), method_name);
        }
        std::vector<std::int64_t> sums = {checksum(method->parameters()),
                                          -checksum(method->parameters())};
        world.max(std::span<std::int64_t>(sums));
        if (sums[0] != -sums[1])
            throw NumericError("the ranks' parameters differ after " + std::to_string(step) +
                               " steps");
        if (world.rank() == 0 && !out.empty())
            train::save_training_state(out, trainer.state(), method_name);
        std::printf(
            "rank %d of %d: %lld steps, parameters agree; last chunk %llu collective calls, "
            "%llu payload bytes\n",
            world.rank(), world.size(), static_cast<long long>(step),
            static_cast<unsigned long long>(group.calls() - calls),
            static_cast<unsigned long long>(group.payload_bytes() - bytes));
    });
}
