#pragma once
// UTF-8 by code point: one well-formed character or ill-formed run at a time, encoding, and the two
// ways tokenizers read bytes that are not UTF-8:
// - valid_utf8 replaces every maximal ill-formed subsequence with one U+FFFD (Unicode's "U+FFFD
//   substitution of maximal subparts": the WHATWG decoder, Rust's String::from_utf8_lossy). That is
//   what a caller of Hugging Face's tokenizers must do first, since those take only valid strings.
// - replace_invalid_bytes replaces every byte that does not begin a well-formed character with one
//   U+FFFD, as SentencePiece's normalizer does.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace softprompt::tok::unicode {

inline constexpr char32_t kReplacementChar = 0xFFFD;

/// Length of the maximal prefix of p[0..n) (n >= 1) that is either one well-formed UTF-8
/// character (`valid` then true, `cp` its code point) or the start of one that the bytes after it
/// break off (Unicode Table 3-7; at least 1 byte).
struct Utf8Step {
    std::size_t len;
    bool valid;
    char32_t cp;
};
inline Utf8Step utf8_step(const unsigned char* p, std::size_t n) noexcept {
    const unsigned c = p[0];
    if (c < 0x80) return {1, true, c};
    std::size_t need = 0;
    unsigned lo = 0x80, hi = 0xBF;  // the second byte's range
    char32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2, cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3, cp = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return {1, false, kReplacementChar};
    }
    for (std::size_t k = 1; k <= need; ++k) {
        const unsigned b = k < n ? p[k] : 0x100;
        const bool in_range = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        if (!in_range) return {k, false, kReplacementChar};
        cp = (cp << 6) | (b & 0x3F);
    }
    return {need + 1, true, cp};
}

/// Appends the UTF-8 encoding of `cp` (a scalar value) to `out`.
inline void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

/// Code points of `bytes`, each maximal ill-formed subsequence read as U+FFFD.
inline std::u32string decode_utf8_lossy(std::string_view bytes) {
    std::u32string out;
    out.reserve(bytes.size());
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    for (std::size_t i = 0; i < bytes.size();) {
        const Utf8Step s = utf8_step(p + i, bytes.size() - i);
        out += s.cp;
        i += s.len;
    }
    return out;
}

/// UTF-8 of code points.
inline std::string encode_utf8(std::u32string_view cps) {
    std::string out;
    out.reserve(cps.size());
    for (const char32_t c : cps) append_utf8(out, c);
    return out;
}

/// `bytes` with each maximal ill-formed subsequence replaced by U+FFFD (itself when valid).
inline std::string valid_utf8(std::string_view bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::size_t i = 0;
    while (i < bytes.size()) {  // the common case: already valid, no copy needed
        const Utf8Step s = utf8_step(p + i, bytes.size() - i);
        if (!s.valid) break;
        i += s.len;
    }
    if (i == bytes.size()) return std::string(bytes);
    return encode_utf8(decode_utf8_lossy(bytes));
}

/// `bytes` with each byte that does not begin a well-formed character replaced by U+FFFD
/// (SentencePiece's rule; itself when valid).
inline std::string replace_invalid_bytes(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    for (std::size_t i = 0; i < bytes.size();) {
        const Utf8Step s = utf8_step(p + i, bytes.size() - i);
        if (s.valid) {
            out.append(bytes.substr(i, s.len));
            i += s.len;
        } else {
            append_utf8(out, kReplacementChar);
            ++i;
        }
    }
    return out;
}

}  // namespace softprompt::tok::unicode
