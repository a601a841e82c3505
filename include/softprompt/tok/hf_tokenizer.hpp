#pragma once
// A Hugging Face `tokenizer.json` as its pipeline says: added tokens, normalizer, pre-tokenizer,
// BPE model, post-processor and decoder, each component as Hugging Face's `tokenizers` (and
// transformers.js, the reference the tests hold it to) define it. This is what Llama 3, Qwen 2/3,
// Mistral, SmolLM2 and TinyLlama ship.
//
// encode(text):
//   0. bytes that are not well-formed UTF-8 are read as U+FFFD, one per maximal ill-formed
//      subsequence (tokenizers take only valid strings; this is what a caller has to do first);
//   1. added tokens are cut out of the text, leftmost first and longest at a position: those with
//      "special": false always, the special ones only with SpecialTokens::recognised (by default
//      their texts are ordinary text, which is safe for untrusted input). `lstrip`/`rstrip` trim
//      the whitespace beside a match; `single_word` takes a match only between non-word
//      characters;
//   2. each piece of text between them (a "section") is normalized, pre-tokenized into words, and
//      each word goes through the BPE model; sections are numbered from 0 in the text, added
//      tokens included (Metaspace's prepend_scheme "first" acts on section 0 only);
//   3. with add_special_tokens, the post-processor's template puts its special tokens around the
//      result (TemplateProcessing's "single"; ByteLevel's post-processor changes no id).
// decode(ids): ids to token texts (special added tokens dropped with skip_special_tokens), then the
// decoder chain over the list of texts, then concatenated. No clean-up of spaces
// (transformers' clean_up_tokenization_spaces is a step above the tokenizer). No decoder: the
// texts joined by ' ', as tokenizers does.
//
// Components (anything else is refused with a FormatError naming the component and its path in
// the file, never approximated):
//   normalizer     NFC, NFD, NFKC, NFKD, Replace (String pattern), Prepend, Strip, Sequence
//   pre_tokenizer  ByteLevel (add_prefix_space; use_regex = GPT-2's pattern), Split (String
//                  pattern, or the GPT-2, Llama 3 and Qwen 2/3 Regex patterns, matched by hand;
//                  behaviours Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous;
//                  invert), Metaspace (replacement, prepend_scheme always/first/never or the older
//                  add_prefix_space, split), Digits (individual_digits), WhitespaceSplit, Sequence
//   model          BPE: vocab, merges as "a b" or ["a", "b"], unk_token, fuse_unk, byte_fallback
//                  (a character with no token becomes its bytes' <0xXX> tokens), ignore_merges
//                  (a word that is a token is that token); dropout, continuing_subword_prefix and
//                  end_of_word_suffix must be null or ""
//   post_processor TemplateProcessing (single), ByteLevel, Sequence of those
//   decoder        ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace (String pattern),
//                  Sequence
// Added tokens with "normalized": true are refused when there is a normalizer (they would have to
// be matched in the normalized text). `truncation` and `padding` are batching settings of the
// caller's and are not applied.
//
// Unicode: \p{L}, \p{N} and \s (White_Space) from tok/unicode_tables.hpp, the normal forms from
// tok/unicode_normalization.hpp (both Unicode 14.0). The Llama 3 and Qwen patterns' `(?i:'s|...)`
// folds case as Unicode's simple case folding does for those letters (so "'S" and "'ſ" match).
//
// Immutable; copies share one vocabulary, and encode/decode keep their scratch per call, so a
// tokenizer may be used from many threads at once.

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/mmap.hpp"
#include "softprompt/tok/bpe.hpp"
#include "softprompt/tok/unicode_normalization.hpp"
#include "softprompt/tok/unicode_tables.hpp"

namespace softprompt::tok {

namespace hf_detail {

using nlohmann::json;
using unicode::CpClass;

/// One code point of valid UTF-8 at text[i]: its length and class.
struct Cp {
    std::size_t len;
    char32_t cp;
    CpClass cls;
};
inline Cp cp_at(std::string_view text, std::size_t i) noexcept {
    const unicode::Utf8Step s = unicode::utf8_step(
        reinterpret_cast<const unsigned char*>(text.data()) + i, text.size() - i);
    return {s.len, s.cp, unicode::cp_class(static_cast<std::uint32_t>(s.cp))};
}

/// The hand-matched regex patterns of Split pre-tokenizers.
enum class KnownPattern { gpt2, llama3, qwen };

// The patterns exactly as tokenizer.json files spell them.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// Whether the code point at text[i] case-folds to the ASCII letter `lower`.
inline std::size_t folds_to(std::string_view text, std::size_t i, char lower) noexcept {
    if (i >= text.size()) return 0;
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == static_cast<unsigned char>(lower) || c == static_cast<unsigned char>(lower - 32)) {
        return 1;
    }
    if (lower == 's' && text.substr(i, 2) == "\xC5\xBF") return 2;  // U+017F LATIN SMALL LONG S
    return 0;
}

/// End of the case-insensitive contraction `'s|'t|'re|'ve|'m|'ll|'d` at i, or i.
inline std::size_t contraction_end(std::string_view text, std::size_t i) noexcept {
    if (text[i] != '\'') return i;
    const std::size_t j = i + 1;
    for (const char c : {'s', 't', 'm', 'd'}) {
        if (const std::size_t n = folds_to(text, j, c)) return j + n;
    }
    const char pairs[3][2] = {{'r', 'e'}, {'v', 'e'}, {'l', 'l'}};
    for (const auto& p : pairs) {
        if (const std::size_t a = folds_to(text, j, p[0])) {
            if (const std::size_t b = folds_to(text, j + a, p[1])) return j + a + b;
        }
    }
    return i;
}

/// End of the Llama 3 (`max_digits` 3) or Qwen (`max_digits` 1) pattern's match at i < size:
///   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,max_digits}
///   | ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
/// as a backtracking engine takes them (the first alternative that matches, each greedy). Every
/// code point is a letter, a number, a space or other, so some alternative always matches.
inline std::size_t llama3_match_end(std::string_view text, std::size_t i, int max_digits) noexcept {
    const std::size_t n = text.size();
    if (const std::size_t e = contraction_end(text, i); e != i) return e;
    const Cp c = cp_at(text, i);
    const auto letters_from = [&](std::size_t j) {
        while (j < n) {
            const Cp d = cp_at(text, j);
            if (d.cls != CpClass::letter) break;
            j += d.len;
        }
        return j;
    };
    const auto is_crlf = [](char32_t cp) { return cp == '\r' || cp == '\n'; };
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c.cls == CpClass::letter) return letters_from(i);
    if (c.cls != CpClass::number && !is_crlf(c.cp) && i + c.len < n &&
        cp_at(text, i + c.len).cls == CpClass::letter) {
        return letters_from(i + c.len);
    }
    // \p{N}{1,max_digits}
    if (c.cls == CpClass::number) {
        std::size_t j = i;
        for (int k = 0; k < max_digits && j < n; ++k) {
            const Cp d = cp_at(text, j);
            if (d.cls != CpClass::number) break;
            j += d.len;
        }
        return j;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const auto others_then_crlf = [&](std::size_t j) {
        while (j < n) {
            const Cp d = cp_at(text, j);
            if (d.cls != CpClass::other) break;
            j += d.len;
        }
        while (j < n && (text[j] == '\r' || text[j] == '\n')) ++j;
        return j;
    };
    if (c.cls == CpClass::other) return others_then_crlf(i);
    if (c.cp == ' ' && i + 1 < n && cp_at(text, i + 1).cls == CpClass::other) {
        return others_then_crlf(i + 1);
    }
    // c is a space: \s*[\r\n]+ ends after the run's last CR or LF; \s+(?!\S) leaves the run's
    // last space to the word after it; else \s+.
    std::size_t j = i, after_last_crlf = 0, last_start = i;
    while (j < n) {
        const Cp d = cp_at(text, j);
        if (d.cls != CpClass::space) break;
        if (is_crlf(d.cp)) after_last_crlf = j + 1;
        last_start = j;
        j += d.len;
    }
    if (after_last_crlf != 0) return after_last_crlf;
    if (j == n || last_start == i) return j;
    return last_start;
}

inline std::size_t pattern_match_end(KnownPattern p, std::string_view text, std::size_t i) {
    switch (p) {
        case KnownPattern::gpt2:
            return detail::gpt2_match_end(text, i);
        case KnownPattern::llama3:
            return llama3_match_end(text, i, 3);
        case KnownPattern::qwen:
            return llama3_match_end(text, i, 1);
    }
    return i + 1;
}

/// A span of a word that a Split pattern matched or not.
struct Span {
    std::size_t begin, end;
    bool match;
};

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

/// Pieces of `word` from its spans (which cover it in order), as tokenizers'
/// SplitDelimiterBehavior says: a match merges into the piece before it (MergedWithPrevious) or
/// after it (MergedWithNext) unless that neighbour is a match too; Contiguous joins runs of
/// matches.
inline void split_by(std::string_view word, std::vector<Span> spans, SplitBehavior behavior,
                     bool invert, std::vector<std::string>& out) {
    std::erase_if(spans, [](const Span& s) { return s.begin == s.end; });
    if (invert) {
        for (Span& s : spans) s.match = !s.match;
    }
    std::vector<Span> pieces;
    bool previous_match = false;
    const auto fold = [&](const Span& s, bool merge_into_last, bool at_front) {
        if (merge_into_last && !pieces.empty()) {
            (at_front ? pieces.back().begin : pieces.back().end) = at_front ? s.begin : s.end;
        } else {
            pieces.push_back(s);
        }
        previous_match = s.match;
    };
    switch (behavior) {
        case SplitBehavior::removed:
            for (const Span& s : spans)
                if (!s.match) pieces.push_back(s);
            break;
        case SplitBehavior::isolated:
            pieces = spans;
            break;
        case SplitBehavior::merged_with_previous:
            for (const Span& s : spans) fold(s, s.match && !previous_match, false);
            break;
        case SplitBehavior::merged_with_next:
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                fold(*it, it->match && !previous_match, true);
            }
            std::reverse(pieces.begin(), pieces.end());
            break;
        case SplitBehavior::contiguous:
            for (const Span& s : spans) fold(s, s.match && previous_match, false);
            break;
    }
    for (const Span& s : pieces) out.emplace_back(word.substr(s.begin, s.end - s.begin));
}

struct Normalizer {
    enum class Kind { nfc, nfd, nfkc, nfkd, replace, prepend, strip } kind;
    std::string from, to;              // Replace: pattern, content; Prepend: to
    bool left = false, right = false;  // Strip
};

struct PreTokenizer {
    enum class Kind { byte_level, split, metaspace, digits, whitespace_split } kind;
    bool add_prefix_space = false, use_regex = true;   // ByteLevel
    std::optional<KnownPattern> regex;                 // Split: a Regex pattern, or
    std::string literal;                               //   a String pattern
    SplitBehavior behavior = SplitBehavior::isolated;  // Split
    bool invert = false;                               // Split
    std::string replacement;                           // Metaspace
    enum class Prepend { always, first, never } prepend = Prepend::always;
    bool split = true;               // Metaspace
    bool individual_digits = false;  // Digits
};

struct Decoder {
    enum class Kind { byte_level, metaspace, byte_fallback, fuse, strip, replace } kind;
    std::string from, to;             // Replace: pattern, content; Metaspace: replacement
    bool prepend = true;              // Metaspace: prepend_scheme is not "never"
    std::string content;              // Strip: one character
    std::size_t start = 0, stop = 0;  // Strip
};

struct AddedToken {
    std::string content;
    std::int32_t id;
    bool special, lstrip, rstrip, single_word;
};

/// The component's "type" for messages.
inline std::string type_name(const json& j) {
    if (!j.is_object()) return j.dump();
    const auto t = j.find("type");
    return t == j.end() ? std::string("(no type)") : t->dump();
}

}  // namespace hf_detail

/// A Hugging Face tokenizer.json tokenizer (see the top of this file).
class HfTokenizer {
public:
    /// Reads `path`: a tokenizer.json, or a folder holding one.
    static HfTokenizer from_file(const std::string& path) {
        std::string file = path;
        if (std::filesystem::is_directory(path)) file = path + "/tokenizer.json";
        const io::MappedFile f(file);
        return from_json_text({reinterpret_cast<const char*>(f.data()), f.size()}, file);
    }

    /// From a tokenizer.json's contents; `name` stands for the file in errors.
    static HfTokenizer from_json_text(std::string_view text,
                                      const std::string& name = "<tokenizer.json>") {
        nlohmann::json root;
        try {
            root = nlohmann::json::parse(text.begin(), text.end());
        } catch (const nlohmann::json::exception& e) {
            throw FormatError(name + ": not JSON: " + e.what());
        }
        HfTokenizer t;
        try {
            t.v_ = build(root, name);
        } catch (const nlohmann::json::exception& e) {  // a field of an unexpected type
            throw FormatError(name + ": " + e.what());
        }
        return t;
    }

    /// Token ids of `text` (see the top of this file). Special added tokens are cut out of the
    /// text only with SpecialTokens::recognised; add_special_tokens applies the post-processor.
    [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text,
                                                   SpecialTokens special = SpecialTokens::as_text,
                                                   bool add_special_tokens = true) const {
        const Vocab& v = *v_;
        const std::string valid = unicode::valid_utf8(text);
        std::vector<std::int32_t> ids;
        Work w;
        std::size_t section = 0;
        std::size_t start = 0;  // of the current text section
        std::size_t i = 0;
        const std::string_view s = valid;
        std::vector<std::pair<std::string_view, std::int32_t>> sections;  // id -1: text
        while (i < s.size()) {
            const hf_detail::AddedToken* match = match_added(s, i, special);
            if (match == nullptr) {
                ++i;
                continue;
            }
            sections.emplace_back(s.substr(start, i - start), -1);
            sections.emplace_back(s.substr(i, match->content.size()), match->id);
            i += match->content.size();
            start = i;
        }
        sections.emplace_back(s.substr(start), -1);
        // lstrip / rstrip trim the whitespace of the text beside a match.
        for (std::size_t k = 0; k < sections.size(); ++k) {
            if (sections[k].second < 0) continue;
            const hf_detail::AddedToken& a = *v.added_by_id.at(sections[k].second);
            if (a.lstrip && k > 0) sections[k - 1].first = trim_end(sections[k - 1].first);
            if (a.rstrip && k + 1 < sections.size()) {
                sections[k + 1].first = trim_start(sections[k + 1].first);
            }
        }
        for (const auto& [piece, id] : sections) {
            if (id >= 0) {
                ids.push_back(id);
            } else if (!piece.empty()) {
                encode_section(piece, section, ids, w);
            } else {
                continue;  // an empty text section has no number (transformers.js)
            }
            ++section;
        }
        if (add_special_tokens && !v.template_single.empty()) {
            std::vector<std::int32_t> out;
            out.reserve(ids.size() + v.template_single.size());
            for (const std::int32_t t : v.template_single) {
                if (t == kSequence) {
                    out.insert(out.end(), ids.begin(), ids.end());
                } else {
                    out.push_back(t);
                }
            }
            ids = std::move(out);
        }
        return ids;
    }

    /// Text of `ids` through the decoder (see the top of this file); throws Error on an id that
    /// has no token.
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids,
                                     bool skip_special_tokens = false) const {
        const Vocab& v = *v_;
        std::vector<std::string> tokens;
        std::vector<bool> added;  // which tokens are added tokens (ByteLevel keeps them as text)
        tokens.reserve(ids.size());
        for (std::size_t k = 0; k < ids.size(); ++k) {
            const std::int32_t id = ids[k];
            check_id("decode", id, k);
            const auto a = v.added_by_id.find(id);
            if (a != v.added_by_id.end() && a->second->special && skip_special_tokens) continue;
            tokens.emplace_back(v.tokens[static_cast<std::size_t>(id)]);
            added.push_back(a != v.added_by_id.end());
        }
        if (v.decoders.empty()) {
            std::string out;
            for (std::size_t k = 0; k < tokens.size(); ++k) {
                if (k) out += ' ';
                out += tokens[k];
            }
            return out;
        }
        for (const hf_detail::Decoder& d : v.decoders) apply_decoder(d, tokens, added);
        std::string out;
        for (const std::string& t : tokens) out += t;
        return out;
    }

    /// One more than the largest id (the vocabulary and the added tokens).
    [[nodiscard]] std::int32_t vocab_size() const noexcept {
        return static_cast<std::int32_t>(v_->tokens.size());
    }
    /// The id of a token's text (an added token's id when one has that text).
    [[nodiscard]] std::optional<std::int32_t> token_to_id(std::string_view token) const {
        const auto it = v_->index.find(std::string(token));
        if (it == v_->index.end()) return std::nullopt;
        return it->second;
    }
    /// A token's text as the file stores it (byte-level or ▁ form).
    [[nodiscard]] const std::string& id_to_token(std::int32_t id) const {
        check_id("id_to_token", id, 0);
        return v_->tokens[static_cast<std::size_t>(id)];
    }
    /// Whether `id` is an added token marked special.
    [[nodiscard]] bool is_special(std::int32_t id) const {
        const auto a = v_->added_by_id.find(id);
        return a != v_->added_by_id.end() && a->second->special;
    }
    /// The ids the post-processor puts around a text (in order), e.g. BOS.
    [[nodiscard]] std::vector<std::int32_t> template_ids() const {
        std::vector<std::int32_t> out;
        for (const std::int32_t t : v_->template_single)
            if (t != kSequence) out.push_back(t);
        return out;
    }
    /// Where the tokenizer came from.
    [[nodiscard]] const std::string& source() const noexcept { return v_->source; }

private:
    static constexpr std::int32_t kSequence = -1;  // the text's place in template_single

    struct Vocab {
        std::string source;
        std::vector<std::string> tokens;                      // by id; "" for an unused id
        std::vector<bool> has_token;                          // by id
        std::unordered_map<std::string, std::int32_t> index;  // model vocab, then added tokens
        std::unordered_map<std::string, std::int32_t> model_index;  // the model's own tokens
        detail::MergeTable merges;
        std::vector<hf_detail::AddedToken> added;
        std::unordered_map<std::int32_t, const hf_detail::AddedToken*> added_by_id;
        std::vector<std::vector<const hf_detail::AddedToken*>> added_by_byte;  // longest first
        std::vector<hf_detail::Normalizer> normalizers;
        std::vector<hf_detail::PreTokenizer> pre_tokenizers;
        std::vector<hf_detail::Decoder> decoders;
        std::vector<std::int32_t> template_single;  // kSequence for the text
        std::int32_t unk = -1;
        bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
        std::array<std::int32_t, 256> byte_token{};  // <0xXX> ids, -1 when absent
    };

    struct Work {
        std::unordered_map<std::string, std::vector<std::int32_t>> cache;
        std::vector<std::int32_t> syms;
        detail::MergeScratch merge;
    };

    // ---- encoding

    const hf_detail::AddedToken* match_added(std::string_view s, std::size_t i,
                                             SpecialTokens special) const {
        const Vocab& v = *v_;
        const auto& candidates = v.added_by_byte[static_cast<unsigned char>(s[i])];
        for (const hf_detail::AddedToken* a : candidates) {
            if (a->special && special != SpecialTokens::recognised) continue;
            if (s.compare(i, a->content.size(), a->content) != 0) continue;
            if (a->single_word) {
                const std::size_t end = i + a->content.size();
                if ((i > 0 && is_word_before(s, i)) || (end < s.size() && is_word_at(s, end))) {
                    continue;
                }
            }
            return a;
        }
        return nullptr;
    }

    static bool is_word_cp(const hf_detail::Cp& c) {
        return c.cls == unicode::CpClass::letter || c.cls == unicode::CpClass::number ||
               c.cp == '_';
    }
    static bool is_word_at(std::string_view s, std::size_t i) {
        return is_word_cp(hf_detail::cp_at(s, i));
    }
    static bool is_word_before(std::string_view s, std::size_t i) {
        std::size_t j = i - 1;
        while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
        return is_word_at(s, j);
    }
    static std::string_view trim_start(std::string_view s) {
        std::size_t i = 0;
        while (i < s.size()) {
            const hf_detail::Cp c = hf_detail::cp_at(s, i);
            if (c.cls != unicode::CpClass::space) break;
            i += c.len;
        }
        return s.substr(i);
    }
    static std::string_view trim_end(std::string_view s) {
        std::size_t end = s.size();
        while (end > 0) {
            std::size_t j = end - 1;
            while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
            if (hf_detail::cp_at(s, j).cls != unicode::CpClass::space) break;
            end = j;
        }
        return s.substr(0, end);
    }

    void encode_section(std::string_view text, std::size_t section, std::vector<std::int32_t>& ids,
                        Work& w) const {
        const Vocab& v = *v_;
        std::string normalized(text);
        for (const hf_detail::Normalizer& n : v.normalizers) normalized = normalize(n, normalized);
        if (normalized.empty()) return;
        std::vector<std::string> words{std::move(normalized)};
        std::vector<std::string> next;
        for (const hf_detail::PreTokenizer& p : v.pre_tokenizers) {
            next.clear();
            for (const std::string& word : words) pre_tokenize(p, word, section, next);
            words.swap(next);
        }
        for (const std::string& word : words) encode_word(word, ids, w);
    }

    static std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
        if (from.empty()) return std::string(s);
        std::string out;
        std::size_t i = 0;
        for (std::size_t at; (at = s.find(from, i)) != std::string_view::npos; i = at + from.size())
            out.append(s.substr(i, at - i)).append(to);
        out.append(s.substr(i));
        return out;
    }

    static std::string normalize(const hf_detail::Normalizer& n, const std::string& s) {
        using K = hf_detail::Normalizer::Kind;
        switch (n.kind) {
            case K::nfc:
                return unicode::normalize_utf8(s, unicode::NormalForm::nfc);
            case K::nfd:
                return unicode::normalize_utf8(s, unicode::NormalForm::nfd);
            case K::nfkc:
                return unicode::normalize_utf8(s, unicode::NormalForm::nfkc);
            case K::nfkd:
                return unicode::normalize_utf8(s, unicode::NormalForm::nfkd);
            case K::replace:
                return replace_all(s, n.from, n.to);
            case K::prepend:
                return s.empty() ? s : n.to + s;
            case K::strip: {
                std::string_view t = s;
                if (n.left) t = trim_start(t);
                if (n.right) t = trim_end(t);
                return std::string(t);
            }
        }
        return s;
    }

    static void pre_tokenize(const hf_detail::PreTokenizer& p, const std::string& word,
                             std::size_t section, std::vector<std::string>& out) {
        using K = hf_detail::PreTokenizer::Kind;
        using hf_detail::Span;
        switch (p.kind) {
            case K::byte_level: {
                std::string w = p.add_prefix_space && !word.starts_with(' ') ? " " + word : word;
                if (!p.use_regex) {
                    out.push_back(bytes_to_unicode(w));
                    return;
                }
                for (std::size_t i = 0; i < w.size();) {
                    const std::size_t end = detail::gpt2_match_end(w, i);
                    out.push_back(bytes_to_unicode(std::string_view(w).substr(i, end - i)));
                    i = end;
                }
                return;
            }
            case K::split: {
                std::vector<Span> spans;
                std::size_t last = 0;
                const auto matched = [&](std::size_t b, std::size_t e) {
                    if (b > last) spans.push_back({last, b, false});
                    spans.push_back({b, e, true});
                    last = e;
                };
                if (p.regex) {
                    for (std::size_t i = 0; i < word.size();) {
                        const std::size_t end = hf_detail::pattern_match_end(*p.regex, word, i);
                        matched(i, end);
                        i = end;
                    }
                } else if (!p.literal.empty()) {
                    for (std::size_t at; (at = word.find(p.literal, last)) != std::string::npos;)
                        matched(at, at + p.literal.size());
                }
                if (last < word.size()) spans.push_back({last, word.size(), false});
                hf_detail::split_by(word, std::move(spans), p.behavior, p.invert, out);
                return;
            }
            case K::metaspace: {
                std::string w = replace_all(word, " ", p.replacement);
                const bool prepend =
                    p.prepend == hf_detail::PreTokenizer::Prepend::always ||
                    (p.prepend == hf_detail::PreTokenizer::Prepend::first && section == 0);
                if (prepend && !w.starts_with(p.replacement)) w = p.replacement + w;
                if (!p.split) {
                    out.push_back(std::move(w));
                    return;
                }
                std::vector<Span> spans;
                std::size_t last = 0;
                for (std::size_t at; (at = w.find(p.replacement, last)) != std::string::npos;) {
                    if (at > last) spans.push_back({last, at, false});
                    spans.push_back({at, at + p.replacement.size(), true});
                    last = at + p.replacement.size();
                }
                if (last < w.size()) spans.push_back({last, w.size(), false});
                hf_detail::split_by(w, std::move(spans), hf_detail::SplitBehavior::merged_with_next,
                                    false, out);
                return;
            }
            case K::digits: {
                std::vector<Span> spans;
                for (std::size_t i = 0; i < word.size();) {
                    const bool digit = word[i] >= '0' && word[i] <= '9';
                    std::size_t j = i + 1;
                    if (!digit || !p.individual_digits) {
                        while (j < word.size() && (word[j] >= '0' && word[j] <= '9') == digit) {
                            ++j;
                        }
                    }
                    spans.push_back({i, j, digit});
                    i = j;
                }
                hf_detail::split_by(word, std::move(spans), hf_detail::SplitBehavior::isolated,
                                    false, out);
                return;
            }
            case K::whitespace_split: {
                std::vector<Span> spans;
                for (std::size_t i = 0; i < word.size();) {
                    const hf_detail::Cp c = hf_detail::cp_at(word, i);
                    const bool space = c.cls == unicode::CpClass::space;
                    std::size_t j = i + c.len;
                    while (j < word.size()) {
                        const hf_detail::Cp d = hf_detail::cp_at(word, j);
                        if ((d.cls == unicode::CpClass::space) != space) break;
                        j += d.len;
                    }
                    spans.push_back({i, j, space});
                    i = j;
                }
                hf_detail::split_by(word, std::move(spans), hf_detail::SplitBehavior::removed,
                                    false, out);
                return;
            }
        }
    }

    void encode_word(const std::string& word, std::vector<std::int32_t>& ids, Work& w) const {
        const Vocab& v = *v_;
        if (word.empty()) return;
        if (v.ignore_merges) {
            if (const auto it = v.model_index.find(word); it != v.model_index.end()) {
                ids.push_back(it->second);
                return;
            }
        }
        if (const auto hit = w.cache.find(word); hit != w.cache.end()) {
            ids.insert(ids.end(), hit->second.begin(), hit->second.end());
            return;
        }
        // Symbols: one per character; a character with no token becomes its bytes' tokens (byte
        // fallback) or the unknown token (consecutive ones fused with fuse_unk), else is
        // dropped, as tokenizers' BPE does.
        w.syms.clear();
        bool pending_unk = false;
        for (std::size_t i = 0; i < word.size();) {
            const std::size_t len = hf_detail::cp_at(word, i).len;
            const auto it = v.model_index.find(word.substr(i, len));
            if (it != v.model_index.end()) {
                if (pending_unk) w.syms.push_back(v.unk);
                pending_unk = false;
                w.syms.push_back(it->second);
            } else if (v.byte_fallback &&
                       std::all_of(word.begin() + std::ptrdiff_t(i),
                                   word.begin() + std::ptrdiff_t(i + len), [&](char b) {
                                       return v.byte_token[static_cast<unsigned char>(b)] >= 0;
                                   })) {
                for (std::size_t k = i; k < i + len; ++k)
                    w.syms.push_back(v.byte_token[static_cast<unsigned char>(word[k])]);
            } else if (v.unk >= 0) {
                if (pending_unk && !v.fuse_unk) w.syms.push_back(v.unk);
                pending_unk = true;
            }
            i += len;
        }
        if (pending_unk) w.syms.push_back(v.unk);
        detail::merge_by_rank(w.syms, v.merges, w.merge);
        ids.insert(ids.end(), w.syms.begin(), w.syms.end());
        w.cache.emplace(word, w.syms);
    }

    // ---- decoding

    static void apply_decoder(const hf_detail::Decoder& d, std::vector<std::string>& tokens,
                              std::vector<bool>& added) {
        using K = hf_detail::Decoder::Kind;
        switch (d.kind) {
            case K::byte_level: {
                // Runs of model tokens become their bytes (a token with a character outside
                // the byte table stands for its own UTF-8); added tokens stay as they are.
                std::vector<std::string> out;
                std::vector<bool> out_added;
                std::string bytes;
                const auto flush = [&] {
                    if (bytes.empty()) return;
                    out.push_back(unicode::valid_utf8(bytes));
                    out_added.push_back(false);
                    bytes.clear();
                };
                for (std::size_t k = 0; k < tokens.size(); ++k) {
                    if (added[k]) {
                        flush();
                        out.push_back(std::move(tokens[k]));
                        out_added.push_back(true);
                        continue;
                    }
                    if (auto b = unicode_to_bytes(tokens[k])) {
                        bytes += *b;
                    } else {
                        bytes += tokens[k];
                    }
                }
                flush();
                tokens = std::move(out);
                added = std::move(out_added);
                return;
            }
            case K::metaspace:
                for (std::size_t k = 0; k < tokens.size(); ++k) {
                    std::string t = replace_all(tokens[k], d.from, " ");
                    if (k == 0 && d.prepend && t.starts_with(' ')) t.erase(0, 1);
                    tokens[k] = std::move(t);
                }
                return;
            case K::byte_fallback: {
                // Runs of <0xXX> tokens become their bytes, read as UTF-8 (lossily).
                std::vector<std::string> out;
                std::vector<bool> out_added;
                std::string bytes;
                const auto flush = [&] {
                    if (bytes.empty()) return;
                    out.push_back(unicode::valid_utf8(bytes));
                    out_added.push_back(false);
                    bytes.clear();
                };
                for (std::size_t k = 0; k < tokens.size(); ++k) {
                    const std::string& t = tokens[k];
                    if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
                        std::isxdigit(static_cast<unsigned char>(t[3])) &&
                        std::isxdigit(static_cast<unsigned char>(t[4]))) {
                        bytes += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
                        continue;
                    }
                    flush();
                    out.push_back(t);
                    out_added.push_back(added[k]);
                }
                flush();
                tokens = std::move(out);
                added = std::move(out_added);
                return;
            }
            case K::fuse: {
                std::string all;
                for (const std::string& t : tokens) all += t;
                tokens.assign(1, std::move(all));
                added.assign(1, false);
                return;
            }
            case K::strip:
                for (std::string& t : tokens) {
                    const std::string& c = d.content;
                    std::size_t b = 0, e = t.size();
                    for (std::size_t k = 0; k < d.start && t.compare(b, c.size(), c) == 0; ++k)
                        b += c.size();
                    for (std::size_t k = 0; k < d.stop && e >= b + c.size() &&
                                            t.compare(e - c.size(), c.size(), c) == 0;
                         ++k) {
                        e -= c.size();
                    }
                    t = t.substr(b, e - b);
                }
                return;
            case K::replace:
                for (std::string& t : tokens) t = replace_all(t, d.from, d.to);
                return;
        }
    }

    void check_id(const char* fn, std::int32_t id, std::size_t at) const {
        if (id < 0 || id >= vocab_size() || !v_->has_token[static_cast<std::size_t>(id)]) {
            throw Error(std::string("HfTokenizer::") + fn + ": token id " + std::to_string(id) +
                        " at position " + std::to_string(at) + " has no token in " + v_->source +
                        " (ids 0.." + std::to_string(vocab_size() - 1) + ")");
        }
    }

    // ---- loading

    static std::string json_quote(const std::string& s) { return nlohmann::json(s).dump(); }
    static std::shared_ptr<const Vocab> build(const nlohmann::json& root, const std::string& name);

    std::shared_ptr<const Vocab> v_;
};

namespace hf_detail {

/// Reads one tokenizer.json; throws FormatError naming the file and the component's path.
class Reader {
public:
    explicit Reader(std::string name) : name_(std::move(name)) {}

    [[noreturn]] void fail(const std::string& where, const std::string& what) const {
        throw FormatError(name_ + ": " + where + ": " + what);
    }

    const json& field(const json& j, const std::string& where, const char* key) const {
        const auto it = j.find(key);
        if (it == j.end()) fail(where, std::string("no \"") + key + "\"");
        return *it;
    }
    std::string string_field(const json& j, const std::string& where, const char* key) const {
        const json& v = field(j, where, key);
        if (!v.is_string()) fail(where + "." + key, "should be a string, is " + v.dump());
        return v.get<std::string>();
    }
    bool bool_field(const json& j, const std::string& where, const char* key, bool dflt) const {
        const auto it = j.find(key);
        if (it == j.end() || it->is_null()) return dflt;
        if (!it->is_boolean()) fail(where + "." + key, "should be true or false, is " + it->dump());
        return it->get<bool>();
    }
    std::size_t count_field(const json& j, const std::string& where, const char* key) const {
        const json& v = field(j, where, key);
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() > 1u << 20) {
            fail(where + "." + key, "should be a small count, is " + v.dump());
        }
        return v.get<std::size_t>();
    }
    /// A {"String": s} pattern's text; a {"Regex": r} one is refused (or returned when `regex`).
    std::string pattern(const json& j, const std::string& where,
                        std::string* regex = nullptr) const {
        const json& p = field(j, where, "pattern");
        if (p.is_object() && p.size() == 1 && p.contains("String") && p["String"].is_string()) {
            return p["String"].get<std::string>();
        }
        if (p.is_object() && p.size() == 1 && p.contains("Regex") && p["Regex"].is_string()) {
            if (regex != nullptr) {
                *regex = p["Regex"].get<std::string>();
                return {};
            }
            fail(where + ".pattern", "a Regex pattern " + p["Regex"].dump() +
                                         " is not supported here (only {\"String\": ...})");
        }
        fail(where + ".pattern", "should be {\"String\": ...} or {\"Regex\": ...}, is " + p.dump());
    }

    void normalizers(const json& j, const std::string& where, std::vector<Normalizer>& out) const {
        if (j.is_null()) return;
        const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                                     ? j["type"].get<std::string>()
                                     : std::string();
        using K = Normalizer::Kind;
        if (type == "Sequence") {
            const json& list = field(j, where, "normalizers");
            if (!list.is_array()) fail(where + ".normalizers", "should be an array");
            for (std::size_t k = 0; k < list.size(); ++k)
                normalizers(list[k], where + ".normalizers[" + std::to_string(k) + "]", out);
        } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
            out.push_back({type == "NFC"    ? K::nfc
                           : type == "NFD"  ? K::nfd
                           : type == "NFKC" ? K::nfkc
                                            : K::nfkd,
                           {},
                           {}});
        } else if (type == "Replace") {
            out.push_back({K::replace, pattern(j, where), string_field(j, where, "content")});
        } else if (type == "Prepend") {
            out.push_back({K::prepend, {}, string_field(j, where, "prepend")});
        } else if (type == "Strip") {
            Normalizer n{K::strip, {}, {}};
            n.left = bool_field(j, where, "strip_left", true);
            n.right = bool_field(j, where, "strip_right", true);
            out.push_back(n);
        } else {
            fail(where, "normalizer " + type_name(j) +
                            " is not supported (supported: NFC, NFD, NFKC, NFKD, Replace, "
                            "Prepend, Strip, Sequence)");
        }
    }

    void pre_tokenizers(const json& j, const std::string& where,
                        std::vector<PreTokenizer>& out) const {
        if (j.is_null()) return;
        const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                                     ? j["type"].get<std::string>()
                                     : std::string();
        using K = PreTokenizer::Kind;
        PreTokenizer p{};
        if (type == "Sequence") {
            const json& list = field(j, where, "pretokenizers");
            if (!list.is_array()) fail(where + ".pretokenizers", "should be an array");
            for (std::size_t k = 0; k < list.size(); ++k)
                pre_tokenizers(list[k], where + ".pretokenizers[" + std::to_string(k) + "]", out);
            return;
        } else if (type == "ByteLevel") {
            p.kind = K::byte_level;
            p.add_prefix_space = bool_field(j, where, "add_prefix_space", true);
            p.use_regex = bool_field(j, where, "use_regex", true);
        } else if (type == "Split") {
            p.kind = K::split;
            std::string regex;
            p.literal = pattern(j, where, &regex);
            if (!regex.empty()) {
                if (regex == kGpt2Pattern) {
                    p.regex = KnownPattern::gpt2;
                } else if (regex == kLlama3Pattern) {
                    p.regex = KnownPattern::llama3;
                } else if (regex == kQwenPattern) {
                    p.regex = KnownPattern::qwen;
                } else {
                    fail(where + ".pattern",
                         "the Regex " + json(regex).dump() +
                             " is not supported (supported: GPT-2's, Llama 3's and Qwen's "
                             "pre-tokenizer patterns)");
                }
            }
            const std::string b = string_field(j, where, "behavior");
            using B = SplitBehavior;
            if (b == "Removed") {
                p.behavior = B::removed;
            } else if (b == "Isolated") {
                p.behavior = B::isolated;
            } else if (b == "MergedWithPrevious") {
                p.behavior = B::merged_with_previous;
            } else if (b == "MergedWithNext") {
                p.behavior = B::merged_with_next;
            } else if (b == "Contiguous") {
                p.behavior = B::contiguous;
            } else {
                fail(where + ".behavior", "unknown behavior " + json(b).dump());
            }
            p.invert = bool_field(j, where, "invert", false);
        } else if (type == "Metaspace") {
            p.kind = K::metaspace;
            p.replacement = string_field(j, where, "replacement");
            if (p.replacement.empty()) fail(where + ".replacement", "is empty");
            p.split = bool_field(j, where, "split", true);
            if (const auto s = j.find("prepend_scheme"); s != j.end() && !s->is_null()) {
                using P = PreTokenizer::Prepend;
                if (*s == "always") {
                    p.prepend = P::always;
                } else if (*s == "first") {
                    p.prepend = P::first;
                } else if (*s == "never") {
                    p.prepend = P::never;
                } else {
                    fail(where + ".prepend_scheme", "unknown scheme " + s->dump());
                }
            } else {
                p.prepend = bool_field(j, where, "add_prefix_space", true)
                                ? PreTokenizer::Prepend::always
                                : PreTokenizer::Prepend::never;
            }
        } else if (type == "Digits") {
            p.kind = K::digits;
            p.individual_digits = bool_field(j, where, "individual_digits", false);
        } else if (type == "WhitespaceSplit") {
            p.kind = K::whitespace_split;
        } else {
            fail(where, "pre-tokenizer " + type_name(j) +
                            " is not supported (supported: ByteLevel, Split, Metaspace, Digits, "
                            "WhitespaceSplit, Sequence)");
        }
        out.push_back(std::move(p));
    }

    void decoders(const json& j, const std::string& where, std::vector<Decoder>& out) const {
        if (j.is_null()) return;
        const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                                     ? j["type"].get<std::string>()
                                     : std::string();
        using K = Decoder::Kind;
        Decoder d{};
        if (type == "Sequence") {
            const json& list = field(j, where, "decoders");
            if (!list.is_array()) fail(where + ".decoders", "should be an array");
            for (std::size_t k = 0; k < list.size(); ++k)
                decoders(list[k], where + ".decoders[" + std::to_string(k) + "]", out);
            return;
        } else if (type == "ByteLevel") {
            d.kind = K::byte_level;
        } else if (type == "Metaspace") {
            d.kind = K::metaspace;
            d.from = string_field(j, where, "replacement");
            if (d.from.empty()) fail(where + ".replacement", "is empty");
            if (const auto s = j.find("prepend_scheme"); s != j.end() && !s->is_null()) {
                d.prepend = *s != "never";
            } else {
                d.prepend = bool_field(j, where, "add_prefix_space", true);
            }
        } else if (type == "ByteFallback") {
            d.kind = K::byte_fallback;
        } else if (type == "Fuse") {
            d.kind = K::fuse;
        } else if (type == "Strip") {
            d.kind = K::strip;
            d.content = string_field(j, where, "content");
            if (d.content.empty()) fail(where + ".content", "is empty");
            d.start = count_field(j, where, "start");
            d.stop = count_field(j, where, "stop");
        } else if (type == "Replace") {
            d.kind = K::replace;
            d.from = pattern(j, where);
            d.to = string_field(j, where, "content");
        } else {
            fail(where, "decoder " + type_name(j) +
                            " is not supported (supported: ByteLevel, Metaspace, ByteFallback, "
                            "Fuse, Strip, Replace, Sequence)");
        }
        out.push_back(std::move(d));
    }

    /// TemplateProcessing's "single" (-1 for the text), or nothing for ByteLevel.
    void post_processor(const json& j, const std::string& where,
                        const std::unordered_map<std::string, std::int32_t>& index,
                        std::vector<std::int32_t>& out) const {
        if (j.is_null()) return;
        const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                                     ? j["type"].get<std::string>()
                                     : std::string();
        if (type == "Sequence") {
            const json& list = field(j, where, "processors");
            if (!list.is_array()) fail(where + ".processors", "should be an array");
            for (std::size_t k = 0; k < list.size(); ++k)
                post_processor(list[k], where + ".processors[" + std::to_string(k) + "]", index,
                               out);
            return;
        }
        if (type == "ByteLevel") return;  // changes offsets only
        if (type != "TemplateProcessing") {
            fail(where, "post-processor " + type_name(j) +
                            " is not supported (supported: TemplateProcessing, ByteLevel, "
                            "Sequence)");
        }
        if (!out.empty()) fail(where, "a second TemplateProcessing");
        const json& single = field(j, where, "single");
        const json& specials = field(j, where, "special_tokens");
        if (!single.is_array()) fail(where + ".single", "should be an array");
        bool has_sequence = false;
        for (std::size_t k = 0; k < single.size(); ++k) {
            const std::string at = where + ".single[" + std::to_string(k) + "]";
            const json& item = single[k];
            if (item.is_object() && item.contains("Sequence")) {
                const json& seq = item["Sequence"];
                if (!seq.is_object() || seq.value("id", std::string()) != "A") {
                    fail(at, "the single template's sequence should be \"A\", is " + item.dump());
                }
                out.push_back(-1);
                has_sequence = true;
            } else if (item.is_object() && item.contains("SpecialToken")) {
                const std::string id = string_field(item["SpecialToken"], at, "id");
                const auto sp = specials.find(id);
                if (sp == specials.end())
                    fail(at, "special token " + json(id).dump() + " is not in special_tokens");
                const json& ids = field(*sp, where + ".special_tokens", "ids");
                const json& toks = field(*sp, where + ".special_tokens", "tokens");
                if (!ids.is_array() || !toks.is_array() || ids.size() != toks.size()) {
                    fail(where + ".special_tokens." + id, "needs as many ids as tokens");
                }
                for (std::size_t t = 0; t < ids.size(); ++t) {
                    if (!ids[t].is_number_integer() || !toks[t].is_string()) {
                        fail(where + ".special_tokens." + id, "ids must be integers");
                    }
                    const auto known = index.find(toks[t].get<std::string>());
                    if (known == index.end() || known->second != ids[t].get<std::int64_t>()) {
                        fail(where + ".special_tokens." + id,
                             "token " + toks[t].dump() + " with id " + ids[t].dump() +
                                 " is not in the vocabulary with that id");
                    }
                    out.push_back(known->second);
                }
            } else {
                fail(at,
                     "should be {\"Sequence\": ...} or {\"SpecialToken\": ...}, is " + item.dump());
            }
        }
        if (!has_sequence) fail(where + ".single", "has no {\"Sequence\": {\"id\": \"A\"}}");
    }

private:
    std::string name_;
};

}  // namespace hf_detail

inline std::shared_ptr<const HfTokenizer::Vocab> HfTokenizer::build(const nlohmann::json& root,
                                                                    const std::string& name) {
    const hf_detail::Reader r(name);
    if (!root.is_object()) r.fail("the top level", "should be an object");
    auto v = std::make_shared<Vocab>();
    v->source = name;

    const nlohmann::json& model = r.field(root, "the top level", "model");
    if (!model.is_object()) r.fail("model", "should be an object");
    if (const auto t = model.find("type"); t != model.end() && *t != "BPE") {
        r.fail("model.type", t->dump() + " is not supported (only BPE)");
    }
    if (const auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
        r.fail("model.dropout", d->dump() + " is not supported (BPE dropout samples; only null)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (const auto it = model.find(key); it != model.end() && !it->is_null() && *it != "") {
            r.fail(std::string("model.") + key,
                   it->dump() + " is not supported (only null or \"\")");
        }
    }
    v->byte_fallback = r.bool_field(model, "model", "byte_fallback", false);
    v->fuse_unk = r.bool_field(model, "model", "fuse_unk", false);
    v->ignore_merges = r.bool_field(model, "model", "ignore_merges", false);

    // Ids: model.vocab, then added_tokens (which may extend it or repeat an entry).
    const nlohmann::json& vocab = r.field(model, "model", "vocab");
    if (!vocab.is_object()) r.fail("model.vocab", "should be an object");
    // The id table is as long as the largest id, so ids are bounded by what the file holds: real
    // vocabularies are dense (ids 0..N-1, perhaps with a few holes), and a file of a few entries
    // that names id 9,106,181 would otherwise cost a 300 MB table.
    const auto added_json = root.find("added_tokens");
    const std::size_t entries =
        vocab.size() +
        (added_json != root.end() && added_json->is_array() ? added_json->size() : 0);
    const std::int64_t max_id = std::min<std::int64_t>(
        std::int64_t(1) << 24, std::max<std::int64_t>(65536, 4 * std::int64_t(entries)));
    const auto place = [&](const std::string& token, const nlohmann::json& id,
                           const std::string& where) {
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
            id.get<std::int64_t>() >= max_id) {
            r.fail(where, "the id " + id.dump() + " is not an integer in [0, " +
                              std::to_string(max_id) + ") (the file has " +
                              std::to_string(entries) +
                              " tokens; ids may leave holes, but not past 4 times that or 65536)");
        }
        const auto i = static_cast<std::size_t>(id.get<std::int64_t>());
        if (i >= v->tokens.size()) {
            v->tokens.resize(i + 1);
            v->has_token.resize(i + 1, false);
        }
        if (v->has_token[i] && v->tokens[i] != token) {
            r.fail(where, "id " + std::to_string(i) + " is both " + json_quote(v->tokens[i]) +
                              " and " + json_quote(token));
        }
        v->tokens[i] = token;
        v->has_token[i] = true;
        return static_cast<std::int32_t>(i);
    };
    for (const auto& [token, id] : vocab.items()) {
        const std::int32_t i = place(token, id, "model.vocab[" + json_quote(token) + "]");
        v->model_index.emplace(token, i);
        v->index.emplace(token, i);
    }
    if (const auto added = root.find("added_tokens"); added != root.end() && !added->is_null()) {
        if (!added->is_array()) r.fail("added_tokens", "should be an array");
        const bool has_normalizer = root.contains("normalizer") && !root["normalizer"].is_null();
        for (std::size_t k = 0; k < added->size(); ++k) {
            const nlohmann::json& a = (*added)[k];
            const std::string where = "added_tokens[" + std::to_string(k) + "]";
            if (!a.is_object()) r.fail(where, "should be an object");
            hf_detail::AddedToken t;
            t.content = r.string_field(a, where, "content");
            if (t.content.empty()) r.fail(where + ".content", "is empty");
            t.id = place(t.content, r.field(a, where, "id"), where + ".id");
            t.special = r.bool_field(a, where, "special", false);
            t.lstrip = r.bool_field(a, where, "lstrip", false);
            t.rstrip = r.bool_field(a, where, "rstrip", false);
            t.single_word = r.bool_field(a, where, "single_word", false);
            if (r.bool_field(a, where, "normalized", !t.special) && has_normalizer) {
                r.fail(where + ".normalized",
                       "is true for " + json_quote(t.content) +
                           ": matching added tokens in normalized text is not supported");
            }
            v->index.insert_or_assign(t.content, t.id);
            v->added.push_back(std::move(t));
        }
    }
    v->added_by_byte.resize(256);
    for (const hf_detail::AddedToken& t : v->added) {
        v->added_by_id.emplace(t.id, &t);
        v->added_by_byte[static_cast<unsigned char>(t.content[0])].push_back(&t);
    }
    for (auto& list : v->added_by_byte) {
        std::stable_sort(list.begin(), list.end(), [](const auto* a, const auto* b) {
            return a->content.size() > b->content.size();
        });
    }
    for (int b = 0; b < 256; ++b) {
        constexpr char hex[] = "0123456789ABCDEF";
        const std::string t = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
        const auto it = v->model_index.find(t);
        v->byte_token[static_cast<std::size_t>(b)] = it == v->model_index.end() ? -1 : it->second;
    }
    if (const auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
        if (!unk->is_string()) r.fail("model.unk_token", "should be a string or null");
        const auto it = v->index.find(unk->get<std::string>());
        if (it == v->index.end())
            r.fail("model.unk_token", unk->dump() + " is not in the vocabulary");
        v->unk = it->second;
    }

    const nlohmann::json& merges = r.field(model, "model", "merges");
    if (!merges.is_array()) r.fail("model.merges", "should be an array");
    v->merges = detail::MergeTable(merges.size());
    for (std::size_t k = 0; k < merges.size(); ++k) {
        const nlohmann::json& m = merges[k];
        const std::string where = "model.merges[" + std::to_string(k) + "]";
        std::string a, b;
        if (m.is_string()) {
            const std::string& s = m.get_ref<const std::string&>();
            const std::size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
                r.fail(where, m.dump() + " should be two tokens separated by one space");
            }
            a = s.substr(0, sp), b = s.substr(sp + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            a = m[0].get<std::string>(), b = m[1].get<std::string>();
        } else {
            r.fail(where, "should be \"a b\" or [\"a\", \"b\"], is " + m.dump());
        }
        const auto ia = v->model_index.find(a), ib = v->model_index.find(b),
                   ij = v->model_index.find(a + b);
        for (const auto& [tok, it] : {std::pair{a, ia}, std::pair{b, ib}, std::pair{a + b, ij}}) {
            if (it == v->model_index.end())
                r.fail(where, json_quote(tok) + " is not in the vocabulary");
        }
        // A repeated pair takes its later rank (tokenizers' HashMap, transformers.js's Map).
        v->merges.insert_or_assign(detail::merge_key(ia->second, ib->second),
                                   static_cast<std::int32_t>(k), ij->second);
    }

    r.normalizers(root.value("normalizer", nlohmann::json()), "normalizer", v->normalizers);
    r.pre_tokenizers(root.value("pre_tokenizer", nlohmann::json()), "pre_tokenizer",
                     v->pre_tokenizers);
    r.decoders(root.value("decoder", nlohmann::json()), "decoder", v->decoders);
    r.post_processor(root.value("post_processor", nlohmann::json()), "post_processor", v->index,
                     v->template_single);
    return v;
}

}  // namespace softprompt::tok
