#pragma once
// IEEE half precision (F16: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 (BF16: 1 sign,
// 8 exponent, 7 mantissa bits — the top half of a float32) as raw 16-bit patterns, converted to and
// from float32.
//
// float -> 16 bits rounds to nearest, ties to even, exactly as a hardware conversion (F16C
// `vcvtps2ph` with round-to-nearest, PyTorch's `.half()` / `.bfloat16()`): values beyond the
// largest finite value round to infinity (F16: |x| >= 65520), tiny values become subnormals or
// signed zero, infinities stay infinities and every NaN stays a quiet NaN of the same sign (its top
// payload bits kept). 16 bits -> float is exact. Integer arithmetic only, so the result does not
// depend on the floating-point environment or on -ffast-math.

#include <bit>
#include <cstdint>

namespace softprompt::io {

/// float32 -> F16 bits, round to nearest even.
constexpr std::uint16_t float_to_half_bits(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const auto sign = std::uint16_t((x >> 16) & 0x8000u);
    const std::uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u)  // NaN: quiet it, keep the top 9 payload bits
        return std::uint16_t(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    if (ax >= 0x477FF000u) return std::uint16_t(sign | 0x7C00u);  // >= 65520 (or inf): infinity
    if (ax >= 0x38800000u) {
        // Normal half (|f| >= 2^-14): rebias the exponent, drop 13 mantissa bits with rounding. A
        // carry out of the mantissa correctly bumps the exponent (up to 65504 -> never inf here).
        std::uint32_t h = ((ax >> 23) - 112u) << 10 | ((ax >> 13) & 0x3FFu);
        const std::uint32_t rest = ax & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
        return std::uint16_t(sign | h);
    }
    // Subnormal half: the result counts units of 2^-24. f = m·2^(e-150) with the implicit bit in
    // m, so f / 2^-24 = m >> (126 - e). A float subnormal (e = 0) is far below 2^-25: zero.
    const std::uint32_t e = ax >> 23;
    if (e == 0) return sign;
    const std::uint32_t shift = 126u - e;  // >= 14 since e <= 112
    if (shift > 25) return sign;           // |f| < 2^-25: rounds to zero
    const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    std::uint32_t h = m >> shift;
    const std::uint32_t rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1u))) ++h;  // 0x3FF -> 0x400 = smallest normal
    return std::uint16_t(sign | h);
}

/// F16 bits -> float32 (exact).
constexpr float half_bits_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (m << 13));  // inf / NaN
    if (e != 0) return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
    // Zero or subnormal: m·2^-24, exact in float.
    const float v = float(m) * 0x1p-24f;
    return sign ? -v : v;
}

/// float32 -> BF16 bits, round to nearest even (overflow rounds to infinity).
constexpr std::uint16_t float_to_bf16_bits(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((x >> 16) | 0x0040u);  // quiet NaN
    // Adding 0x7FFF plus the kept lsb rounds ties to even; a carry propagates into the exponent.
    return std::uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

/// BF16 bits -> float32 (exact).
constexpr float bf16_bits_to_float(std::uint16_t b) noexcept {
    return std::bit_cast<float>(std::uint32_t(b) << 16);
}

}  // namespace softprompt::io
