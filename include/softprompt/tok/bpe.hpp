#pragma once
// GPT-2 byte-level BPE tokenizer (OpenAI's encoder.py / Hugging Face `tokenizers` semantics),
// loaded from OpenAI's files, from a Hugging Face tokenizer.json, or from plain lists (GGUF).
//
// Sources
//   encoder.json   a JSON object {token: id}; tokens are byte-level strings (below); ids must be
//                  exactly 0..N-1.
//   vocab.bpe      text, one merge per line: two tokens separated by whitespace ("Ġ t"); a first
//                  line starting with "#version" and empty lines are skipped. A merge's rank is its
//                  position (0 = merged first). Both tokens and their concatenation must be in the
//                  vocabulary. When a pair occurs twice the later rank counts (as in encoder.py and
//                  tokenizers).
//   tokenizer.json Hugging Face: `model` {type "BPE" (may be absent), vocab {token: id}, merges as
//                  "a b" strings or [a, b] pairs, unk_token, ignore_merges}, `added_tokens`
//                  [{id, content, ...}] (ids may extend the vocabulary or repeat one of its entries
//                  with the same text), `normalizer` null, `pre_tokenizer` {type "ByteLevel",
//                  add_prefix_space, use_regex true}. Anything this class does not implement
//                  (another pre-tokeniser or normalizer, continuing_subword_prefix,
//                  end_of_word_suffix, byte_fallback) is refused with a FormatError rather than
//                  tokenised differently. Every added token is special (recognised by
//                  SpecialTokens::recognised); lstrip/rstrip/single_word are not applied.
//   plain lists    tokens in id order and merges "a b" (or pairs), plus BpeOptions: what a GGUF
//                  vocabulary (tokenizer.ggml.tokens / merges / *_token_id) provides.
//
// Byte level: every byte b stands for one printable code point, `bytes_to_unicode` of GPT-2
// (b itself for '!'..'~', '¡'..'¬', '®'..'ÿ'; the other 68 bytes, in order, for U+0100..U+0143,
// so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A). A token's bytes are its text mapped back through
// that table; a token with any character outside the table (an added token such as "<|endoftext|>"
// has none; "<｜end▁of▁sentence｜>" has) stands for its own UTF-8 bytes, as Hugging Face's
// ByteLevel decoder does.
//
// encode(text):
//   1. (SpecialTokens::recognised only) the text is cut at the special tokens' texts, leftmost
//      first and longest on ties; each cut-out becomes its id and the pieces between are encoded
//      independently (by default, special-token texts are ordinary text).
//   2. (add_prefix_space only) a piece that does not start with ' ' gets one in front (and keeps
//      it in decode: decode(encode("hi")) == " hi", as in Hugging Face).
//   3. GPT-2's pre-tokeniser splits the piece into words, exactly as the pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      does with the `regex` module (leftmost alternative first, greedy, backtracking), matched by
//      hand over code points (tok/unicode_tables.hpp: \p{L}, \p{N}, \s = White_Space). Bytes that
//      are not well-formed UTF-8 (stray continuation bytes, overlong forms, surrogates, truncated
//      sequences, > U+10FFFF) are each a code point of their own, neither letter, number nor space,
//      so every byte string is tokenised and decode(encode(s)) == s for every s.
//   4. each word's bytes start as single-byte tokens and the adjacent pair with the lowest merge
//      rank is merged (the leftmost on ties) until no adjacent pair has a merge: Hugging Face's
//      algorithm (a heap over a linked list, O(n log n)), the same result as encoder.py's for
//      merge lists learned by BPE. With ignore_merges (tokenizer.json), a word that is itself a
//      token is that token. Words are cached within one encode call.
//   A byte with no single-byte token encodes as the unknown token, or throws Error if there is
//   none.
//
// decode(ids): the concatenated bytes of the tokens (special tokens included, as their text).
// Immutable; copies share one vocabulary, so copying is cheap and a tokenizer may be used from many
// threads.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
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
#include "softprompt/tok/unicode_tables.hpp"

namespace softprompt::tok {

/// Whether encode() treats the texts of special tokens (e.g. "<|endoftext|>") as ordinary text
/// (the default, safe for untrusted input) or turns them into their ids.
enum class SpecialTokens { as_text, recognised };

/// What a plain token list does not say by itself. Ids are -1 for "none".
struct BpeOptions {
    /// Tokens that SpecialTokens::recognised cuts out of the text (e.g. GGUF control tokens).
    std::vector<std::int32_t> special_ids;
    std::int32_t bos = -1;
    std::int32_t eos = -1;
    /// Stands for a byte that has no single-byte token (byte-level vocabularies have all 256).
    std::int32_t unk = -1;
    /// Put ' ' in front of text that does not start with one (Hugging Face ByteLevel option).
    bool add_prefix_space = false;
    /// A word that is itself a token is that token, whatever the merges say (tokenizer.json).
    bool ignore_merges = false;
};

namespace detail {

/// GPT-2's bytes_to_unicode: byte -> code point (all below 0x144).
inline constexpr std::array<std::uint16_t, 256> kByteToCp = [] {
    std::array<std::uint16_t, 256> t{};
    std::uint16_t extra = 256;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        t[static_cast<std::size_t>(b)] = printable ? static_cast<std::uint16_t>(b) : extra++;
    }
    return t;
}();

/// Inverse of kByteToCp over code points 0..0x143; -1 where a code point stands for no byte.
inline constexpr std::array<std::int16_t, 0x144> kCpToByte = [] {
    std::array<std::int16_t, 0x144> t{};
    for (auto& v : t) v = -1;
    for (int b = 0; b < 256; ++b)
        t[kByteToCp[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
    return t;
}();

/// Length of the well-formed UTF-8 sequence at p[0..n) (n >= 1) and its code point, or {1, -1}
/// when p[0] does not start one (Unicode Table 3-7: no overlongs, surrogates or > U+10FFFF).
struct Utf8Char {
    std::uint32_t len;
    std::int32_t cp;
};
inline Utf8Char utf8_next(const unsigned char* p, std::size_t n) noexcept {
    const unsigned c = p[0];
    if (c < 0x80) return {1, static_cast<std::int32_t>(c)};
    const auto cont = [&](std::size_t i, unsigned lo, unsigned hi) {
        return i < n && p[i] >= lo && p[i] <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) {
        if (cont(1, 0x80, 0xBF))
            return {2, static_cast<std::int32_t>(((c & 0x1F) << 6) | (p[1] & 0x3F))};
    } else if (c >= 0xE0 && c <= 0xEF) {
        const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (cont(1, lo, hi) && cont(2, 0x80, 0xBF)) {
            return {3, static_cast<std::int32_t>(((c & 0x0F) << 12) | ((p[1] & 0x3Fu) << 6) |
                                                 (p[2] & 0x3Fu))};
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (cont(1, lo, hi) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF)) {
            return {4, static_cast<std::int32_t>(((c & 0x07) << 18) | ((p[1] & 0x3Fu) << 12) |
                                                 ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu))};
        }
    }
    return {1, -1};
}

/// Byte length and pre-tokeniser class of the code point at p[0..n); an invalid byte is `other`.
struct CpAt {
    std::uint32_t len;
    unicode::CpClass cls;
};
inline CpAt cp_at(const unsigned char* p, std::size_t n) noexcept {
    if (p[0] < 0x80) return {1, unicode::cp_class(p[0])};
    const Utf8Char u = utf8_next(p, n);
    if (u.cp < 0) return {1, unicode::CpClass::other};
    return {u.len, unicode::cp_class(static_cast<std::uint32_t>(u.cp))};
}

/// End (byte offset) of the GPT-2 pre-tokeniser's match that starts at `i` < text.size(); see the
/// pattern at the top of the file. Every match is non-empty.
inline std::size_t gpt2_match_end(std::string_view text, std::size_t i) noexcept {
    using unicode::CpClass;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    // 's|'t|'re|'ve|'m|'ll|'d  (case-sensitive, ASCII apostrophe only)
    if (s[i] == '\'' && i + 1 < n) {
        const unsigned char c1 = s[i + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
        if (i + 2 < n) {
            const unsigned char c2 = s[i + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                return i + 3;
            }
        }
    }
    // A run of one class from j: \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+.
    const auto run = [&](std::size_t j, CpClass cls) {
        while (j < n) {
            const CpAt c = cp_at(s + j, n - j);
            if (c.cls != cls) break;
            j += c.len;
        }
        return j;
    };
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  with the space taken
    if (s[i] == ' ' && i + 1 < n) {
        const CpAt c = cp_at(s + i + 1, n - i - 1);
        if (c.cls != CpClass::space) return run(i + 1 + c.len, c.cls);
    }
    // ... and without it
    const CpAt c0 = cp_at(s + i, n - i);
    if (c0.cls != CpClass::space) return run(i + c0.len, c0.cls);
    // \s+(?!\S): the whole whitespace run at the end of the text, else all of it but its last
    // code point (which then sits before the non-space); \s+: a single whitespace code point.
    std::size_t j = i, last = i;
    while (j < n) {
        const CpAt c = cp_at(s + j, n - j);
        if (c.cls != CpClass::space) break;
        last = j;
        j += c.len;
    }
    if (j == n) return n;
    return last > i ? last : j;
}

/// Open-addressing hash map from a pair of token ids (`left << 32 | right`) to its merge (rank,
/// merged id): one probe sequence in one flat array, so a lookup costs about one cache miss.
/// Filled once, then read-only.
class MergeTable {
public:
    struct Entry {
        std::uint64_t key;
        std::int32_t rank;
        std::int32_t id;
    };

    explicit MergeTable(std::size_t n = 0) {
        std::size_t cap = 16;
        while (cap < 2 * n) cap <<= 1;
        slots_.assign(cap, Entry{kEmpty, 0, 0});
        mask_ = cap - 1;
    }

    /// Sets the merge of `key` (which must not be ~0); a repeated key takes the new values.
    void insert_or_assign(std::uint64_t key, std::int32_t rank, std::int32_t id) {
        if (2 * (size_ + 1) > slots_.size()) grow();
        Entry& e = slot(key);
        if (e.key == kEmpty) ++size_;
        e = Entry{key, rank, id};
    }

    /// The merge of `key`, or nullptr.
    [[nodiscard]] const Entry* find(std::uint64_t key) const noexcept {
        for (std::size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
            const Entry& e = slots_[i];
            if (e.key == key) return &e;
            if (e.key == kEmpty) return nullptr;
        }
    }

    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};

    static std::size_t hash(std::uint64_t x) noexcept {  // murmur3's finaliser
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return static_cast<std::size_t>(x);
    }

    Entry& slot(std::uint64_t key) noexcept {
        std::size_t i = hash(key) & mask_;
        while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
        return slots_[i];
    }

    void grow() {
        std::vector<Entry> old = std::move(slots_);
        slots_.assign(old.size() * 2, Entry{kEmpty, 0, 0});
        mask_ = slots_.size() - 1;
        for (const Entry& e : old) {
            if (e.key != kEmpty) slot(e.key) = e;
        }
    }

    std::vector<Entry> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

/// Open-addressing cache from a word (a view that must outlive the cache) to a run of ids
/// [start, start + count) in a side vector. Grows as needed.
class WordCache {
public:
    struct Run {
        std::uint32_t start, count;
    };

    [[nodiscard]] const Run* find(std::string_view word) const noexcept {
        if (slots_.empty()) return nullptr;
        const std::size_t h = std::hash<std::string_view>{}(word);
        for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
            const Slot& e = slots_[i];
            if (e.data == nullptr) return nullptr;
            if (e.hash == h && std::string_view(e.data, e.len) == word) return &e.run;
        }
    }

    /// Adds a word that find() did not find.
    void insert(std::string_view word, Run run) {
        if (2 * (size_ + 1) > slots_.size()) grow();
        place(Slot{std::hash<std::string_view>{}(word), word.data(),
                   static_cast<std::uint32_t>(word.size()), run});
        ++size_;
    }

private:
    struct Slot {
        std::size_t hash = 0;
        const char* data = nullptr;  // nullptr: empty
        std::uint32_t len = 0;
        Run run{};
    };

    void place(const Slot& s) noexcept {
        std::size_t i = s.hash & mask_;
        while (slots_[i].data != nullptr) i = (i + 1) & mask_;
        slots_[i] = s;
    }

    void grow() {
        std::vector<Slot> old = std::move(slots_);
        slots_.assign(old.empty() ? 256 : old.size() * 2, Slot{});
        mask_ = slots_.size() - 1;
        for (const Slot& e : old) {
            if (e.data != nullptr) place(e);
        }
    }

    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

/// The MergeTable key of the pair (a, b).
inline constexpr std::uint64_t merge_key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
}

/// Scratch of merge_by_rank, reused across words.
struct MergeScratch {
    struct Candidate {
        std::int32_t rank, left, right, id;
        std::uint32_t left_version, right_version;
    };
    std::vector<std::int32_t> prev, next;
    std::vector<std::uint32_t> version;
    std::vector<Candidate> heap;
};

/// BPE's merge loop over one word's symbols (ids), in place: always the adjacent pair with the
/// lowest rank, leftmost on ties, until no adjacent pair has a merge (tokenizers'
/// Word::merge_all). Symbols form a linked list (a merge keeps the left node); candidates wait in
/// a min-heap and are dropped when popped if either node changed since they were pushed.
inline void merge_by_rank(std::vector<std::int32_t>& syms, const MergeTable& merges,
                          MergeScratch& w) {
    const std::size_t n = syms.size();
    if (n < 2) return;
    w.prev.resize(n);
    w.next.resize(n);
    w.version.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
        w.prev[i] = static_cast<std::int32_t>(i) - 1;
        w.next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
    }
    using Candidate = MergeScratch::Candidate;
    const auto later = [](const Candidate& a, const Candidate& b) {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    };
    auto& heap = w.heap;
    heap.clear();
    const auto consider = [&](std::int32_t l, std::int32_t r) {
        const auto li = static_cast<std::size_t>(l), ri = static_cast<std::size_t>(r);
        const MergeTable::Entry* m = merges.find(merge_key(syms[li], syms[ri]));
        if (m == nullptr) return;
        heap.push_back({m->rank, l, r, m->id, w.version[li], w.version[ri]});
        std::push_heap(heap.begin(), heap.end(), later);
    };
    for (std::size_t i = 0; i + 1 < n; ++i) {
        consider(static_cast<std::int32_t>(i), static_cast<std::int32_t>(i + 1));
    }
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const Candidate c = heap.back();
        heap.pop_back();
        const auto li = static_cast<std::size_t>(c.left), ri = static_cast<std::size_t>(c.right);
        if (w.version[li] != c.left_version || w.version[ri] != c.right_version ||
            w.next[li] != c.right) {
            continue;  // stale: a neighbour merged since this pair was found
        }
        syms[li] = c.id;
        ++w.version[li];
        ++w.version[ri];  // the right node is gone
        w.next[li] = w.next[ri];
        if (w.next[li] >= 0) w.prev[static_cast<std::size_t>(w.next[li])] = c.left;
        if (w.prev[li] >= 0) consider(w.prev[li], c.left);
        if (w.next[li] >= 0) consider(c.left, w.next[li]);
    }
    // Node 0 is never removed (merges keep the left node): walk the list from it.
    std::size_t out = 0;
    for (std::int32_t i = 0; i >= 0; i = w.next[static_cast<std::size_t>(i)]) {
        syms[out++] = syms[static_cast<std::size_t>(i)];
    }
    syms.resize(out);
}

/// A token's text for an error message, quoted, control bytes escaped.
inline std::string bpe_quoted(std::string_view s) {
    constexpr char digits[] = "0123456789abcdef";
    std::string out = "'";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += digits[c >> 4];
            out += digits[c & 15];
        } else {
            out += ch;
        }
    }
    return out + "'";
}

}  // namespace detail

/// GPT-2's pre-tokeniser alone: the words `text` splits into (views into `text`, in order,
/// covering it exactly). Step 3 of encode.
inline std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
    std::vector<std::string_view> words;
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t end = detail::gpt2_match_end(text, i);
        words.push_back(text.substr(i, end - i));
        i = end;
    }
    return words;
}

/// Raw bytes -> GPT-2 byte-level text (each byte becomes its printable stand-in, UTF-8 encoded).
inline std::string bytes_to_unicode(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char ch : bytes) {
        const std::uint16_t cp = detail::kByteToCp[static_cast<unsigned char>(ch)];
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    return out;
}

/// GPT-2 byte-level text -> raw bytes; nullopt when `text` has a character outside the 256
/// stand-ins (or is not UTF-8).
inline std::optional<std::string> unicode_to_bytes(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    for (std::size_t i = 0; i < text.size();) {
        const detail::Utf8Char u = detail::utf8_next(s + i, text.size() - i);
        if (u.cp < 0 || u.cp >= static_cast<std::int32_t>(detail::kCpToByte.size())) {
            return std::nullopt;
        }
        const std::int16_t b = detail::kCpToByte[static_cast<std::size_t>(u.cp)];
        if (b < 0) return std::nullopt;
        out += static_cast<char>(b);
        i += u.len;
    }
    return out;
}

/// GPT-2 byte-level BPE tokenizer (see the top of this file).
class BpeTokenizer {
public:
    /// OpenAI's `encoder.json` + `vocab.bpe`. "<|endoftext|>", when present, is BOS, EOS and the
    /// one special token. Throws IoError (unreadable file) or FormatError (names the file).
    static BpeTokenizer from_openai(const std::string& encoder_json, const std::string& vocab_bpe) {
        const io::MappedFile enc(encoder_json);
        const io::MappedFile bpe(vocab_bpe);
        return from_openai_text(as_text(enc), as_text(bpe), encoder_json, vocab_bpe);
    }

    /// As from_openai, from the two files' contents; the names stand for the files in errors.
    static BpeTokenizer from_openai_text(std::string_view encoder_json, std::string_view vocab_bpe,
                                         const std::string& encoder_name = "<encoder.json>",
                                         const std::string& merges_name = "<vocab.bpe>") {
        const nlohmann::json j = parse_json(encoder_json, encoder_name);
        if (!j.is_object()) {
            throw FormatError(encoder_name + ": expected a JSON object {token: id}, found " +
                              std::string(j.type_name()));
        }
        std::vector<std::string> tokens = tokens_from_object(j, encoder_name, "");
        std::vector<std::size_t> lines;
        std::vector<std::pair<std::string, std::string>> merges =
            merges_from_text(vocab_bpe, merges_name, lines);
        BpeOptions options;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] == "<|endoftext|>") {
                const auto id = static_cast<std::int32_t>(i);
                options.bos = options.eos = id;
                options.special_ids.push_back(id);
                break;
            }
        }
        BpeTokenizer t;
        t.init(std::move(tokens), merges, std::move(options), encoder_name + " + " + merges_name,
               [&](std::size_t r) { return merges_name + " line " + std::to_string(lines[r]); });
        return t;
    }

    /// A Hugging Face `tokenizer.json` with a byte-level BPE model (see the top of this file).
    /// Every added token is special; "<|endoftext|>", when present, is BOS and EOS (the other
    /// roles live in tokenizer_config.json, which is not read). Throws IoError or FormatError.
    static BpeTokenizer from_hf_json(const std::string& path) {
        const io::MappedFile file(path);
        return from_hf_json_text(as_text(file), path);
    }

    /// As from_hf_json, from the file's contents; `name` stands for the file in errors.
    static BpeTokenizer from_hf_json_text(std::string_view text,
                                          const std::string& name = "<tokenizer.json>") {
        const nlohmann::json root = parse_json(text, name);
        try {
            return from_hf_json_value(root, name);
        } catch (const nlohmann::json::exception& e) {  // a field of an unexpected type
            throw FormatError(name + ": " + e.what());
        }
    }

    /// Tokens in id order (byte-level text) and merges "a b" in rank order, e.g. from GGUF's
    /// tokenizer.ggml.tokens / tokenizer.ggml.merges (right only when tokenizer.ggml.pre is
    /// "gpt-2" or absent: other values name other pre-tokeniser patterns). Throws FormatError
    /// naming `source`.
    BpeTokenizer(std::vector<std::string> tokens, std::span<const std::string> merges,
                 BpeOptions options = {}, std::string source = "<memory>") {
        std::vector<std::pair<std::string, std::string>> pairs;
        pairs.reserve(merges.size());
        for (std::size_t i = 0; i < merges.size(); ++i) {
            pairs.push_back(split_merge(merges[i], source, "merges[" + std::to_string(i) + "]"));
        }
        init(std::move(tokens), pairs, std::move(options), std::move(source), {});
    }

    /// As above with each merge already split into its two tokens.
    BpeTokenizer(std::vector<std::string> tokens,
                 std::span<const std::pair<std::string, std::string>> merges,
                 BpeOptions options = {}, std::string source = "<memory>") {
        init(std::move(tokens), merges, std::move(options), std::move(source), {});
    }

    [[nodiscard]] std::int32_t vocab_size() const noexcept {
        return static_cast<std::int32_t>(v_->pieces.size());
    }
    /// Number of merges (ranks 0..merge_count()-1).
    [[nodiscard]] std::size_t merge_count() const noexcept { return v_->merge_count; }
    [[nodiscard]] std::optional<std::int32_t> bos() const noexcept { return opt(v_->bos); }
    [[nodiscard]] std::optional<std::int32_t> eos() const noexcept { return opt(v_->eos); }
    [[nodiscard]] std::optional<std::int32_t> unk() const noexcept { return opt(v_->unk); }
    /// Ids that SpecialTokens::recognised cuts out of text, ascending.
    [[nodiscard]] const std::vector<std::int32_t>& special_ids() const noexcept {
        return v_->special_ids;
    }
    [[nodiscard]] bool is_special(std::int32_t id) const {
        check_id("is_special", id);
        return std::binary_search(v_->special_ids.begin(), v_->special_ids.end(), id);
    }
    [[nodiscard]] bool add_prefix_space() const noexcept { return v_->add_prefix_space; }
    /// Where the vocabulary came from (file paths, "<memory>", ...).
    [[nodiscard]] const std::string& source() const noexcept { return v_->source; }

    /// The token's stored text: byte-level ("Ġworld" for " world").
    [[nodiscard]] std::string_view piece(std::int32_t id) const {
        check_id("piece", id);
        return v_->pieces.view(static_cast<std::size_t>(id));
    }
    /// Id of the token whose stored (byte-level) text is exactly `piece` (lowest id on repeats).
    [[nodiscard]] std::optional<std::int32_t> find(std::string_view piece) const {
        const auto it = v_->index.find(piece);
        if (it == v_->index.end()) return std::nullopt;
        return it->second;
    }
    /// Id of the single-byte token for `byte`, if the vocabulary has one.
    [[nodiscard]] std::optional<std::int32_t> byte_token(std::uint8_t byte) const noexcept {
        return opt(v_->byte_id[byte]);
    }

    /// Token ids of `text`; special-token texts are ordinary text unless `special` says otherwise.
    [[nodiscard]] std::vector<std::int32_t> encode(
        std::string_view text, SpecialTokens special = SpecialTokens::as_text) const {
        std::vector<std::int32_t> ids;
        encode_into(text, ids, special);
        return ids;
    }

    /// As encode, into `out` (its contents are replaced, its capacity reused).
    void encode_into(std::string_view text, std::vector<std::int32_t>& out,
                     SpecialTokens special = SpecialTokens::as_text) const {
        out.clear();
        Work w;
        const Vocab& v = *v_;
        if (special == SpecialTokens::as_text || v.specials.empty()) {
            encode_segment(text, out, w);
            return;
        }
        // Next occurrence of each special text at or after `pos` (npos: none left).
        constexpr std::size_t kUnknown = std::numeric_limits<std::size_t>::max() - 1;
        std::vector<std::size_t> next(v.specials.size(), kUnknown);
        std::size_t pos = 0;
        while (pos < text.size()) {
            std::size_t best = std::string_view::npos, best_len = 0;
            std::int32_t best_id = -1;
            for (std::size_t k = 0; k < v.specials.size(); ++k) {
                const auto& [content, id] = v.specials[k];
                if (next[k] == kUnknown || (next[k] != std::string_view::npos && next[k] < pos)) {
                    next[k] = text.find(content, pos);
                }
                // Leftmost; specials are sorted longest first, so the first at a position wins.
                if (next[k] < best) {
                    best = next[k];
                    best_len = content.size();
                    best_id = id;
                }
            }
            if (best == std::string_view::npos) break;
            encode_segment(text.substr(pos, best - pos), out, w);
            out.push_back(best_id);
            pos = best + best_len;
        }
        if (pos < text.size()) encode_segment(text.substr(pos), out, w);
    }

    /// The bytes token `id` stands for (its text for a special token). The view points into the
    /// tokenizer and lives as long as it (or a copy) does.
    [[nodiscard]] std::string_view decode_piece(std::int32_t id) const {
        check_id("decode_piece", id);
        return v_->bytes.view(static_cast<std::size_t>(id));
    }

    /// The bytes of a sequence of ids; throws Error on an id out of range.
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
        const Vocab& v = *v_;
        std::string out;
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const std::int32_t id = ids[i];
            if (id < 0 || id >= vocab_size()) {
                throw Error("BpeTokenizer::decode: token id " + std::to_string(id) +
                            " at position " + std::to_string(i) + " is out of range [0, " +
                            std::to_string(vocab_size()) + ") for the vocabulary of " + v.source);
            }
            out += v.bytes.view(static_cast<std::size_t>(id));
        }
        return out;
    }

private:
    static BpeTokenizer from_hf_json_value(const nlohmann::json& root, const std::string& name) {
        const auto fail = [&](const std::string& what) -> FormatError {
            return FormatError(name + ": " + what);
        };
        if (!root.is_object()) fail_type(name, "the top level", "an object", root);
        const auto model_it = root.find("model");
        if (model_it == root.end() || !model_it->is_object()) {
            throw fail("no \"model\" object");
        }
        const nlohmann::json& model = *model_it;
        if (const auto t = model.find("type"); t != model.end() && *t != "BPE") {
            throw fail("model.type is " + t->dump() + "; BpeTokenizer reads BPE models only");
        }
        for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (const auto it = model.find(key); it != model.end() && !it->is_null() && *it != "") {
                throw fail(std::string("model.") + key + " is " + it->dump() +
                           ", which byte-level BPE does not use (not supported)");
            }
        }
        if (const auto it = model.find("byte_fallback"); it != model.end() && *it == true) {
            throw fail(
                "model.byte_fallback is true (SentencePiece-style byte fallback is not "
                "supported; use tok::SpmTokenizer for such models)");
        }
        if (const auto it = root.find("normalizer"); it != root.end() && !it->is_null()) {
            throw fail("normalizer " + type_of(*it) + " is not supported (only null)");
        }
        BpeOptions options;
        const auto pre = root.find("pre_tokenizer");
        if (pre == root.end() || !pre->is_object() || !pre->contains("type") ||
            (*pre)["type"] != "ByteLevel") {
            throw fail("pre_tokenizer is " +
                       (pre == root.end() ? std::string("missing") : type_of(*pre)) +
                       "; BpeTokenizer implements GPT-2's ByteLevel pre-tokeniser only");
        }
        if (const auto it = pre->find("use_regex"); it != pre->end() && *it == false) {
            throw fail(
                "pre_tokenizer.use_regex is false (not supported: GPT-2's pattern is "
                "always applied)");
        }
        options.add_prefix_space = bool_field(*pre, "add_prefix_space", name, "pre_tokenizer");
        options.ignore_merges = bool_field(model, "ignore_merges", name, "model");

        const auto vocab_it = model.find("vocab");
        if (vocab_it == model.end()) throw fail("no model.vocab");
        if (!vocab_it->is_object()) fail_type(name, "model.vocab", "an object", *vocab_it);

        // Ids from model.vocab and added_tokens together must be 0..N-1.
        std::vector<std::pair<std::int32_t, std::string>> entries;
        entries.reserve(vocab_it->size());
        for (const auto& [token, id] : vocab_it->items()) {
            entries.emplace_back(id_value(id, name, "model.vocab[\"" + token + "\"]"), token);
        }
        if (const auto added = root.find("added_tokens");
            added != root.end() && !added->is_null()) {
            if (!added->is_array()) fail_type(name, "added_tokens", "an array", *added);
            for (std::size_t i = 0; i < added->size(); ++i) {
                const nlohmann::json& a = (*added)[i];
                const std::string where = "added_tokens[" + std::to_string(i) + "]";
                if (!a.is_object()) fail_type(name, where, "an object", a);
                const auto id = a.find("id");
                const auto content = a.find("content");
                if (id == a.end() || content == a.end() || !content->is_string()) {
                    throw fail(where + " needs an integer \"id\" and a string \"content\"");
                }
                const std::int32_t v = id_value(*id, name, where + ".id");
                entries.emplace_back(v, content->get<std::string>());
                options.special_ids.push_back(v);
            }
        }
        std::vector<std::string> tokens = tokens_in_id_order(std::move(entries), name);
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] == "<|endoftext|>") {
                options.bos = options.eos = static_cast<std::int32_t>(i);
                break;
            }
        }
        if (const auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
            if (!unk->is_string()) fail_type(name, "model.unk_token", "a string or null", *unk);
            const auto it = std::find(tokens.begin(), tokens.end(), unk->get<std::string>());
            if (it == tokens.end()) {
                throw fail("model.unk_token " + unk->dump() + " is not in the vocabulary");
            }
            options.unk = static_cast<std::int32_t>(it - tokens.begin());
        }

        const auto merges_it = model.find("merges");
        if (merges_it == model.end()) throw fail("no model.merges");
        if (!merges_it->is_array()) fail_type(name, "model.merges", "an array", *merges_it);
        std::vector<std::pair<std::string, std::string>> merges;
        merges.reserve(merges_it->size());
        for (std::size_t i = 0; i < merges_it->size(); ++i) {
            const nlohmann::json& m = (*merges_it)[i];
            const std::string where = "model.merges[" + std::to_string(i) + "]";
            if (m.is_string()) {
                merges.push_back(split_merge(m.get_ref<const std::string&>(), name, where));
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
            } else {
                throw fail(where + " should be \"a b\" or [\"a\", \"b\"], found " + m.dump());
            }
        }
        BpeTokenizer t;
        t.init(std::move(tokens), merges, std::move(options), name,
               [&](std::size_t r) { return name + ": model.merges[" + std::to_string(r) + "]"; });
        return t;
    }

    // Strings back to back in one buffer.
    struct StringTable {
        std::vector<char> arena;
        std::vector<std::size_t> offsets{0};
        void push(std::string_view s) {
            arena.insert(arena.end(), s.begin(), s.end());
            offsets.push_back(arena.size());
        }
        std::size_t size() const noexcept { return offsets.size() - 1; }
        std::string_view view(std::size_t i) const noexcept {
            return {arena.data() + offsets[i], offsets[i + 1] - offsets[i]};
        }
    };

    struct Vocab {
        StringTable pieces;                                        // stored (byte-level) text
        StringTable bytes;                                         // what each token decodes to
        std::unordered_map<std::string_view, std::int32_t> index;  // pieces -> id
        std::unordered_map<std::string_view, std::int32_t> bytes_index;  // ignore_merges only
        detail::MergeTable merges;                                       // (left << 32 | right)
        std::array<std::int32_t, 256> byte_id{};
        std::vector<std::pair<std::string_view, std::int32_t>> specials;  // longest text first
        std::vector<std::int32_t> special_ids;
        std::size_t merge_count = 0;
        std::int32_t bos = -1, eos = -1, unk = -1;
        bool add_prefix_space = false, ignore_merges = false;
        std::string source;
    };

    // Per-call scratch: the word cache and the merge loop's buffers.
    struct Work {
        detail::WordCache cache;
        std::vector<std::int32_t> cached;  // the cache's runs index this
        std::vector<std::int32_t> syms;
        detail::MergeScratch merge;
        std::deque<std::string> prefixed;  // segments with add_prefix_space's ' ' in front
    };

    static constexpr std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
        return detail::merge_key(a, b);
    }

    static std::optional<std::int32_t> opt(std::int32_t id) noexcept {
        return id >= 0 ? std::optional<std::int32_t>(id) : std::nullopt;
    }

    static std::string_view as_text(const io::MappedFile& f) noexcept {
        return {reinterpret_cast<const char*>(f.data()), f.size()};
    }

    static nlohmann::json parse_json(std::string_view text, const std::string& name) {
        try {
            return nlohmann::json::parse(text.begin(), text.end());
        } catch (const nlohmann::json::parse_error& e) {
            throw FormatError::at(name, e.byte, std::string("invalid JSON: ") + e.what());
        } catch (const nlohmann::json::exception& e) {
            // nlohmann reports a number too large for a double (1e400) as out_of_range.
            throw FormatError(name + ": invalid JSON: " + e.what());
        }
    }

    static std::string type_of(const nlohmann::json& j) {
        if (j.is_object() && j.contains("type")) return j["type"].dump();
        return j.dump().substr(0, 80);
    }

    [[noreturn]] static void fail_type(const std::string& name, const std::string& where,
                                       const char* want, const nlohmann::json& found) {
        throw FormatError(name + ": " + where + " should be " + want + ", found " +
                          std::string(found.type_name()) + " " + found.dump().substr(0, 80));
    }

    static bool bool_field(const nlohmann::json& obj, const char* key, const std::string& name,
                           const std::string& where) {
        const auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return false;
        if (!it->is_boolean()) fail_type(name, where + "." + key, "a boolean", *it);
        return it->get<bool>();
    }

    static std::int32_t id_value(const nlohmann::json& id, const std::string& name,
                                 const std::string& where) {
        if (!id.is_number_integer()) fail_type(name, where, "an integer id", id);
        const auto v = id.get<std::int64_t>();
        if (v < 0 || v >= std::numeric_limits<std::int32_t>::max()) {
            throw FormatError(name + ": " + where + " has id " + std::to_string(v) +
                              ", outside [0, 2^31 - 1)");
        }
        return static_cast<std::int32_t>(v);
    }

    // {token: id} -> tokens in id order.
    static std::vector<std::string> tokens_from_object(const nlohmann::json& obj,
                                                       const std::string& name,
                                                       const std::string& prefix) {
        std::vector<std::pair<std::int32_t, std::string>> entries;
        entries.reserve(obj.size());
        for (const auto& [token, id] : obj.items()) {
            entries.emplace_back(id_value(id, name, prefix + "\"" + token + "\""), token);
        }
        return tokens_in_id_order(std::move(entries), name);
    }

    // (id, token) pairs -> tokens in id order; ids must cover 0..N-1, and an id given twice must
    // name the same text both times.
    static std::vector<std::string> tokens_in_id_order(
        std::vector<std::pair<std::int32_t, std::string>> entries, const std::string& name) {
        std::sort(entries.begin(), entries.end());
        std::vector<std::string> tokens;
        tokens.reserve(entries.size());
        for (auto& [id, token] : entries) {
            const auto have = static_cast<std::int32_t>(tokens.size());
            if (id == have - 1) {
                if (tokens.back() != token) {
                    throw FormatError(name + ": id " + std::to_string(id) + " is given to both " +
                                      detail::bpe_quoted(tokens.back()) + " and " +
                                      detail::bpe_quoted(token));
                }
                continue;
            }
            if (id != have) {
                throw FormatError(name + ": token ids must be 0..N-1 without gaps, but id " +
                                  std::to_string(have) + " is missing (next id is " +
                                  std::to_string(id) + ")");
            }
            tokens.push_back(std::move(token));
        }
        if (tokens.empty()) throw FormatError(name + ": the vocabulary is empty");
        return tokens;
    }

    // "a b" -> (a, b): exactly one space.
    static std::pair<std::string, std::string> split_merge(std::string_view m,
                                                           const std::string& name,
                                                           const std::string& where) {
        const std::size_t sp = m.find(' ');
        if (sp == std::string_view::npos || sp == 0 || sp + 1 == m.size() ||
            m.find(' ', sp + 1) != std::string_view::npos) {
            throw FormatError(name + ": " + where + " " + detail::bpe_quoted(m) +
                              " should be two tokens separated by one space");
        }
        return {std::string(m.substr(0, sp)), std::string(m.substr(sp + 1))};
    }

    // vocab.bpe -> merges, and the line each came from (1-based); errors name the line.
    static std::vector<std::pair<std::string, std::string>> merges_from_text(
        std::string_view text, const std::string& name, std::vector<std::size_t>& lines) {
        std::vector<std::pair<std::string, std::string>> merges;
        std::size_t line_no = 0;
        for (std::size_t pos = 0; pos < text.size();) {
            std::size_t end = text.find('\n', pos);
            if (end == std::string_view::npos) end = text.size();
            std::string_view line = text.substr(pos, end - pos);
            pos = end + 1;
            ++line_no;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
            // Split on ASCII whitespace (str.split() in encoder.py).
            std::vector<std::string_view> parts;
            for (std::size_t i = 0; i < line.size();) {
                while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
                const std::size_t start = i;
                while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
                if (i > start) parts.push_back(line.substr(start, i - start));
            }
            if (parts.size() != 2) {
                throw FormatError(name + " line " + std::to_string(line_no) + ": " +
                                  detail::bpe_quoted(line) +
                                  " should be two tokens separated by a space");
            }
            merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
            lines.push_back(line_no);
        }
        return merges;
    }

    BpeTokenizer() = default;  // for the factories, which then call init

    // Builds the vocabulary; `merge_where(r)` names merge r in errors ("vocab.bpe line 7"), by
    // default "<source>: merges[r]".
    void init(std::vector<std::string> tokens,
              std::span<const std::pair<std::string, std::string>> merges, BpeOptions options,
              std::string source, const std::function<std::string(std::size_t)>& merge_where) {
        auto v = std::make_shared<Vocab>();
        v->source = std::move(source);
        if (tokens.empty()) throw FormatError(v->source + ": the vocabulary is empty");
        if (tokens.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
            throw FormatError(v->source + ": " + std::to_string(tokens.size()) + " tokens");
        }
        const auto n = static_cast<std::int32_t>(tokens.size());
        std::size_t total = 0;
        for (const auto& t : tokens) total += t.size();
        v->pieces.arena.reserve(total);
        v->pieces.offsets.reserve(tokens.size() + 1);
        v->bytes.arena.reserve(total);
        v->bytes.offsets.reserve(tokens.size() + 1);
        for (const auto& t : tokens) {
            v->pieces.push(t);
            const std::optional<std::string> raw = unicode_to_bytes(t);
            v->bytes.push(raw ? std::string_view(*raw) : std::string_view(t));
        }
        v->index.reserve(tokens.size());
        for (std::int32_t i = 0; i < n; ++i) {
            v->index.emplace(v->pieces.view(static_cast<std::size_t>(i)), i);
        }
        for (int b = 0; b < 256; ++b) {
            const auto it = v->index.find(bytes_to_unicode(std::string(1, static_cast<char>(b))));
            v->byte_id[static_cast<std::size_t>(b)] = it != v->index.end() ? it->second : -1;
        }

        const auto check = [&](std::int32_t id, const char* what) {
            if (id < -1 || id >= n) {
                throw FormatError(v->source + ": " + what + " id " + std::to_string(id) +
                                  " is out of range [0, " + std::to_string(n) + ")");
            }
        };
        check(options.bos, "BOS");
        check(options.eos, "EOS");
        check(options.unk, "unknown-token");
        v->bos = options.bos;
        v->eos = options.eos;
        v->unk = options.unk;
        v->add_prefix_space = options.add_prefix_space;
        v->ignore_merges = options.ignore_merges;
        for (const std::int32_t id : options.special_ids) {
            if (id < 0) throw FormatError(v->source + ": special token id " + std::to_string(id));
            check(id, "special-token");
        }
        std::sort(options.special_ids.begin(), options.special_ids.end());
        options.special_ids.erase(
            std::unique(options.special_ids.begin(), options.special_ids.end()),
            options.special_ids.end());
        v->special_ids = std::move(options.special_ids);
        for (const std::int32_t id : v->special_ids) {
            const std::string_view text = v->bytes.view(static_cast<std::size_t>(id));
            if (!text.empty()) v->specials.emplace_back(text, id);
        }
        std::stable_sort(v->specials.begin(), v->specials.end(), [](const auto& a, const auto& b) {
            return a.first.size() > b.first.size();
        });
        if (v->ignore_merges) {  // the model's own tokens, not the added (special) ones
            v->bytes_index.reserve(tokens.size());
            for (std::int32_t i = 0; i < n; ++i) {
                if (std::binary_search(v->special_ids.begin(), v->special_ids.end(), i)) continue;
                v->bytes_index.emplace(v->bytes.view(static_cast<std::size_t>(i)), i);
            }
        }

        if (merges.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
            throw FormatError(v->source + ": " + std::to_string(merges.size()) + " merges");
        }
        v->merges = detail::MergeTable(merges.size());
        std::string joined;
        for (std::size_t r = 0; r < merges.size(); ++r) {
            // Named references, not a structured binding: clang before 16 cannot capture a
            // binding in the lambda below.
            const std::string& a = merges[r].first;
            const std::string& b = merges[r].second;
            const auto where = [&] {
                return (merge_where ? merge_where(r)
                                    : v->source + ": merges[" + std::to_string(r) + "]") +
                       ": merge " + detail::bpe_quoted(a + " " + b) + ": ";
            };
            const auto ia = v->index.find(a);
            if (ia == v->index.end()) {
                throw FormatError(where() + detail::bpe_quoted(a) + " is not in the vocabulary");
            }
            const auto ib = v->index.find(b);
            if (ib == v->index.end()) {
                throw FormatError(where() + detail::bpe_quoted(b) + " is not in the vocabulary");
            }
            joined.assign(a).append(b);
            const auto ij = v->index.find(joined);
            if (ij == v->index.end()) {
                throw FormatError(where() + "the merged token " + detail::bpe_quoted(joined) +
                                  " is not in the vocabulary");
            }
            // A repeated pair takes its later rank (encoder.py's dict, tokenizers' HashMap).
            v->merges.insert_or_assign(pair_key(ia->second, ib->second),
                                       static_cast<std::int32_t>(r), ij->second);
        }
        v->merge_count = merges.size();
        v_ = std::move(v);
    }

    void check_id(const char* fn, std::int32_t id) const {
        if (id < 0 || id >= vocab_size()) {
            throw Error(std::string("BpeTokenizer::") + fn + ": token id " + std::to_string(id) +
                        " is out of range [0, " + std::to_string(vocab_size()) +
                        ") for the vocabulary of " + v_->source);
        }
    }

    // Steps 2-4 of encode for a text without special tokens; appends to `out`.
    void encode_segment(std::string_view text, std::vector<std::int32_t>& out, Work& w) const {
        if (text.empty()) return;
        if (v_->add_prefix_space && text.front() != ' ') {
            // Kept until the call ends: the word cache holds views into it.
            text = w.prefixed.emplace_back(" ").append(text);
        }
        for (std::size_t i = 0; i < text.size();) {
            const std::size_t end = detail::gpt2_match_end(text, i);
            encode_word(text.substr(i, end - i), out, w);
            i = end;
        }
    }

    // Step 4 for one word, through the per-call cache.
    void encode_word(std::string_view word, std::vector<std::int32_t>& out, Work& w) const {
        const Vocab& v = *v_;
        if (word.size() == 1) {
            out.push_back(single_byte(static_cast<unsigned char>(word[0])));
            return;
        }
        if (const detail::WordCache::Run* hit = w.cache.find(word)) {
            const auto first = w.cached.begin() + hit->start;
            out.insert(out.end(), first, first + hit->count);
            return;
        }
        const auto start = static_cast<std::uint32_t>(w.cached.size());
        const auto whole = v.ignore_merges ? v.bytes_index.find(word) : v.bytes_index.end();
        if (whole != v.bytes_index.end()) {
            w.cached.push_back(whole->second);
        } else {
            bpe(word, w);
            w.cached.insert(w.cached.end(), w.syms.begin(), w.syms.end());
        }
        const auto count = static_cast<std::uint32_t>(w.cached.size()) - start;
        w.cache.insert(word, {start, count});
        out.insert(out.end(), w.cached.begin() + start, w.cached.end());
    }

    std::int32_t single_byte(unsigned char b) const {
        const std::int32_t id = v_->byte_id[b];
        if (id >= 0) return id;
        if (v_->unk >= 0) return v_->unk;
        constexpr char digits[] = "0123456789ABCDEF";
        throw Error(std::string("BpeTokenizer::encode: byte 0x") + digits[b >> 4] + digits[b & 15] +
                    " has no token in the vocabulary of " + v_->source +
                    " and there is no unknown token");
    }

    // Merges the word's single-byte tokens into w.syms.
    void bpe(std::string_view word, Work& w) const {
        w.syms.resize(word.size());
        for (std::size_t i = 0; i < word.size(); ++i)
            w.syms[i] = single_byte(static_cast<unsigned char>(word[i]));
        detail::merge_by_rank(w.syms, v_->merges, w.merge);
    }

    std::shared_ptr<const Vocab> v_;
};

}  // namespace softprompt::tok
