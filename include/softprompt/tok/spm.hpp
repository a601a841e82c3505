#pragma once
// SentencePiece-style BPE tokenizer with byte fallback, as used by LLaMA models and llama2.c
// (`run.c` encode/decode semantics), loaded from llama2.c's `tokenizer.bin`.
//
// tokenizer.bin (all little-endian; the vocabulary size is NOT stored: it comes from the model):
//   int32   max_token_length            longest piece in bytes
//   vocab_size times:
//     float32 score                     merge priority (higher merges first)
//     int32   length                    0 <= length <= max_token_length
//     byte    piece[length]             UTF-8, no terminator; SentencePiece's `▁` (U+2581) is
//                                       stored as a plain space ' '
//   nothing after the last piece
// Fixed ids: 0 `<unk>`, 1 `<s>` (BOS, stored as "\n<s>\n"), 2 `</s>` (EOS, stored as "\n</s>\n"),
// 3..258 the byte tokens `<0x00>`..`<0xFF>`, then merged pieces and single characters.
//
// encode(text, bos, eos), as llama2.c:
//   1. if `text` is not empty, a dummy-prefix space: the id of the piece " ";
//   2. each UTF-8 character (a lead byte and up to 3 continuation bytes; stray continuation bytes
//      group the same way) is looked up as a piece; when absent, each of its bytes becomes the byte
//      token `byte + 3`;
//   3. repeatedly merge the adjacent pair whose concatenated text is a piece with the highest score
//      (the leftmost such pair on ties) until no adjacent pair forms a piece.
//   BOS is put before and EOS after the result. Differences from run.c, none of which changes the
//   output for real vocabularies: BOS/EOS never take part in merges (run.c tries to merge the text
//   "\n<s>\n" with its neighbour); a piece whose score is -inf or NaN never merges (run.c: never
//   below -1e10); a 0 byte inside `text` is encoded (as byte fallback) instead of ending the text;
//   when the vocabulary has no " " piece the dummy prefix is the byte token for 0x20 (run.c would
//   emit id -1). The merge loop uses a priority queue over a linked list: O(n log n) in the text
//   length, the same result as run.c's O(n²) rescan.
//
// decode(ids), as llama2.c: a byte token yields its raw byte, BOS and EOS yield nothing, `<unk>`
// yields the text "<unk>", and a piece that directly follows BOS loses one leading space (the
// dummy prefix). So decode(encode(s, true, ...)) == s for every s, including non-UTF-8 bytes.
// Without a BOS in front the dummy prefix stays: decode(encode("hi", false, false)) == " hi".
//
// SentencePiece rules (SpmRules::kSentencePiece, what GGUF vocabularies use; llama.cpp's
// `llm_tokenizer_spm`, i.e. SentencePiece BPE with byte fallback). A vocabulary built with
// explicit token types (`SpmTokenType`, GGUF's `tokenizer.ggml.token_type`) and these rules
// encodes:
//   1. if `text` is not empty and add_dummy_prefix is on, a space is put in front of it;
//   2. the text is cut into characters by the UTF-8 lead byte alone (1 byte for 0x00-0xBF, 2 for
//      0xC0-0xDF, 3 for 0xE0-0xEF, 4 for 0xF0-0xFF, fewer at the end of the text); a character
//      stays a piece of text even when the vocabulary lacks it;
//   3. repeatedly merge the adjacent pair whose concatenated text is a mergeable piece (type
//      normal, user-defined or undefined: never control, unknown, unused or byte pieces) with the
//      highest score, leftmost on ties;
//   4. each remaining piece of text is its token if it is a mergeable piece, else its bytes become
//      byte tokens (byte fallback).
// So a character missing from the vocabulary can still merge with its neighbours (run.c turns it
// into bytes first), and an invalid UTF-8 run is cut differently; on valid UTF-8 over a
// vocabulary holding every character the merges can reach, both rules give the same ids.
// Pieces are stored with ' ' in place of `▁` whatever the source (GGUF stores `▁`), which is the
// same as SentencePiece's escaping of the text's spaces as long as no piece holds a raw space.
// Decoding is the same under both rules, except that every control piece (not only BOS/EOS)
// yields nothing, and the space after BOS is kept when add_dummy_prefix is off.
//
// Threads: a loaded tokenizer is immutable; encode and decode are const and keep their scratch per
// call, so one tokenizer may serve any number of threads at once.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/mmap.hpp"
#include "softprompt/tok/utf8.hpp"

namespace softprompt::tok {

namespace detail {

/// Value of a byte-token piece "<0xNN>" (hex digits in either case), or -1 for any other piece.
inline int byte_token_value(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hex(piece[3]);
    const int lo = hex(piece[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/// "<0xNN>" for a byte value (upper-case hex, as SentencePiece writes it).
inline std::string byte_token_piece(int byte) {
    constexpr char digits[] = "0123456789ABCDEF";
    return std::string("<0x") + digits[(byte >> 4) & 15] + digits[byte & 15] + ">";
}

/// A piece quoted for an error message, control bytes escaped.
inline std::string quoted(std::string_view s) {
    constexpr char digits[] = "0123456789abcdef";
    std::string out = "'";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\n') {
            out += "\\n";
        } else if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += digits[c >> 4];
            out += digits[c & 15];
        } else {
            out += ch;
        }
    }
    return out + "'";
}

/// `s` without spaces at either end and with each run of spaces inside cut to one.
inline std::string collapse_spaces(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (const char c : s) {
        if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
        out += c;
    }
    if (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

}  // namespace detail

/// SentencePiece piece types, numbered as SentencePiece and GGUF (`tokenizer.ggml.token_type`)
/// number them.
enum class SpmTokenType : std::int32_t {
    kUndefined = 0,
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
};

/// Which encoder to follow (see the top of this file).
enum class SpmRules {
    kLlama2c,        ///< llama2.c run.c: what from_llama2c uses
    kSentencePiece,  ///< SentencePiece BPE as llama.cpp implements it: what GGUF vocabularies use
};

/// How a tokenizer built from pieces encodes.
struct SpmOptions {
    SpmRules rules = SpmRules::kLlama2c;
    /// A space in front of non-empty text (SentencePiece's add_dummy_prefix; GGUF's
    /// `tokenizer.ggml.add_space_prefix`).
    bool add_dummy_prefix = true;
    /// SentencePiece's remove_extra_whitespaces (kSentencePiece rules only): spaces (U+0020) at
    /// the start and end of the text are dropped and each run of them inside becomes one, before
    /// the dummy prefix. Off for GGUF vocabularies (llama.cpp does not do it).
    bool remove_extra_whitespaces = false;
    /// SentencePiece's reading of bytes that are not UTF-8 (kSentencePiece rules only): each byte
    /// that does not begin a well-formed character becomes U+FFFD (so encodes as the bytes of
    /// U+FFFD). Off for GGUF vocabularies, where llama.cpp keeps the raw bytes.
    bool replace_invalid_utf8 = false;
    /// A `▁` (U+2581) in the text is a space (kSentencePiece rules only), as in SentencePiece and
    /// llama.cpp, which both write the text's spaces as `▁` before matching pieces.
    bool meta_space_is_space = false;
};

/// SentencePiece-style BPE tokenizer (llama2.c semantics; see the top of this file). Immutable;
/// copies share one vocabulary, so copying is cheap and a tokenizer may be used from many threads.
class SpmTokenizer {
public:
    static constexpr std::int32_t kUnk = 0;
    static constexpr std::int32_t kBos = 1;
    static constexpr std::int32_t kEos = 2;
    static constexpr std::int32_t kFirstByte = 3;  ///< id of the byte token <0x00>
    static constexpr std::int32_t kMinVocab = kFirstByte + 256;

    /// Loads llama2.c's `tokenizer.bin` (memory-mapped while parsing). `vocab_size` comes from the
    /// model header. Throws IoError (unreadable file), FormatError (bad bytes: names the file, the
    /// byte offset and the problem) or ConfigError (vocab_size below 259).
    static SpmTokenizer from_llama2c(const std::string& path, std::int32_t vocab_size) {
        const io::MappedFile file(path);
        return from_llama2c(file.bytes(), vocab_size, path);
    }

    /// Parses tokenizer.bin bytes already in memory; `name` stands for the file in error messages.
    static SpmTokenizer from_llama2c(std::span<const std::byte> bytes, std::int32_t vocab_size,
                                     const std::string& name = "<memory>") {
        if (vocab_size < kMinVocab) {
            throw ConfigError("SpmTokenizer::from_llama2c(" + name + "): vocab_size " +
                              std::to_string(vocab_size) + " is too small: ids 0.." +
                              std::to_string(kMinVocab - 1) +
                              " are <unk>, <s>, </s> and the 256 byte tokens");
        }
        io::ByteReader r(bytes, name);
        const auto max_len = r.read<std::int32_t>();
        if (max_len < 0) {
            r.fail_at(0, "max_token_length is negative (" + std::to_string(max_len) + ")");
        }
        const auto n = static_cast<std::size_t>(vocab_size);
        std::vector<std::string> pieces;
        std::vector<float> scores;
        // Every token takes at least 8 bytes: do not trust vocab_size for the reservation.
        pieces.reserve(std::min(n, r.remaining() / 8 + 1));
        scores.reserve(pieces.capacity());
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t token_offset = r.offset();
            const std::string token = "token " + std::to_string(i) + " of " + std::to_string(n);
            if (r.remaining() < 8) {
                r.fail(token + ": truncated: need 8 bytes for its score and length, only " +
                       std::to_string(r.remaining()) + " left (is vocab_size right?)");
            }
            const auto score = r.read<float>();
            const std::size_t length_offset = r.offset();
            const auto length = r.read<std::int32_t>();
            if (length < 0) {
                r.fail_at(length_offset, token + ": negative length " + std::to_string(length));
            }
            if (length > max_len) {
                r.fail_at(length_offset, token + ": length " + std::to_string(length) +
                                             " exceeds max_token_length " +
                                             std::to_string(max_len));
            }
            if (static_cast<std::size_t>(length) > r.remaining()) {
                r.fail_at(length_offset, token + ": length " + std::to_string(length) +
                                             " runs past the end of the data (only " +
                                             std::to_string(r.remaining()) + " bytes left)");
            }
            std::string piece(r.chars(static_cast<std::size_t>(length)));
            const auto id = static_cast<std::int32_t>(i);
            if (id >= kFirstByte && id < kMinVocab &&
                detail::byte_token_value(piece) != id - kFirstByte) {
                r.fail_at(token_offset, token + " should be the byte token " +
                                            detail::byte_token_piece(id - kFirstByte) + " but is " +
                                            detail::quoted(piece));
            }
            pieces.push_back(std::move(piece));
            scores.push_back(score);
        }
        if (!r.at_end()) {
            r.fail(std::to_string(r.remaining()) + " trailing bytes after the last of " +
                   std::to_string(n) + " tokens (is vocab_size right?)");
        }
        return SpmTokenizer(std::move(pieces), std::move(scores), name,
                            static_cast<std::size_t>(max_len));
    }

    /// Builds a tokenizer from pieces (with ' ' for `▁`) and scores, e.g. from a GGUF vocabulary.
    /// The id layout above is required; violations throw FormatError naming `source`.
    SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::string source)
        : SpmTokenizer(std::move(pieces), std::move(scores), {}, SpmOptions{}, std::move(source),
                       0) {}

    /// Builds a tokenizer from pieces (with ' ' for `▁`), scores, piece types and encoding options
    /// (a GGUF vocabulary uses SpmRules::kSentencePiece). `types` may be empty: then 0 is unknown,
    /// 1 and 2 control, 3..258 byte and every other piece normal. The id layout above is required
    /// (ids 3..258 must be byte pieces, of type byte when types are given); violations throw
    /// FormatError naming `source`.
    SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                 std::vector<SpmTokenType> types, SpmOptions options, std::string source)
        : SpmTokenizer(std::move(pieces), std::move(scores), std::move(types), options,
                       std::move(source), 0) {}

    [[nodiscard]] std::int32_t vocab_size() const noexcept {
        return static_cast<std::int32_t>(v_->scores.size());
    }
    [[nodiscard]] static constexpr std::int32_t unk() noexcept { return kUnk; }
    [[nodiscard]] static constexpr std::int32_t bos() noexcept { return kBos; }
    [[nodiscard]] static constexpr std::int32_t eos() noexcept { return kEos; }
    /// Id of the byte token for `byte` (<0xNN>).
    [[nodiscard]] static constexpr std::int32_t byte_token(std::uint8_t byte) noexcept {
        return kFirstByte + byte;
    }
    /// Longest piece in bytes.
    [[nodiscard]] std::size_t max_token_length() const noexcept { return v_->max_len; }
    /// Where the vocabulary came from (file path, "<memory>", ...).
    [[nodiscard]] const std::string& source() const noexcept { return v_->source; }
    /// The encoding rules and dummy-prefix setting.
    [[nodiscard]] const SpmOptions& options() const noexcept { return v_->options; }
    /// The type of a piece (given at construction, or derived from the id layout).
    [[nodiscard]] SpmTokenType type(std::int32_t id) const {
        check_id("type", id);
        return v_->types[static_cast<std::size_t>(id)];
    }

    /// The stored text of a piece (' ' in place of `▁`; BOS is "\n<s>\n" in llama2.c files).
    [[nodiscard]] std::string_view piece(std::int32_t id) const {
        check_id("piece", id);
        return v_->piece(id);
    }
    [[nodiscard]] float score(std::int32_t id) const {
        check_id("score", id);
        return v_->scores[static_cast<std::size_t>(id)];
    }
    /// Id of the piece with exactly this text (the lowest id if the text occurs twice).
    [[nodiscard]] std::optional<std::int32_t> find(std::string_view piece) const {
        const auto it = v_->index.find(piece);
        if (it == v_->index.end()) return std::nullopt;
        return it->second;
    }

    /// Token ids of `text`, with BOS in front and/or EOS at the end when asked.
    [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text, bool add_bos,
                                                   bool add_eos) const {
        std::vector<std::int32_t> ids;
        encode_into(text, add_bos, add_eos, ids);
        return ids;
    }

    /// As encode, into `out` (its contents are replaced, its capacity reused).
    void encode_into(std::string_view text, bool add_bos, bool add_eos,
                     std::vector<std::int32_t>& out) const {
        const Vocab& v = *v_;
        std::vector<std::int32_t> syms;  // symbols before merging
        if (v.options.rules == SpmRules::kSentencePiece) {
            encode_sentencepiece(text, syms);
            out.clear();
            out.reserve(syms.size() + 2);
            if (add_bos) out.push_back(kBos);
            out.insert(out.end(), syms.begin(), syms.end());
            if (add_eos) out.push_back(kEos);
            return;
        }
        syms.reserve(text.size() + 1);
        if (!text.empty() && v.options.add_dummy_prefix) syms.push_back(v.space_id);
        const std::size_t n = text.size();
        for (std::size_t i = 0; i < n;) {
            // A character: one byte, then up to 3 continuation bytes (run.c's grouping).
            const std::size_t start = i++;
            while (i < n && i - start < 4 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) {
                ++i;
            }
            const std::string_view ch = text.substr(start, i - start);
            const auto it = v.index.find(ch);
            if (it != v.index.end()) {
                syms.push_back(it->second);
            } else {
                for (const char b : ch) syms.push_back(byte_token(static_cast<std::uint8_t>(b)));
            }
        }
        merge(syms);
        out.clear();
        out.reserve(syms.size() + 2);
        if (add_bos) out.push_back(kBos);
        out.insert(out.end(), syms.begin(), syms.end());
        if (add_eos) out.push_back(kEos);
    }

    /// Text of token `id` when it follows token `prev` (pass -1 for none): raw byte for a byte
    /// token, nothing for BOS/EOS, the piece without its leading space right after BOS. The view
    /// points into the tokenizer and lives as long as it (or a copy) does.
    [[nodiscard]] std::string_view decode_piece(std::int32_t prev, std::int32_t id) const {
        check_id("decode_piece", id);
        return piece_text(prev, id);
    }

    /// Text of a sequence of ids (see decode_piece); throws Error on an id out of range.
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
        std::string out;
        std::int32_t prev = -1;
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const std::int32_t id = ids[i];
            if (id < 0 || id >= vocab_size()) {
                throw Error("SpmTokenizer::decode: token id " + std::to_string(id) +
                            " at position " + std::to_string(i) + " is out of range [0, " +
                            std::to_string(vocab_size()) + ") for the vocabulary of " + v_->source);
            }
            out += piece_text(prev, id);
            prev = id;
        }
        return out;
    }

private:
    struct Vocab {
        std::vector<char> arena;           // all pieces back to back
        std::vector<std::size_t> offsets;  // piece i is arena[offsets[i], offsets[i+1])
        std::vector<float> scores;
        std::vector<std::int16_t> byte_of;  // raw byte of a byte-token piece, -1 otherwise
        std::unordered_map<std::string_view, std::int32_t> index;  // views into arena
        std::array<char, 256> raw_bytes{};  // raw_bytes[b] == b, backing decoded byte tokens
        std::int32_t space_id = 0;
        std::size_t max_len = 0;  // as declared (tokenizer.bin's max_token_length) or longer
        std::size_t longest = 0;  // the longest piece actually stored
        std::string source;
        SpmOptions options;
        std::vector<SpmTokenType> types;
        // SentencePiece rules: text -> id of the mergeable pieces only (views into arena).
        std::unordered_map<std::string_view, std::int32_t> merge_index;

        std::string_view piece(std::int32_t id) const {
            const auto i = static_cast<std::size_t>(id);
            return {arena.data() + offsets[i], offsets[i + 1] - offsets[i]};
        }
    };

    SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::string source,
                 std::size_t max_len)
        : SpmTokenizer(std::move(pieces), std::move(scores), {}, SpmOptions{}, std::move(source),
                       max_len) {}

    SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                 std::vector<SpmTokenType> types, SpmOptions options, std::string source,
                 std::size_t max_len) {
        auto v = std::make_shared<Vocab>();
        v->source = std::move(source);
        v->options = options;
        if (!types.empty() && types.size() != pieces.size()) {
            throw FormatError(v->source + ": " + std::to_string(pieces.size()) + " pieces but " +
                              std::to_string(types.size()) + " token types");
        }
        if (pieces.size() != scores.size()) {
            throw FormatError(v->source + ": " + std::to_string(pieces.size()) + " pieces but " +
                              std::to_string(scores.size()) + " scores");
        }
        if (pieces.size() < static_cast<std::size_t>(kMinVocab) ||
            pieces.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
            throw FormatError(v->source + ": a vocabulary of " + std::to_string(pieces.size()) +
                              " pieces; need at least " + std::to_string(kMinVocab) +
                              " (<unk>, <s>, </s> and 256 byte tokens)");
        }
        std::size_t total = 0;
        for (const auto& p : pieces) total += p.size();
        v->arena.reserve(total);
        v->offsets.reserve(pieces.size() + 1);
        v->byte_of.reserve(pieces.size());
        v->offsets.push_back(0);
        const bool typed = !types.empty();
        if (!typed) {
            types.assign(pieces.size(), SpmTokenType::kNormal);
            types[kUnk] = SpmTokenType::kUnknown;
            types[kBos] = types[kEos] = SpmTokenType::kControl;
            std::fill(types.begin() + kFirstByte, types.begin() + kMinVocab, SpmTokenType::kByte);
        }
        for (std::size_t i = 0; i < pieces.size(); ++i) {
            const auto& p = pieces[i];
            v->arena.insert(v->arena.end(), p.begin(), p.end());
            v->offsets.push_back(v->arena.size());
            // With explicit types only byte pieces decode to raw bytes.
            const bool byte_piece = !typed || types[i] == SpmTokenType::kByte;
            v->byte_of.push_back(
                static_cast<std::int16_t>(byte_piece ? detail::byte_token_value(p) : -1));
            v->max_len = std::max({v->max_len, max_len, p.size()});
            v->longest = std::max(v->longest, p.size());
        }
        for (int b = 0; b < 256; ++b) {
            const auto id = static_cast<std::size_t>(kFirstByte + b);
            if (detail::byte_token_value(pieces[id]) != b) {
                throw FormatError(v->source + ": token " + std::to_string(kFirstByte + b) +
                                  " should be the byte token " + detail::byte_token_piece(b) +
                                  " but is " + detail::quoted(pieces[id]));
            }
            if (types[id] != SpmTokenType::kByte) {
                throw FormatError(v->source + ": token " + std::to_string(id) + " (" +
                                  detail::byte_token_piece(b) +
                                  ") should have the byte type (6), has " +
                                  std::to_string(static_cast<std::int32_t>(types[id])));
            }
            v->raw_bytes[static_cast<std::size_t>(b)] = static_cast<char>(b);
        }
        v->types = std::move(types);
        v->scores = std::move(scores);
        v->index.reserve(pieces.size());
        for (std::size_t i = 0; i < pieces.size(); ++i) {
            v->index.emplace(v->piece(static_cast<std::int32_t>(i)), static_cast<std::int32_t>(i));
        }
        const auto space = v->index.find(" ");
        v->space_id = space != v->index.end() ? space->second : byte_token(' ');
        if (v->options.rules == SpmRules::kSentencePiece) {
            v->merge_index.reserve(pieces.size());
            for (std::size_t i = 0; i < pieces.size(); ++i) {
                const SpmTokenType t = v->types[i];
                if (t == SpmTokenType::kNormal || t == SpmTokenType::kUserDefined ||
                    t == SpmTokenType::kUndefined) {
                    v->merge_index.emplace(v->piece(static_cast<std::int32_t>(i)),
                                           static_cast<std::int32_t>(i));
                }
            }
        }
        v_ = std::move(v);
    }

    void check_id(const char* fn, std::int32_t id) const {
        if (id < 0 || id >= vocab_size()) {
            throw Error(std::string("SpmTokenizer::") + fn + ": token id " + std::to_string(id) +
                        " is out of range [0, " + std::to_string(vocab_size()) +
                        ") for the vocabulary of " + v_->source);
        }
    }

    // decode_piece without the range check.
    std::string_view piece_text(std::int32_t prev, std::int32_t id) const {
        const Vocab& v = *v_;
        if (id == kBos || id == kEos) return {};
        if (v.types[static_cast<std::size_t>(id)] == SpmTokenType::kControl) return {};
        const int byte = v.byte_of[static_cast<std::size_t>(id)];
        if (byte >= 0) return {&v.raw_bytes[static_cast<std::size_t>(byte)], 1};
        std::string_view p = v.piece(id);
        if (prev == kBos && v.options.add_dummy_prefix && !p.empty() && p.front() == ' ') {
            p.remove_prefix(1);
        }
        return p;
    }

    // SentencePiece rules (see the top of this file): symbols are runs of the text, merged by the
    // same heap-over-linked-list loop as merge(); a merge is allowed when the two adjacent runs
    // together spell a mergeable piece. Two runs are adjacent in the text, so the candidate is a
    // view of it: no string is built per candidate.
    void encode_sentencepiece(std::string_view input, std::vector<std::int32_t>& out) const {
        const Vocab& v = *v_;
        out.clear();
        std::string replaced, collapsed;
        if (v.options.replace_invalid_utf8) {
            replaced = unicode::replace_invalid_bytes(input);
            input = replaced;
        }
        if (v.options.remove_extra_whitespaces) {
            collapsed = detail::collapse_spaces(input);
            input = collapsed;
        }
        std::string spaced;
        if (v.options.meta_space_is_space && input.find("\xE2\x96\x81") != input.npos) {
            for (std::size_t i = 0; i < input.size(); ++i) {
                if (input.compare(i, 3, "\xE2\x96\x81") == 0) {
                    spaced += ' ';
                    i += 2;
                } else {
                    spaced += input[i];
                }
            }
            // SentencePiece drops trailing `▁`s too, whether spaces or `▁` in the text.
            if (v.options.remove_extra_whitespaces) {
                while (!spaced.empty() && spaced.back() == ' ') spaced.pop_back();
            }
            input = spaced;
        }
        if (input.empty()) return;
        std::string text;
        text.reserve(input.size() + 1);
        if (v.options.add_dummy_prefix) text += ' ';
        text += input;
        // Characters by the lead byte, as llama.cpp's unicode_len_utf8.
        std::vector<std::size_t> start, len;
        start.reserve(text.size());
        len.reserve(text.size());
        for (std::size_t i = 0; i < text.size();) {
            static constexpr std::uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                      1, 1, 1, 1, 2, 2, 3, 4};
            const std::size_t n = std::min<std::size_t>(
                kLen[static_cast<unsigned char>(text[i]) >> 4], text.size() - i);
            start.push_back(i);
            len.push_back(n);
            i += n;
        }
        const std::size_t n = start.size();
        struct Candidate {
            float score;
            std::int32_t left, right;
            std::uint32_t left_version, right_version;
        };
        const auto lower = [](const Candidate& a, const Candidate& b) {
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        };
        std::vector<Candidate> storage;
        storage.reserve(n);
        std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> heap(
            lower, std::move(storage));
        std::vector<std::int32_t> next(n), prev(n);
        std::vector<std::uint32_t> version(n, 0);
        for (std::size_t i = 0; i < n; ++i) {
            prev[i] = static_cast<std::int32_t>(i) - 1;
            next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
        }
        const auto consider = [&](std::int32_t l, std::int32_t r) {
            const auto li = static_cast<std::size_t>(l), ri = static_cast<std::size_t>(r);
            const std::string_view joined(text.data() + start[li], len[li] + len[ri]);
            const auto it = v.merge_index.find(joined);
            if (it == v.merge_index.end()) return;
            const float s = v.scores[static_cast<std::size_t>(it->second)];
            if (std::isnan(s)) return;  // NaN would break the heap's ordering
            heap.push({s, l, r, version[li], version[ri]});
        };
        for (std::size_t i = 0; i + 1 < n; ++i) {
            consider(static_cast<std::int32_t>(i), static_cast<std::int32_t>(i + 1));
        }
        while (!heap.empty()) {
            const Candidate c = heap.top();
            heap.pop();
            const auto li = static_cast<std::size_t>(c.left),
                       ri = static_cast<std::size_t>(c.right);
            if (version[li] != c.left_version || version[ri] != c.right_version ||
                next[li] != c.right) {
                continue;  // stale: a neighbour merged since this pair was found
            }
            len[li] += len[ri];
            ++version[li];
            ++version[ri];
            next[li] = next[ri];
            if (next[li] >= 0) prev[static_cast<std::size_t>(next[li])] = c.left;
            if (prev[li] >= 0) consider(prev[li], c.left);
            if (next[li] >= 0) consider(c.left, next[li]);
        }
        out.reserve(n);
        for (std::int32_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)]) {
            const auto ii = static_cast<std::size_t>(i);
            const std::string_view run(text.data() + start[ii], len[ii]);
            const auto it = v.merge_index.find(run);
            if (it != v.merge_index.end()) {
                out.push_back(it->second);
            } else {
                for (const char b : run) out.push_back(byte_token(static_cast<std::uint8_t>(b)));
            }
        }
    }

    // BPE merges in place: always the adjacent pair forming the highest-scoring piece, leftmost on
    // ties. Symbols form a linked list (merging keeps the left node); candidate pairs wait in a
    // max-heap and are dropped when popped if either node changed since they were pushed.
    void merge(std::vector<std::int32_t>& syms) const {
        const std::size_t n = syms.size();
        if (n < 2) return;
        const Vocab& v = *v_;
        struct Candidate {
            float score;
            std::int32_t left, right, id;
            std::uint32_t left_version, right_version;
        };
        const auto lower = [](const Candidate& a, const Candidate& b) {
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        };
        std::vector<Candidate> storage;
        storage.reserve(n);
        std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> heap(
            lower, std::move(storage));
        std::vector<std::int32_t> prev(n), next(n);
        std::vector<std::uint32_t> version(n, 0);
        for (std::size_t i = 0; i < n; ++i) {
            prev[i] = static_cast<std::int32_t>(i) - 1;
            next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
        }
        std::string buffer;
        // Not max_len: a header may declare 2^31 - 1 whatever its pieces are.
        buffer.reserve(2 * v.longest);
        const auto consider = [&](std::int32_t l, std::int32_t r) {
            const auto li = static_cast<std::size_t>(l), ri = static_cast<std::size_t>(r);
            buffer.assign(v.piece(syms[li]));
            buffer.append(v.piece(syms[ri]));
            const auto it = v.index.find(std::string_view(buffer));
            if (it == v.index.end()) return;
            const float s = v.scores[static_cast<std::size_t>(it->second)];
            // -inf and NaN never merge (and NaN would break the heap's ordering).
            if (!(s > -std::numeric_limits<float>::infinity())) return;
            heap.push({s, l, r, it->second, version[li], version[ri]});
        };
        for (std::size_t i = 0; i + 1 < n; ++i) {
            consider(static_cast<std::int32_t>(i), static_cast<std::int32_t>(i + 1));
        }
        while (!heap.empty()) {
            const Candidate c = heap.top();
            heap.pop();
            const auto li = static_cast<std::size_t>(c.left),
                       ri = static_cast<std::size_t>(c.right);
            if (version[li] != c.left_version || version[ri] != c.right_version ||
                next[li] != c.right) {
                continue;  // stale: a neighbour merged since this pair was found
            }
            syms[li] = c.id;
            ++version[li];
            ++version[ri];  // the right node is gone
            next[li] = next[ri];
            if (next[li] >= 0) prev[static_cast<std::size_t>(next[li])] = c.left;
            if (prev[li] >= 0) consider(prev[li], c.left);
            if (next[li] >= 0) consider(c.left, next[li]);
        }
        // Node 0 is never removed (merges keep the left node): walk the list from it.
        std::size_t out = 0;
        for (std::int32_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)]) {
            syms[out++] = syms[static_cast<std::size_t>(i)];
        }
        syms.resize(out);
    }

    std::shared_ptr<const Vocab> v_;
};

}  // namespace softprompt::tok
