#pragma once
// The vocabularies GGUF files embed (`tokenizer.ggml.*`; the file itself: io/gguf.hpp):
// SentencePiece "llama" vocabularies become an SpmTokenizer, byte-level BPE "gpt2" ones the raw
// lists a BpeTokenizer is built from, or the BpeTokenizer itself when GPT-2's pre-tokenizer is the
// file's.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/gguf.hpp"
#include "softprompt/tok/bpe.hpp"
#include "softprompt/tok/spm.hpp"

namespace softprompt::tok {

/// The SentencePiece tokenizer of a GGUF file whose `tokenizer.ggml.model` is "llama":
/// `tokenizer.ggml.tokens` (with `▁`, stored by SpmTokenizer as ' '), `tokenizer.ggml.scores` (0
/// when absent), `tokenizer.ggml.token_type` (derived from the id layout when absent) and
/// `tokenizer.ggml.add_space_prefix` (default true), encoded with SpmRules::kSentencePiece.
/// SpmTokenizer's fixed layout is required: `unknown_token_id`, `bos_token_id` and `eos_token_id`
/// must be 0, 1 and 2 when present, ids 3..258 the byte tokens. FormatError otherwise.
inline SpmTokenizer gguf_spm_tokenizer(const io::GgufFile& file) {
    const std::string& path = file.path();
    const io::GgufValue& model = file.at("tokenizer.ggml.model");
    if (model.as_string() != "llama")
        throw FormatError::at(path, model.offset(),
                              "tokenizer.ggml.model is '" + model.as_string() +
                                  "', not the SentencePiece 'llama' model" +
                                  (model.as_string() == "gpt2"
                                       ? " (read a byte-level BPE vocabulary with gguf_bpe_vocab)"
                                       : ""));
    const io::GgufValue& tokens_value = file.at("tokenizer.ggml.tokens");
    std::vector<std::string> pieces = tokens_value.as_strings();
    const std::size_t n = pieces.size();
    auto check_size = [&](const io::GgufValue& v) {
        if (v.array_size() != n)
            throw FormatError::at(path, v.offset(),
                                  "metadata '" + v.key() + "' has " +
                                      std::to_string(v.array_size()) + " items but there are " +
                                      std::to_string(n) + " tokens");
    };
    std::vector<float> scores(n, 0.0f);
    if (const io::GgufValue* s = file.find("tokenizer.ggml.scores")) {
        scores = s->as_floats();
        check_size(*s);
    }
    std::vector<SpmTokenType> types;
    if (const io::GgufValue* t = file.find("tokenizer.ggml.token_type")) {
        const std::vector<std::int32_t> raw = t->as_ints<std::int32_t>();
        check_size(*t);
        types.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (raw[i] < 0 || raw[i] > 6)
                throw FormatError::at(path, t->offset(),
                                      "metadata 'tokenizer.ggml.token_type': token " +
                                          std::to_string(i) + " has unknown type " +
                                          std::to_string(raw[i]));
            types.push_back(static_cast<SpmTokenType>(raw[i]));
        }
    }
    for (const auto& [key, want] :
         {std::pair<const char*, std::int64_t>{"tokenizer.ggml.unknown_token_id", 0},
          {"tokenizer.ggml.bos_token_id", 1},
          {"tokenizer.ggml.eos_token_id", 2}}) {
        if (const io::GgufValue* v = file.find(key); v && v->as_int<std::int64_t>() != want)
            throw FormatError::at(path, v->offset(),
                                  std::string("metadata '") + key + "' is " + v->to_string() +
                                      "; SpmTokenizer's layout needs " + std::to_string(want));
    }
    // SentencePiece's `▁` (U+2581, E2 96 81) becomes the space SpmTokenizer stores.
    for (std::string& piece : pieces) {
        for (std::size_t at = piece.find("\xE2\x96\x81"); at != std::string::npos;
             at = piece.find("\xE2\x96\x81", at + 1)) {
            piece.replace(at, 3, " ");
        }
    }
    const SpmOptions options{
        .rules = SpmRules::kSentencePiece,
        .add_dummy_prefix = file.get_bool_or("tokenizer.ggml.add_space_prefix", true)};
    try {
        return SpmTokenizer(std::move(pieces), std::move(scores), std::move(types), options, path);
    } catch (const FormatError& e) {
        throw FormatError::at(path, tokens_value.offset(),
                              std::string("tokenizer.ggml.tokens: ") + e.what());
    }
}

/// Maps `path` and reads its SentencePiece tokenizer (see gguf_spm_tokenizer(const io::GgufFile&)).
inline SpmTokenizer load_gguf_spm_tokenizer(const std::string& path) {
    return gguf_spm_tokenizer(io::GgufFile(path));
}

/// The raw lists of a byte-level BPE ("gpt2") vocabulary, for a BPE tokenizer to be built from.
struct GgufBpeVocab {
    std::vector<std::string> tokens;  ///< tokenizer.ggml.tokens, as stored ("Ġthe": byte-level)
    std::vector<std::string>
        merges;             ///< tokenizer.ggml.merges: "left right", highest priority first
    std::int32_t bos = -1;  ///< tokenizer.ggml.bos_token_id; -1 when absent
    std::int32_t eos = -1;  ///< tokenizer.ggml.eos_token_id; -1 when absent
    std::vector<std::int32_t> token_types;  ///< tokenizer.ggml.token_type; empty when absent
    std::string pre;  ///< tokenizer.ggml.pre (pre-tokenizer name); empty when absent
};

/// The vocabulary of a GGUF file whose `tokenizer.ggml.model` is "gpt2". Token ids must be
/// below the token count (0xFFFFFFFF, llama.cpp's "none", reads as -1). FormatError otherwise.
inline GgufBpeVocab gguf_bpe_vocab(const io::GgufFile& file) {
    const std::string& path = file.path();
    const io::GgufValue& model = file.at("tokenizer.ggml.model");
    if (model.as_string() != "gpt2")
        throw FormatError::at(
            path, model.offset(),
            "tokenizer.ggml.model is '" + model.as_string() +
                "', not the byte-level BPE 'gpt2' model" +
                (model.as_string() == "llama"
                     ? " (read a SentencePiece vocabulary with gguf_spm_tokenizer)"
                     : ""));
    GgufBpeVocab v;
    v.tokens = file.at("tokenizer.ggml.tokens").as_strings();
    v.merges = file.at("tokenizer.ggml.merges").as_strings();
    if (const io::GgufValue* t = file.find("tokenizer.ggml.token_type")) {
        v.token_types = t->as_ints<std::int32_t>();
        if (v.token_types.size() != v.tokens.size())
            throw FormatError::at(
                path, t->offset(),
                "metadata 'tokenizer.ggml.token_type' has " + std::to_string(v.token_types.size()) +
                    " items but there are " + std::to_string(v.tokens.size()) + " tokens");
    }
    v.pre = file.get_string_or("tokenizer.ggml.pre", "");
    auto id = [&](const char* key) -> std::int32_t {
        const io::GgufValue* value = file.find(key);
        if (!value) return -1;
        const auto raw = value->as_int<std::int64_t>();
        if (raw == 0xFFFFFFFF || raw == -1) return -1;
        if (raw < 0 || std::uint64_t(raw) >= v.tokens.size())
            throw FormatError::at(path, value->offset(),
                                  std::string("metadata '") + key + "' is " + std::to_string(raw) +
                                      "; there are " + std::to_string(v.tokens.size()) + " tokens");
        return std::int32_t(raw);
    };
    v.bos = id("tokenizer.ggml.bos_token_id");
    v.eos = id("tokenizer.ggml.eos_token_id");
    return v;
}

/// Maps `path` and reads its BPE vocabulary (see gguf_bpe_vocab(const io::GgufFile&)).
inline GgufBpeVocab gguf_bpe_vocab(const std::string& path) {
    return gguf_bpe_vocab(io::GgufFile(path));
}

/// The BpeTokenizer of a "gpt2" vocabulary: BOS/EOS as the file says, control and user-defined
/// tokens (llama.cpp's token types 3 and 4) special. Other byte-level BPE families (Llama 3's
/// "llama-bpe", Qwen's "qwen2") split text with their own regex, which a GGUF names in
/// `tokenizer.ggml.pre` but does not hold: FormatError naming it.
inline BpeTokenizer gguf_bpe_tokenizer(const io::GgufFile& file) {
    GgufBpeVocab v = gguf_bpe_vocab(file);
    if (!v.pre.empty() && v.pre != "gpt-2")
        throw FormatError(file.path() + ": tokenizer.ggml.pre is '" + v.pre +
                          "'; only GPT-2's pre-tokenizer is read from GGUF (use the model's "
                          "tokenizer.json)");
    BpeOptions options;
    options.bos = v.bos;
    options.eos = v.eos;
    for (std::size_t i = 0; i < v.token_types.size(); ++i)
        if (v.token_types[i] == 3 || v.token_types[i] == 4)
            options.special_ids.push_back(std::int32_t(i));
    return BpeTokenizer(std::move(v.tokens), v.merges, std::move(options), file.path());
}

}  // namespace softprompt::tok
