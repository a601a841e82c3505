// Adapter files: PEFT-format save and load for every method (bit-exact reloads, an independent
// standard-library Python reader of the files), checks against the model, atomic writes, and the
// training-state file (a run resumed from disk equals an uninterrupted one bit for bit).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "golden_model.hpp"

namespace {

using namespace softprompt;
using namespace softprompt::peft;
using softprompt::testing::Golden;
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("softprompt_adapter_test_" + name);
    fs::remove_all(dir);
    return dir;
}

template <class Arch>
Mat<float> logits_with(const nn::Model<Arch, float>& model, const nn::TokenBatch& batch,
                       Method<float>* method) {
    autograd::Tape<float> t;
    std::vector<autograd::Param<float>*> params;
    if (method) params = method->parameters();
    const EvaluationOnly<float> eval_only(params);
    return nn::forward(t, model, batch, method ? method->input(t) : nn::AdapterInput<float>{},
                       nn::LogitsRequest::kRealPositions)
        .logits.value();
}

bool bit_equal(const Mat<float>& a, const Mat<float>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

// Runs tests/reference/check_adapter.py (standard library only) when a python3 exists.
void expect_python_reader_accepts(const fs::path& dir, const nlohmann::json& expected) {
    if (std::system("python3 -c 'import json, struct' >/dev/null 2>&1") != 0) {
        GTEST_SKIP() << "python3 not found: the independent reader was not run";
    }
    const fs::path script = fs::path(softprompt::testing::test_data_dir()).parent_path() /
                            "reference" / "check_adapter.py";
    std::string arg = expected.dump();
    std::string quoted = "'";
    for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    quoted += "'";
    const std::string command =
        "python3 '" + script.string() + "' '" + dir.string() + "' " + quoted;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

nlohmann::json config_of(const fs::path& dir) {
    std::ifstream in(dir / kAdapterConfig);
    return nlohmann::json::parse(in);
}

TEST(AdapterFiles, PromptTuningRoundTripsBitExactly) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    Rng rng(1);
    PromptTuning<float> method(g.config, init_normal<float>(5, g.config.dim, 1.0, rng));
    const fs::path dir = fresh_dir("prompt");
    save_adapter(dir.string(), method, model, "stories260K");
    const LoadedAdapter loaded = load_adapter(dir.string(), g.config);
    EXPECT_EQ(loaded.kind, MethodKind::kPromptTuning);
    EXPECT_TRUE(bit_equal(loaded.prompt_embeddings, method.embeddings().value()));
    auto reloaded = prompt_method<nn::Llama>(loaded, g.config);
    EXPECT_TRUE(bit_equal(logits_with(model, g.batch, reloaded.get()),
                          logits_with(model, g.batch, &method)));
    const nlohmann::json config = config_of(dir);
    EXPECT_EQ(config["base_model_name_or_path"], "stories260K");
    expect_python_reader_accepts(dir, {{"tensors", {{"prompt_embeddings", {5, g.config.dim}}}},
                                       {"config",
                                        {{"peft_type", "PROMPT_TUNING"},
                                         {"task_type", "CAUSAL_LM"},
                                         {"num_virtual_tokens", 5},
                                         {"token_dim", g.config.dim},
                                         {"num_layers", g.config.n_layers},
                                         {"num_attention_heads", g.config.n_heads},
                                         {"num_transformer_submodules", 1},
                                         {"inference_mode", true}}}});
    fs::remove_all(dir);
}

// prompt_tuning_init says how the embeddings began, as PEFT writes it, and survives a reload: PEFT
// runs TEXT again when it loads, so a TEXT adapter without a tokenizer name is refused on save.
TEST(AdapterFiles, PromptTuningRecordsItsInitialisation) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    Rng rng(4);
    const fs::path dir = fresh_dir("prompt_init");
    auto saved_init = [&](const PromptInit& init, const std::string& base_model) {
        PromptTuning<float> method(g.config, init_normal<float>(3, g.config.dim, 1.0, rng), init);
        save_adapter(dir.string(), method, model, base_model);
        return config_of(dir);
    };
    EXPECT_EQ(saved_init({}, "").at("prompt_tuning_init"), "RANDOM");
    EXPECT_EQ(saved_init({.kind = PromptInit::Kind::kSampleVocab}, "").at("prompt_tuning_init"),
              "SAMPLE_VOCAB");
    const nlohmann::json text =
        saved_init({.kind = PromptInit::Kind::kText, .text = "Classify:"}, "tiny-llama");
    EXPECT_EQ(text.at("prompt_tuning_init"), "TEXT");
    EXPECT_EQ(text.at("prompt_tuning_init_text"), "Classify:");
    EXPECT_EQ(text.at("tokenizer_name_or_path"), "tiny-llama");
    // Reloaded and saved again: the same record.
    const auto reloaded = prompt_method<nn::Llama>(load_adapter(dir.string(), g.config), g.config);
    EXPECT_EQ(static_cast<PromptTuning<float>&>(*reloaded).init().text, "Classify:");
    const fs::path again = fresh_dir("prompt_init_again");
    save_adapter(again.string(), *reloaded, model, "tiny-llama");
    EXPECT_EQ(config_of(again), text);
    EXPECT_THROW(saved_init({.kind = PromptInit::Kind::kText, .text = "Classify:"}, ""),
                 ConfigError);
    fs::remove_all(dir);
    fs::remove_all(again);
}

TEST(AdapterFiles, ReparameterisedPrefixIsSavedFoldedWithGqaWidths) {
    const Golden<float> g("golden_llama_gqa.json");  // 4 query heads, 2 KV heads
    const auto model = g.model<nn::Llama>();
    Rng rng(2);
    PrefixTuning<float> method(
        g.config, {.num_virtual_tokens = 3, .projection = true, .encoder_hidden_size = 7}, rng);
    const fs::path dir = fresh_dir("prefix");
    save_adapter(dir.string(), method, model);
    const LoadedAdapter loaded = load_adapter(dir.string(), g.config);
    EXPECT_TRUE(bit_equal(loaded.prompt_embeddings, method.fold()));
    auto reloaded = prompt_method<nn::Llama>(loaded, g.config);
    EXPECT_TRUE(bit_equal(logits_with(model, g.batch, reloaded.get()),
                          logits_with(model, g.batch, &method)));
    const Index width = g.config.n_layers * 2 * g.config.kv_dim();
    expect_python_reader_accepts(dir, {{"tensors", {{"prompt_embeddings", {3, width}}}},
                                       {"config",
                                        {{"peft_type", "PREFIX_TUNING"},
                                         {"num_virtual_tokens", 3},
                                         {"token_dim", g.config.kv_dim()},
                                         {"num_attention_heads", g.config.n_kv_heads},
                                         {"num_layers", g.config.n_layers},
                                         {"prefix_projection", false}}}});
    fs::remove_all(dir);
}

TEST(AdapterFiles, PTuningStoresTheEncoderOutput) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    Rng rng(3);
    PTuning<float> method(g.config,
                          {.num_virtual_tokens = 4,
                           .encoder = PromptEncoderType::kLstm,
                           .encoder_hidden_size = 6,
                           .encoder_num_layers = 1},
                          rng);
    const fs::path dir = fresh_dir("ptuning");
    save_adapter(dir.string(), method, model);
    const LoadedAdapter loaded = load_adapter(dir.string(), g.config);
    EXPECT_EQ(loaded.kind, MethodKind::kPTuning);
    auto reloaded = prompt_method<nn::Gpt2>(loaded, g.config);
    EXPECT_TRUE(bit_equal(logits_with(model, g.batch, reloaded.get()),
                          logits_with(model, g.batch, &method)));
    EXPECT_EQ(config_of(dir)["encoder_reparameterization_type"], "LSTM");
    fs::remove_all(dir);
}

TEST(AdapterFiles, LoraRoundTripsWithPeftKeys) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    Rng rng(4);
    Lora<nn::Gpt2, float> method(
        g.config,
        {.rank = 2, .alpha = 4, .query = true, .key = false, .value = false, .output = true}, rng);
    for (auto& u : method.updates()) u.b->value().setRandom();
    const fs::path dir = fresh_dir("lora");
    save_adapter(dir.string(), method, model);
    const LoadedAdapter loaded = load_adapter(dir.string(), g.config);
    auto reloaded = lora_method<nn::Gpt2>(loaded, g.config);
    EXPECT_TRUE(bit_equal(logits_with(model, g.batch, reloaded.get()),
                          logits_with(model, g.batch, &method)));
    nlohmann::json tensors;
    const Index d = g.config.dim;
    for (Index l = 0; l < g.config.n_layers; ++l) {
        // GPT2LMHeadModel's module path, as PEFT's get_peft_model_state_dict writes it.
        const std::string p = "base_model.model.transformer.h." + std::to_string(l) + ".attn.";
        tensors[p + "c_attn.lora_A.weight"] = {2, d};
        tensors[p + "c_attn.lora_B.weight"] = {2 * 0 + 3 * d, 2};
        tensors[p + "c_proj.lora_A.weight"] = {2, d};
        tensors[p + "c_proj.lora_B.weight"] = {d, 2};
    }
    // "attn.c_proj": PEFT's suffix match on "c_proj" alone would also adapt mlp.c_proj.
    expect_python_reader_accepts(dir, {{"tensors", tensors},
                                       {"config",
                                        {{"peft_type", "LORA"},
                                         {"r", 2},
                                         {"lora_alpha", 4.0},
                                         {"fan_in_fan_out", true},
                                         {"use_rslora", false},
                                         {"target_modules", {"attn.c_proj", "c_attn"}}}}});
    // Keys without "transformer." (what softprompt 0.1 wrote) still load.
    {
        const io::SafetensorsFile file((dir / kAdapterWeights).string());
        std::map<std::string, io::TensorSource> old;
        std::vector<Mat<float>> keep;
        keep.reserve(file.names().size());
        for (const std::string& name : file.names()) {
            keep.push_back(file.matrix<float>(name));
            std::string legacy = name;
            legacy.erase(legacy.find("transformer."), std::string("transformer.").size());
            old.emplace(legacy, io::TensorSource(keep.back()));
        }
        io::write_safetensors((dir / kAdapterWeights).string(), old, {{"format", "pt"}});
        auto legacy = lora_method<nn::Gpt2>(load_adapter(dir.string(), g.config), g.config);
        EXPECT_TRUE(bit_equal(logits_with(model, g.batch, legacy.get()),
                              logits_with(model, g.batch, &method)));
    }
    // PEFT's "c_proj" also adapts the feed-forward's mlp.c_proj: such a file names what is not
    // supported.
    {
        const Mat<float> extra = Mat<float>::Ones(2, g.config.dim);
        std::map<std::string, io::TensorSource> more;
        more.emplace("base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight",
                     io::TensorSource(extra));
        const io::SafetensorsFile file((dir / kAdapterWeights).string());
        std::vector<Mat<float>> keep;
        keep.reserve(file.names().size());
        for (const std::string& name : file.names()) {
            keep.push_back(file.matrix<float>(name));
            more.emplace(name, io::TensorSource(keep.back()));
        }
        io::write_safetensors((dir / kAdapterWeights).string(), more, {{"format", "pt"}});
        try {
            (void)lora_method<nn::Gpt2>(load_adapter(dir.string(), g.config), g.config);
            ADD_FAILURE() << "an mlp.c_proj tensor was accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("tensor 'base_model.model.transformer.h.0.mlp."
                                                 "c_proj.lora_A.weight' (1 in all) matches no "
                                                 "adapted module"),
                      std::string::npos)
                << e.what();
            EXPECT_NE(std::string(e.what()).find("feed-forward"), std::string::npos) << e.what();
        }
    }
    fs::remove_all(dir);
}

// use_rslora scales by α/√r: the same matrices with α·√r/r and plain scaling give the same
// logits. Config fields that would change the computation in ways not implemented are refused,
// naming the field; fields that only describe training are accepted.
TEST(AdapterFiles, LoraHonoursRsLoraAndRefusesWhatItCannotCompute) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    Rng rng(9);
    const Index r = 4;
    Lora<nn::Llama, float> method(
        g.config, {.rank = r, .alpha = 8, .query = true, .value = true, .rslora = true}, rng);
    for (auto& u : method.updates()) u.b->value().setRandom();
    EXPECT_FLOAT_EQ(method.scale(), 8.0f / 2.0f);
    const fs::path dir = fresh_dir("rslora");
    save_adapter(dir.string(), method, model);
    const nlohmann::json saved = config_of(dir);
    EXPECT_EQ(saved.at("use_rslora"), true);
    const Mat<float> rs =
        logits_with(model, g.batch,
                    lora_method<nn::Llama>(load_adapter(dir.string(), g.config), g.config).get());
    EXPECT_TRUE(bit_equal(rs, logits_with(model, g.batch, &method)));
    auto with_config = [&](const std::function<void(nlohmann::json&)>& edit) {
        nlohmann::json c = saved;
        edit(c);
        std::ofstream(dir / kAdapterConfig) << c.dump();
        return lora_method<nn::Llama>(load_adapter(dir.string(), g.config), g.config);
    };
    {
        auto plain = with_config([&](nlohmann::json& c) {
            c["use_rslora"] = false;
            c["lora_alpha"] = 8.0 * std::sqrt(double(r));
        });
        const Mat<float> got = logits_with(model, g.batch, plain.get());
        EXPECT_LE((got - rs).cwiseAbs().maxCoeff(), 1e-5f);
        auto unscaled = with_config([&](nlohmann::json& c) { c["use_rslora"] = false; });
        EXPECT_GT((logits_with(model, g.batch, unscaled.get()) - rs).cwiseAbs().maxCoeff(), 1e-4f)
            << "α/r and α/√r differ";
    }
    // Training-only fields, and newer PEFT's fields at their defaults, load.
    EXPECT_NO_THROW(with_config([](nlohmann::json& c) {
        c["lora_dropout"] = 0.1;
        c["init_lora_weights"] = "gaussian";
        c["use_qalora"] = false;
        c["qalora_group_size"] = 16;
        c["use_dora"] = false;
        c["rank_pattern"] = nlohmann::json::object();
        c["modules_to_save"] = nullptr;
        c["layers_to_transform"] = nullptr;
    }));
    const std::pair<const char*, nlohmann::json> refused[] = {
        {"use_dora", true},           {"use_qalora", true}, {"modules_to_save", {"lm_head"}},
        {"layers_to_transform", {0}}, {"lora_bias", true},  {"bias", "all"}};
    for (const auto& [key, value] : refused) {
        try {
            with_config([&](nlohmann::json& c) { c[key] = value; });
            ADD_FAILURE() << key << " was accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(std::string("field '") + key + "'"),
                      std::string::npos)
                << e.what();
        }
    }
    fs::remove_all(dir);
}

// PEFT's per-module ranks and alphas and a regular-expression target_modules, with and without
// rsLoRA: saved as PEFT writes them, reloaded, and the logits equal a float64 reference that adds
// s·B·A to each adapted weight, with the rank and alpha of each module spelled out here.
template <class Arch>
void expect_patterns_give_the_float64_reference(
    const std::string& golden, LoraOptions options,
    const std::function<Index(const std::string&)>& rank_of,
    const std::function<double(const std::string&)>& alpha_of, std::size_t updates) {
    const Golden<float> g(golden);
    const Golden<double> g64(golden);
    const auto model = g.model<Arch>();
    for (const bool rslora : {false, true}) {
        options.rslora = rslora;
        Rng rng(21);
        Lora<Arch, float> method(g.config, options, rng);
        ASSERT_EQ(method.updates().size(), updates);
        for (auto& u : method.updates()) {
            u.b->value() = init_normal<float>(u.b->value().rows(), u.b->value().cols(), 1.0, rng);
            const std::string full = Arch::kHfModelPrefix + u.module;
            EXPECT_EQ(u.a->value().rows(), rank_of(full)) << full;
        }
        const fs::path dir = fresh_dir("patterns");
        save_adapter(dir.string(), method, model);
        const nlohmann::json saved = config_of(dir);
        EXPECT_EQ(saved.at("target_modules"), options.target_regex);
        for (const auto& [pattern, r] : options.rank_pattern)
            EXPECT_EQ(saved.at("rank_pattern").at(pattern), r);
        for (const auto& [pattern, alpha] : options.alpha_pattern)
            EXPECT_EQ(saved.at("alpha_pattern").at(pattern), alpha);
        const Mat<float> got =
            logits_with(model, g.batch,
                        lora_method<Arch>(load_adapter(dir.string(), g.config), g.config).get());

        // The reference: each adapted weight replaced by W + s·B·A in double.
        auto reference = g64.template model<Arch>();
        std::vector<Mat<double>> owned;
        owned.reserve(method.updates().size());
        for (const auto& u : method.updates()) {
            const std::string full = Arch::kHfModelPrefix + u.module;
            const double r = double(rank_of(full));
            const double s = alpha_of(full) / (rslora ? std::sqrt(r) : r);
            const Mat<double> delta =
                s * (u.b->value().template cast<double>() * u.a->value().template cast<double>());
            Weight<double>& w =
                *Arch::lora_target(reference.weights.layers[std::size_t(u.layer)], u.slot);
            owned.push_back(w.view());
            if (Arch::kConv1dWeights)
                owned.back() += delta.transpose();
            else
                owned.back() += delta;
            w = Weight<double>{owned.back().data(), w.rows, w.cols};
        }
        autograd::Tape<double> t;
        const Mat<double> want =
            nn::forward(t, reference, g64.batch, {}, nn::LogitsRequest::kRealPositions)
                .logits.value();
        EXPECT_LT((got.template cast<double>() - want).cwiseAbs().maxCoeff(), 1e-4)
            << golden << (rslora ? " with rsLoRA" : "");
        autograd::Tape<double> t0;
        EXPECT_GT((nn::forward(t0, g64.template model<Arch>(), g64.batch, {},
                               nn::LogitsRequest::kRealPositions)
                       .logits.value() -
                   want)
                      .cwiseAbs()
                      .maxCoeff(),
                  1e-3)
            << "the updates change nothing";
        fs::remove_all(dir);
    }
}

TEST(AdapterFiles, LoraRankAndAlphaPatternsAndRegexTargetsGiveTheFloat64Reference) {
    // LLaMA: q, v and o of every layer; layer 1's q_proj rank 3 and every o_proj rank 1; v_proj
    // alpha 8. The first matching pattern wins: "layers.1.self_attn.q_proj" before "q_proj".
    LoraOptions llama{.rank = 2, .alpha = 4};
    llama.target_regex = R"(model\.layers\.\d+\.self_attn\.(q|v|o)_proj)";
    llama.rank_pattern = {{"layers.1.self_attn.q_proj", 3}, {"q_proj", 5}, {"o_proj", 1}};
    llama.alpha_pattern = {{"v_proj", 8}};
    expect_patterns_give_the_float64_reference<nn::Llama>(
        "golden_llama_gqa.json", llama,
        [](const std::string& m) -> Index {
            if (m == "model.layers.1.self_attn.q_proj") return 3;
            if (m.ends_with("q_proj")) return 5;
            return m.ends_with("o_proj") ? 1 : 2;
        },
        [](const std::string& m) { return m.ends_with("v_proj") ? 8.0 : 4.0; }, 6);
    // GPT-2: only layer 0's c_attn and every attention c_proj, through the full names
    // GPT2LMHeadModel gives them ("transformer.h.0.attn.c_attn").
    LoraOptions gpt2{.rank = 2, .alpha = 2};
    gpt2.target_regex = R"(transformer\.h\.(0\.attn\.c_attn|\d+\.attn\.c_proj))";
    gpt2.rank_pattern = {{"h.1.attn.c_proj", 4}};
    gpt2.alpha_pattern = {{"c_attn", 6}};
    expect_patterns_give_the_float64_reference<nn::Gpt2>(
        "golden_gpt2.json", gpt2,
        [](const std::string& m) -> Index { return m == "transformer.h.1.attn.c_proj" ? 4 : 2; },
        [](const std::string& m) { return m.ends_with("c_attn") ? 6.0 : 2.0; }, 3);

    // Bad patterns are errors that name them.
    const Golden<float> g("golden_llama_gqa.json");
    Rng rng(1);
    LoraOptions none{.rank = 2, .alpha = 4};
    none.target_regex = "lm_head";
    EXPECT_THROW((Lora<nn::Llama, float>(g.config, none, rng)), ConfigError);
    LoraOptions broken{.rank = 2, .alpha = 4};
    broken.rank_pattern = {{"q_proj(", 3}};
    try {
        Lora<nn::Llama, float> lora(g.config, broken, rng);
        ADD_FAILURE() << "a broken pattern was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("rank_pattern 'q_proj('"), std::string::npos)
            << e.what();
    }
}

// PEFT-format fixtures (tests/reference/make_peft_fixtures.py: the files PEFT 0.19.1 writes, byte
// layout included, with float64 logits from an implementation of Hugging Face's modeling code) of
// every method on GPT-2 and LLaMA: each loads and gives its logits within 1e-4, and the same method
// saved by save_adapter carries exactly the fixture's config (every field and value) and its
// tensor names and shapes.
TEST(PeftFixtures, LoadWithTheirLogitsAndSaveAsPeftDoes) {
    const fs::path root = softprompt::testing::test_data_dir() / "peft";
    std::ifstream in(root / "expected.json");
    ASSERT_TRUE(in) << "missing " << (root / "expected.json");
    const nlohmann::json expected = nlohmann::json::parse(in);
    EXPECT_EQ(expected.size(), 10u);
    for (const auto& [folder, e] : expected.items()) {
        SCOPED_TRACE(folder);
        const Golden<float> g(e.at("golden").get<std::string>());
        const fs::path dir = root / folder;
        const Mat<float> want = softprompt::testing::tensor_of<float>(e.at("logits"));
        const nlohmann::json fixture_config = config_of(dir);
        auto check = [&](auto arch) {
            using Arch = decltype(arch);
            const auto model = g.model<Arch>();
            const LoadedAdapter loaded = load_adapter(dir.string(), g.config);
            std::unique_ptr<Method<float>> method;
            if (loaded.kind == MethodKind::kLora)
                method = lora_method<Arch>(loaded, g.config);
            else
                method = prompt_method<Arch>(loaded, g.config);
            EXPECT_LT((logits_with(model, g.batch, method.get()) - want).cwiseAbs().maxCoeff(),
                      1e-4f);
            // Saved again. P-tuning serves as its stored output; its own method saves the same
            // fields and shapes.
            Rng rng(1);
            if (loaded.kind == MethodKind::kPTuning)
                method = std::make_unique<PTuning<float>>(
                    g.config,
                    PTuningOptions{.num_virtual_tokens = loaded.prompt_embeddings.rows(),
                                   .encoder = PromptEncoderType::kMlp,
                                   .encoder_hidden_size =
                                       fixture_config.at("encoder_hidden_size").get<Index>(),
                                   .encoder_num_layers = 2},
                    rng);
            const fs::path out = fresh_dir("fixture_" + folder);
            save_adapter(out.string(), *method, model,
                         fixture_config.at("base_model_name_or_path").get<std::string>());
            EXPECT_EQ(config_of(out), fixture_config);
            const io::SafetensorsFile theirs((dir / kAdapterWeights).string());
            const io::SafetensorsFile ours((out / kAdapterWeights).string());
            EXPECT_EQ(ours.names(), theirs.names());
            for (const std::string& name : theirs.names())
                if (ours.contains(name)) {
                    EXPECT_EQ(ours.info(name).shape, theirs.info(name).shape) << name;
                    EXPECT_EQ(ours.info(name).dtype, theirs.info(name).dtype) << name;
                }
            EXPECT_EQ(ours.metadata(), theirs.metadata());
            fs::remove_all(out);
        };
        if (e.at("family") == "gpt2")
            check(nn::Gpt2{});
        else
            check(nn::Llama{});
    }
}

TEST(AdapterFiles, LoadingChecksTheModelAndTheFiles) {
    const Golden<float> gpt2("golden_gpt2.json"), llama("golden_llama_gqa.json");
    const auto model = gpt2.model<nn::Gpt2>();
    PromptTuning<float> method(gpt2.config, Mat<float>::Ones(2, gpt2.config.dim));
    const fs::path dir = fresh_dir("checks");
    save_adapter(dir.string(), method, model);

    nn::Config wider = gpt2.config;
    wider.dim = 24;
    wider.n_heads = 4;
    try {
        load_adapter(dir.string(), wider);
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("token_dim is 16 but the model needs 24"),
                  std::string::npos)
            << e.what();
    }
    nlohmann::json config = config_of(dir);
    config["surprise"] = 1;
    std::ofstream(dir / kAdapterConfig) << config.dump();
    try {
        load_adapter(dir.string(), gpt2.config);
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("unknown field 'surprise'"), std::string::npos)
            << e.what();
    }
    config.erase("surprise");
    std::ofstream(dir / kAdapterConfig) << config.dump();
    { std::ofstream(dir / kAdapterWeights, std::ios::binary | std::ios::trunc) << "garbage"; }
    EXPECT_THROW(load_adapter(dir.string(), gpt2.config), FormatError);
    EXPECT_THROW(load_adapter((dir / "missing").string(), gpt2.config), IoError);
    fs::remove_all(dir);
}

// A PyTorch-pickle adapter (adapter_model.bin, what PEFT wrote before safetensors) is refused with
// the way to convert it; nothing in it is read.
TEST(AdapterFiles, PickleWeightsAreRefusedWithTheWayToConvertThem) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    PromptTuning<float> method(g.config, Mat<float>::Ones(2, g.config.dim));
    const fs::path dir = fresh_dir("pickle");
    save_adapter(dir.string(), method, model);
    fs::rename(dir / kAdapterWeights, dir / "adapter_model.bin");
    try {
        (void)load_adapter(dir.string(), g.config);
        ADD_FAILURE() << "adapter_model.bin was read";
    } catch (const IoError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("adapter_model.bin"), std::string::npos) << what;
        EXPECT_NE(what.find("save_file("), std::string::npos) << what;
    }
    fs::remove_all(dir);
}

TEST(AdapterFiles, AFailedSaveLeavesThePreviousAdapterWhole) {
    const Golden<float> g("golden_gpt2.json");
    const auto model = g.model<nn::Gpt2>();
    PromptTuning<float> first(g.config, Mat<float>::Ones(2, g.config.dim));
    const fs::path dir = fresh_dir("atomic");
    save_adapter(dir.string(), first, model);
    // The config cannot be replaced (a folder squats its name): the save fails part-way.
    PromptTuning<float> second(g.config, Mat<float>::Zero(2, g.config.dim));
    const std::string config_text = [&] {
        std::ifstream in(dir / kAdapterConfig);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }();
    fs::remove(dir / kAdapterWeights);
    fs::create_directory(dir / kAdapterWeights);
    EXPECT_THROW(save_adapter(dir.string(), second, model), IoError);
    for (const auto& entry : fs::directory_iterator(dir))
        EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
            << "temporary file left behind: " << entry.path();
    std::ifstream in(dir / kAdapterConfig);
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()),
              config_text);
    fs::remove_all(dir);
}

// One registry, six adapters from their PEFT folders (prompt tuning, prefix tuning, P-tuning, and
// two LoRA adapters, one rank-stabilised), and a batch of 8 rows mixing them with rows of no
// adapter. Each row's logits equal the row's alone within 1e-5, its greedy tokens equal the row's
// alone, and a LoRA row (applied per row on the shared weights) equals both the training forward
// pass of its method and generation on the method's merged copy of the model.
template <class Arch>
void expect_mixed_batch_equals_each_row_alone(const Golden<float>& g, const std::string& tag) {
    const auto model = g.model<Arch>();
    const nn::Config& c = g.config;
    Rng rng(7);
    const fs::path root = fresh_dir("registry_" + tag);
    PromptTuning<float> prompt(c, init_normal<float>(4, c.dim, 1.0, rng));
    PrefixTuning<float> prefix(c, init_normal<float>(3, c.n_layers * 2 * c.kv_dim(), 1.0, rng));
    PTuning<float> ptuning(c, {.num_virtual_tokens = 2, .encoder_hidden_size = 8}, rng);
    const bool gpt2 = Arch::kFusedQkv;
    Lora<Arch, float> lora_a(c, {.rank = 2, .alpha = 4, .output = true}, rng);
    Lora<Arch, float> lora_b(
        c, {.rank = 3, .alpha = 3, .key = !gpt2, .value = !gpt2, .rslora = true}, rng);
    for (auto* lora : {&lora_a, &lora_b})
        for (auto& u : lora->updates())
            u.b->value() = init_normal<float>(u.b->value().rows(), u.b->value().cols(), 1.0, rng);
    const std::vector<std::pair<std::string, Method<float>*>> methods = {{"prompt", &prompt},
                                                                         {"prefix", &prefix},
                                                                         {"ptuning", &ptuning},
                                                                         {"lora_a", &lora_a},
                                                                         {"lora_b", &lora_b}};
    Registry<Arch> registry(model);
    for (const auto& [name, method] : methods) {
        save_adapter((root / name).string(), *method, model);
        EXPECT_EQ(registry.add_folder((root / name).string()).name, name);
    }
    // A method registered in process serves as its saved folder does.
    registry.add("lora_a_live", lora_a);
    EXPECT_EQ(registry.size(), methods.size() + 1);
    EXPECT_THROW(registry.add_folder((root / "prompt").string()), Error);  // the name is taken

    // 8 rows: none, prompt, prefix, P-tuning, LoRA a, LoRA b, LoRA a again, none.
    const std::vector<std::string> adapter_of = {"",       "prompt", "prefix", "ptuning",
                                                 "lora_a", "lora_b", "lora_a", ""};
    std::vector<typename Registry<Arch>::Request> rows;
    for (std::size_t i = 0; i < adapter_of.size(); ++i) {
        typename Registry<Arch>::Request r;
        for (std::size_t j = 0; j < 2 + i % 3; ++j)
            r.generation.prompt.push_back(
                std::int32_t((7 * i + 3 * j + 1) % std::size_t(c.vocab_size)));
        r.generation.max_new_tokens = 5;
        r.adapter = adapter_of[i];
        rows.push_back(std::move(r));
    }
    const auto mixed = registry.generate(rows);
    ASSERT_EQ(mixed.size(), rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i)
        EXPECT_EQ(mixed[i].tokens, registry.generate({rows[i]})[0].tokens)
            << "row " << i << " (" << (adapter_of[i].empty() ? "none" : adapter_of[i]) << ")";
    typename Registry<Arch>::Request live = rows[4];
    live.adapter = "lora_a_live";
    EXPECT_EQ(registry.generate({live})[0].tokens, mixed[4].tokens);

    // Logits of the prefill: each row in the mixed batch against itself alone.
    auto sequence_of = [&](std::size_t i) {
        nn::Sequence<float> s;
        if (adapter_of[i].empty()) return s;
        const auto& e = registry.at(adapter_of[i]);
        if (e.kind == MethodKind::kLora)
            s.lora = &e.lora;
        else
            s.prompt = &e.cache;
        return s;
    };
    std::vector<nn::Sequence<float>> together;
    std::vector<std::vector<std::int32_t>> feed;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        together.push_back(sequence_of(i));
        feed.push_back(rows[i].generation.prompt);
    }
    std::vector<nn::Sequence<float>*> all;
    for (auto& s : together) all.push_back(&s);
    const Mat<float> batch_logits =
        nn::advance(model, std::span<nn::Sequence<float>* const>(all), feed);
    std::vector<Mat<float>> alone_logits;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        nn::Sequence<float> s = sequence_of(i);
        nn::Sequence<float>* one[] = {&s};
        alone_logits.push_back(
            nn::advance(model, std::span<nn::Sequence<float>* const>(one), {feed[i]}));
        EXPECT_LT((batch_logits.row(Index(i)) - alone_logits.back()).cwiseAbs().maxCoeff(), 1e-5)
            << "row " << i;
    }
    // The LoRA rows: the training forward pass of the method, and the merged model.
    for (std::size_t i : {std::size_t(4), std::size_t(5)}) {
        Lora<Arch, float>& lora = i == 4 ? lora_a : lora_b;
        nn::TokenBatch one;
        one.batch = 1;
        one.seq = Index(feed[i].size());
        one.ids = feed[i];
        const Mat<float> trained = logits_with(model, one, &lora);
        EXPECT_LT((trained.bottomRows(1) - alone_logits[i]).cwiseAbs().maxCoeff(), 1e-5)
            << "row " << i;
        nn::Sequence<float> base;
        nn::Sequence<float>* b[] = {&base};
        EXPECT_GT((nn::advance(model, std::span<nn::Sequence<float>* const>(b), {feed[i]}) -
                   alone_logits[i])
                      .cwiseAbs()
                      .maxCoeff(),
                  1e-3)
            << "the update of row " << i << " changes nothing";
        nn::GenerationRequest<float> request = rows[i].generation;
        EXPECT_EQ(nn::generate(lora.merge(model), {request})[0].tokens, mixed[i].tokens)
            << "row " << i;
    }

    typename Registry<Arch>::Request unknown = rows[0];
    unknown.adapter = "missing";
    EXPECT_THROW(registry.generate({unknown}), ConfigError);
    // LoRA weights of another model's shape are refused, naming the sequence and the layer.
    nn::LoraWeights<float> wrong = registry.at("lora_a").lora;
    wrong.layers[0][0].a = Mat<float>::Zero(2, c.dim + 1);
    nn::Sequence<float> bad;
    bad.lora = &wrong;
    nn::Sequence<float>* bad_one[] = {&bad};
    try {
        nn::advance(model, std::span<nn::Sequence<float>* const>(bad_one), {feed[0]});
        ADD_FAILURE() << "a LoRA update of the wrong width was accepted";
    } catch (const ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("layer 0, slot 0"), std::string::npos) << e.what();
    }
    fs::remove_all(root);
}

TEST(Registry, MixedBatchGivesEachRowItsTokensServedAlone) {
    expect_mixed_batch_equals_each_row_alone<nn::Gpt2>(Golden<float>("golden_gpt2.json"), "gpt2");
    expect_mixed_batch_equals_each_row_alone<nn::Llama>(Golden<float>("golden_llama_gqa.json"),
                                                        "llama_gqa");
}

TEST(TrainingStateFile, ResumingFromDiskEqualsAnUninterruptedRun) {
    const Golden<float> g("golden_llama_gqa.json");
    const auto model = g.model<nn::Llama>();
    train::Dataset data;
    Rng data_rng(9);
    for (int i = 0; i < 12; ++i) {
        std::vector<std::int32_t> input(3);
        for (auto& id : input) id = std::int32_t(data_rng.below(32));
        data.add(train::input_target_example(input, {5}));
    }
    const train::TrainerOptions options{.epochs = 4,
                                        .max_steps = 0,
                                        .batch_size = 4,
                                        .grad_accumulation = 1,
                                        .max_grad_norm = 1.0,
                                        .schedule = optim::LrSchedule::warmup_linear(0.05, 2, 12),
                                        .eval_every = 4,
                                        .patience = 0,
                                        .keep_best = false,
                                        .seed = 3,
                                        .shuffle = true,
                                        .pad_id = 0,
                                        .metrics_csv = {},
                                        .progress = train::ProgressMode::kSilent};
    auto make = [&] {
        Rng rng(5);
        return std::make_unique<PTuning<float>>(g.config,
                                                PTuningOptions{.num_virtual_tokens = 2,
                                                               .encoder = PromptEncoderType::kMlp,
                                                               .encoder_hidden_size = 8,
                                                               .encoder_num_layers = 2},
                                                rng);
    };
    auto a = make();
    optim::AdamW<float> oa(a->parameters(), {});
    train::Trainer<nn::Llama, float> ta(model, *a, oa, options);
    ta.fit(data, &data);

    const fs::path dir = fresh_dir("state");
    fs::create_directories(dir);
    const std::string path = (dir / train::kTrainingState).string();
    {
        auto b = make();
        optim::AdamW<float> ob(b->parameters(), {});
        train::Trainer<nn::Llama, float> tb(model, *b, ob, options);
        tb.fit(data, &data, /*stop_after=*/5);
        train::save_training_state(path, tb.state(), "p-tuning mlp");
    }
    auto c = make();
    optim::AdamW<float> oc(c->parameters(), {});
    train::Trainer<nn::Llama, float> tc(model, *c, oc, options);
    tc.load_state(train::load_training_state(path));
    tc.fit(data, &data);
    const auto pa = a->parameters(), pc = c->parameters();
    for (std::size_t i = 0; i < pa.size(); ++i)
        EXPECT_TRUE(bit_equal(pa[i]->value(), pc[i]->value())) << pa[i]->name();
    EXPECT_THROW(train::load_training_state((dir / "none.safetensors").string()), IoError);
    fs::remove_all(dir);
}

}  // namespace
