// The thread-safety contract, checked (see the top of nn/model.hpp): one loaded model, its
// tokenizer, adapters' prompt caches and LoRA weights, and a training set are shared read-only by
// several threads, each with its own sequence state, sampler, tape, method and optimizer, and
// every thread gets exactly, bit for bit, what the same work gives when run alone on one thread.
//
// Built for ThreadSanitizer by the `tsan` preset (no OpenMP there: libgomp is not instrumented)
// and run in the ordinary OpenMP builds too, where each user thread starts its own OpenMP teams.
// The model is stories260K (llama2.c format, vendored in tests/data/models): small enough that
// 8 threads x 3 rounds take about 20 s under TSan, real enough that its output is text, not noise.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <latch>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/io/llama2c.hpp"
#include "softprompt/nn/generate.hpp"
#include "softprompt/nn/kv_cache.hpp"
#include "softprompt/optim/adam.hpp"
#include "softprompt/peft/lora.hpp"
#include "softprompt/peft/p_tuning.hpp"
#include "softprompt/peft/prefix_tuning.hpp"
#include "softprompt/peft/prompt_tuning.hpp"
#include "softprompt/tok/spm.hpp"
#include "softprompt/train/dataset.hpp"
#include "softprompt/train/trainer.hpp"
#include "test_paths.hpp"

namespace {

namespace fs = std::filesystem;
using namespace softprompt;
using softprompt::testing::test_data_dir;
using Model = nn::Model<nn::Llama, float>;

constexpr int kThreads = 8;

// One job's prompt is long: with OpenMP, 260 ids after 6 virtual tokens are enough for
// attention_cached to split its heads across an OpenMP team, so user threads each start parallel
// regions. Without OpenMP (the TSan build) that path does not exist, and a short prompt saves time.
#if defined(_OPENMP)
constexpr std::size_t kLongPrompt = 260;
#else
constexpr std::size_t kLongPrompt = 64;
#endif

fs::path model_path() { return test_data_dir() / "models" / "stories260K.bin"; }
fs::path tokenizer_path() { return test_data_dir() / "tokenizers" / "tok512.bin"; }

// Which adapter a request uses.
enum class Use { kNone, kPrompt, kPrefix, kPTuning, kLora };

// Everything the threads share, read-only: the model, the tokenizer, and each adapter both as its
// source tensor (so a thread can rebuild the cache) and as the cache built once on this thread.
struct Shared {
    Model model;
    tok::SpmTokenizer tokenizer;
    Mat<float> prompt_embeddings;   // prompt tuning: [P, d]
    Mat<float> ptuning_embeddings;  // P-tuning: the prompt encoder's output [P, d]
    Mat<float> prefix;              // prefix tuning: [P, L*2*Dkv], folded from its MLP
    nn::PromptCache<float> prompt_cache, ptuning_cache, prefix_cache;
    nn::LoraWeights<float> lora;  // LoRA on q and v, applied per row beside the shared weights

    const nn::PromptCache<float>* cache(Use use) const {
        switch (use) {
            case Use::kPrompt:
                return &prompt_cache;
            case Use::kPTuning:
                return &ptuning_cache;
            case Use::kPrefix:
                return &prefix_cache;
            case Use::kNone:
            case Use::kLora:
                break;
        }
        return nullptr;
    }

    // The cache of `use` computed again, on the calling thread.
    nn::PromptCache<float> rebuild(Use use) const {
        switch (use) {
            case Use::kPrompt:
                return nn::cache_prompt(model, prompt_embeddings);
            case Use::kPTuning:
                return nn::cache_prompt(model, ptuning_embeddings);
            case Use::kPrefix:
                return nn::cache_prefix(model.config, prefix);
            case Use::kNone:
            case Use::kLora:
                break;
        }
        return {};
    }
};

// The model and tokenizer are vendored in the repository: a missing file is a failure, not a skip.
std::unique_ptr<Shared> load_shared() {
    for (const fs::path& p : {model_path(), tokenizer_path()})
        if (!fs::exists(p)) {
            ADD_FAILURE() << "test data not found: " << p
                          << " (stories260K and its tokenizer are vendored in tests/data)";
            return nullptr;
        }
    Model model = io::load_llama2c<float>(model_path().string());
    tok::SpmTokenizer tokenizer = tok::SpmTokenizer::from_llama2c(
        tokenizer_path().string(), std::int32_t(model.config.vocab_size));
    auto s = std::make_unique<Shared>(
        Shared{std::move(model), std::move(tokenizer), {}, {}, {}, {}, {}, {}, {}});
    const nn::Config& c = s->model.config;
    // Random adapters with fixed seeds: what matters is that each changes the model's output.
    Rng rng(20240601);
    s->prompt_embeddings = peft::init_from_vocab(s->model, 8, rng);
    peft::PTuning<float> ptuning(c,
                                 {.num_virtual_tokens = 5,
                                  .encoder = peft::PromptEncoderType::kMlp,
                                  .encoder_hidden_size = 32,
                                  .encoder_num_layers = 2},
                                 rng);
    s->ptuning_embeddings = ptuning.virtual_tokens();
    peft::PrefixTuning<float> prefix(
        c, {.num_virtual_tokens = 6, .projection = true, .encoder_hidden_size = 32}, rng);
    s->prefix = prefix.fold();
    s->prompt_cache = nn::cache_prompt(s->model, s->prompt_embeddings);
    s->ptuning_cache = nn::cache_prompt(s->model, s->ptuning_embeddings);
    s->prefix_cache = nn::cache_prefix(c, s->prefix);
    peft::Lora<nn::Llama, float> lora(c, {.rank = 4, .alpha = 8}, rng);
    for (auto& u : lora.updates())
        u.b->value() = peft::init_normal<float>(u.b->value().rows(), u.b->value().cols(), 0.5, rng);
    s->lora = lora.weights();
    return s;
}

// One request of a job: a text (BOS first), optionally its ids cycled up to `length` ids (a long
// prefill), the adapter it uses and how it samples.
struct Row {
    std::string text;
    std::size_t length = 0;  // 0: the text's own ids
    Use use = Use::kNone;
    nn::SamplingOptions sampling;
    int new_tokens = 40;
};

// What a thread does: one call to generate() with one or more requests (several: a mixed batch).
struct Job {
    std::vector<Row> rows;
};

std::vector<Job> make_jobs() {
    const nn::SamplingOptions greedy{};
    auto sampled = [](double temperature, std::uint64_t seed, int top_k = 0, double top_p = 1.0) {
        return nn::SamplingOptions{
            .temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = seed};
    };
    return {
        {{{"Once upon a time", 0, Use::kNone, greedy, 32}}},
        {{{"Once upon a time", 0, Use::kPrompt, greedy, 32}}},
        {{{"Once upon a time", 0, Use::kPrefix, greedy, 32}}},
        {{{"The little dog", 0, Use::kPTuning, sampled(0.8, 11, 40), 32}}},
        {{{"Lily went to the park", 0, Use::kNone, sampled(1.0, 12, 0, 0.9), 32}}},
        {{{"Tom had a red ball", 0, Use::kLora, sampled(0.9, 13), 32}}},
        {{{"One day, a girl named Sue saw a big tree in the garden.", kLongPrompt, Use::kPrefix,
           sampled(1.1, 14, 20), 32}}},
        {{{"The sun was hot", 0, Use::kPTuning, greedy, 32},
          {"A cat sat on the mat", 0, Use::kNone, sampled(0.7, 15), 32},
          {"Once upon a time", 0, Use::kLora, greedy, 32}}},
    };
}

struct Outcome {
    std::vector<std::vector<std::int32_t>> prompts;  // per row: the encoded prompt
    std::vector<std::vector<std::int32_t>> tokens;   // per row: generate()'s tokens
    std::vector<Mat<float>> logits;                  // per row: the last token's logits [1, V]
    std::vector<nn::PromptCache<float>> rebuilt;     // per row: its adapter's cache, rebuilt here
};

std::vector<std::int32_t> encode(const Shared& s, const Row& row) {
    std::vector<std::int32_t> ids = s.tokenizer.encode(row.text, /*add_bos=*/true, false);
    const std::size_t text = ids.size();
    for (std::size_t i = 1; ids.size() < row.length; ++i)
        ids.push_back(ids[1 + (i - 1) % (text - 1)]);
    return ids;
}

// Run one job on the calling thread. Every piece of state it writes is its own.
Outcome run_job(const Shared& s, const Job& job) {
    Outcome out;
    std::vector<nn::GenerationRequest<float>> requests;
    for (const Row& row : job.rows) {
        out.prompts.push_back(encode(s, row));
        nn::GenerationRequest<float> r;
        r.prompt = out.prompts.back();
        r.adapter = s.cache(row.use);
        r.lora = row.use == Use::kLora ? &s.lora : nullptr;
        r.sampling = row.sampling;
        r.max_new_tokens = row.new_tokens;
        requests.push_back(std::move(r));
    }
    for (const nn::GenerationResult& r : nn::generate(s.model, requests))
        out.tokens.push_back(r.tokens);
    // Each request's prompt and generated tokens but the last again, as one prefill on a fresh
    // sequence: the logits the last token was drawn from, recomputed.
    for (std::size_t r = 0; r < requests.size(); ++r) {
        nn::Sequence<float> seq;
        seq.prompt = requests[r].adapter;
        seq.lora = requests[r].lora;
        nn::Sequence<float>* const one[] = {&seq};
        std::vector<std::int32_t> feed = requests[r].prompt;
        feed.insert(feed.end(), out.tokens[r].begin(), out.tokens[r].end() - 1);
        out.logits.push_back(
            nn::advance(s.model, std::span<nn::Sequence<float>* const>(one), {feed}));
    }
    for (const Row& row : job.rows) out.rebuilt.push_back(s.rebuild(row.use));
    return out;
}

bool same_bits(const Mat<float>& a, const Mat<float>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

bool same_cache(const nn::PromptCache<float>& a, const nn::PromptCache<float>& b) {
    if (a.keys.size() != b.keys.size() || a.values.size() != b.values.size()) return false;
    for (std::size_t l = 0; l < a.keys.size(); ++l)
        if (!same_bits(a.keys[l], b.keys[l]) || !same_bits(a.values[l], b.values[l])) return false;
    return true;
}

void expect_same(const Outcome& want, const Outcome& got, const std::string& where) {
    ASSERT_EQ(got.tokens.size(), want.tokens.size()) << where;
    for (std::size_t r = 0; r < want.tokens.size(); ++r) {
        EXPECT_EQ(got.prompts[r], want.prompts[r]) << where << ", row " << r << ": prompt ids";
        EXPECT_EQ(got.tokens[r], want.tokens[r]) << where << ", row " << r << ": generated ids";
        EXPECT_TRUE(same_bits(got.logits[r], want.logits[r]))
            << where << ", row " << r << ": the last token's logits differ";
        EXPECT_TRUE(same_cache(got.rebuilt[r], want.rebuilt[r]))
            << where << ", row " << r << ": the rebuilt prompt cache differs";
    }
}

double seconds_since(std::chrono::steady_clock::time_point begin) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
}

// Run `work(job)` for jobs 0..kThreads-1 on kThreads threads released together, round after round
// (thread t takes job (t + round) % kThreads, so each job moves between threads), and hand each
// round's results to `check`. An exception in a thread is reported as a failure of its job.
template <class Result, class Work, class Check>
void run_rounds(int rounds, Work work, Check check) {
    const auto begin = std::chrono::steady_clock::now();
    for (int round = 0; round < rounds; ++round) {
        std::vector<std::optional<Result>> got(kThreads);
        std::vector<std::string> errors(kThreads);
        std::latch start(kThreads);
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t)
            threads.emplace_back([&, t] {
                const std::size_t j = std::size_t((t + round) % kThreads);
                start.arrive_and_wait();  // every thread is running before any starts work
                try {
                    got[j].emplace(work(j));
                } catch (const std::exception& e) {
                    errors[j] = e.what();
                }
            });
        for (std::thread& t : threads) t.join();
        for (std::size_t j = 0; j < std::size_t(kThreads); ++j) {
            const std::string where =
                "round " + std::to_string(round) + ", job " + std::to_string(j);
            ASSERT_TRUE(errors[j].empty()) << where << " threw: " << errors[j];
            ASSERT_TRUE(got[j].has_value()) << where;
            check(j, *got[j], where);
        }
    }
    std::cout << "[ concurrency ] " << rounds << " rounds of " << kThreads
              << " threads: " << seconds_since(begin) << " s\n";
}

TEST(Concurrency, SharedModelGeneratesAsSerial) {
    const std::unique_ptr<Shared> shared = load_shared();
    ASSERT_NE(shared, nullptr);
    const std::vector<Job> jobs = make_jobs();
    ASSERT_EQ(jobs.size(), std::size_t(kThreads));

    // The reference: every job alone, one after another, on this thread.
    const auto begin = std::chrono::steady_clock::now();
    std::vector<Outcome> want;
    for (const Job& job : jobs) want.push_back(run_job(*shared, job));
    std::cout << "[ concurrency ] the " << jobs.size()
              << " jobs one after another: " << seconds_since(begin) << " s\n";

    // Sharing an adapter proves something only if the adapter matters: jobs 0-2 continue the same
    // prompt greedily with no adapter, a soft prompt and a prefix.
    ASSERT_EQ(want[0].prompts[0], want[1].prompts[0]);
    ASSERT_EQ(want[0].prompts[0], want[2].prompts[0]);
    EXPECT_NE(want[0].tokens[0], want[1].tokens[0]) << "the soft prompt changes nothing";
    EXPECT_NE(want[0].tokens[0], want[2].tokens[0]) << "the prefix changes nothing";
    EXPECT_NE(want[1].tokens[0], want[2].tokens[0]);
    ASSERT_EQ(want[7].prompts[2], want[0].prompts[0]);
    EXPECT_NE(want[7].tokens[2], want[0].tokens[0]) << "the LoRA row changes nothing";
    for (const Job& job : jobs)
        for (const Row& row : job.rows) {
            ASSERT_GT(row.new_tokens, 0);
        }
    for (std::size_t j = 0; j < want.size(); ++j)
        for (std::size_t r = 0; r < want[j].tokens.size(); ++r) {
            EXPECT_EQ(want[j].tokens[r].size(), std::size_t(jobs[j].rows[r].new_tokens));
            // The cache rebuilt by the job is the one built at load.
            const nn::PromptCache<float>* built = shared->cache(jobs[j].rows[r].use);
            if (built != nullptr) {
                EXPECT_TRUE(same_cache(want[j].rebuilt[r], *built)) << "job " << j;
            }
        }
    EXPECT_EQ(want[6].prompts[0].size(), kLongPrompt);

    run_rounds<Outcome>(
        3, [&](std::size_t j) { return run_job(*shared, jobs[j]); },
        [&](std::size_t j, const Outcome& got, const std::string& where) {
            expect_same(want[j], got, where);
        });
}

// Training shares the frozen model the same way: each thread trains its own method with its own
// optimizer and Trainer over one shared, read-only data set.
using Trained = std::vector<Mat<float>>;  // the method's parameter values after training

Trained train_one(const Model& model, const train::Dataset& data, std::size_t which) {
    const nn::Config& c = model.config;
    Rng rng(1000 + which);
    std::unique_ptr<peft::Method<float>> method;
    switch (which % 4) {
        case 0:
            method = std::make_unique<peft::PromptTuning<float>>(
                c, peft::init_from_vocab(model, 4, rng));
            break;
        case 1:
            method = std::make_unique<peft::PrefixTuning<float>>(
                c,
                peft::PrefixTuningOptions{
                    .num_virtual_tokens = 3, .projection = which >= 4, .encoder_hidden_size = 16},
                rng);
            break;
        case 2:
            method = std::make_unique<peft::PTuning<float>>(
                c,
                peft::PTuningOptions{.num_virtual_tokens = 3,
                                     .encoder = which >= 4 ? peft::PromptEncoderType::kLstm
                                                           : peft::PromptEncoderType::kMlp,
                                     .encoder_hidden_size = 16,
                                     .encoder_num_layers = 1},
                rng);
            break;
        default:
            method = std::make_unique<peft::Lora<nn::Llama, float>>(
                c, peft::LoraOptions{.rank = 2, .alpha = 4}, rng);
            break;
    }
    optim::Adam<float> adam(method->parameters(), {.lr = 2e-2});
    train::TrainerOptions options;
    options.max_steps = 2;
    options.batch_size = 2;
    options.seed = 7 + which;
    options.progress = train::ProgressMode::kSilent;
    train::Trainer<nn::Llama, float> trainer(model, *method, adam, options);
    trainer.fit(data);
    Trained out;
    for (const autograd::Param<float>* p : method->parameters()) out.push_back(p->value());
    return out;
}

TEST(Concurrency, SharedModelTrainsAsSerial) {
    const std::unique_ptr<Shared> shared = load_shared();
    ASSERT_NE(shared, nullptr);
    std::vector<train::Example> examples;
    for (const char* text :
         {"Once upon a time there was a little girl.", "The dog ran to the park.",
          "Tom and Lily played with a ball.", "The sun was hot and bright."}) {
        train::Example e;
        e.ids = shared->tokenizer.encode(text, true, false);
        e.targets.assign(e.ids.begin() + 1, e.ids.end());
        e.targets.push_back(tok::SpmTokenizer::kEos);
        examples.push_back(std::move(e));
    }
    const train::Dataset data(std::move(examples));

    std::vector<Trained> want;
    for (std::size_t j = 0; j < std::size_t(kThreads); ++j)
        want.push_back(train_one(shared->model, data, j));
    // The same method and seed gives the same start, so differing results mean training happened.
    Rng rng(1000);
    EXPECT_FALSE(same_bits(want[0].front(), peft::init_from_vocab(shared->model, 4, rng)))
        << "prompt tuning did not move its embeddings";

    run_rounds<Trained>(
        2, [&](std::size_t j) { return train_one(shared->model, data, j); },
        [&](std::size_t j, const Trained& got, const std::string& where) {
            ASSERT_EQ(got.size(), want[j].size()) << where;
            for (std::size_t p = 0; p < got.size(); ++p)
                EXPECT_TRUE(same_bits(got[p], want[j][p])) << where << ", parameter " << p;
        });
}

}  // namespace
