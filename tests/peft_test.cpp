// Parameter-efficient methods on the golden tiny models: gradients of every method's parameters
// against finite differences (double), folding and merging identities, initialisations, and
// PEFT's parameter summary.

#include <gtest/gtest.h>

#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "golden_model.hpp"

namespace {

using namespace softprompt;
using namespace softprompt::peft;
using autograd::Param;
using autograd::Tape;
using autograd::Var;
using softprompt::testing::Golden;

template <class Arch, class T>
Var<T> method_loss(Tape<T>& tape, const nn::Model<Arch, T>& model, const nn::TokenBatch& batch,
                   Method<T>& method) {
    return nn::forward(tape, model, batch, method.input(tape)).loss;
}

// Every trainable element of the method against Richardson finite differences, in double.
template <class Arch>
void expect_method_gradients(const Golden<double>& g, Method<double>& method, double tol = 1e-6) {
    const auto model = g.model<Arch>();
    const autograd::GradcheckReport report = autograd::gradcheck<double>(
        method.parameters(),
        [&](Tape<double>& t) { return method_loss(t, model, g.batch, method); });
    EXPECT_LE(report.max_rel_error, tol) << report.describe();
    double norm = 0;
    for (auto* p : method.parameters()) norm += p->grad().squaredNorm();
    EXPECT_GT(norm, 0.0);
}

// A soft prompt and a direct prefix (both away from zero) on every family's golden model: GPT-2,
// LLaMA in both RoPE layouts, Llama 3 scaling, Qwen2 biases, Qwen3 q/k norms and head width,
// Mistral (its window longer than the batch, so it computes as full attention here).
TEST(Gradients, PromptAndPrefixOnEveryFamily) {
    Rng rng(11);
    for (const char* file :
         {"golden_gpt2.json", "golden_llama_gqa.json", "golden_llama_interleaved.json",
          "golden_llama3.json", "golden_qwen2.json", "golden_qwen3.json", "golden_mistral.json"}) {
        SCOPED_TRACE(file);
        const Golden<double> g(file);
        auto check = [&](auto arch) {
            using Arch = decltype(arch);
            PromptTuning<double> prompt(g.config, init_normal<double>(2, g.config.dim, 0.5, rng));
            expect_method_gradients<Arch>(g, prompt);
            PrefixTuning<double> prefix(
                g.config,
                init_normal<double>(2, g.config.n_layers * 2 * g.config.kv_dim(), 0.5, rng));
            expect_method_gradients<Arch>(g, prefix);
        };
        if (g.json.at("family") == "gpt2")
            check(nn::Gpt2{});
        else
            check(nn::Llama{});
    }
}

TEST(Gradients, PrefixReparameterisation) {
    const Golden<double> g("golden_llama_gqa.json");
    Rng rng(1);
    PrefixTuning<double> method(
        g.config, {.num_virtual_tokens = 2, .projection = true, .encoder_hidden_size = 5}, rng);
    expect_method_gradients<nn::Llama>(g, method);
}

TEST(Gradients, PTuningMlpAndLstm) {
    const Golden<double> g("golden_gpt2.json");
    Rng rng(2);
    PTuning<double> mlp(g.config,
                        {.num_virtual_tokens = 2,
                         .encoder = PromptEncoderType::kMlp,
                         .encoder_hidden_size = 6,
                         .encoder_num_layers = 2},
                        rng);
    expect_method_gradients<nn::Gpt2>(g, mlp);
    PTuning<double> lstm(g.config,
                         {.num_virtual_tokens = 3,
                          .encoder = PromptEncoderType::kLstm,
                          .encoder_hidden_size = 3,
                          .encoder_num_layers = 2},
                         rng);
    expect_method_gradients<nn::Gpt2>(g, lstm);
}

TEST(Gradients, LoraBothFamiliesAllProjections) {
    Rng rng(3);
    for (const char* file : {"golden_llama_gqa.json", "golden_gpt2.json"}) {
        const Golden<double> g(file);
        const bool gpt2 = g.json.at("family") == "gpt2";
        LoraOptions options{
            .rank = 2, .alpha = 4, .query = true, .key = !gpt2, .value = !gpt2, .output = true};
        auto check = [&](auto arch) {
            using Arch = decltype(arch);
            Lora<Arch, double> lora(g.config, options, rng);
            // B starts at zero (so A's gradient is zero): give B values to check both.
            for (auto& u : lora.updates()) u.b->value().setRandom();
            expect_method_gradients<Arch>(g, lora);
        };
        if (gpt2)
            check(nn::Gpt2{});
        else
            check(nn::Llama{});
    }
}

TEST(Lora, StartsAtTheBaseModelAndMergesExactly) {
    const Golden<double> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    Rng rng(4);
    Lora<nn::Llama, double> lora(
        g.config,
        {.rank = 3, .alpha = 6, .query = true, .key = true, .value = true, .output = true}, rng);
    Tape<double> t0, t1;
    const Mat<double> base =
        nn::forward(t0, model, g.batch, {}, nn::LogitsRequest::kRealPositions).logits.value();
    const Mat<double> start =
        nn::forward(t1, model, g.batch, lora.input(t1), nn::LogitsRequest::kRealPositions)
            .logits.value();
    EXPECT_EQ((base - start).cwiseAbs().maxCoeff(), 0.0) << "B = 0 must leave the model unchanged";

    for (auto& u : lora.updates()) u.b->value().setRandom();
    Tape<double> t2, t3;
    const Mat<double> unmerged =
        nn::forward(t2, model, g.batch, lora.input(t2), nn::LogitsRequest::kRealPositions)
            .logits.value();
    const auto merged_model = lora.merge(model);
    const Mat<double> merged =
        nn::forward(t3, merged_model, g.batch, {}, nn::LogitsRequest::kRealPositions)
            .logits.value();
    EXPECT_GT((unmerged - base).cwiseAbs().maxCoeff(), 1e-3);
    EXPECT_LT((unmerged - merged).cwiseAbs().maxCoeff(), 1e-12);
    // The base model's weights are untouched by merging.
    Tape<double> t4;
    EXPECT_EQ(
        (nn::forward(t4, model, g.batch, {}, nn::LogitsRequest::kRealPositions).logits.value() -
         base)
            .cwiseAbs()
            .maxCoeff(),
        0.0);
}

TEST(Lora, Gpt2MergeIntoConv1DLayout) {
    const Golden<double> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    Rng rng(5);
    Lora<nn::Gpt2, double> lora(
        g.config,
        {.rank = 2, .alpha = 2, .query = true, .key = false, .value = false, .output = true}, rng);
    for (auto& u : lora.updates()) u.b->value().setRandom();
    Tape<double> t1, t2;
    const Mat<double> unmerged =
        nn::forward(t1, model, g.batch, lora.input(t1), nn::LogitsRequest::kRealPositions)
            .logits.value();
    const Mat<double> merged =
        nn::forward(t2, lora.merge(model), g.batch, {}, nn::LogitsRequest::kRealPositions)
            .logits.value();
    EXPECT_LT((unmerged - merged).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(PrefixTuning, FoldedPrefixEqualsTheTrainingPrefix) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    Rng rng(6);
    PrefixTuning<float> method(
        g.config, {.num_virtual_tokens = 4, .projection = true, .encoder_hidden_size = 8}, rng);
    Tape<float> t1;
    const Mat<float> training_prefix = method.prefix(t1).value();
    const Mat<float> training_logits =
        nn::forward(t1, model, g.batch, method.input(t1), nn::LogitsRequest::kRealPositions)
            .logits.value();
    const Mat<float> folded = method.fold();
    ASSERT_EQ(folded.rows(), 4);
    ASSERT_EQ(folded.cols(), g.config.n_layers * 2 * g.config.kv_dim());
    EXPECT_EQ(std::memcmp(folded.data(), training_prefix.data(),
                          sizeof(float) * std::size_t(folded.size())),
              0);
    method.fold_in_place();
    EXPECT_FALSE(method.reparameterised());
    EXPECT_EQ(method.parameters().size(), 1u);
    Tape<float> t2;
    const Mat<float> after =
        nn::forward(t2, model, g.batch, method.input(t2), nn::LogitsRequest::kRealPositions)
            .logits.value();
    EXPECT_EQ((after - training_logits).cwiseAbs().maxCoeff(), 0.0f);
}

TEST(PrefixTuning, InitFromTextActsAsIfTheTextPrecededTheInput) {
    // With the text's own keys/values as the prefix, the model must give each real token the
    // logits it gets after the text itself.
    for (const char* file :
         {"golden_llama_gqa.json", "golden_gpt2.json", "golden_llama_interleaved.json"}) {
        const Golden<double> g(file);
        auto check = [&](auto arch) {
            using Arch = decltype(arch);
            const auto model = g.template model<Arch>();
            const std::vector<std::int32_t> text = {7, 3, 21};
            PrefixTuning<double> method(g.config, init_prefix_from_text(model, text, 3));
            const std::vector<std::int32_t> input = {5, 9, 30, 2};
            nn::TokenBatch batch{.batch = 1, .seq = 4, .ids = input, .lengths = {}, .targets = {}};
            Tape<double> t1;
            const Mat<double> with_prefix =
                nn::forward(t1, model, batch, method.input(t1), nn::LogitsRequest::kRealPositions)
                    .logits.value();
            std::vector<std::int32_t> joined = text;
            joined.insert(joined.end(), input.begin(), input.end());
            nn::TokenBatch full{.batch = 1, .seq = 7, .ids = joined, .lengths = {}, .targets = {}};
            Tape<double> t2;
            const Mat<double> after_text =
                nn::forward(t2, model, full, {}, nn::LogitsRequest::kRealPositions).logits.value();
            EXPECT_LT((with_prefix - after_text.bottomRows(4)).cwiseAbs().maxCoeff(), 1e-12)
                << file;
        };
        if (g.json.at("family") == "gpt2")
            check(nn::Gpt2{});
        else
            check(nn::Llama{});
    }
}

TEST(PromptTuning, Initialisations) {
    const Golden<double> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    const Mat<double>& wte = g.tensors.at("wte.weight");
    Rng rng(7);
    const Mat<double> text = init_from_text(model, {4, 9}, 5);
    for (Index r = 0; r < 5; ++r)
        EXPECT_EQ((text.row(r) - wte.row(r % 2 == 0 ? 4 : 9)).norm(), 0.0);
    const Mat<double> vocab = init_from_vocab(model, 50, rng, 3);
    for (Index r = 0; r < 50; ++r) {
        bool found = false;
        for (Index id = 0; id < 3; ++id)
            found = found || (vocab.row(r) - wte.row(id)).norm() == 0.0;
        EXPECT_TRUE(found) << "row " << r << " is not one of the first 3 embeddings";
    }
    const Mat<double> labels = init_from_labels(model, {{1, 2}, {5}}, 4, rng, 10);
    EXPECT_LT((labels.row(0) - 0.5 * (wte.row(1) + wte.row(2))).norm(), 1e-15);
    EXPECT_EQ((labels.row(1) - wte.row(5)).norm(), 0.0);
    const Mat<double> normal = init_normal<double>(200, 16, 0.5, rng);
    EXPECT_NEAR(std::sqrt(normal.squaredNorm() / double(normal.size())), 0.5, 0.02);
    const Mat<double> uniform = init_uniform<double>(10, 16, 0.25, rng);
    EXPECT_LE(uniform.cwiseAbs().maxCoeff(), 0.25);
    EXPECT_THROW(init_from_text(model, {}, 3), ConfigError);
    EXPECT_THROW(init_from_labels(model, {{1}, {2}, {3}}, 2, rng), ConfigError);
    EXPECT_THROW(PromptTuning<double>(g.config, Mat<double>::Zero(3, 7)), ShapeError);
}

TEST(Summary, CountsLikePeft) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    PromptTuning<float> method(g.config, Mat<float>::Zero(3, g.config.dim));
    const ParameterSummary s = summarize(method, model);
    Index frozen = 0;
    for (const auto& [name, tensor] : g.tensors) frozen += tensor.size();
    EXPECT_EQ(s.trainable, 3 * g.config.dim);
    EXPECT_EQ(s.total, s.trainable + frozen);
    const std::string text = s.to_string();
    EXPECT_EQ(text.rfind("trainable params: 48 || all params: ", 0), 0u) << text;
    EXPECT_NE(text.find("trainable%: "), std::string::npos);
}

}  // namespace

namespace {

// PEFT's module regular expressions match as Python's re.fullmatch does; the expectations are
// Python 3.11's, and the patterns the forms PEFT configs use (escaped dots, \d+, alternation, a
// negative lookahead to exclude a vision tower, the (.*\.)? prefix of rank_pattern keys).
TEST(ModuleRegex, MatchesLikePythonsFullmatch) {
    const std::vector<std::pair<std::string, std::vector<std::pair<std::string, bool>>>> cases = {
        {R"(model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj)",
         {{"model.layers.0.self_attn.q_proj", true},
          {"model.layers.12.self_attn.o_proj", true},
          {"model.layers.x.self_attn.q_proj", false},
          {"model.layers.0.self_attn.q_proj2", false},
          {"model.layers.0.mlp.up_proj", false}}},
        {R"(.*\.(q_proj|v_proj))",
         {{"model.layers.0.self_attn.q_proj", true},
          {"q_proj", false},
          {"a.v_proj", true},
          {"a.k_proj", false}}},
        {R"(^(?!.*vision).*(q_proj|v_proj)$)",
         {{"language_model.layers.0.q_proj", true},
          {"vision_tower.layers.0.q_proj", false},
          {"x.v_proj", true}}},
        {R"((.*\.)?(layers.1.self_attn.q_proj))",
         {{"model.layers.1.self_attn.q_proj", true},
          {"model.layers.11.self_attn.q_proj", false},
          {"layers.1.self_attn.q_proj", true},
          {"model.layersX1.self_attn.q_proj", true}}},
        {R"(transformer\.h\.[0-3]\.attn\.c_(attn|proj))",
         {{"transformer.h.0.attn.c_attn", true},
          {"transformer.h.4.attn.c_attn", false},
          {"transformer.h.3.attn.c_proj", true}}},
        {R"([^.]+\.h\.\d{1,2}\.attn\.c_attn)",
         {{"transformer.h.10.attn.c_attn", true},
          {"transformer.h.100.attn.c_attn", false},
          {"a.b.h.1.attn.c_attn", false}}},
        {R"((?:a|ab)+c?)",
         {{"ababa", true}, {"abc", true}, {"ac", true}, {"b", false}, {"", false}}},
        {R"(x*)", {{"", true}, {"xxx", true}, {"xy", false}}},
        {R"([\w.]+_proj)", {{"model.layers.0.q_proj", true}, {"q-proj", false}}},
        {R"((a*)*b)", {{"aaaaaaaaaaaaaaaaaaaab", true}, {"aaaaaaaaaab", true}}},
        {R"(a{2,3})", {{"a", false}, {"aa", true}, {"aaa", true}, {"aaaa", false}}},
        {R"(a{2,})", {{"a", false}, {"aaaaa", true}}},
        {R"(\s?q\S)", {{"qx", true}, {" qx", true}, {"q ", false}}},
    };
    for (const auto& [pattern, texts] : cases) {
        const ModuleRegex re(pattern);
        for (const auto& [text, want] : texts)
            EXPECT_EQ(re.full_match(text), want) << pattern << " on '" << text << "'";
    }
    // What it does not read is an error naming the pattern; so is runaway backtracking.
    for (const char* bad : {"(a", "a)", "a**", R"(\p{L})", "[z-a]", "(?P<x>a)", "*a", "a{3,1}"}) {
        try {
            ModuleRegex re(bad);
            ADD_FAILURE() << bad << " was accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
                << e.what();
        }
    }
    std::size_t budget = 100'000;
    EXPECT_THROW(ModuleRegex("(a*)*c").full_match(std::string(40, 'a'), budget), ConfigError);
    EXPECT_EQ(budget, 0u);
    // Repetitions that nest millions deep are refused, not a stack overflow.
    EXPECT_THROW(ModuleRegex("(?:(?:){9999}){9999}").full_match("x"), ConfigError);
    std::string many;
    for (int i = 0; i < 5000; ++i) many += "a?";
    EXPECT_THROW(ModuleRegex(many).full_match(std::string(5000, 'a')), ConfigError);
}

}  // namespace
