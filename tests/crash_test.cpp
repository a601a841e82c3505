// Saves killed at random instants. A child process saves an adapter and a training state over and
// over, each time with new values (version k), into the same folder; the parent kills it with
// SIGKILL after a random delay, then loads what is on disk. It must load, and be bit for bit a
// version the child was saving or had saved; temporary files of killed saves must not pile up, be
// read by a load, or make a later save fail.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <softprompt/softprompt.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "golden_model.hpp"

namespace {

using namespace softprompt;
using softprompt::testing::Golden;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kTrials = 200;
// Sizes: large enough that a save takes a while (kills land inside writes, not only between
// them), small enough for 200 trials under AddressSanitizer.
constexpr Index kVirtualTokens = 1024;  // adapter: [1024, d]
constexpr Index kStateRows = 1024;      // training state: four [1024, d] tensors

// Version k of a tensor: element i is k + a fraction in [0, 1) that depends on i and `tensor`, so
// floor(element 0) is k and a file holding parts of two versions cannot pass for either.
Mat<float> version_matrix(int k, int tensor, Index rows, Index cols) {
    // The fractions are computed once per shape (and inherited by the children), so that making a
    // version costs one addition per element and the child spends its time saving.
    static std::map<std::tuple<int, Index, Index>, Mat<float>> fractions;
    Mat<float>& f = fractions[{tensor, rows, cols}];
    if (f.size() == 0) {
        f.resize(rows, cols);
        for (Index i = 0; i < f.size(); ++i)
            f.data()[i] = float((i * 7 + tensor * 13) % 1024) / 1024.0f;
    }
    return (f.array() + float(k)).matrix();
}

int version_of(const Mat<float>& m) { return m.size() > 0 ? int(std::floor(m.data()[0])) : -1; }

bool same_bits(const Mat<float>& a, const Mat<float>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

// Version k of a training state: every field depends on k.
train::TrainingState<float> state_version(int k, Index dim) {
    train::TrainingState<float> s;
    s.step = k;
    s.epoch = k / 3;
    s.next_batch = k % 3;
    s.params = {{"prompt_embeddings", version_matrix(k, 1, kStateRows, dim)}};
    s.best_params = {{"prompt_embeddings", version_matrix(k, 2, kStateRows, dim)}};
    s.optimizer.kind = "adam";
    s.optimizer.tensors = {{"prompt_embeddings.exp_avg", version_matrix(k, 3, kStateRows, dim)},
                           {"prompt_embeddings.exp_avg_sq", version_matrix(k, 4, kStateRows, dim)}};
    s.optimizer.scalars = {
        {"step", double(k)}, {"lr", 0.1 / double(k + 1)}, {"prompt_embeddings.step", double(k)}};
    s.best_eval_loss = k == 0 ? std::numeric_limits<double>::infinity() : 1.0 / double(k + 1);
    s.evals_without_improvement = k % 5;
    return s;
}

// Every field of `got` equals version k's, tensors bit for bit.
::testing::AssertionResult is_state_version(const train::TrainingState<float>& got, int k,
                                            Index dim) {
    const train::TrainingState<float> want = state_version(k, dim);
    auto fail = [&](const std::string& what) {
        return ::testing::AssertionFailure() << "training state, version " << k << ": " << what;
    };
    if (got.step != want.step || got.epoch != want.epoch || got.next_batch != want.next_batch)
        return fail("step/epoch/next_batch " + std::to_string(got.step) + "/" +
                    std::to_string(got.epoch) + "/" + std::to_string(got.next_batch));
    if (got.evals_without_improvement != want.evals_without_improvement)
        return fail("evals_without_improvement");
    if (std::memcmp(&got.best_eval_loss, &want.best_eval_loss, sizeof(double)) != 0)
        return fail("best_eval_loss " + std::to_string(got.best_eval_loss));
    if (got.optimizer.kind != want.optimizer.kind) return fail("optimizer kind");
    if (got.optimizer.scalars != want.optimizer.scalars) return fail("optimizer scalars");
    auto same_list = [](const auto& a, const auto& b) {
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (a[i].first != b[i].first || !same_bits(a[i].second, b[i].second)) return false;
        return true;
    };
    if (!same_list(got.params, want.params)) return fail("params");
    if (!same_list(got.best_params, want.best_params)) return fail("best_params");
    if (!same_list(got.optimizer.tensors, want.optimizer.tensors)) return fail("optimizer tensors");
    return ::testing::AssertionSuccess();
}

// What the child reports to the parent through shared memory: the version of each file it has
// started and finished saving (before it starts, both are the version on disk). The parent reads
// it after the child is dead.
struct Progress {
    Progress(int adapter_on_disk, int state_on_disk)
        : adapter_started(adapter_on_disk),
          adapter_done(adapter_on_disk),
          state_started(state_on_disk),
          state_done(state_on_disk) {}
    std::atomic<int> alive{0};
    std::atomic<std::int64_t> first_cycle_us{0};  // from alive to the end of the first cycle
    std::atomic<std::int64_t> cycle_us{0};        // how long the last whole cycle took
    std::atomic<int> adapter_started, adapter_done;
    std::atomic<int> state_started, state_done;
};

// Temporary files (`<file>.tmp-XXXXXXXX`) in `dir`.
int count_temporaries(const fs::path& dir) {
    int n = 0;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().filename().string().find(".tmp-") != std::string::npos) ++n;
    return n;
}

// Where the trials save. A killed process, unlike a power cut, leaves every filesystem in the
// same state (renames are atomic in the kernel, whatever lies below), so the trials run in memory
// (/dev/shm) when it exists: fsync costs nothing there, which keeps 200 kills within seconds.
fs::path scratch_folder() {
    std::error_code ec;
    if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
    return fs::temp_directory_path();
}

// The child: save versions first, first + 1, ... until killed. Never returns into the test framework;
// leaves through _exit (so no atexit handler or buffered output of the parent runs twice).
[[noreturn]] void child_saves(Progress* progress, const fs::path& dir,
                              const nn::Model<nn::Llama, float>& model, int first) {
    try {
        const Index dim = model.config.dim;
        const std::string state_path = (dir / train::kTrainingState).string();
        peft::PromptTuning<float> method(model.config, version_matrix(0, 0, kVirtualTokens, dim));
        progress->alive.store(1);
        const auto alive = Clock::now();
        auto us_since = [](Clock::time_point t) {
            return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count();
        };
        for (int k = first;; ++k) {
            const auto start = Clock::now();
            method.embeddings().value() = version_matrix(k, 0, kVirtualTokens, dim);
            const train::TrainingState<float> state = state_version(k, dim);
            progress->adapter_started.store(k);
            peft::save_adapter(dir.string(), method, model, "crash-test");
            progress->adapter_done.store(k);
            progress->state_started.store(k);
            train::save_training_state(state_path, state, "prompt tuning");
            progress->state_done.store(k);
            if (k == first) progress->first_cycle_us.store(us_since(alive));
            progress->cycle_us.store(us_since(start));
        }
    } catch (const std::exception& e) {
        const std::string message = std::string("crash_test child: ") + e.what() + "\n";
        (void)!::write(STDERR_FILENO, message.data(), message.size());
    }
    ::_exit(3);
}

TEST(KillDuringSave, WhatIsLeftLoadsAsASavedVersion) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    const Index dim = g.config.dim;
    const fs::path dir = scratch_folder() / ("softprompt_crash_test_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    const std::string state_path = (dir / train::kTrainingState).string();

    // Version 0, saved by the parent: a previous version always exists.
    peft::PromptTuning<float> method(g.config, version_matrix(0, 0, kVirtualTokens, dim));
    peft::save_adapter(dir.string(), method, model, "crash-test");
    train::save_training_state(state_path, state_version(0, dim), "prompt tuning");
    const nlohmann::ordered_json config0 = peft::load_adapter(dir.string(), g.config).config;

    auto* progress = static_cast<Progress*>(::mmap(
        nullptr, sizeof(Progress), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(progress, MAP_FAILED) << std::strerror(errno);

    // Trial -1 measures how long a child takes for its first cycle (adapter and state saves, the
    // slowest: a fresh process faults its pages in) and for a later one: it is killed after two.
    // The other trials kill after a random delay from 0 to the first cycle and 1.5 more from the
    // child's start: before and inside its first save and inside and between later ones.
    std::mt19937_64 rng(20240611);
    double first_cycle_us = 0, cycle_us = 0;
    int during_first = 0, during_adapter = 0, during_state = 0, left_temporary = 0;
    int max_temporaries = 0, adapter_on_disk = 0, state_on_disk = 0;
    const auto test_start = Clock::now();
    for (int trial = -1; trial < kTrials; ++trial) {
        SCOPED_TRACE("trial " + std::to_string(trial));
        // Every version number is used once in the whole test: what is on disk tells which save
        // wrote it.
        new (progress) Progress(adapter_on_disk, state_on_disk);
        std::cout.flush();
        std::cerr.flush();
        std::fflush(nullptr);  // nothing buffered is inherited, so nothing is written twice
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0) << std::strerror(errno);
        if (pid == 0) child_saves(progress, dir, model, adapter_on_disk + 1);

        // Wait for the child to start saving (or to die trying), then let it run.
        const auto start = Clock::now();
        int status = 0;
        bool exited = false;
        while (progress->alive.load() == 0 && !exited) {
            exited = ::waitpid(pid, &status, WNOHANG) == pid;
            if (Clock::now() - start > std::chrono::seconds(20)) break;
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        if (!exited && trial < 0) {
            while (progress->state_done.load() < adapter_on_disk + 2 && !exited) {
                exited = ::waitpid(pid, &status, WNOHANG) == pid;
                if (Clock::now() - start > std::chrono::seconds(20)) break;
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
            first_cycle_us = double(progress->first_cycle_us.load());
            cycle_us = double(progress->cycle_us.load());
        } else if (!exited) {
            std::uniform_real_distribution<double> delay_us(0.0, first_cycle_us + 1.5 * cycle_us);
            std::this_thread::sleep_for(std::chrono::microseconds(std::int64_t(delay_us(rng))));
        }
        if (!exited) {
            ::kill(pid, SIGKILL);
            ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        }
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            << "the child did not die by SIGKILL: a save failed (status " << status << ")";

        // Machine load changes the pace: follow it with each child that finished a first cycle.
        if (const std::int64_t first_us = progress->first_cycle_us.load();
            trial >= 0 && first_us > 0)
            first_cycle_us = 0.8 * first_cycle_us + 0.2 * double(first_us);
        const int a_done = progress->adapter_done.load(),
                  a_started = progress->adapter_started.load();
        const int s_done = progress->state_done.load(), s_started = progress->state_started.load();
        const int first = adapter_on_disk + 1;  // the child's first version
        const bool counted = trial >= 0;
        during_first += counted && ((a_started == first && a_done < first) ||
                                    (s_started == first && s_done < first))
                            ? 1
                            : 0;
        during_adapter += counted && a_started > a_done ? 1 : 0;
        during_state += counted && s_started > s_done ? 1 : 0;
        const int temporaries = count_temporaries(dir);
        left_temporary += counted && temporaries > 0 ? 1 : 0;
        max_temporaries = std::max(max_temporaries, temporaries);
        // At most one per file the child writes (weights, config, state): each save removes the
        // leftovers of earlier killed saves of its file.
        EXPECT_LE(temporaries, 3);

        // The adapter: loads, and is the last version saved or the one being saved.
        peft::LoadedAdapter adapter;
        ASSERT_NO_THROW(adapter = peft::load_adapter(dir.string(), g.config));
        const int ka = version_of(adapter.prompt_embeddings);
        EXPECT_TRUE(ka == a_done || ka == a_started)
            << "adapter version " << ka << ", saved " << a_done << ", saving " << a_started;
        EXPECT_TRUE(
            same_bits(adapter.prompt_embeddings, version_matrix(ka, 0, kVirtualTokens, dim)))
            << "adapter version " << ka << " is not bit-identical to what was saved";
        EXPECT_EQ(adapter.config, config0);

        // The training state likewise.
        train::TrainingState<float> state;
        ASSERT_NO_THROW(state = train::load_training_state(state_path));
        const int ks = int(state.step);
        EXPECT_TRUE(ks == s_done || ks == s_started)
            << "state version " << ks << ", saved " << s_done << ", saving " << s_started;
        EXPECT_TRUE(is_state_version(state, ks, dim));
        // Saved in order, adapter first: the state is never the newer of the two.
        EXPECT_LE(ks, ka);
        adapter_on_disk = ka;
        state_on_disk = ks;
        if (trial < 0) {
            ASSERT_GT(cycle_us, 0) << "the first child did not finish two cycles";
        }
        if (::testing::Test::HasFailure()) break;  // one trial's report is enough
    }
    ::munmap(progress, sizeof(Progress));
    std::printf(
        "[ crash    ] %d kills in %.1f s, a child's cycles %.1f ms (first), %.1f ms; kills "
        "during the first "
        "save %d, during an adapter save %d, during a state save %d; temporary files "
        "left %d times (at most %d at once); %d versions saved\n",
        kTrials, std::chrono::duration<double>(Clock::now() - test_start).count(),
        first_cycle_us / 1000, cycle_us / 1000, during_first, during_adapter, during_state,
        left_temporary, max_temporaries, adapter_on_disk);
    // The delays did spread over the phases (otherwise the trials above proved little).
    EXPECT_GT(during_first, 0);
    EXPECT_GT(during_adapter, 0);
    EXPECT_GT(during_state, 0);
    EXPECT_GT(left_temporary, 0);
    EXPECT_GT(adapter_on_disk, kTrials / 4);

    // A save after all those kills succeeds and cleans up every leftover of its files.
    const int last = adapter_on_disk + 1;
    method.embeddings().value() = version_matrix(last, 0, kVirtualTokens, dim);
    peft::save_adapter(dir.string(), method, model, "crash-test");
    train::save_training_state(state_path, state_version(last, dim), "prompt tuning");
    EXPECT_EQ(count_temporaries(dir), 0);
    EXPECT_TRUE(same_bits(peft::load_adapter(dir.string(), g.config).prompt_embeddings,
                          version_matrix(last, 0, kVirtualTokens, dim)));
    EXPECT_TRUE(is_state_version(train::load_training_state(state_path), last, dim));
    fs::remove_all(dir);
}

// The cleanup that keeps leftovers bounded removes only what a killed save left: temporary files
// of the same destination that no live save holds locked.
TEST(KillDuringSave, OnlyTemporaryFilesOfDeadSavesAreRemoved) {
    const fs::path dir =
        fs::temp_directory_path() / ("softprompt_crash_test_stale_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path dest = dir / "x.safetensors";
    auto touch = [](const fs::path& p) { std::ofstream(p) << "partial"; };
    const fs::path stale = dir / "x.safetensors.tmp-0badf00d";  // its writer is gone
    const fs::path live = dir / "x.safetensors.tmp-1234abcd";   // its writer is us, below
    const fs::path unlike = dir / "x.safetensors.tmp-notours";  // not a name saves make
    const fs::path other = dir / "y.safetensors.tmp-0badf00d";  // another destination's
    for (const auto& p : {stale, live, unlike, other}) touch(p);
    // A save in progress holds an exclusive lock on its temporary file, as AtomicFile does.
    const int fd = ::open(live.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX), 0);

    const Mat<float> m = version_matrix(1, 0, 2, 3);
    io::write_safetensors(dest.string(), {{"m", io::TensorSource(m)}});
    EXPECT_FALSE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(live));
    EXPECT_TRUE(fs::exists(unlike));
    EXPECT_TRUE(fs::exists(other));
    EXPECT_TRUE(same_bits(io::SafetensorsFile(dest.string()).matrix<float>("m"), m));

    // Its writer gone (the lock with it), the next save removes it too.
    ::close(fd);
    io::write_safetensors(dest.string(), {{"m", io::TensorSource(m)}});
    EXPECT_FALSE(fs::exists(live));
    EXPECT_TRUE(fs::exists(unlike));
    EXPECT_TRUE(fs::exists(other));
    fs::remove_all(dir);
}

}  // namespace
