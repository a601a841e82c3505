#pragma once
// The four Unicode normalization forms of UAX #15 (NFC, NFD, NFKC, NFKD) that Hugging Face
// tokenizer.json normalizers name.
//
// Normalization: full canonical (or compatibility) decomposition, canonical reordering by
// combining class, then (NFC/NFKC) canonical composition; Hangul syllables by arithmetic. Tables:
// tok/unicode_normalization_tables.hpp, generated from Python's unicodedata (Unicode 14.0.0).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "softprompt/tok/unicode_normalization_tables.hpp"
#include "softprompt/tok/utf8.hpp"

namespace softprompt::tok::unicode {

enum class NormalForm { nfc, nfd, nfkc, nfkd };

namespace detail {

inline constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
inline constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                          kSCount = kLCount * kNCount;

inline std::uint8_t combining_class(char32_t cp) noexcept {
    if (cp < 0x300) return 0;
    const auto it = std::upper_bound(std::begin(kCccRuns), std::end(kCccRuns), cp,
                                     [](char32_t c, const CccRun& r) { return c < r.first; });
    if (it == std::begin(kCccRuns)) return 0;
    const CccRun& r = *(it - 1);
    return cp <= r.last ? r.ccc : 0;
}

inline void decompose_into(char32_t cp, bool compat, std::u32string& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        const char32_t s = cp - kSBase;
        out += kLBase + s / kNCount;
        out += kVBase + (s % kNCount) / kTCount;
        if (s % kTCount != 0) out += kTBase + s % kTCount;
        return;
    }
    if (cp >= 0xA0) {
        const auto it =
            std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                             [](const Decomposition& d, char32_t c) { return d.cp < c; });
        if (it != std::end(kDecompositions) && it->cp == cp) {
            const std::size_t at = compat ? it->compat_at : it->canonical_at;
            const std::size_t len = compat ? it->compat_len : it->canonical_len;
            for (std::size_t k = 0; k < len; ++k) out += kDecomposed[at + k];
            return;
        }
    }
    out += cp;
}

inline char32_t compose_pair(char32_t a, char32_t b) noexcept {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    }
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
        b < kTBase + kTCount) {
        return a + (b - kTBase);
    }
    const std::uint64_t key = (std::uint64_t(a) << 21) | b;
    const auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), key,
                                     [](const Composition& c, std::uint64_t k) { return c.key < k; });
    return it != std::end(kCompositions) && it->key == key ? it->composite : 0;
}

}  // namespace detail

/// `cps` in normal form `form`.
inline std::u32string normalize(std::u32string_view cps, NormalForm form) {
    const bool compat = form == NormalForm::nfkc || form == NormalForm::nfkd;
    std::u32string d;
    d.reserve(cps.size());
    for (const char32_t c : cps) detail::decompose_into(c, compat, d);
    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    for (std::size_t i = 0; i < d.size();) {
        if (detail::combining_class(d[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < d.size() && detail::combining_class(d[j]) != 0) ++j;
        std::stable_sort(d.begin() + std::ptrdiff_t(i), d.begin() + std::ptrdiff_t(j),
                         [](char32_t a, char32_t b) {
                             return detail::combining_class(a) < detail::combining_class(b);
                         });
        i = j;
    }
    if (form == NormalForm::nfd || form == NormalForm::nfkd) return d;
    // Canonical composition: a character joins the last starter unless a character between them
    // blocks it (one with class 0, or with a class not below its own).
    std::u32string out;
    out.reserve(d.size());
    std::size_t starter = std::u32string::npos;
    int between_ccc = 0;  // class of the last character after the starter (when there is one)
    for (const char32_t c : d) {
        const int ccc = detail::combining_class(c);
        if (starter != std::u32string::npos) {
            const bool adjacent = out.size() == starter + 1;
            if (adjacent || (between_ccc != 0 && between_ccc < ccc)) {
                if (const char32_t comp = detail::compose_pair(out[starter], c); comp != 0) {
                    out[starter] = comp;
                    continue;
                }
            }
        }
        if (ccc == 0) starter = out.size();
        between_ccc = ccc;
        out += c;
    }
    return out;
}

/// UTF-8 text (ill-formed bytes read as U+FFFD) in normal form `form`, as UTF-8.
inline std::string normalize_utf8(std::string_view text, NormalForm form) {
    bool ascii = true;
    for (const char ch : text) ascii = ascii && static_cast<unsigned char>(ch) < 0x80;
    if (ascii) return std::string(text);  // ASCII is in every normal form
    return encode_utf8(normalize(decode_utf8_lossy(text), form));
}

}  // namespace softprompt::tok::unicode
