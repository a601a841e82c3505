// Every input the fuzz targets (tests/fuzz/) crashed on, kept as a regression test.
//
// Two layers: ReplayEveryCrashInput runs each file under tests/fuzz/regressions/<target>/ through
// the same target function the fuzzer runs (tests/fuzz/targets/<target>.hpp), so a leaked
// exception fails the test and a memory error fails it under the sanitizers; the tests after it
// rebuild each crash input in code and check what the library now does with it (which error
// type, and that the message names the file, the field and what was found).

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/targets/adapter.hpp"
#include "fuzz/targets/bpe_hf_json.hpp"
#include "fuzz/targets/bpe_openai.hpp"
#include "fuzz/targets/dataset.hpp"
#include "fuzz/targets/gguf.hpp"
#include "fuzz/targets/hf_config.hpp"
#include "fuzz/targets/hf_tokenizer.hpp"
#include "fuzz/targets/llama2c.hpp"
#include "fuzz/targets/llama2c_tokenizer.hpp"
#include "fuzz/targets/safetensors.hpp"
#include "fuzz/targets/spm_model.hpp"
#include "fuzz/targets/training_state.hpp"
#include "softprompt/io/hf_config.hpp"
#include "softprompt/io/llama2c.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/peft/adapter_io.hpp"
#include "softprompt/tok/bpe.hpp"
#include "softprompt/tok/hf_tokenizer.hpp"
#include "softprompt/tok/spm.hpp"
#include "softprompt/train/dataset.hpp"
#include "test_paths.hpp"

namespace {

namespace fs = std::filesystem;
using namespace softprompt;

const fs::path kRegressions = softprompt::testing::test_data_dir() / ".." / "fuzz" / "regressions";

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
}

template <class T>
void append(std::string& out, T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));  // the test machines are little-endian, like the formats
    out.append(raw, sizeof(T));
}

/// A folder of its own under the system's temporary folder, removed afterwards.
class TempDir {
public:
    TempDir() : path_(fs::temp_directory_path() / ("softprompt-fuzzreg-" + unique())) {
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    static std::string unique() {
        const auto* t = ::testing::UnitTest::GetInstance()->current_test_info();
        return std::string(t->test_suite_name()) + "-" + t->name() + "-" +
               std::to_string(::getpid());
    }
    fs::path path_;
};

/// A safetensors file of F32 zeros with the given metadata, as the reference writer lays it out.
std::string safetensors_bytes(const std::string& header_json, std::size_t data_bytes) {
    std::string header = header_json;
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string out;
    append<std::uint64_t>(out, header.size());
    return out + header + std::string(data_bytes, '\0');
}

/// tokenizer.bin with the 259 fixed pieces and a declared max_token_length.
std::string llama2c_tokenizer_bytes(std::int32_t max_token_length) {
    std::string out;
    append<std::int32_t>(out, max_token_length);
    auto piece = [&](const std::string& p) {
        append<float>(out, 0.0f);
        append<std::int32_t>(out, std::int32_t(p.size()));
        out += p;
    };
    piece("<unk>");
    piece("\n<s>\n");
    piece("\n</s>\n");
    for (int b = 0; b < 256; ++b) piece(tok::detail::byte_token_piece(b));
    return out;
}

// ------------------------------------------------------------------------------------------------

TEST(FuzzRegression, ReplayEveryCrashInput) {
    const std::map<std::string, std::function<void(std::string_view)>> targets = {
        {"adapter", softprompt_fuzz::adapter},
        {"bpe_hf_json", softprompt_fuzz::bpe_hf_json},
        {"bpe_openai", softprompt_fuzz::bpe_openai},
        {"dataset", softprompt_fuzz::dataset},
        {"gguf", softprompt_fuzz::gguf},
        {"hf_config", softprompt_fuzz::hf_config},
        {"hf_tokenizer", softprompt_fuzz::hf_tokenizer},
        {"llama2c", softprompt_fuzz::llama2c},
        {"llama2c_tokenizer", softprompt_fuzz::llama2c_tokenizer},
        {"safetensors", softprompt_fuzz::safetensors},
        {"spm_model", softprompt_fuzz::spm_model},
        {"training_state", softprompt_fuzz::training_state},
    };
    ASSERT_TRUE(fs::is_directory(kRegressions)) << kRegressions;
    std::size_t replayed = 0;
    for (const auto& folder : fs::directory_iterator(kRegressions)) {
        const std::string target = folder.path().filename().string();
        const auto it = targets.find(target);
        ASSERT_NE(it, targets.end()) << "no fuzz target named " << target << " for " << folder;
        for (const auto& file : fs::directory_iterator(folder.path())) {
            SCOPED_TRACE(file.path().string());
            // Only softprompt::Error may leave a parser, and the target catches exactly that:
            // anything else escapes here and fails the test.
            EXPECT_NO_THROW(it->second(read_bytes(file.path())));
            ++replayed;
        }
    }
    EXPECT_GE(replayed, 4u) << "the crash inputs under " << kRegressions << " went missing";
}

// load_llama2c: header fields below 2^31 whose byte count wraps past 2^64 to 32, the size of the
// file, so that the weights pointed gigabytes past the mapping.
TEST(FuzzRegression, Llama2cHeaderWhoseSizeWrapsIsRefused) {
    const std::int32_t dim = 1 << 30, vocab = 1;
    const auto hidden = std::int32_t(((std::uint64_t(1) << 32) - 3 - vocab) / 3);
    std::string bytes;
    for (const std::int32_t v : {dim, hidden, 1, dim, dim, vocab, 1})
        append<std::int32_t>(bytes, v);
    append<float>(bytes, 0.5f);
    ASSERT_EQ(bytes.size(), 32u);
    TempDir dir;
    const fs::path path = dir.path() / "wrap.bin";
    write_bytes(path, bytes);
    try {
        (void)io::load_llama2c<float>(path.string());
        FAIL() << "a 32-byte file describing 2^64 bytes loaded";
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path.string()), std::string::npos) << what;
        EXPECT_NE(what.find("2^64"), std::string::npos) << what;
        EXPECT_NE(what.find("dim 1073741824"), std::string::npos) << what;
        EXPECT_NE(what.find("the file has 32"), std::string::npos) << what;
    }
}

// SpmTokenizer: a tokenizer.bin declaring max_token_length 2^31 - 1 made every encode reserve
// 4 GiB. The declared value is still reported; encoding sizes its buffer by the real pieces.
TEST(FuzzRegression, Llama2cTokenizerHugeDeclaredMaxLength) {
    const std::string bytes = llama2c_tokenizer_bytes(0x7FFFFFFF);
    const auto spm = tok::SpmTokenizer::from_llama2c(
        std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), 259);
    EXPECT_EQ(spm.max_token_length(), 0x7FFFFFFFu);
    // No " " piece: the dummy prefix is the byte token of 0x20; 'a' and 'b' are byte tokens too.
    const std::vector<std::int32_t> ids = spm.encode("ab", true, false);
    EXPECT_EQ(ids, (std::vector<std::int32_t>{1, 3 + 0x20, 3 + 'a', 3 + 'b'}));
    EXPECT_EQ(spm.decode(ids), " ab");
}

// The LLaMA shape the adapter target checks adapters against.
nn::Config adapter_config() {
    nn::Config c;
    c.dim = 8;
    c.hidden_dim = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.vocab_size = 16;
    c.max_seq_len = 32;
    return c;
}

// load_adapter: a non-boolean prefix_projection threw nlohmann's type_error.
TEST(FuzzRegression, AdapterPrefixProjectionNotBoolean) {
    TempDir dir;
    write_bytes(dir.path() / peft::kAdapterConfig,
                R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2,
                    "prefix_projection": "yes"})");
    write_bytes(
        dir.path() / peft::kAdapterWeights,
        safetensors_bytes(
            R"({"prompt_embeddings":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4));
    try {
        (void)peft::load_adapter(dir.path().string(), adapter_config());
        FAIL() << "a string prefix_projection was accepted";
    } catch (const ConfigError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find((dir.path() / peft::kAdapterConfig).string()), std::string::npos)
            << what;
        EXPECT_NE(what.find("'prefix_projection' is \"yes\""), std::string::npos) << what;
        EXPECT_NE(what.find("expected true or false"), std::string::npos) << what;
    }
}

// load_training_state: metadata that is not an object, or whose format is not a string, threw
// nlohmann's type_error from json::value().
TEST(FuzzRegression, TrainingStateMetadataOfTheWrongType) {
    TempDir dir;
    const fs::path path = dir.path() / train::kTrainingState;
    const std::string tensor = R"("x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
    for (const auto& [meta, found] : std::vector<std::pair<std::string, std::string>>{
             {R"([1,2])", "format (none) and version (none)"},
             {R"({\"format\":5,\"version\":1})", "format 5 and version 1"},
             {R"({\"format\":\"softprompt-training-state\",\"version\":\"1\"})",
              "version \"1\""}}) {
        SCOPED_TRACE(meta);
        write_bytes(path,
                    safetensors_bytes(
                        R"({"__metadata__":{"softprompt":")" + meta + R"("},)" + tensor + "}", 4));
        try {
            (void)train::load_training_state(path.string());
            ADD_FAILURE() << "metadata " << meta << " was accepted";
        } catch (const FormatError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(path.string()), std::string::npos) << what;
            EXPECT_NE(what.find(found), std::string::npos) << what;
            EXPECT_NE(what.find("expected \"softprompt-training-state\" and 1"), std::string::npos)
                << what;
        }
    }
}

// load_adapter: a count written as a float outside int64 (1e300) went through nlohmann's plain
// float-to-integer cast, undefined behaviour.
TEST(FuzzRegression, AdapterCountThatIsAFloat) {
    TempDir dir;
    const fs::path config = dir.path() / peft::kAdapterConfig;
    write_bytes(
        dir.path() / peft::kAdapterWeights,
        safetensors_bytes(
            R"({"prompt_embeddings":{"dtype":"F32","shape":[1,8],"data_offsets":[0,32]}})", 32));
    for (const std::string count : {"1e300", "2.5"}) {
        SCOPED_TRACE(count);
        write_bytes(config,
                    R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": )" + count + "}");
        try {
            (void)peft::load_adapter(dir.path().string(), adapter_config());
            ADD_FAILURE() << "num_virtual_tokens " << count << " was accepted";
        } catch (const ConfigError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(config.string()), std::string::npos) << what;
            EXPECT_NE(what.find("'num_virtual_tokens' is "), std::string::npos) << what;
            EXPECT_NE(what.find("expected an integer"), std::string::npos) << what;
        }
    }
}

// lora_method: "r": 10^9 with lora_A tensors of 2 rows built a Lora of rank 10^9 first (a 32 GB
// allocation) and compared shapes only afterwards.
TEST(FuzzRegression, AdapterLoraRankLargerThanItsTensors) {
    TempDir dir;
    write_bytes(dir.path() / peft::kAdapterConfig,
                R"({"peft_type": "LORA", "r": 1000000000, "lora_alpha": 16,
                    "target_modules": ["q_proj"]})");
    const std::string key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    write_bytes(
        dir.path() / peft::kAdapterWeights,
        safetensors_bytes(
            R"({")" + key + R"(":{"dtype":"F32","shape":[2,8],"data_offsets":[0,64]}})", 64));
    const peft::LoadedAdapter a = peft::load_adapter(dir.path().string(), adapter_config());
    ASSERT_EQ(a.kind, peft::MethodKind::kLora);
    try {
        (void)peft::lora_method<nn::Llama>(a, adapter_config());
        FAIL() << "r = 10^9 with rank-2 tensors was accepted";
    } catch (const ShapeError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(key), std::string::npos) << what;
        EXPECT_NE(what.find("has 2 rows but adapter_config.json says r = 1000000000"),
                  std::string::npos)
            << what;
    }
}

// Every JSON reader: nlohmann reports a number too large for a double (1e400) as out_of_range,
// which the readers' `catch (json::parse_error&)` let through (found by the hf_config target).
TEST(FuzzRegression, JsonNumberTooLargeForADouble) {
    TempDir dir;
    const std::string json = R"({"model_type": "llama", "rms_norm_eps": 1e400})";
    auto expect_format_error = [](const char* reader, const std::string& source, auto&& read) {
        SCOPED_TRACE(reader);
        try {
            read();
            ADD_FAILURE() << "1e400 was accepted";
        } catch (const FormatError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(source), std::string::npos) << what;
            EXPECT_NE(what.find("number overflow"), std::string::npos) << what;
            EXPECT_NE(what.find("1e400"), std::string::npos) << what;
        }
    };
    const fs::path file = dir.path() / "config.json";
    write_bytes(file, json);
    expect_format_error("read_hf_config", file.string(),
                        [&] { (void)io::read_hf_config(file.string()); });
    expect_format_error("read_jsonl", file.string() + " line 1",
                        [&] { (void)train::read_jsonl(file.string()); });
    expect_format_error("from_hf_json_text", "tokenizer.json", [&] {
        (void)tok::BpeTokenizer::from_hf_json_text(json, "tokenizer.json");
    });
    expect_format_error("from_openai_text", "encoder.json", [&] {
        (void)tok::BpeTokenizer::from_openai_text(json, "", "encoder.json", "vocab.bpe");
    });
    write_bytes(dir.path() / peft::kAdapterConfig, json);
    expect_format_error("load_adapter", (dir.path() / peft::kAdapterConfig).string(),
                        [&] { (void)peft::load_adapter(dir.path().string(), adapter_config()); });
    const fs::path state = dir.path() / train::kTrainingState;
    write_bytes(state, safetensors_bytes(R"({"__metadata__":{"softprompt":"{\"step\":1e400}"},)"
                                         R"("x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                         4));
    expect_format_error("load_training_state", state.string(),
                        [&] { (void)train::load_training_state(state.string()); });
}

// load_training_state: the same float-to-integer cast for "step".
TEST(FuzzRegression, TrainingStateStepThatIsAFloat) {
    TempDir dir;
    const fs::path path = dir.path() / train::kTrainingState;
    const std::string meta =
        R"({\"format\":\"softprompt-training-state\",\"version\":1,\"step\":1e300,)"
        R"(\"epoch\":0,\"next_batch\":0,\"best_eval_loss\":1,)"
        R"(\"evals_without_improvement\":0,\"optimizer_kind\":\"sgd\",)"
        R"(\"optimizer_scalars\":{},\"param_order\":[],\"optimizer_order\":[]})";
    write_bytes(path, safetensors_bytes(R"({"__metadata__":{"softprompt":")" + meta +
                                            R"("},"x":{"dtype":"F32","shape":[1],)"
                                            R"("data_offsets":[0,4]}})",
                                        4));
    try {
        (void)train::load_training_state(path.string());
        FAIL() << "step 1e300 was accepted";
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path.string()), std::string::npos) << what;
        EXPECT_NE(what.find("'step' is 1e+300, expected an integer"), std::string::npos) << what;
    }
}

// HfTokenizer: a 13 KB tokenizer.json whose added token had the id 9,106,181 (below the old bound,
// 2^24): the id table grew to 9.1M strings, a 291 MB allocation. Ids are now bounded by the
// number of tokens the file holds.
TEST(FuzzRegression, HfTokenizerIdFarPastItsTokenCount) {
    const std::string json = R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]},)"
                             R"("added_tokens":[{"id":9106181,"content":"<s>","special":true}]})";
    try {
        (void)tok::HfTokenizer::from_json_text(json, "tokenizer.json");
        FAIL() << "id 9106181 was accepted";
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("tokenizer.json: added_tokens[0].id"), std::string::npos) << what;
        EXPECT_NE(what.find("the id 9106181 is not an integer in [0, 65536)"), std::string::npos)
            << what;
        EXPECT_NE(what.find("the file has 3 tokens"), std::string::npos) << what;
    }
}

}  // namespace
