// GPT-2 byte-level BPE (tok::BpeTokenizer): the Unicode class tables, the hand-written GPT-2
// pre-tokeniser, llama.cpp's 46 GPT-2 test vectors, round trips (Moby-Dick, invalid UTF-8), special
// tokens, the tokenizer.json, plain-list and GGUF (tok::gguf_bpe_vocab) loaders, and corrupt or
// missing files.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <softprompt/error.hpp>
#include <softprompt/tok/bpe.hpp>
#include <softprompt/tok/gguf_vocab.hpp>
#include <softprompt/tok/unicode_tables.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "test_paths.hpp"

namespace {

namespace fs = std::filesystem;
using softprompt::Error;
using softprompt::FormatError;
using softprompt::IoError;
using softprompt::testing::test_data_dir;
using softprompt::tok::BpeOptions;
using softprompt::tok::BpeTokenizer;
using softprompt::tok::SpecialTokens;
using Ids = std::vector<std::int32_t>;
using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Helpers

fs::path gpt2_dir() { return test_data_dir() / "tokenizers" / "gpt2"; }
fs::path encoder_json() { return gpt2_dir() / "encoder.json"; }
fs::path vocab_bpe() { return gpt2_dir() / "vocab.bpe"; }
fs::path vectors(const char* ext) {
    return test_data_dir() / "tokenizers" / "llama.cpp" /
           (std::string("ggml-vocab-gpt-2.gguf") + ext);
}
fs::path moby_dick() { return test_data_dir() / "text" / "moby_dick.txt"; }

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const fs::path& p, std::string_view text) {
    std::ofstream out(p, std::ios::binary);
    out << text;
}

Ids parse_ids(const std::string& line) {
    Ids ids;
    std::istringstream in(line);
    std::int32_t id = 0;
    while (in >> id) ids.push_back(id);
    return ids;
}

std::string show(const Ids& ids) {
    std::string s;
    for (const auto id : ids) s += " " + std::to_string(id);
    return s;
}

// The test vectors: strings each followed by "\n__ggml_vocab_test__\n"; one line of ids each.
struct Vectors {
    std::vector<std::string> texts;
    std::vector<Ids> ids;
};

Vectors load_vectors() {
    Vectors v;
    const std::string inp = read_file(vectors(".inp"));
    const std::string sep = "\n__ggml_vocab_test__\n";
    for (std::size_t pos = 0; pos < inp.size();) {
        const std::size_t end = inp.find(sep, pos);
        if (end == std::string::npos) break;
        v.texts.push_back(inp.substr(pos, end - pos));
        pos = end + sep.size();
    }
    std::istringstream out(read_file(vectors(".out")));
    for (std::string line; std::getline(out, line);) v.ids.push_back(parse_ids(line));
    return v;
}

// One GPT-2 tokenizer for the whole program (loading parses 1 MB of JSON).
const BpeTokenizer& gpt2() {
    static const BpeTokenizer t =
        BpeTokenizer::from_openai(encoder_json().string(), vocab_bpe().string());
    return t;
}

#define REQUIRE_GPT2()                       \
    SOFTPROMPT_REQUIRE_DATA(encoder_json()); \
    SOFTPROMPT_REQUIRE_DATA(vocab_bpe())

// A fresh directory under the system temp folder, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "softprompt_bpe_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

// What `f` throws as E, with its message; fails the test if it throws nothing or something else.
template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw the wrong type: " << e.what();
        return {};
    }
    ADD_FAILURE() << "threw nothing";
    return {};
}

// A small byte-level tokenizer.json: the 256 single-byte tokens (ids 0..255 in byte order), then
// the merged tokens of `merges` in order, then the added tokens.
Json toy_tokenizer_json(const std::vector<std::pair<std::string, std::string>>& merges,
                        bool merges_as_pairs) {
    using softprompt::tok::bytes_to_unicode;
    Json vocab = Json::object();
    std::int32_t next = 0;
    for (int b = 0; b < 256; ++b) vocab[bytes_to_unicode(std::string(1, char(b)))] = next++;
    Json jm = Json::array();
    for (const auto& [a, b] : merges) {
        if (!vocab.contains(a + b)) vocab[a + b] = next++;
        if (merges_as_pairs) {
            jm.push_back(Json::array({a, b}));
        } else {
            jm.push_back(a + " " + b);
        }
    }
    Json added = Json::array();
    added.push_back({{"id", next}, {"content", "<|endoftext|>"}, {"special", true}});
    added.push_back({{"id", next + 1}, {"content", "<｜sep▁x｜>"}, {"special", true}});
    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", true}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", ""},
              {"end_of_word_suffix", ""},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"vocab", vocab},
              {"merges", jm}}}};
}

const std::vector<std::pair<std::string, std::string>> kToyMerges = {
    {"l", "o"}, {"lo", "w"}, {"Ġ", "low"}, {"e", "r"},    {"Ġlow", "er"},
    {"Ġ", "n"}, {"Ġn", "e"}, {"Ġne", "w"}, {"Ġnew", "er"}};

// ---------------------------------------------------------------------------------------------
// Unicode tables and the pre-tokeniser

TEST(UnicodeTables, ClassesOfSampleCodePoints) {
    using softprompt::tok::unicode::cp_class;
    using C = softprompt::tok::unicode::CpClass;
    EXPECT_EQ(std::string(softprompt::tok::unicode::kUnicodeVersion), "14.0.0");
    const std::vector<std::pair<std::uint32_t, C>> cases = {
        {'A', C::letter},      {'z', C::letter},     {'5', C::number},     {' ', C::space},
        {'\t', C::space},      {'\r', C::space},     {'\'', C::other},     {'_', C::other},
        {0x1C, C::other},      {0x1F, C::other},     {0x85, C::space},     {0xA0, C::space},
        {0xAA, C::letter},     {0xB2, C::number},    {0xBD, C::number},    {0xD7, C::other},
        {0x0301, C::other},    {0x0661, C::number},  {0x0E01, C::letter},  {0x180E, C::other},
        {0x1680, C::space},    {0x2000, C::space},   {0x200A, C::space},   {0x200B, C::other},
        {0x2028, C::space},    {0x2029, C::space},   {0x202F, C::space},   {0x205F, C::space},
        {0x2160, C::number},   {0x3000, C::space},   {0x3007, C::number},  {0x4E00, C::letter},
        {0xAC00, C::letter},   {0xD800, C::other},   {0xFFFF, C::other},   {0x1D7D8, C::number},
        {0x1F600, C::other},   {0x20000, C::letter}, {0x10FFFF, C::other}, {0x110000, C::other},
        {0xFFFFFFFF, C::other}};
    for (const auto& [cp, cls] : cases) {
        EXPECT_EQ(static_cast<int>(cp_class(cp)), static_cast<int>(cls)) << "U+" << std::hex << cp;
    }
}

std::vector<std::string> split(std::string_view text) {
    std::vector<std::string> out;
    for (const auto w : softprompt::tok::gpt2_pretokenize(text)) out.emplace_back(w);
    return out;
}

using Words = std::vector<std::string>;

// Expected splits from Python's `regex` module (2026.5.9) with GPT-2's pattern.
TEST(Gpt2PreTokenizer, MatchesTheRegexOnTrickyCases) {
    EXPECT_EQ(split(""), Words{});
    EXPECT_EQ(split("Hello world"), (Words{"Hello", " world"}));
    EXPECT_EQ(split("I'm sure it's 'quoted' they're we've I'll he'd 'S 'LL"),
              (Words{"I",   "'m",  " sure", " it", "'s",  " '", "quoted", "'", " they", "'re",
                     " we", "'ve", " I",    "'ll", " he", "'d", " '",     "S", " '",    "LL"}));
    EXPECT_EQ(split("a\u00a0b  c\u3000d\u2028e\u0085f\x1cg"),
              (Words{"a", "\u00a0", "b", " ", " c", "\u3000", "d", "\u2028", "e", "\u0085", "f",
                     "\x1c", "g"}));
    EXPECT_EQ(split("cafe\u0301 na\u0308ive"), (Words{"cafe", "\u0301", " na", "\u0308", "ive"}));
    EXPECT_EQ(split("x \u0661\u0662\u0663 \u00b2\u00bd \u2160\u2161 \U0001d7d8"),
              (Words{"x", " \u0661\u0662\u0663", " \u00b2\u00bd", " \u2160\u2161", " \U0001d7d8"}));
    EXPECT_EQ(split("end with spaces   "), (Words{"end", " with", " spaces", "   "}));
    EXPECT_EQ(split("tabs\t\t\tand\n\n\nnewlines \n"),
              (Words{"tabs", "\t\t", "\t", "and", "\n\n", "\n", "newlines", " \n"}));
    EXPECT_EQ(split("  leading"), (Words{" ", " leading"}));
    EXPECT_EQ(split("don't!!! ?! ..."), (Words{"don", "'t", "!!!", " ?!", " ..."}));
    EXPECT_EQ(split("'"), (Words{"'"}));
    EXPECT_EQ(split("''s"), (Words{"''", "s"}));
    EXPECT_EQ(split(" "), (Words{" "}));
    EXPECT_EQ(split("a\n b"), (Words{"a", "\n", " b"}));
}

TEST(Gpt2PreTokenizer, InvalidUtf8BytesAreOtherCodePoints) {
    // Each invalid byte is one "other" code point: it joins a run of punctuation and takes a
    // leading space like one.
    EXPECT_EQ(split("a\x80\x81!b"), (Words{"a", "\x80\x81!", "b"}));
    EXPECT_EQ(split(" \xff"), (Words{" \xff"}));
    EXPECT_EQ(split("\xe2\x82 x"), (Words{"\xe2\x82", " x"}));  // truncated 3-byte sequence
    EXPECT_EQ(split("\xc0\xaf"
                    "A"),
              (Words{"\xc0\xaf", "A"}));                                // overlong '/'
    EXPECT_EQ(split("\xed\xa0\x80z"), (Words{"\xed\xa0\x80", "z"}));    // surrogate U+D800
    EXPECT_EQ(split("\xf4\x90\x80\x80"), (Words{"\xf4\x90\x80\x80"}));  // > U+10FFFF
    EXPECT_EQ(split("\xc3\xa9t\xc3"), (Words{"\xc3\xa9t", "\xc3"}));    // é is a letter
}

// ---------------------------------------------------------------------------------------------
// GPT-2 from encoder.json + vocab.bpe

TEST(BpeGpt2, LoadsTheOpenAiFiles) {
    REQUIRE_GPT2();
    const BpeTokenizer& t = gpt2();
    EXPECT_EQ(t.vocab_size(), 50257);
    EXPECT_EQ(t.merge_count(), 50000u);
    EXPECT_EQ(t.bos(), 50256);
    EXPECT_EQ(t.eos(), 50256);
    EXPECT_FALSE(t.unk().has_value());
    EXPECT_EQ(t.special_ids(), Ids{50256});
    EXPECT_TRUE(t.is_special(50256));
    EXPECT_FALSE(t.is_special(0));
    EXPECT_EQ(t.piece(995), "Ġworld");
    EXPECT_EQ(t.decode_piece(995), " world");
    EXPECT_EQ(t.find("Ġworld"), 995);
    EXPECT_EQ(t.find(" world"), std::nullopt);
    EXPECT_EQ(t.piece(50256), "<|endoftext|>");
    EXPECT_EQ(t.byte_token(' '), 220);
    EXPECT_EQ(t.byte_token('!'), 0);
    EXPECT_NE(t.source().find("encoder.json"), std::string::npos);
    EXPECT_NE(t.source().find("vocab.bpe"), std::string::npos);
}

TEST(BpeGpt2, KnownIds) {
    REQUIRE_GPT2();
    const BpeTokenizer& t = gpt2();
    EXPECT_EQ(t.encode("Hello world"), (Ids{15496, 995}));
    EXPECT_EQ(t.encode(" Hello"), (Ids{18435}));
    EXPECT_EQ(t.encode(""), Ids{});
    // From OpenAI's encoder.py with the `regex` module.
    EXPECT_EQ(t.encode("I'm sure it's 'quoted' they're we've I'll he'd 'S 'LL"),
              (Ids{40,  1101, 1654, 340,  338, 705,  421, 5191, 6,   484, 821,
                   356, 1053, 314,  1183, 339, 1549, 705, 50,   705, 3069}));
    EXPECT_EQ(t.encode("a\u00a0b  c\u3000d\u2028e\u0085f\x1cg"),
              (Ids{64, 1849, 65, 220, 269, 5099, 222, 67, 447, 101, 68, 126, 227, 69, 216, 70}));
    EXPECT_EQ(t.encode("cafe\u0301 na\u0308ive"), (Ids{66, 8635, 136, 223, 12385, 136, 230, 425}));
    EXPECT_EQ(t.encode("tabs\t\t\tand\n\n\nnewlines \n"),
              (Ids{8658, 82, 197, 197, 197, 392, 628, 198, 3605, 6615, 220, 198}));
}

TEST(BpeGpt2, ReproducesAllLlamaCppTestVectors) {
    REQUIRE_GPT2();
    SOFTPROMPT_REQUIRE_DATA(vectors(".inp"));
    SOFTPROMPT_REQUIRE_DATA(vectors(".out"));
    const BpeTokenizer& t = gpt2();
    const Vectors v = load_vectors();
    ASSERT_EQ(v.texts.size(), 46u);
    ASSERT_EQ(v.ids.size(), 46u);
    std::size_t matched = 0;
    for (std::size_t i = 0; i < v.texts.size(); ++i) {
        const Ids got = t.encode(v.texts[i]);
        if (got == v.ids[i]) {
            ++matched;
        } else {
            ADD_FAILURE() << "vector " << i << " '" << v.texts[i] << "'\n  expected"
                          << show(v.ids[i]) << "\n  got     " << show(got);
        }
        EXPECT_EQ(t.decode(got), v.texts[i]) << "vector " << i;
    }
    std::printf("[          ] GPT-2 test vectors: %zu/%zu identical\n", matched, v.texts.size());
    EXPECT_EQ(matched, 46u);
}

TEST(BpeGpt2, MobyDickMatchesEncoderPyAndRoundTrips) {
    REQUIRE_GPT2();
    SOFTPROMPT_REQUIRE_DATA(moby_dick());
    const BpeTokenizer& t = gpt2();
    const std::string text = read_file(moby_dick());
    ASSERT_GT(text.size(), 1000000u);

    const auto start = std::chrono::steady_clock::now();
    const Ids ids = t.encode(text);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("[          ] Moby-Dick: %zu bytes -> %zu tokens in %.1f ms\n", text.size(),
                ids.size(), ms);
    // OpenAI's encoder.py (with the `regex` module) gives 317,756 tokens for this file, and
    // agrees with this tokenizer id for id.
    EXPECT_EQ(ids.size(), 317756u);
    EXPECT_EQ(t.decode(ids), text);

    // Chunks cut at arbitrary bytes (so some start or end inside a UTF-8 sequence).
    std::mt19937 rng(7);
    std::size_t chunks = 0;
    for (std::size_t pos = 0; pos < text.size(); ++chunks) {
        const std::size_t len = std::uniform_int_distribution<std::size_t>(1, 5000)(rng);
        const std::string_view chunk = std::string_view(text).substr(pos, len);
        ASSERT_EQ(t.decode(t.encode(chunk)), chunk) << "chunk at byte " << pos;
        pos += len;
    }
    EXPECT_GT(chunks, 200u);
}

TEST(BpeGpt2, InvalidUtf8RoundTrips) {
    REQUIRE_GPT2();
    const BpeTokenizer& t = gpt2();
    const std::vector<std::string> cases = {"\x80",
                                            "\xff\xfe",
                                            "abc\xc3",
                                            "\xc3(",
                                            "\xe2\x82 \xe2\x82\xac",
                                            "\xed\xa0\x80\xed\xbf\xbf",
                                            "\xf4\x90\x80\x80",
                                            "\xc0\xaf\xe0\x80\xaf",
                                            "x\xf0\x9f\x98 y",
                                            std::string("a\0b", 3),
                                            " \xff\xff  \xfe"};
    for (const auto& s : cases) EXPECT_EQ(t.decode(t.encode(s)), s);
    std::mt19937 rng(11);
    for (int n = 0; n < 500; ++n) {
        std::string s(std::uniform_int_distribution<std::size_t>(0, 64)(rng), '\0');
        for (auto& c : s) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
        ASSERT_EQ(t.decode(t.encode(s)), s);
    }
}

TEST(BpeGpt2, SpecialTokensAreTextUnlessRecognised) {
    REQUIRE_GPT2();
    const BpeTokenizer& t = gpt2();
    const std::string s = "Hello<|endoftext|> world<|endoftext|><|endoftext|>";
    const Ids as_text = t.encode(s);
    EXPECT_EQ(std::count(as_text.begin(), as_text.end(), 50256), 0);
    EXPECT_EQ(t.decode(as_text), s);
    EXPECT_EQ(t.encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));

    const Ids recognised = t.encode(s, SpecialTokens::recognised);
    EXPECT_EQ(recognised, (Ids{15496, 50256, 995, 50256, 50256}));
    EXPECT_EQ(t.decode(recognised), s);
    EXPECT_EQ(t.encode("<|endoftext|>", SpecialTokens::recognised), Ids{50256});
    EXPECT_EQ(t.encode("<|endoftext|", SpecialTokens::recognised), t.encode("<|endoftext|"));
    // Text on each side is pre-tokenised on its own: the trailing spaces end their piece.
    EXPECT_EQ(t.encode("a  <|endoftext|>", SpecialTokens::recognised), (Ids{64, 220, 220, 50256}));
}

TEST(BpeGpt2, EncodeIntoReplacesAndDecodeChecksIds) {
    REQUIRE_GPT2();
    const BpeTokenizer& t = gpt2();
    Ids out = {1, 2, 3};
    t.encode_into("Hello world", out);
    EXPECT_EQ(out, (Ids{15496, 995}));
    EXPECT_THROW((void)t.decode(Ids{15496, 50257}), Error);
    EXPECT_THROW((void)t.decode(Ids{-1}), Error);
    EXPECT_THROW((void)t.piece(50257), Error);
    EXPECT_THROW((void)t.decode_piece(-3), Error);
    const std::string msg = message_of<Error>([&] { (void)t.decode(Ids{0, 99999}); });
    EXPECT_NE(msg.find("99999"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 1"), std::string::npos) << msg;
}

// The same vocabulary through the other two loaders gives the same ids.
TEST(BpeGpt2, TokenizerJsonAndPlainListsGiveIdenticalIds) {
    REQUIRE_GPT2();
    SOFTPROMPT_REQUIRE_DATA(vectors(".inp"));
    const BpeTokenizer& ref = gpt2();
    // encoder.json + vocab.bpe -> tokenizer.json (merges as "a b" strings) in a temp folder.
    const Json enc = Json::parse(read_file(encoder_json()));
    std::vector<std::string> merges;
    {
        std::istringstream in(read_file(vocab_bpe()));
        std::string line;
        std::getline(in, line);  // #version
        while (std::getline(in, line)) {
            if (!line.empty()) merges.push_back(line);
        }
    }
    Json hf = toy_tokenizer_json({}, false);
    hf["model"]["vocab"] = enc;
    hf["model"]["merges"] = merges;
    hf["added_tokens"] =
        Json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}});
    TempDir dir;
    const fs::path path = dir.path / "tokenizer.json";
    write_file(path, hf.dump());
    const BpeTokenizer from_json = BpeTokenizer::from_hf_json(path.string());
    EXPECT_EQ(from_json.vocab_size(), 50257);
    EXPECT_EQ(from_json.source(), path.string());

    // Plain lists, as a GGUF vocabulary gives them.
    std::vector<std::string> tokens;
    for (std::int32_t i = 0; i < ref.vocab_size(); ++i) tokens.emplace_back(ref.piece(i));
    BpeOptions options;
    options.special_ids = {50256};
    options.bos = options.eos = 50256;
    const BpeTokenizer from_lists(std::move(tokens), merges, options, "lists");

    std::vector<std::string> texts = load_vectors().texts;
    SOFTPROMPT_REQUIRE_DATA(moby_dick());
    {
        std::istringstream in(read_file(moby_dick()));
        std::size_t n = 0;
        for (std::string line; std::getline(in, line) && n < 3000; ++n) texts.push_back(line);
    }
    texts.push_back("a <|endoftext|>b");
    for (const auto& s : texts) {
        const Ids want = ref.encode(s);
        ASSERT_EQ(from_json.encode(s), want) << s;
        ASSERT_EQ(from_lists.encode(s), want) << s;
        ASSERT_EQ(from_json.encode(s, SpecialTokens::recognised),
                  ref.encode(s, SpecialTokens::recognised));
    }
}

// llama.cpp's GPT-2 vocabulary in GGUF (tok::gguf_bpe_vocab) gives the same tokenizer.
TEST(BpeGpt2, GgufVocabularyGivesIdenticalIds) {
    REQUIRE_GPT2();
    const fs::path gguf = vectors("");
    SOFTPROMPT_REQUIRE_DATA(gguf);
    SOFTPROMPT_REQUIRE_DATA(vectors(".inp"));
    softprompt::tok::GgufBpeVocab v = softprompt::tok::gguf_bpe_vocab(gguf.string());
    EXPECT_EQ(v.pre, "gpt-2");
    BpeOptions options;
    options.bos = v.bos;
    options.eos = v.eos;
    for (std::size_t i = 0; i < v.token_types.size(); ++i) {
        // llama.cpp token types: 3 control, 4 user-defined.
        if (v.token_types[i] == 3 || v.token_types[i] == 4) {
            options.special_ids.push_back(static_cast<std::int32_t>(i));
        }
    }
    const BpeTokenizer t(std::move(v.tokens), v.merges, std::move(options), gguf.string());
    const BpeTokenizer& ref = gpt2();
    ASSERT_EQ(t.vocab_size(), ref.vocab_size());
    EXPECT_EQ(t.merge_count(), ref.merge_count());
    EXPECT_EQ(t.bos(), ref.bos());
    EXPECT_EQ(t.eos(), ref.eos());
    EXPECT_EQ(t.special_ids(), ref.special_ids());
    for (std::int32_t i = 0; i < t.vocab_size(); ++i) ASSERT_EQ(t.piece(i), ref.piece(i)) << i;

    const Vectors vec = load_vectors();
    std::size_t matched = 0;
    for (std::size_t i = 0; i < vec.texts.size(); ++i) {
        const Ids got = t.encode(vec.texts[i]);
        EXPECT_EQ(got, ref.encode(vec.texts[i])) << "vector " << i;
        matched += got == vec.ids[i] ? 1 : 0;
    }
    std::printf("[          ] GPT-2 test vectors from the GGUF vocabulary: %zu/%zu identical\n",
                matched, vec.texts.size());
    EXPECT_EQ(matched, 46u);
    SOFTPROMPT_REQUIRE_DATA(moby_dick());
    {
        std::istringstream in(read_file(moby_dick()));
        for (std::string line; std::getline(in, line);) {
            ASSERT_EQ(t.encode(line), ref.encode(line)) << line;
        }
    }
    EXPECT_EQ(t.encode("x<|endoftext|>", SpecialTokens::recognised), (Ids{87, 50256}));
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json (a small one written here) and plain lists

TEST(BpeHfJson, SmallTokenizerJsonInBothMergeSpellings) {
    for (const bool pairs : {false, true}) {
        const Json j = toy_tokenizer_json(kToyMerges, pairs);
        const BpeTokenizer t = BpeTokenizer::from_hf_json_text(j.dump(), "toy.json");
        // 256 bytes, then lo low Ġlow er Ġlower Ġn Ġne Ġnew Ġnewer, then 2 added tokens.
        ASSERT_EQ(t.vocab_size(), 256 + 9 + 2);
        const auto id = [&](const char* piece) { return t.find(piece).value(); };
        EXPECT_EQ(id("Ġlower"), 260);
        EXPECT_EQ(t.encode(" lower newer low"), (Ids{260, 264, id("Ġlow")}));
        EXPECT_EQ(t.encode("lower"), (Ids{id("low"), id("er")}));
        EXPECT_EQ(t.encode(" new"), Ids{id("Ġnew")});
        EXPECT_EQ(t.encode("x"), Ids{'x'});
        EXPECT_EQ(t.decode(t.encode(" lower newer!")), " lower newer!");
        // Added tokens are special; one has characters outside the byte alphabet and stands for
        // its own UTF-8 text.
        EXPECT_EQ(t.special_ids(), (Ids{265, 266}));
        EXPECT_EQ(t.bos(), 265);
        EXPECT_EQ(t.encode("a<｜sep▁x｜>b<|endoftext|>", SpecialTokens::recognised),
                  (Ids{'a', 266, 'b', 265}));
        EXPECT_EQ(t.decode(Ids{266}), "<｜sep▁x｜>");
        EXPECT_EQ(t.decode_piece(266), "<｜sep▁x｜>");
    }
}

TEST(BpeHfJson, OptionsAddPrefixSpaceIgnoreMergesUnk) {
    Json j = toy_tokenizer_json(kToyMerges, false);
    j["pre_tokenizer"]["add_prefix_space"] = true;
    const BpeTokenizer p = BpeTokenizer::from_hf_json_text(j.dump(), "toy.json");
    EXPECT_TRUE(p.add_prefix_space());
    EXPECT_EQ(p.encode("lower"), (Ids{260}));
    EXPECT_EQ(p.encode(" lower"), (Ids{260}));
    EXPECT_EQ(p.decode(p.encode("lower")), " lower");
    // Each piece between special tokens gets its space.
    EXPECT_EQ(p.encode("low<|endoftext|>new", SpecialTokens::recognised),
              (Ids{p.find("Ġlow").value(), 265, p.find("Ġnew").value()}));

    // ignore_merges: a word that is a token is taken whole. Give "Ġnewer" a merge order that
    // would otherwise never form it (er before Ġnew + e).
    Json k = toy_tokenizer_json({{"e", "r"}, {"Ġ", "n"}, {"Ġn", "e"}, {"Ġne", "w"}}, false);
    k["model"]["vocab"]["Ġnewer"] = 256 + 4;
    k["added_tokens"][0]["id"] = 256 + 5;
    k["added_tokens"][1]["id"] = 256 + 6;
    const BpeTokenizer plain = BpeTokenizer::from_hf_json_text(k.dump(), "k.json");
    EXPECT_EQ(plain.encode(" newer"), (Ids{plain.find("Ġnew").value(), plain.find("er").value()}));
    k["model"]["ignore_merges"] = true;
    const BpeTokenizer whole = BpeTokenizer::from_hf_json_text(k.dump(), "k.json");
    EXPECT_EQ(whole.encode(" newer"), (Ids{260}));

    // A vocabulary without some single-byte tokens: the unknown token, else an error.
    const std::vector<std::string> tokens = {"<unk>", "a", "b", "ab", "Ġ"};
    const std::vector<std::string> merges = {"a b"};
    BpeOptions options;
    options.unk = 0;
    const BpeTokenizer with_unk(tokens, merges, options, "tiny");
    EXPECT_EQ(with_unk.encode("ab a!"), (Ids{3, 4, 1, 0}));
    const BpeTokenizer no_unk(tokens, merges, {}, "tiny");
    const std::string msg = message_of<Error>([&] { (void)no_unk.encode("a!"); });
    EXPECT_NE(msg.find("0x21"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
}

TEST(BpePlainLists, PairsAndStringsAgreeAndLaterRankWins) {
    const std::vector<std::string> tokens = {"a", "b", "c", "ab", "bc", "abc"};
    const std::vector<std::string> merges = {"b c", "a b", "a bc"};
    const BpeTokenizer s(tokens, merges);
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"b", "c"}, {"a", "b"}, {"a", "bc"}};
    const BpeTokenizer p(tokens, std::span(pairs));
    EXPECT_EQ(s.encode("abc"), Ids{5});
    EXPECT_EQ(p.encode("abc"), Ids{5});
    EXPECT_EQ(s.source(), "<memory>");
    // "b c" repeated after "a b": its later rank counts, so a+b merges first.
    const std::vector<std::string> again = {"b c", "a b", "b c"};
    EXPECT_EQ(BpeTokenizer(tokens, again).encode("abc"), (Ids{3, 2}));
    // Leftmost first on equal ranks.
    EXPECT_EQ(BpeTokenizer({"a", "aa"}, std::vector<std::string>{"a a"}).encode("aaa"),
              (Ids{1, 0}));
    // A long word goes through the heap without trouble.
    const BpeTokenizer aa({"a", "aa", "aaaa"}, std::vector<std::string>{"a a", "aa aa"});
    EXPECT_EQ(aa.encode(std::string(100001, 'a')), [] {
        Ids ids(25000, 2);
        ids.push_back(0);
        return ids;
    }());
}

// ---------------------------------------------------------------------------------------------
// Corrupt and missing files

TEST(BpeErrors, MissingFilesThrowIoErrorNamingThePath) {
    TempDir dir;
    const std::string missing = (dir.path / "no_such_encoder.json").string();
    const std::string msg = message_of<IoError>(
        [&] { (void)BpeTokenizer::from_openai(missing, (dir.path / "vocab.bpe").string()); });
    EXPECT_NE(msg.find(missing), std::string::npos) << msg;
    EXPECT_THROW((void)BpeTokenizer::from_hf_json((dir.path / "tokenizer.json").string()), IoError);
}

TEST(BpeErrors, BadJsonThrowsFormatErrorNamingTheFile) {
    TempDir dir;
    const fs::path enc = dir.path / "encoder.json";
    const fs::path bpe = dir.path / "vocab.bpe";
    write_file(bpe, "#version: 0.2\na b\n");
    write_file(enc, R"({"a": 0, "b": 1, "ab": 2)");  // unterminated
    std::string msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find(enc.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;

    write_file(enc, R"(["a", "b"])");
    msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find(enc.string()), std::string::npos) << msg;

    write_file(enc, R"({"a": 0, "b": "one", "ab": 2})");
    msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find("\"b\""), std::string::npos) << msg;

    write_file(enc, R"({"a": 0, "b": 1, "ab": 3})");  // id 2 missing
    msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find("id 2 is missing"), std::string::npos) << msg;

    const fs::path tj = dir.path / "tokenizer.json";
    write_file(tj, "{\"model\": ");
    msg = message_of<FormatError>([&] { (void)BpeTokenizer::from_hf_json(tj.string()); });
    EXPECT_NE(msg.find(tj.string()), std::string::npos) << msg;
}

TEST(BpeErrors, MergeWithAnUnknownTokenThrowsFormatErrorNamingFileAndLine) {
    TempDir dir;
    const fs::path enc = dir.path / "encoder.json";
    const fs::path bpe = dir.path / "vocab.bpe";
    write_file(enc, R"({"a": 0, "b": 1, "ab": 2, "c": 3})");
    write_file(bpe, "#version: 0.2\na b\na x\n");
    std::string msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find(bpe.string() + " line 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'x' is not in the vocabulary"), std::string::npos) << msg;

    write_file(bpe, "#version: 0.2\na b\nab c\n");  // "abc" is not a token
    msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'abc'"), std::string::npos) << msg;

    write_file(bpe, "#version: 0.2\na b c\n");
    msg = message_of<FormatError>(
        [&] { (void)BpeTokenizer::from_openai(enc.string(), bpe.string()); });
    EXPECT_NE(msg.find(bpe.string() + " line 2"), std::string::npos) << msg;

    Json j = toy_tokenizer_json(kToyMerges, false);
    j["model"]["merges"].push_back("Ġnewer zz");
    msg =
        message_of<FormatError>([&] { (void)BpeTokenizer::from_hf_json_text(j.dump(), "t.json"); });
    EXPECT_NE(msg.find("t.json: model.merges[9]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'zz'"), std::string::npos) << msg;

    msg = message_of<FormatError>([&] {
        (void)BpeTokenizer(std::vector<std::string>{"a", "b"}, std::vector<std::string>{"a b"}, {},
                           "gguf-file");
    });
    EXPECT_NE(msg.find("gguf-file: merges[0]: merge 'a b'"), std::string::npos) << msg;
    EXPECT_THROW((void)BpeTokenizer(std::vector<std::string>{"a", "b", "ab"},
                                    std::vector<std::string>{"ab"}),
                 FormatError);
}

TEST(BpeErrors, UnsupportedTokenizerJsonIsRefused) {
    const auto refused = [](const Json& j, const char* needle) {
        const std::string msg = message_of<FormatError>(
            [&] { (void)BpeTokenizer::from_hf_json_text(j.dump(), "t.json"); });
        EXPECT_NE(msg.find("t.json"), std::string::npos) << msg;
        EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    };
    const Json good = toy_tokenizer_json(kToyMerges, false);
    Json j = good;
    j["model"]["type"] = "WordPiece";
    refused(j, "model.type");
    j = good;
    j["pre_tokenizer"] = {{"type", "Metaspace"}};
    refused(j, "pre_tokenizer");
    j["pre_tokenizer"] = {{"type", 5}};
    refused(j, "pre_tokenizer is 5");
    j = good;
    j.erase("pre_tokenizer");
    refused(j, "pre_tokenizer");
    j = good;
    j["pre_tokenizer"]["use_regex"] = false;
    refused(j, "use_regex");
    j = good;
    j["normalizer"] = {{"type", "NFC"}};
    refused(j, "normalizer");
    j = good;
    j["model"]["byte_fallback"] = true;
    refused(j, "byte_fallback");
    j = good;
    j["model"]["continuing_subword_prefix"] = "##";
    refused(j, "continuing_subword_prefix");
    j = good;
    j["model"]["merges"][0] = 7;
    refused(j, "model.merges[0]");
    j = good;
    j["added_tokens"][0]["content"] = "different";
    j["added_tokens"][0]["id"] = 3;
    refused(j, "id 3");
    j = good;
    j["model"]["unk_token"] = "<nope>";
    refused(j, "unk_token");
    j = good;
    j.erase("model");
    refused(j, "model");
}

}  // namespace
