// Models: GPT-2 and LLaMA families against PyTorch golden files (logits, loss, prompt and prefix
// gradients), the real stories260K model against llama2.c's own outputs, the KV cache against full
// recomputation, prompt caches, and mixed-adapter batches.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <softprompt/softprompt.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "golden_model.hpp"
#include "stories_golden.hpp"
#include "test_paths.hpp"

namespace {

using softprompt::testing::GoldenLogits;
using softprompt::testing::read_golden_logits;
using softprompt::testing::read_ids;

using namespace softprompt;
using namespace softprompt::nn;
using autograd::Param;
using autograd::Tape;
using autograd::Var;
namespace fs = std::filesystem;

using softprompt::testing::Golden;
using softprompt::testing::test_data_dir;

template <class T>
double max_abs(const Mat<T>& a, const Mat<T>& b) {
    EXPECT_EQ(a.rows(), b.rows());
    EXPECT_EQ(a.cols(), b.cols());
    if (a.rows() != b.rows() || a.cols() != b.cols()) return 1e30;
    return double((a - b).cwiseAbs().maxCoeff());
}

template <class T>
double max_rel(const Mat<T>& got, const Mat<T>& want) {
    const double scale = std::max(1e-30, double(want.cwiseAbs().maxCoeff()));
    return max_abs(got, want) / scale;
}

enum class Case { kBase, kPrompt, kPrefix };

template <class Arch, class T>
void check_golden(const std::string& file, Case which, LogitsRequest request, double logit_tol,
                  double grad_tol, Index checkpoint_every = 0) {
    const Golden<T> g(file);
    const Model<Arch, T> model = g.template model<Arch>();
    const char* name = which == Case::kBase ? "base" : which == Case::kPrompt ? "prompt" : "prefix";
    std::optional<Param<T>> param;
    Tape<T> tape;
    AdapterInput<T> soft;
    if (which == Case::kPrompt) {
        param.emplace("prompt", g.expected(name, "prompt"));
        soft.prompt = tape.param(*param);
    } else if (which == Case::kPrefix) {
        param.emplace("prefix", g.expected(name, "prefix"));
        soft = split_prefix(tape, g.config, tape.param(*param));
    }
    ForwardOutput<T> out = forward(tape, model, g.batch, soft, request, checkpoint_every);
    if (request == LogitsRequest::kLossOnly)
        EXPECT_FALSE(out.logits.defined()) << "the fused head keeps no logits";
    else
        EXPECT_LE(max_abs(out.logits.value(), g.expected(name, "logits")), logit_tol)
            << file << " " << name;
    EXPECT_NEAR(double(out.loss.item()), g.loss(name), logit_tol) << file << " " << name;
    if (param) {
        tape.backward(out.loss);
        EXPECT_LE(max_rel(param->grad(), g.expected(name, "grad")), grad_tol)
            << file << " " << name;
    }
}

template <class Arch>
void check_golden_all(const std::string& file) {
    // kLossOnly: the LM head fused with the loss (no logits) gives the same loss and gradients.
    for (LogitsRequest request : {LogitsRequest::kRealPositions, LogitsRequest::kLossOnly})
        for (Case c : {Case::kBase, Case::kPrompt, Case::kPrefix}) {
            check_golden<Arch, double>(file, c, request, 1e-9, 1e-9);
            check_golden<Arch, float>(file, c, request, 1e-4, 1e-3);
        }
}

TEST(Golden, Gpt2LogitsLossAndSoftPromptGradients) { check_golden_all<Gpt2>("golden_gpt2.json"); }
TEST(Golden, LlamaGqaHalfSplitUntied) { check_golden_all<Llama>("golden_llama_gqa.json"); }
TEST(Golden, LlamaInterleavedTied) { check_golden_all<Llama>("golden_llama_interleaved.json"); }

// The newer families of the LLaMA traits, each configured from the config.json in its golden file
// and checked against make_golden.py's float64 forward pass, written by hand after each family's
// Hugging Face modelling code.
TEST(Golden, Llama3RopeScaling) { check_golden_all<Llama>("golden_llama3.json"); }
TEST(Golden, Qwen2QkvBiases) { check_golden_all<Llama>("golden_qwen2.json"); }
TEST(Golden, Qwen3QkNormsAndItsOwnHeadWidth) { check_golden_all<Llama>("golden_qwen3.json"); }
TEST(Golden, MistralWithinItsSlidingWindow) { check_golden_all<Llama>("golden_mistral.json"); }

TEST(Families, EachConfigJsonSelectsItsVariant) {
    const Golden<double> llama3("golden_llama3.json"), qwen2("golden_qwen2.json"),
        qwen3("golden_qwen3.json"), mistral("golden_mistral.json");
    EXPECT_EQ(llama3.config.rope_scaling.kind, kernels::RopeScaling::Kind::kLlama3);
    EXPECT_EQ(llama3.config.rope_scaling.factor, 8.0);
    EXPECT_TRUE(qwen2.config.qkv_bias);
    EXPECT_FALSE(qwen2.config.qk_norm);
    EXPECT_TRUE(qwen3.config.qk_norm);
    EXPECT_EQ(qwen3.config.head_dim(), 8);
    EXPECT_EQ(qwen3.config.q_dim(), 32);  // wider than hidden_size 16
    EXPECT_EQ(mistral.config.sliding_window, 16);
    // Switching a variant off changes the result: the golden test would see a missing piece.
    for (const Golden<double>* g : {&llama3, &qwen2, &qwen3}) {
        const auto model = g->model<Llama>();
        auto plain = model;
        plain.config.rope_scaling = {};
        plain.config.qkv_bias = false;
        if (plain.config.qk_norm) {
            plain.config.qk_norm = false;
            for (auto& l : plain.weights.layers) l.q_norm = l.k_norm = {};
        }
        for (auto& l : plain.weights.layers) l.bq = l.bk = l.bv = {};
        Tape<double> a, b;
        const Mat<double> with =
            forward(a, model, g->batch, {}, LogitsRequest::kRealPositions).logits.value();
        const Mat<double> without =
            forward(b, plain, g->batch, {}, LogitsRequest::kRealPositions).logits.value();
        EXPECT_GT(max_abs(with, without), 1e-3) << g->family;
    }
}

TEST(Families, SequencesBeyondTheSlidingWindowAreRefused) {
    const Golden<float> g("golden_mistral.json");
    const auto model = g.model<Llama>();
    auto batch_of = [](Index seq) {
        return TokenBatch{.batch = 1,
                          .seq = seq,
                          .ids = std::vector<std::int32_t>(std::size_t(seq), 3),
                          .lengths = {},
                          .targets = {}};
    };
    Tape<float> ok;
    EXPECT_NO_THROW(forward(ok, model, batch_of(16), {}, LogitsRequest::kRealPositions));
    auto refused = [&](const std::function<void()>& f) {
        try {
            f();
            ADD_FAILURE() << "no error";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("sliding_window of 16"), std::string::npos)
                << e.what();
        }
    };
    refused([&] {
        Tape<float> t;
        forward(t, model, batch_of(17), {}, LogitsRequest::kRealPositions);
    });
    // Virtual tokens count: 3 + 13 positions fit, 3 + 14 do not.
    const Mat<float> prompt = g.expected("prompt", "prompt");
    {
        Tape<float> t;
        AdapterInput<float> soft;
        soft.prompt = t.constant(prompt);
        EXPECT_NO_THROW(forward(t, model, batch_of(13), soft, LogitsRequest::kRealPositions));
    }
    refused([&] {
        Tape<float> t;
        AdapterInput<float> soft;
        soft.prompt = t.constant(prompt);
        forward(t, model, batch_of(14), soft, LogitsRequest::kRealPositions);
    });
    // Decoding stops at the window too.
    Sequence<float> seq;
    Sequence<float>* one[] = {&seq};
    advance(model, std::span<Sequence<float>* const>(one), {std::vector<std::int32_t>(16, 5)});
    refused([&] { advance(model, std::span<Sequence<float>* const>(one), {{5}}); });
}

// ------------------------------------------------------------------------------------------------
// Soft-prompt semantics on the golden models.

template <class Arch>
void check_zero_prompt_is_base_bit_for_bit(const std::string& file) {
    const Golden<float> g(file);
    const auto model = g.template model<Arch>();
    Tape<float> t1, t2, t3;
    const Mat<float> base =
        forward(t1, model, g.batch, {}, LogitsRequest::kRealPositions).logits.value();
    AdapterInput<float> empty_prompt;
    empty_prompt.prompt = t2.constant(Mat<float>(0, g.config.dim));
    const Mat<float> zero =
        forward(t2, model, g.batch, empty_prompt, LogitsRequest::kRealPositions).logits.value();
    const Mat<float> zero_prefix =
        forward(t3, model, g.batch,
                split_prefix(t3, g.config,
                             t3.constant(Mat<float>(0, g.config.n_layers * 2 * g.config.kv_dim()))),
                LogitsRequest::kRealPositions)
            .logits.value();
    ASSERT_EQ(base.size(), zero.size());
    EXPECT_EQ(std::memcmp(base.data(), zero.data(), sizeof(float) * std::size_t(base.size())), 0);
    EXPECT_EQ(
        std::memcmp(base.data(), zero_prefix.data(), sizeof(float) * std::size_t(base.size())), 0);
}

// One training pass (loss and backward) of `method` on the golden batch, layers checkpointed in
// runs of `every` (0: none): the loss, the parameters' gradients and the tape's counts.
template <class Arch>
struct CheckpointedPass {
    double loss = 0;
    std::vector<Mat<double>> grads;
    autograd::TapeStats stats;
};

template <class Arch>
CheckpointedPass<Arch> checkpointed_pass(const Model<Arch, double>& model, const TokenBatch& batch,
                                         peft::Method<double>& method, Index every) {
    for (Param<double>* p : method.parameters()) p->zero_grad();
    Tape<double> tape;
    const ForwardOutput<double> out =
        forward(tape, model, batch, method.input(tape), LogitsRequest::kLossOnly, every);
    CheckpointedPass<Arch> pass;
    pass.loss = out.loss.item();
    tape.backward(out.loss);
    for (Param<double>* p : method.parameters()) pass.grads.push_back(p->grad());
    pass.stats = tape.stats();
    return pass;
}

// Activation checkpointing in runs of 1, 2 and 3 layers (3: more than the goldens' 2 layers, one
// run): the PyTorch goldens' loss and prompt/prefix gradients, and for prompt, prefix and LoRA
// tuning (LoRA's factors reach the layers by capture, not as inputs of the runs) the loss and
// gradients of the pass without checkpointing; backward runs each run's forward products again.
template <class Arch>
void check_checkpointing(const std::string& file) {
    SCOPED_TRACE(file);
    for (const Index every : {1, 2, 3})
        for (const Case c : {Case::kPrompt, Case::kPrefix})
            check_golden<Arch, double>(file, c, LogitsRequest::kLossOnly, 1e-9, 1e-9, every);

    const Golden<double> g(file);
    const Model<Arch, double> model = g.template model<Arch>();
    Rng rng(3);
    peft::PromptTuning<double> prompt(g.config,
                                      peft::init_normal<double>(3, g.config.dim, 0.5, rng));
    peft::PrefixTuning<double> prefix(g.config, peft::PrefixTuningOptions{.num_virtual_tokens = 2},
                                      rng);
    peft::Lora<Arch, double> lora(g.config, peft::LoraOptions{.rank = 2, .output = true}, rng);
    // PEFT starts B at zero, which would leave A without a gradient to compare.
    for (Param<double>* p : lora.parameters()) p->value().setRandom();
    for (peft::Method<double>* method :
         std::vector<peft::Method<double>*>{&prompt, &prefix, &lora}) {
        const CheckpointedPass<Arch> plain = checkpointed_pass(model, g.batch, *method, 0);
        for (const Index every : {1, 2, 3}) {
            SCOPED_TRACE(std::string(peft::method_name(method->kind())) + ", runs of " +
                         std::to_string(every));
            const CheckpointedPass<Arch> pass = checkpointed_pass(model, g.batch, *method, every);
            EXPECT_EQ(pass.loss, plain.loss);
            ASSERT_EQ(pass.grads.size(), plain.grads.size());
            for (std::size_t i = 0; i < plain.grads.size(); ++i) {
                ASSERT_GT(plain.grads[i].cwiseAbs().maxCoeff(), 0.0) << "parameter " << i;
                EXPECT_LE(max_rel(pass.grads[i], plain.grads[i]), 1e-12) << "parameter " << i;
            }
            EXPECT_GT(pass.stats.forward_products, plain.stats.forward_products)
                << "backward did not recompute the layers";
            EXPECT_EQ(pass.stats.input_grad_products, plain.stats.input_grad_products);
        }
    }
    Tape<double> tape;
    EXPECT_THROW(
        (void)forward(tape, model, g.batch, prompt.input(tape), LogitsRequest::kLossOnly, -1),
        ConfigError);
}

TEST(Checkpointing, SameLossAndGradientsAsKeepingEveryActivation) {
    check_checkpointing<Gpt2>("golden_gpt2.json");
    check_checkpointing<Llama>("golden_llama_gqa.json");
}

TEST(SoftPrompt, ZeroLengthPromptIsTheBaseModelBitForBit) {
    check_zero_prompt_is_base_bit_for_bit<Gpt2>("golden_gpt2.json");
    check_zero_prompt_is_base_bit_for_bit<Llama>("golden_llama_gqa.json");
}

// Per-row reference: one sequence [prompt; tokens] at positions 0..P+len-1, with no prefix.
template <class Arch, class T>
Mat<T> concatenated_row_logits(const Model<Arch, T>& model, const Mat<T>& prompt,
                               const std::vector<std::int32_t>& ids) {
    using namespace autograd;
    const Config& c = model.config;
    const Index P = prompt.rows(), n = Index(ids.size());
    Tape<T> t;
    const auto virtual_pos = batch_positions(1, P, 0);
    const auto real_pos = batch_positions(1, n, std::int32_t(P));
    Var<T> x = concat_rows(t, {Arch::place(t, c, model.weights, t.constant(prompt), virtual_pos),
                               Arch::embed(t, c, model.weights, ids, real_pos)});
    const auto all_pos = batch_positions(1, P + n, 0);
    const AttentionSpec spec{.batch = 1,
                             .seq = P + n,
                             .n_heads = c.n_heads,
                             .n_kv_heads = c.n_kv_heads,
                             .head_dim = c.head_dim()};
    for (const auto& layer : model.weights.layers) {
        AttentionInputs<T> in = Arch::attention_inputs(t, c, layer, x, all_pos);
        x = Arch::finish_layer(t, c, layer, x, attention(t, in.q, in.k, in.v, spec));
    }
    Var<T> real = slice_rows(t, Arch::final_norm(t, c, model.weights, x), P, n);
    return matmul_wt(t, real, model.weights.head).value();
}

// Batched rows sharing one virtual-token pass equal each row run alone with its prompt; `tol` is
// relative to the largest logit.
template <class Arch, class T>
void check_shared_prompt_equals_per_row(const std::string& file, double tol) {
    const Golden<T> g(file);
    const auto model = g.template model<Arch>();
    const Mat<T> prompt = g.expected("prompt", "prompt");
    Tape<T> t;
    AdapterInput<T> soft;
    soft.prompt = t.constant(prompt);
    const Mat<T> batched =
        forward(t, model, g.batch, soft, LogitsRequest::kRealPositions).logits.value();
    Index row = 0;
    for (Index b = 0; b < g.batch.batch; ++b) {
        const Index len = g.batch.length(b);
        const std::vector<std::int32_t> ids(g.batch.ids.begin() + b * g.batch.seq,
                                            g.batch.ids.begin() + b * g.batch.seq + len);
        const Mat<T> alone = concatenated_row_logits(model, prompt, ids);
        EXPECT_LE(
            max_abs<T>(batched.middleRows(row, len), alone) / double(alone.cwiseAbs().maxCoeff()),
            tol)
            << file << " row " << b;
        row += len;
    }
}

TEST(SoftPrompt, SharedVirtualTokensEqualPerRowConcatenation) {
    check_shared_prompt_equals_per_row<Gpt2, double>("golden_gpt2.json", 1e-12);
    check_shared_prompt_equals_per_row<Llama, double>("golden_llama_gqa.json", 1e-12);
    check_shared_prompt_equals_per_row<Llama, double>("golden_llama_interleaved.json", 1e-12);
    check_shared_prompt_equals_per_row<Gpt2, float>("golden_gpt2.json", 1e-6);
    check_shared_prompt_equals_per_row<Llama, float>("golden_llama_gqa.json", 1e-6);
    check_shared_prompt_equals_per_row<Llama, float>("golden_llama_interleaved.json", 1e-6);
}

// Logits of the last position of `ids`, recomputing the whole sequence (and the prompt) with
// the training forward.
template <class Arch, class T>
Mat<T> full_last_logits(const Model<Arch, T>& model, const std::vector<std::int32_t>& ids,
                        const Mat<T>* prompt, const Mat<T>* prefix) {
    Tape<T> t;
    TokenBatch batch{
        .batch = 1, .seq = Index(ids.size()), .ids = ids, .lengths = {}, .targets = {}};
    AdapterInput<T> soft;
    if (prompt) soft.prompt = t.constant(*prompt);
    if (prefix) soft = split_prefix(t, model.config, t.constant(*prefix));
    const Mat<T> logits =
        forward(t, model, batch, soft, LogitsRequest::kRealPositions).logits.value();
    return logits.bottomRows(1);
}

template <class Arch>
void check_cache_matches_recompute(const std::string& file) {
    const Golden<float> g(file);
    const auto model = g.template model<Arch>();
    const Mat<float> prompt = g.expected("prompt", "prompt");
    const Mat<float> prefix = g.expected("prefix", "prefix");
    const PromptCache<float> prompt_cache = cache_prompt(model, prompt);
    const PromptCache<float> prefix_cache = cache_prefix(model.config, prefix);
    const std::vector<std::int32_t> ids = {3, 17, 5, 9, 30, 2, 11};
    for (int mode = 0; mode < 3; ++mode) {
        Sequence<float> seq;
        seq.prompt = mode == 1 ? &prompt_cache : mode == 2 ? &prefix_cache : nullptr;
        Sequence<float>* one[] = {&seq};
        // Prefill 3 tokens, then one at a time; compare each step with full recomputation.
        std::vector<std::int32_t> fed(ids.begin(), ids.begin() + 3);
        Mat<float> step = advance(model, std::span<Sequence<float>* const>(one), {fed});
        for (std::size_t i = 3; i <= ids.size(); ++i) {
            const Mat<float> full = full_last_logits(model, fed, mode == 1 ? &prompt : nullptr,
                                                     mode == 2 ? &prefix : nullptr);
            // float rounding grows with the logits' size (about 20 for the Llama 3 and Qwen2
            // goldens)
            const double scale = std::max(1.0, double(full.cwiseAbs().maxCoeff()));
            EXPECT_LE(max_abs(step, full), 2e-5 * scale)
                << file << " mode " << mode << " length " << i;
            if (i == ids.size()) break;
            fed.push_back(ids[i]);
            step = advance(model, std::span<Sequence<float>* const>(one), {{ids[i]}});
        }
    }
}

TEST(KvCache, IncrementalDecodingEqualsFullRecomputationWithAndWithoutAdapters) {
    check_cache_matches_recompute<Gpt2>("golden_gpt2.json");
    check_cache_matches_recompute<Llama>("golden_llama_gqa.json");
    for (const char* file :
         {"golden_llama3.json", "golden_qwen2.json", "golden_qwen3.json", "golden_mistral.json"})
        check_cache_matches_recompute<Llama>(file);
}

TEST(Generate, MixedAdapterBatchGivesEachRowWhatItGetsAlone) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<Llama>();
    const PromptCache<float> prompt_cache = cache_prompt(model, g.expected("prompt", "prompt"));
    const PromptCache<float> prefix_cache =
        cache_prefix(model.config, g.expected("prefix", "prefix"));
    std::mt19937 gen(5);
    Mat<float> other(4, g.config.dim);
    std::normal_distribution<float> normal;
    for (Index i = 0; i < other.size(); ++i) other.data()[i] = normal(gen);
    const PromptCache<float> other_cache = cache_prompt(model, other);

    std::vector<GenerationRequest<float>> requests(4);
    requests[0] = {.prompt = {1, 5, 9},
                   .adapter = &prompt_cache,
                   .sampling = {},
                   .max_new_tokens = 12,
                   .stop_tokens = {}};
    requests[1] = {.prompt = {1, 7},
                   .adapter = nullptr,
                   .sampling = {.temperature = 0.9, .top_k = 8, .top_p = 0.9, .seed = 42},
                   .max_new_tokens = 9,
                   .stop_tokens = {}};
    requests[2] = {.prompt = {1, 2, 3, 4, 5},
                   .adapter = &prefix_cache,
                   .sampling = {.temperature = 1.0, .top_k = 0, .top_p = 1.0, .seed = 7},
                   .max_new_tokens = 15,
                   .stop_tokens = {}};
    requests[3] = {.prompt = {1},
                   .adapter = &other_cache,
                   .sampling = {},
                   .max_new_tokens = 10,
                   .stop_tokens = {}};
    const auto together = generate(model, requests);
    ASSERT_EQ(together.size(), 4u);
    std::set<std::vector<std::int32_t>> distinct;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const auto alone = generate(model, std::vector<GenerationRequest<float>>{requests[i]});
        EXPECT_EQ(together[i].tokens, alone[0].tokens) << "request " << i;
        EXPECT_EQ(int(together[i].tokens.size()), requests[i].max_new_tokens);
        distinct.insert(together[i].tokens);
    }
    EXPECT_GT(distinct.size(), 1u) << "adapters should change what is generated";
}

TEST(Generate, CachedSoftPromptEqualsRecomputingThePromptPerRequest) {
    for (const char* file : {"golden_gpt2.json", "golden_llama_interleaved.json"}) {
        const Golden<float> g(file);
        auto run = [&](auto arch) {
            using Arch = decltype(arch);
            const auto model = g.template model<Arch>();
            const Mat<float> prompt = g.expected("prompt", "prompt");
            const PromptCache<float> cache = cache_prompt(model, prompt);
            GenerationRequest<float> request{.prompt = {4, 8},
                                             .adapter = &cache,
                                             .sampling = {},
                                             .max_new_tokens = 20,
                                             .stop_tokens = {}};
            const auto cached =
                generate(model, std::vector<GenerationRequest<float>>{request})[0].tokens;
            std::vector<std::int32_t> ids = request.prompt, recomputed;
            for (int i = 0; i < request.max_new_tokens; ++i) {
                const Mat<float> logits =
                    full_last_logits<Arch, float>(model, ids, &prompt, nullptr);
                Index best = 0;
                logits.row(0).maxCoeff(&best);
                recomputed.push_back(std::int32_t(best));
                ids.push_back(std::int32_t(best));
            }
            EXPECT_EQ(cached, recomputed) << file;
        };
        if (g.json.at("family") == "gpt2")
            run(Gpt2{});
        else
            run(Llama{});
    }
}

TEST(Generate, StopTokensAndSamplerValidation) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<Llama>();
    GenerationRequest<float> r{.prompt = {1, 5},
                               .adapter = nullptr,
                               .sampling = {},
                               .max_new_tokens = 30,
                               .stop_tokens = {}};
    const auto free_run = generate(model, std::vector<GenerationRequest<float>>{r})[0].tokens;
    r.stop_tokens = {free_run[3]};
    const auto stopped = generate(model, std::vector<GenerationRequest<float>>{r})[0];
    EXPECT_TRUE(stopped.stopped);
    const auto first = std::find(free_run.begin(), free_run.end(), free_run[3]);
    EXPECT_EQ(stopped.tokens, std::vector<std::int32_t>(free_run.begin(), first + 1));
    EXPECT_THROW(Sampler({.temperature = 1, .top_k = 0, .top_p = 0, .seed = 0}), ConfigError);
    r.prompt = {};
    EXPECT_THROW(generate(model, std::vector<GenerationRequest<float>>{r}), ConfigError);
}

TEST(Generate, SamplerIsSeededAndRespectsTopK) {
    Mat<float> logits(1, 6);
    logits << 0.1f, 2.0f, 1.5f, -1.0f, 1.9f, 0.0f;
    Sampler greedy({});
    EXPECT_EQ(greedy.sample(logits.row(0)), 1);
    Sampler a({.temperature = 1.0, .top_k = 2, .top_p = 1.0, .seed = 3});
    Sampler b({.temperature = 1.0, .top_k = 2, .top_p = 1.0, .seed = 3});
    std::set<std::int32_t> seen;
    for (int i = 0; i < 200; ++i) {
        const std::int32_t x = a.sample(logits.row(0));
        EXPECT_EQ(x, b.sample(logits.row(0)));
        seen.insert(x);
    }
    EXPECT_EQ(seen, (std::set<std::int32_t>{1, 4}));  // the two most likely only
    Sampler nucleus({.temperature = 1.0, .top_k = 0, .top_p = 0.3, .seed = 1});
    for (int i = 0; i < 50; ++i) EXPECT_EQ(nucleus.sample(logits.row(0)), 1);
}

// ------------------------------------------------------------------------------------------------
// The real stories260K model (llama2.c format) against llama2.c's own outputs.

TEST(Stories260K, AllLogitsMatchLlama2cWithAndWithoutCache) {
    const fs::path model_path = test_data_dir() / "models" / "stories260K.bin";
    const fs::path golden_path =
        test_data_dir() / "golden" / "stories260K" / "logits_once_upon_a_time.txt";
    SOFTPROMPT_REQUIRE_DATA(model_path);
    const auto model = io::load_llama2c<float>(model_path.string());
    EXPECT_EQ(model.config.dim, 64);
    EXPECT_EQ(model.config.n_kv_heads, 4);
    EXPECT_EQ(model.config.vocab_size, 512);
    const GoldenLogits g = read_golden_logits(golden_path);
    ASSERT_EQ(g.tokens.size(), 16u);
    ASSERT_EQ(g.logits.rows(), 16);
    ASSERT_EQ(g.logits.cols(), 512);

    Tape<float> t;
    TokenBatch batch{.batch = 1, .seq = 16, .ids = g.tokens, .lengths = {}, .targets = {}};
    const Mat<float> full =
        forward(t, model, batch, {}, LogitsRequest::kRealPositions).logits.value();
    EXPECT_LE(max_abs(full, g.logits), 1e-4);

    Sequence<float> seq;
    Sequence<float>* one[] = {&seq};
    for (Index p = 0; p < 16; ++p) {
        const Mat<float> step =
            advance(model, std::span<Sequence<float>* const>(one), {{g.tokens[std::size_t(p)]}});
        EXPECT_LE(max_abs<float>(step, g.logits.middleRows(p, 1)), 1e-4) << "position " << p;
    }
}

TEST(Stories260K, GreedyFromBosReproducesLlama2cWithCacheAndByRecomputation) {
    const fs::path model_path = test_data_dir() / "models" / "stories260K.bin";
    SOFTPROMPT_REQUIRE_DATA(model_path);
    const auto model = io::load_llama2c<float>(model_path.string());
    const std::vector<std::int32_t> golden =
        read_ids(test_data_dir() / "golden" / "stories260K" / "greedy_bos_200.ids");
    ASSERT_EQ(golden.size(), 201u);
    ASSERT_EQ(golden[0], 1);
    const std::vector<std::int32_t> expected(golden.begin() + 1, golden.end());

    GenerationRequest<float> request{.prompt = {1},
                                     .adapter = nullptr,
                                     .sampling = {},
                                     .max_new_tokens = 200,
                                     .stop_tokens = {}};
    EXPECT_EQ(generate(model, std::vector<GenerationRequest<float>>{request})[0].tokens, expected);

    std::vector<std::int32_t> ids = {1}, recomputed;
    for (int i = 0; i < 200; ++i) {
        const Mat<float> logits = full_last_logits<Llama, float>(model, ids, nullptr, nullptr);
        Index best = 0;
        logits.row(0).maxCoeff(&best);
        recomputed.push_back(std::int32_t(best));
        ids.push_back(std::int32_t(best));
    }
    EXPECT_EQ(recomputed, expected);
}

TEST(Stories260K, CorruptFilesGiveFormatErrors) {
    const fs::path model_path = test_data_dir() / "models" / "stories260K.bin";
    SOFTPROMPT_REQUIRE_DATA(model_path);
    std::ifstream in(model_path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const fs::path tmp = fs::temp_directory_path() / "softprompt_model_test_corrupt.bin";
    auto expect_format_error = [&](const std::string& content, const std::string& needle) {
        std::ofstream(tmp, std::ios::binary) << content;
        try {
            io::load_llama2c<float>(tmp.string());
            ADD_FAILURE() << "expected FormatError containing '" << needle << "'";
        } catch (const FormatError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(tmp.string()), std::string::npos) << e.what();
        }
    };
    expect_format_error(bytes.substr(0, bytes.size() - 4), "truncated");
    expect_format_error(bytes + "xxxx", "trailing bytes");
    expect_format_error(bytes.substr(0, 10), "truncated");
    std::string bad_heads = bytes;
    const std::int32_t seven = 7;
    std::memcpy(bad_heads.data() + 12, &seven, 4);  // n_heads 7 does not divide dim 64
    expect_format_error(bad_heads, "n_heads");
    fs::remove(tmp);
    EXPECT_THROW(
        io::load_llama2c<float>((fs::temp_directory_path() / "no_such_model.bin").string()),
        IoError);
}

}  // namespace
