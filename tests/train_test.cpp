// Training end to end: data sets and readers, the Trainer (determinism, stop-and-resume, early
// stopping, non-finite losses, metrics), every method learning a behaviour the frozen
// stories260K model does not have, and one-call tuning (tune::tune).

#include <gtest/gtest.h>
#include <unistd.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <softprompt/softprompt.hpp>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "golden_model.hpp"
#include "test_paths.hpp"

namespace {

using namespace softprompt;
using namespace softprompt::train;
using autograd::Param;
using softprompt::testing::Golden;
namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------------------
// Data

TEST(Dataset, ExamplesAlignTargetsWithIds) {
    const Example lm = causal_lm_example({5, 6, 7});
    EXPECT_EQ(lm.targets, (std::vector<std::int32_t>{6, 7, -100}));
    const Example it = input_target_example({1, 2, 3}, {8, 9});
    EXPECT_EQ(it.ids, (std::vector<std::int32_t>{1, 2, 3, 8}));
    EXPECT_EQ(it.targets, (std::vector<std::int32_t>{-100, -100, 8, 9}));
    EXPECT_THROW(causal_lm_example({1}), ConfigError);
    EXPECT_THROW(input_target_example({}, {1}), ConfigError);
}

TEST(Dataset, BatchesArePaddedAndShuffledDeterministically) {
    Dataset data;
    for (int i = 0; i < 10; ++i)
        data.add(causal_lm_example(std::vector<std::int32_t>(std::size_t(2 + i % 3), i)));
    const auto a = data.batches(4, 7, 0), b = data.batches(4, 7, 0), c = data.batches(4, 7, 1);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c) << "another epoch, another order";
    ASSERT_EQ(a.size(), 3u);
    EXPECT_EQ(a[2].size(), 2u);
    const nn::TokenBatch batch = data.batch(a[0], /*pad_id=*/-1 + 1);
    EXPECT_EQ(batch.batch, 4);
    for (Index r = 0; r < batch.batch; ++r) {
        const Example& e = data[a[0][std::size_t(r)]];
        EXPECT_EQ(batch.lengths[std::size_t(r)], std::int32_t(e.ids.size()));
        for (Index s = Index(e.ids.size()); s < batch.seq; ++s)
            EXPECT_EQ(batch.targets[std::size_t(r * batch.seq + s)], -100);
    }
    std::vector<std::size_t> seen;
    for (const auto& batch_ids : a) seen.insert(seen.end(), batch_ids.begin(), batch_ids.end());
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, data.order(0, 0, false)) << "an epoch visits every example once";
}

TEST(Dataset, JsonlAndTsvReaders) {
    const fs::path dir = fs::temp_directory_path() / "softprompt_train_test";
    fs::create_directories(dir);
    std::ofstream(dir / "a.jsonl")
        << "{\"text\": \"hello\", \"label\": 1}\n\n{\"text\": \"w\\u00f6rld\", \"label\": 0}\n";
    const auto jsonl = read_jsonl((dir / "a.jsonl").string());
    ASSERT_EQ(jsonl.size(), 2u);
    EXPECT_EQ(jsonl[1].at("text"), "w\xc3\xb6rld");
    EXPECT_EQ(jsonl[0].at("label"), "1");
    std::ofstream(dir / "bad.jsonl") << "{\"text\": 1}\n{oops\n";
    try {
        read_jsonl((dir / "bad.jsonl").string());
        FAIL();
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
    std::ofstream(dir / "a.tsv")
        << "label\tid\ttext\n1\tx\tline one\\nline two\n0\ty\ttab\\there\n";
    const auto tsv = read_tsv((dir / "a.tsv").string());
    ASSERT_EQ(tsv.size(), 2u);
    EXPECT_EQ(tsv[0].at("text"), "line one\nline two");
    EXPECT_EQ(tsv[1].at("text"), "tab\there");
    EXPECT_THROW(field(tsv[0], "body", 0), ConfigError);
    std::ofstream(dir / "bad.tsv") << "a\tb\n1\n";
    EXPECT_THROW(read_tsv((dir / "bad.tsv").string()), FormatError);
    EXPECT_THROW(read_tsv((dir / "missing.tsv").string()), IoError);
    fs::remove_all(dir);
}

// ------------------------------------------------------------------------------------------------
// Trainer mechanics on the golden tiny LLaMA model.

Dataset toy_data(std::uint64_t seed, int n, Index vocab) {
    Rng rng(seed);
    Dataset d;
    for (int i = 0; i < n; ++i) {
        std::vector<std::int32_t> input(std::size_t(2 + rng.below(4)));
        for (auto& id : input) id = std::int32_t(rng.below(std::uint64_t(vocab)));
        d.add(input_target_example(input, {7, 11}));  // always answer 7 11
    }
    return d;
}

TEST(Trainer, LearnsAndStopAndResumeIsBitExact) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    const Dataset train = toy_data(1, 24, g.config.vocab_size),
                  eval = toy_data(2, 8, g.config.vocab_size);
    const TrainerOptions options{.epochs = 6,
                                 .max_steps = 0,
                                 .batch_size = 4,
                                 .grad_accumulation = 2,
                                 .max_grad_norm = 1.0,
                                 .schedule = optim::LrSchedule::warmup_cosine(0.1, 2, 18),
                                 .eval_every = 3,
                                 .patience = 0,
                                 .keep_best = false,
                                 .seed = 11,
                                 .shuffle = true,
                                 .pad_id = 0,
                                 .metrics_csv = {},
                                 .progress = ProgressMode::kSilent};
    auto make_method = [&]() {
        Rng rng(3);
        return std::make_unique<peft::PrefixTuning<float>>(
            g.config,
            peft::PrefixTuningOptions{
                .num_virtual_tokens = 3, .projection = true, .encoder_hidden_size = 8},
            rng);
    };
    // Uninterrupted.
    auto m1 = make_method();
    optim::Adam<float> o1(m1->parameters(), {.lr = 0.1});
    Trainer<nn::Llama, float> t1(model, *m1, o1, options);
    EXPECT_EQ(t1.total_steps(train), 18);
    const EvalResult before = evaluate(model, m1.get(), eval);
    const TrainReport r1 = t1.fit(train, &eval);
    EXPECT_EQ(r1.steps, 18);
    EXPECT_LT(r1.final_eval->loss, 0.7 * before.loss) << "before " << before.loss;

    // Stopped after 4 steps, state copied into a fresh method/optimizer/trainer, resumed.
    auto m2 = make_method();
    optim::Adam<float> o2(m2->parameters(), {.lr = 0.1});
    Trainer<nn::Llama, float> t2(model, *m2, o2, options);
    t2.fit(train, &eval, /*stop_after=*/7);
    const TrainingState<float> saved = t2.state();
    EXPECT_EQ(saved.step, 7);
    auto m3 = make_method();
    optim::Adam<float> o3(m3->parameters(), {.lr = 0.1});
    Trainer<nn::Llama, float> t3(model, *m3, o3, options);
    t3.load_state(saved);
    const TrainReport r3 = t3.fit(train, &eval);
    EXPECT_EQ(r3.steps, 18);
    const auto p1 = m1->parameters(), p3 = m3->parameters();
    for (std::size_t i = 0; i < p1.size(); ++i) {
        const Mat<float>& a = p1[i]->value();
        const Mat<float>& b = p3[i]->value();
        ASSERT_EQ(a.size(), b.size());
        EXPECT_EQ(std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())), 0)
            << p1[i]->name();
    }
}

TEST(Trainer, EarlyStoppingBestParametersAndCsv) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    const Dataset train = toy_data(3, 16, g.config.vocab_size),
                  eval = toy_data(4, 6, g.config.vocab_size);
    const fs::path csv = fs::temp_directory_path() / "softprompt_train_metrics.csv";
    peft::PromptTuning<float> method(g.config, Mat<float>::Zero(2, g.config.dim));
    // A learning rate far too large: evaluation loss soon stops improving.
    optim::Sgd<float> sgd(method.parameters(), {.lr = 50.0});
    Trainer<nn::Gpt2, float> trainer(model, method, sgd,
                                     {.epochs = 0,
                                      .max_steps = 40,
                                      .batch_size = 4,
                                      .grad_accumulation = 1,
                                      .max_grad_norm = 0,
                                      .schedule = {},
                                      .eval_every = 1,
                                      .patience = 3,
                                      .keep_best = true,
                                      .seed = 0,
                                      .shuffle = true,
                                      .pad_id = 0,
                                      .metrics_csv = csv.string(),
                                      .progress = ProgressMode::kSilent});
    const TrainReport r = trainer.fit(train, &eval);
    EXPECT_TRUE(r.early_stopped);
    EXPECT_LT(r.steps, 40);
    ASSERT_TRUE(r.best_eval && r.final_eval);
    EXPECT_DOUBLE_EQ(r.final_eval->loss, r.best_eval->loss) << "the best parameters are restored";
    std::ifstream in(csv);
    std::string header, line;
    std::getline(in, header);
    EXPECT_EQ(header,
              "step,epoch,lr,loss,eval_loss,eval_perplexity,eval_token_accuracy,tokens_per_second");
    int rows = 0;
    while (std::getline(in, line)) ++rows;
    EXPECT_EQ(rows, r.steps);
    fs::remove(csv);
}

// An optimizer whose third update diverges (writes NaN), as a too-large learning rate would.
class DivergingSgd : public optim::Optimizer<float> {
public:
    explicit DivergingSgd(ParamList params)
        : optim::Optimizer<float>("diverging", std::move(params), 0.1) {}
    void step() override {
        ++updates_;
        for (auto* p : params()) p->value() -= (updates_ == 3 ? NAN : 0.1f) * p->grad();
    }
    std::vector<std::pair<std::string, double>> resume_options() const override { return {}; }

private:
    int updates_ = 0;
};

TEST(Trainer, NonFiniteLossStopsAndKeepsTheLastGoodParameters) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    const Dataset train = toy_data(5, 8, g.config.vocab_size);
    peft::PrefixTuning<float> method(
        g.config, Mat<float>::Constant(2, g.config.n_layers * 2 * g.config.kv_dim(), 0.1f));
    DivergingSgd sgd(method.parameters());
    Trainer<nn::Llama, float> trainer(model, method, sgd,
                                      {.epochs = 0,
                                       .max_steps = 5,
                                       .batch_size = 4,
                                       .grad_accumulation = 1,
                                       .max_grad_norm = 0,
                                       .schedule = {},
                                       .eval_every = 0,
                                       .patience = 0,
                                       .keep_best = false,
                                       .seed = 0,
                                       .shuffle = true,
                                       .pad_id = 0,
                                       .metrics_csv = {},
                                       .progress = ProgressMode::kSilent});
    // Two good steps, then the third update writes NaN and the fourth step's loss is NaN.
    trainer.fit(train, nullptr, /*stop_after=*/2);
    const Mat<float> last_good = method.direct().value();
    try {
        trainer.fit(train);
        FAIL() << "expected NumericError";
    } catch (const NumericError& e) {
        EXPECT_NE(std::string(e.what()).find("step 4"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(method.direct().value().allFinite());
    EXPECT_EQ(std::memcmp(method.direct().value().data(), last_good.data(),
                          sizeof(float) * std::size_t(last_good.size())),
              0);
}

TEST(Metrics, LabelAccuracyComparesTheCandidateLabelTokens) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    Dataset data;
    Rng rng(8);
    for (int i = 0; i < 10; ++i) {
        std::vector<std::int32_t> input(3);
        for (auto& id : input) id = std::int32_t(rng.below(32));
        data.add(input_target_example(input, {i % 2 == 0 ? 7 : 11, 3}));
    }
    // The reference: logits after each input's last token, label 7 against label 11.
    int right = 0;
    for (const Example& e : data.examples()) {
        autograd::Tape<float> t;
        nn::TokenBatch one{
            .batch = 1, .seq = Index(e.ids.size()), .ids = e.ids, .lengths = {}, .targets = {}};
        const Mat<float> logits =
            nn::forward(t, model, one, {}, nn::LogitsRequest::kRealPositions).logits.value();
        const Index last_input = 2;
        const std::int32_t predicted = logits(last_input, 7) > logits(last_input, 11) ? 7 : 11;
        right += predicted == e.targets[std::size_t(last_input)] ? 1 : 0;
    }
    EXPECT_DOUBLE_EQ((label_accuracy<nn::Gpt2, float>(model, nullptr, data, {7, 11}, 4)),
                     right / 10.0);
    EXPECT_DOUBLE_EQ((label_accuracy<nn::Gpt2, float>(model, nullptr, data, {7}, 4)), 0.5);
}

// ------------------------------------------------------------------------------------------------
// Every method on the real stories260K model: the frozen model names its characters Lily, Tom,
// Ben...; after training on a few sentences, the adapted model calls them "Zog".

struct StoryTask {
    tok::SpmTokenizer tokenizer;
    Dataset train, heldout;
    std::vector<std::int32_t> answer;  // " Zog."
};

StoryTask story_task() {
    const fs::path data = softprompt::testing::test_data_dir();
    StoryTask task{
        tok::SpmTokenizer::from_llama2c((data / "tokenizers" / "tok512.bin").string(), 512),
        {},
        {},
        {}};
    task.answer = task.tokenizer.encode(" Zog.", false, false);
    // encode() adds SentencePiece's dummy-prefix space to the text: drop it from the answer.
    const std::vector<std::int32_t> dummy = task.tokenizer.encode(".", false, false);
    task.answer = task.tokenizer.encode("Zog.", false, false);
    const char* who[] = {"little girl", "little boy", "big dog",    "small cat",
                         "happy bird",  "old man",    "kind lady",  "tiny bunny",
                         "brave boy",   "shy girl",   "funny frog", "big bear"};
    const char* where[] = {"in a small house", "near the park", "in the forest", "by the sea"};
    int n = 0;
    for (const char* w : who)
        for (const char* place : where) {
            const std::string input =
                std::string("Once upon a time, there was a ") + w + " " + place + ". Its name was";
            const Example e =
                input_target_example(task.tokenizer.encode(input, true, false), task.answer);
            (n++ % 4 == 3 ? task.heldout : task.train).add(e);
        }
    (void)dummy;
    return task;
}

template <class MakeMethod>
void expect_method_learns(const char* name, MakeMethod make_method, double lr) {
    const fs::path model_path = softprompt::testing::test_data_dir() / "models" / "stories260K.bin";
    SOFTPROMPT_REQUIRE_DATA(model_path);
    const auto model = io::load_llama2c<float>(model_path.string());
    const StoryTask task = story_task();
    auto method = make_method(model, task);
    const EvalResult base = evaluate<nn::Llama, float>(model, nullptr, task.heldout);
    optim::Adam<float> adam(method->parameters(), {.lr = lr});
    Trainer<nn::Llama, float> trainer(model, *method, adam,
                                      {.epochs = 0,
                                       .max_steps = 60,
                                       .batch_size = 8,
                                       .grad_accumulation = 1,
                                       .max_grad_norm = 1.0,
                                       .schedule = {},
                                       .eval_every = 0,
                                       .patience = 0,
                                       .keep_best = false,
                                       .seed = 1,
                                       .shuffle = true,
                                       .pad_id = 0,
                                       .metrics_csv = {},
                                       .progress = ProgressMode::kSilent});
    trainer.fit(task.train);
    const EvalResult after = evaluate(model, method.get(), task.heldout);
    EXPECT_LT(after.loss, 0.25 * base.loss)
        << name << ": held-out loss " << after.loss << " vs base " << base.loss;
    EXPECT_GE(exact_match(model, method.get(), task.heldout), 0.9) << name;
    EXPECT_EQ((exact_match<nn::Llama, float>(model, nullptr, task.heldout)), 0.0)
        << "the base model never says Zog";

    // The behaviour shows in generated text.
    auto served = serve(model, *method);
    nn::GenerationRequest<float> request;
    request.prompt = task.tokenizer.encode(
        "Once upon a time, there was a funny dog in a big garden. Its name was", true, false);
    request.adapter = served.cache.length() > 0 ? &served.cache : nullptr;
    request.max_new_tokens = int(task.answer.size());
    const auto generated = nn::generate(served.model, std::vector{request})[0].tokens;
    const std::string text = task.tokenizer.decode(generated);
    EXPECT_NE(text.find("Zog"), std::string::npos) << name << " generated: '" << text << "'";
}

TEST(Stories260K, PromptTuningLearnsTheName) {
    expect_method_learns(
        "prompt tuning",
        [](const auto& model, const StoryTask& task) {
            return std::make_unique<peft::PromptTuning<float>>(
                model.config,
                peft::init_from_text(model, task.tokenizer.encode("a story", false, false), 8));
        },
        0.05);
}

TEST(Stories260K, PrefixTuningDirectLearnsTheName) {
    expect_method_learns(
        "prefix tuning",
        [](const auto& model, const StoryTask& task) {
            return std::make_unique<peft::PrefixTuning<float>>(
                model.config, peft::init_prefix_from_text(
                                  model, task.tokenizer.encode("a story", false, false), 8));
        },
        0.05);
}

TEST(Stories260K, PrefixTuningReparameterisedLearnsTheName) {
    expect_method_learns(
        "prefix tuning (MLP)",
        [](const auto& model, const StoryTask&) {
            Rng rng(1);
            return std::make_unique<peft::PrefixTuning<float>>(
                model.config,
                peft::PrefixTuningOptions{
                    .num_virtual_tokens = 8, .projection = true, .encoder_hidden_size = 64},
                rng);
        },
        0.01);
}

TEST(Stories260K, PTuningLearnsTheName) {
    expect_method_learns(
        "p-tuning",
        [](const auto& model, const StoryTask&) {
            Rng rng(2);
            return std::make_unique<peft::PTuning<float>>(
                model.config,
                peft::PTuningOptions{.num_virtual_tokens = 8,
                                     .encoder = peft::PromptEncoderType::kMlp,
                                     .encoder_hidden_size = 64,
                                     .encoder_num_layers = 2},
                rng);
        },
        0.01);
}

TEST(Stories260K, LoraLearnsTheName) {
    expect_method_learns(
        "lora",
        [](const auto& model, const StoryTask&) {
            Rng rng(3);
            return std::make_unique<peft::Lora<nn::Llama, float>>(model.config,
                                                                  peft::LoraOptions{.rank = 4,
                                                                                    .alpha = 8,
                                                                                    .query = true,
                                                                                    .key = false,
                                                                                    .value = true,
                                                                                    .output = true},
                                                                  rng);
        },
        0.01);
}

// ------------------------------------------------------------------------------------------------
// Non-finite gradients under a finite loss: the trainer refuses the step, clipping or not.

// Prompt tuning through GELU: prompt = gelu(p). Where p is huge (1e20), GELU's forward is p itself,
// finite, but its derivative multiplies 1 − tanh² (0 there) by 1 + 3·0.044715·p², which overflows
// float: 0·inf is NaN. The loss stays finite; p's gradient does not.
class GeluPrompt : public peft::Method<float> {
public:
    explicit GeluPrompt(Mat<float> p) : p_("gelu_prompt", std::move(p)) {}
    peft::MethodKind kind() const override { return peft::MethodKind::kPromptTuning; }
    std::vector<Param<float>*> parameters() override { return {&p_}; }
    nn::AdapterInput<float> input(autograd::Tape<float>& tape) override {
        nn::AdapterInput<float> in;
        in.prompt = autograd::gelu(tape, tape.param(p_));
        return in;
    }
    Index num_virtual_tokens() const override { return p_.value().rows(); }
    Param<float>& p() { return p_; }

private:
    Param<float> p_;
};

// A factorised prompt a ⊙ (b ⊙ c). Where b is 0 and a, c are 1e30 the prompt is 0, but b's
// gradient is g·a·c = g·1e60: infinite in float for any non-zero g.
class ProductPrompt : public peft::Method<float> {
public:
    explicit ProductPrompt(const Mat<float>& init)
        : a_("prompt_a", Mat<float>::Ones(init.rows(), init.cols())),
          b_("prompt_b", init),
          c_("prompt_c", Mat<float>::Ones(init.rows(), init.cols())) {}
    peft::MethodKind kind() const override { return peft::MethodKind::kPromptTuning; }
    std::vector<Param<float>*> parameters() override { return {&a_, &b_, &c_}; }
    nn::AdapterInput<float> input(autograd::Tape<float>& tape) override {
        nn::AdapterInput<float> in;
        in.prompt = autograd::mul(tape, tape.param(a_),
                                  autograd::mul(tape, tape.param(b_), tape.param(c_)));
        return in;
    }
    Index num_virtual_tokens() const override { return b_.value().rows(); }
    Param<float>& a() { return a_; }
    Param<float>& b() { return b_; }
    Param<float>& c() { return c_; }

private:
    Param<float> a_, b_, c_;
};

bool same_bits(const Mat<float>& x, const Mat<float>& y) {
    return x.rows() == y.rows() && x.cols() == y.cols() &&
           std::memcmp(x.data(), y.data(), sizeof(float) * std::size_t(x.size())) == 0;
}

// Two good steps, then `make_extreme` sets parameter values whose loss is finite and whose
// gradient is not: the third step must throw NumericError naming `param`, before any update.
template <class M, class MakeExtreme>
void expect_bad_gradient_refused(M& method, double max_grad_norm, MakeExtreme make_extreme,
                                 const std::string& param) {
    SCOPED_TRACE("max_grad_norm " + std::to_string(max_grad_norm) + ", Param " + param);
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    const Dataset train = toy_data(6, 12, g.config.vocab_size);
    optim::Adam<float> adam(method.parameters(), {.lr = 0.01});
    Trainer<nn::Llama, float> trainer(model, method, adam,
                                      {.epochs = 0,
                                       .max_steps = 5,
                                       .batch_size = 4,
                                       .grad_accumulation = 2,
                                       .max_grad_norm = max_grad_norm,
                                       .schedule = {},
                                       .eval_every = 0,
                                       .patience = 0,
                                       .keep_best = false,
                                       .seed = 0,
                                       .shuffle = true,
                                       .pad_id = 0,
                                       .metrics_csv = {},
                                       .progress = ProgressMode::kSilent});
    trainer.fit(train, nullptr, /*stop_after=*/2);
    make_extreme();
    // The loss at the extreme values is finite: the failure below can only come from backward.
    const EvalResult at_extreme = evaluate(model, &method, train);
    ASSERT_TRUE(std::isfinite(at_extreme.loss)) << at_extreme.loss;

    const TrainingState<float> before = trainer.state();
    ASSERT_EQ(before.step, 2);
    try {
        trainer.fit(train);
        FAIL() << "expected NumericError";
    } catch (const NumericError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("step 3"), std::string::npos) << m;
        EXPECT_NE(m.find("'" + param + "'"), std::string::npos) << m;
        EXPECT_TRUE(m.find(" is nan at [") != std::string::npos ||
                    m.find(" is inf at [") != std::string::npos ||
                    m.find(" is -inf at [") != std::string::npos)
            << m;
        EXPECT_NE(m.find("the loss is finite"), std::string::npos) << m;
    }
    // Parameters, optimizer state and position in the data as the second step left them.
    const TrainingState<float> after = trainer.state();
    EXPECT_EQ(after.step, before.step);
    EXPECT_EQ(after.epoch, before.epoch);
    EXPECT_EQ(after.next_batch, before.next_batch);
    ASSERT_EQ(after.params.size(), before.params.size());
    for (std::size_t i = 0; i < before.params.size(); ++i)
        EXPECT_TRUE(same_bits(after.params[i].second, before.params[i].second))
            << before.params[i].first;
    EXPECT_EQ(after.optimizer.scalars, before.optimizer.scalars);
    ASSERT_EQ(after.optimizer.tensors.size(), before.optimizer.tensors.size());
    for (std::size_t i = 0; i < before.optimizer.tensors.size(); ++i)
        EXPECT_TRUE(
            same_bits(after.optimizer.tensors[i].second, before.optimizer.tensors[i].second))
            << before.optimizer.tensors[i].first;
    for (auto* p : method.parameters()) EXPECT_TRUE(p->grad().isZero()) << p->name();
}

TEST(Trainer, NanGradientUnderAFiniteLossStopsBeforeTheUpdate) {
    const Golden<float> g("golden_llama_gqa.json");
    for (const double max_grad_norm : {0.0, 1.0}) {
        Rng rng(21);
        GeluPrompt method(peft::init_normal<float>(3, g.config.dim, 0.5, rng));
        expect_bad_gradient_refused(
            method, max_grad_norm, [&] { method.p().value()(1, 2) = 1e20f; }, "gelu_prompt");
    }
}

TEST(Trainer, InfiniteGradientUnderAFiniteLossStopsBeforeTheUpdate) {
    const Golden<float> g("golden_llama_gqa.json");
    for (const double max_grad_norm : {0.0, 1.0}) {
        Rng rng(22);
        ProductPrompt method(peft::init_normal<float>(3, g.config.dim, 0.5, rng));
        expect_bad_gradient_refused(
            method, max_grad_norm,
            [&] {
                method.a().value()(0, 1) = 1e30f;
                method.b().value()(0, 1) = 0.0f;
                method.c().value()(0, 1) = 1e30f;
            },
            "prompt_b");
    }
}

// The loss itself non-finite (the third update diverges, the fourth step's loss is NaN), with
// clipping on: NumericError names the loss, and the parameters go back to the last ones whose loss
// was finite.
TEST(Trainer, NonFiniteLossWithClippingStops) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    const Dataset train = toy_data(7, 8, g.config.vocab_size);
    Rng rng(23);
    GeluPrompt method(peft::init_normal<float>(2, g.config.dim, 0.5, rng));
    DivergingSgd sgd(method.parameters());
    Trainer<nn::Llama, float> trainer(model, method, sgd,
                                      {.epochs = 0,
                                       .max_steps = 5,
                                       .batch_size = 4,
                                       .grad_accumulation = 1,
                                       .max_grad_norm = 1.0,
                                       .schedule = {},
                                       .eval_every = 0,
                                       .patience = 0,
                                       .keep_best = false,
                                       .seed = 0,
                                       .shuffle = true,
                                       .pad_id = 0,
                                       .metrics_csv = {},
                                       .progress = ProgressMode::kSilent});
    trainer.fit(train, nullptr, /*stop_after=*/2);
    const Mat<float> last_good = method.p().value();
    try {
        trainer.fit(train);
        FAIL() << "expected NumericError";
    } catch (const NumericError& e) {
        EXPECT_NE(std::string(e.what()).find("the loss is nan at step 4"), std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(same_bits(method.p().value(), last_good));
    EXPECT_TRUE(method.p().grad().isZero());
}

// ------------------------------------------------------------------------------------------------
// Data parallelism (train/collective.hpp) without MPI: the members of a group are threads.

// A group of threads in one process: each member posts its values, all wait, and each then
// combines every member's values in rank order.
class ThreadGroup {
public:
    explicit ThreadGroup(int size) : size_(size), barrier_(size), posted_(std::size_t(size)) {}

    class Member final : public Collective {
    public:
        Member(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
        int rank() const override { return rank_; }
        int size() const override { return group_.size_; }

    protected:
        void sum_in_place(std::span<std::int64_t> v) override {
            combine(v, [](std::int64_t a, std::int64_t b) { return a + b; });
        }
        void sum_in_place(std::span<double> v) override {
            combine(v, [](double a, double b) { return a + b; });
        }
        void max_in_place(std::span<std::int64_t> v) override {
            combine(v, [](std::int64_t a, std::int64_t b) { return std::max(a, b); });
        }

    private:
        template <class V, class Op>
        void combine(std::span<V> v, Op op) {
            auto& mine = group_.posted_[std::size_t(rank_)];
            mine.resize(v.size_bytes());
            std::memcpy(mine.data(), v.data(), v.size_bytes());
            group_.barrier_.arrive_and_wait();
            for (std::size_t i = 0; i < v.size(); ++i) {
                V total{};
                for (int r = 0; r < group_.size_; ++r) {
                    V x;
                    std::memcpy(&x, group_.posted_[std::size_t(r)].data() + i * sizeof(V),
                                sizeof(V));
                    total = r == 0 ? x : op(total, x);
                }
                v[i] = total;
            }
            group_.barrier_.arrive_and_wait();  // nobody posts again before everyone has read
        }
        ThreadGroup& group_;
        int rank_;
    };

private:
    int size_;
    std::barrier<> barrier_;
    std::vector<std::vector<unsigned char>> posted_;
};

// The prompt-tuning parameters after 12 data-parallel steps (batches of 8 cut into 4 shards, 2
// micro-batches a step, evaluations every 3 steps) on a group of `members` threads, one matrix per
// member; members = 0 trains one Trainer without a group (data_parallel_shards alone).
std::vector<Mat<float>> data_parallel_run(int members, std::int64_t shards, bool nan_prompt = false,
                                          std::vector<std::string>* errors = nullptr) {
    static const Golden<float> g("golden_llama_gqa.json");
    static const auto model = g.model<nn::Llama>();
    const Dataset train = toy_data(21, 40, g.config.vocab_size),
                  eval = toy_data(22, 12, g.config.vocab_size);
    TrainerOptions options{.epochs = 0,
                           .max_steps = 12,
                           .batch_size = 8,
                           .grad_accumulation = 2,
                           .max_grad_norm = 1.0,
                           .schedule = {},
                           .eval_every = 3,
                           .patience = 0,
                           .keep_best = true,
                           .seed = 5,
                           .shuffle = true,
                           .pad_id = 0,
                           .metrics_csv = {},
                           .progress = ProgressMode::kSilent};
    options.data_parallel_shards = shards;
    ThreadGroup group(std::max(members, 1));
    std::vector<Mat<float>> result(std::size_t(std::max(members, 1)));
    if (errors) errors->assign(result.size(), "");
    const auto member = [&](int rank) {
        Rng rng(3);
        peft::PromptTuning<float> method(g.config,
                                         peft::init_normal<float>(3, g.config.dim, 0.5, rng));
        if (nan_prompt)
            method.parameters()[0]->value()(1, 2) = std::numeric_limits<float>::quiet_NaN();
        optim::AdamW<float> adamw(method.parameters(), {.lr = 0.05, .weight_decay = 0.01});
        ThreadGroup::Member me(group, rank);
        try {
            if (members == 0) {
                Trainer<nn::Llama, float> trainer(model, method, adamw, options);
                trainer.fit(train, &eval);
            } else {
                Trainer<nn::Llama, float> trainer(model, method, adamw, options, me);
                trainer.fit(train, &eval);
            }
        } catch (const Error& e) {
            if (!errors) throw;
            (*errors)[std::size_t(rank)] = e.what();
        }
        result[std::size_t(rank)] = method.parameters()[0]->value();
    };
    std::vector<std::thread> threads;
    for (int r = 1; r < members; ++r) threads.emplace_back(member, r);
    member(0);
    for (auto& t : threads) t.join();
    return result;
}

TEST(DataParallel, OneTwoAndFourMembersReachTheSameBits) {
    const std::vector<Mat<float>> alone = data_parallel_run(0, 4);
    for (const int members : {1, 2, 4}) {
        const std::vector<Mat<float>> got = data_parallel_run(members, 4);
        for (int r = 0; r < members; ++r)
            EXPECT_TRUE(same_bits(got[std::size_t(r)], alone[0]))
                << members << " members, rank " << r;
    }
    // The shards' weighted sum is the whole batch's gradient: training with shards ends near
    // training without them (not at the same bits: the sums are grouped differently).
    const std::vector<Mat<float>> unsharded = data_parallel_run(0, 0);
    EXPECT_FALSE(same_bits(unsharded[0], alone[0]));
    EXPECT_LT((unsharded[0] - alone[0]).cwiseAbs().maxCoeff(), 1e-3);
}

TEST(DataParallel, ANonFiniteLossStopsEveryMember) {
    std::vector<std::string> errors;
    const std::vector<Mat<float>> got = data_parallel_run(2, 4, /*nan_prompt=*/true, &errors);
    for (std::size_t r = 0; r < errors.size(); ++r) {
        EXPECT_NE(errors[r].find("the loss is nan at step 1"), std::string::npos)
            << "rank " << r << ": " << errors[r];
        EXPECT_TRUE(std::isnan(got[r](1, 2))) << "rank " << r << ": parameters were updated";
    }
    Rng rng(3);
    EXPECT_THROW(([&] {
                     const Golden<float> g("golden_llama_gqa.json");
                     const auto model = g.model<nn::Llama>();
                     peft::PromptTuning<float> method(
                         g.config, peft::init_normal<float>(3, g.config.dim, 0.5, rng));
                     optim::AdamW<float> adamw(method.parameters(), {});
                     SingleProcess one;
                     Trainer<nn::Llama, float> t(model, method, adamw, TrainerOptions{}, one);
                 })(),
                 ConfigError)
        << "a group without data_parallel_shards";
}

TEST(DataParallel, FixedPointSumsAreExactInAnyGrouping) {
    Rng rng(17);
    std::vector<double> values(64);
    for (auto& v : values) v = rng.uniform(-1, 1) * std::pow(2.0, double(rng.below(40)) - 20);
    const std::int64_t e = max_exponent<double>(values);
    const FixedPointGrid grid = FixedPointGrid::for_exponent(e, FixedPointGrid::headroom_for(64));
    std::int64_t forward = 0, backward = 0, pairs = 0;
    for (double v : values) forward += grid.to_fixed(v);
    for (auto it = values.rbegin(); it != values.rend(); ++it) backward += grid.to_fixed(*it);
    for (std::size_t i = 0; i < values.size(); i += 2)
        pairs += grid.to_fixed(values[i]) + grid.to_fixed(values[i + 1]);
    EXPECT_EQ(forward, backward);
    EXPECT_EQ(forward, pairs);
    long double exact = 0;
    for (double v : values) exact += static_cast<long double>(v);
    EXPECT_LE(std::abs(static_cast<long double>(grid.value(forward)) - exact),
              64 * std::ldexp(1.0L, int(e) - 61 + FixedPointGrid::headroom_for(64)));
    const std::vector<double> with_nan = {1.0, std::nan("")};
    EXPECT_EQ(max_exponent<double>(with_nan), kNotFiniteExponent);
    EXPECT_EQ(max_exponent<double>(std::vector<double>{0.0, -0.0}), kAllZeroExponent);
    EXPECT_THROW(FixedPointGrid::for_exponent(kNotFiniteExponent, 3), NumericError);
}

// ------------------------------------------------------------------------------------------------
// One-call tuning (tune/tune.hpp)

struct TuneFiles {
    fs::path model = softprompt::testing::test_data_dir() / "models" / "tiny-llama";
    fs::path train = softprompt::testing::test_data_dir() / "spamassassin" / "sa_small_train.tsv";
    fs::path test = softprompt::testing::test_data_dir() / "spamassassin" / "sa_small_test.tsv";
    fs::path out = fs::temp_directory_path() / ("softprompt_tune_" + std::to_string(::getpid()));
    TuneFiles() { fs::remove_all(out); }
    ~TuneFiles() { fs::remove_all(out); }
};

tune::Options small_tune_options(const TuneFiles& f) {
    tune::Options o;
    o.virtual_tokens = 4;
    o.data = {.input_field = "text",
              .target_field = "label",
              .labels = {{"1", "spam"}, {"0", "ham"}},
              .max_tokens = 24};
    o.eval_data = f.test.string();
    o.steps = 6;
    o.batch_size = 4;
    o.progress = ProgressMode::kSilent;
    o.log = false;
    return o;
}

TEST(Tune, SavesTheAdapterItEvaluated) {
    const TuneFiles f;
    SOFTPROMPT_REQUIRE_DATA(f.model / "tokenizer.json");
    SOFTPROMPT_REQUIRE_DATA(f.train);
    for (const std::string method : {"prompt", "prefix", "lora"}) {
        SCOPED_TRACE(method);
        tune::Options o = small_tune_options(f);
        o.method = method;
        const tune::Result result =
            tune::tune(f.model.string(), f.train.string(), f.out.string(), o);
        EXPECT_EQ(result.report.steps, 6);
        ASSERT_TRUE(result.report.final_eval && result.base_eval);
        EXPECT_GT(result.parameters.trainable, 0);
        EXPECT_NE(result.report.final_eval->loss, result.base_eval->loss);

        // What a user does next: load the folder and evaluate it on the same data.
        const auto model = io::load_hf<nn::Llama, float>(f.model.string());
        const auto tokenizer =
            tok::AnyTokenizer::for_model(f.model.string(), model.config.vocab_size);
        const Dataset eval = tune::load_dataset(f.test.string(), o.data, tokenizer);
        const peft::Adapter adapter = peft::load_adapter(f.out.string(), model.config);
        std::unique_ptr<peft::Method<float>> loaded;
        if (method == "lora")
            loaded = peft::lora_method<nn::Llama>(adapter, model.config);
        else
            loaded = peft::prompt_method<nn::Llama>(adapter, model.config);
        const EvalResult again = evaluate(model, loaded.get(), eval, o.batch_size);
        EXPECT_NEAR(again.loss, result.report.final_eval->loss, 1e-6);
        EXPECT_EQ(again.tokens, result.report.final_eval->tokens);
        EXPECT_TRUE(fs::exists(f.out / kTrainingState));
        EXPECT_TRUE(fs::exists(f.out / "metrics.csv"));
        fs::remove_all(f.out);
    }
}

TEST(Tune, BadOptionsAreNamedAndWriteNothing) {
    const TuneFiles f;
    SOFTPROMPT_REQUIRE_DATA(f.model / "tokenizer.json");
    auto message_of = [&](tune::Options o, const fs::path& model) {
        try {
            tune::tune(model.string(), f.train.string(), f.out.string(), o);
        } catch (const Error& e) {
            EXPECT_FALSE(fs::exists(f.out)) << e.what();
            return std::string(e.what());
        }
        ADD_FAILURE() << "no error";
        return std::string();
    };
    tune::Options o = small_tune_options(f);
    o.method = "proompt";
    EXPECT_NE(message_of(o, f.model).find("method 'proompt' is not one of prompt, prefix"),
              std::string::npos);

    o = small_tune_options(f);
    o.data.text_field = "text";
    EXPECT_NE(message_of(o, f.model).find("either text_field, or both"), std::string::npos);

    o = small_tune_options(f);
    o.data.labels = {{"1", "spam"}};
    const std::string unlabelled = message_of(o, f.model);
    EXPECT_NE(unlabelled.find("sa_small_train.tsv: record"), std::string::npos) << unlabelled;
    EXPECT_NE(unlabelled.find("field 'label' is '0'"), std::string::npos) << unlabelled;

    o = small_tune_options(f);
    o.virtual_tokens = 63;  // the tiny model has 64 positions
    EXPECT_NE(message_of(o, f.model).find("63 virtual tokens leave 1 of the model's 64 positions"),
              std::string::npos);

    o = small_tune_options(f);
    const fs::path llama2c = softprompt::testing::test_data_dir() / "models" / "stories260K.bin";
    EXPECT_NE(message_of(o, llama2c).find("no vocabulary; give Options::tokenizer"),
              std::string::npos);
}

}  // namespace
