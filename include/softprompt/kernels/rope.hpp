#pragma once
// Rotary position embedding (RoPE) on every head of a [N, H*hd] matrix, each row at its own
// position.
//   x: [N, H*hd]    positions: [N]    cos, sin: [N, rot/2]
// Layouts: kInterleaved rotates pairs (2i, 2i+1) as llama2.c and GGUF do; kHalfSplit rotates pairs
// (i, i + rot/2) as Hugging Face's rotate_half does. Frequencies are θ^(−2i/rot) in both, then
// rescaled as the checkpoint says (RopeScaling: linear position interpolation, or Llama 3's
// wavelength-dependent factors). Only the first `rotary_dim` columns of each head rotate (partial
// rotary); the rest pass through.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"

namespace softprompt::kernels {

enum class RopeLayout { kInterleaved, kHalfSplit };

/// How a checkpoint stretches RoPE to longer contexts (Hugging Face `rope_scaling`).
///   kLinear: every frequency divided by `factor` (position interpolation).
///   kLlama3: Llama 3.1's rule, per frequency f with wavelength λ = 2π/f: λ below
///            original_max_positions / high_freq_factor keeps f; λ above original_max_positions /
///            low_freq_factor gets f / factor; in between, a linear blend of the two in
///            s = (original_max_positions / λ − low_freq_factor) / (high_freq_factor −
///            low_freq_factor): (1 − s)·f/factor + s·f.
///   kFactors: frequency i divided by divisors[i], one per rotated pair. This is how llama.cpp
///            stores Llama 3's rule in GGUF (the `rope_freqs` tensor), without its parameters.
struct RopeScaling {
    enum class Kind { kNone, kLinear, kLlama3, kFactors };
    Kind kind = Kind::kNone;
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    double original_max_positions = 8192.0;
    std::vector<double> divisors = {};  // kFactors only: one per frequency

    friend bool operator==(const RopeScaling&, const RopeScaling&) = default;

    static RopeScaling linear(double factor) {
        return {.kind = Kind::kLinear,
                .factor = factor,
                .low_freq_factor = 1.0,
                .high_freq_factor = 4.0,
                .original_max_positions = 8192.0};
    }
    static RopeScaling llama3(double factor, double low_freq_factor, double high_freq_factor,
                              double original_max_positions) {
        return {.kind = Kind::kLlama3,
                .factor = factor,
                .low_freq_factor = low_freq_factor,
                .high_freq_factor = high_freq_factor,
                .original_max_positions = original_max_positions};
    }
    static RopeScaling factors(std::vector<double> divisors) {
        RopeScaling s;
        s.kind = Kind::kFactors;
        s.divisors = std::move(divisors);
        return s;
    }

    /// Throws ConfigError naming the field when the numbers cannot describe a scaling.
    void validate() const {
        if (kind == Kind::kNone) return;
        if (kind == Kind::kFactors) {
            if (divisors.empty()) throw ConfigError("RopeScaling (factors): no divisors");
            for (std::size_t i = 0; i < divisors.size(); ++i)
                if (!(divisors[i] > 0) || !std::isfinite(divisors[i]))
                    throw ConfigError("RopeScaling (factors): divisor " + std::to_string(i) +
                                      " is " + std::to_string(divisors[i]) +
                                      "; expected a finite value > 0");
            return;
        }
        if (!(factor > 0) || !std::isfinite(factor))
            throw ConfigError("RopeScaling: factor must be > 0, got " + std::to_string(factor));
        if (kind == Kind::kLlama3 &&
            (!(low_freq_factor > 0) || !(high_freq_factor > low_freq_factor) ||
             !std::isfinite(high_freq_factor) || !(original_max_positions > 0) ||
             !std::isfinite(original_max_positions)))
            throw ConfigError(
                "RopeScaling (llama3): need 0 < low_freq_factor < high_freq_factor and "
                "original_max_position_embeddings > 0, all finite, got " +
                std::to_string(low_freq_factor) + ", " + std::to_string(high_freq_factor) + ", " +
                std::to_string(original_max_positions));
    }

    /// The frequency that replaces f, frequency i of the rotated pairs.
    double apply(double f, std::size_t i) const {
        switch (kind) {
            case Kind::kNone:
                return f;
            case Kind::kFactors:
                if (i >= divisors.size())
                    throw ConfigError("RopeScaling (factors): frequency " + std::to_string(i) +
                                      " but only " + std::to_string(divisors.size()) + " divisors");
                return f / divisors[i];
            case Kind::kLinear:
                return f / factor;
            case Kind::kLlama3: {
                const double pi = 3.14159265358979323846;
                const double wavelength = 2 * pi / f;
                const double low_wavelength = original_max_positions / low_freq_factor;
                const double high_wavelength = original_max_positions / high_freq_factor;
                if (wavelength < high_wavelength) return f;
                if (wavelength > low_wavelength) return f / factor;
                const double s = (original_max_positions / wavelength - low_freq_factor) /
                                 (high_freq_factor - low_freq_factor);
                return (1 - s) * f / factor + s * f;
            }
        }
        return f;
    }
};

struct RopeSpec {
    Index head_dim = 0;
    Index rotary_dim = 0;  // 0 means head_dim
    double theta = 10000.0;
    RopeLayout layout = RopeLayout::kInterleaved;
    RopeScaling scaling = {};

    Index rotated() const { return rotary_dim == 0 ? head_dim : rotary_dim; }
    /// Frequency i of `rotated() / 2`: θ^(−2i/rot), rescaled.
    double frequency(Index i) const {
        return scaling.apply(std::pow(theta, -2.0 * double(i) / double(rotated())), std::size_t(i));
    }
};

/// The cos/sin of every (row position, frequency) pair; angles in double, then rounded to T.
template <class T>
void rope_tables(std::span<const std::int32_t> positions, const RopeSpec& spec, Mat<T>& cos,
                 Mat<T>& sin) {
    const Index half = spec.rotated() / 2;
    cos.resize(Index(positions.size()), half);
    sin.resize(Index(positions.size()), half);
    std::vector<double> freq(static_cast<std::size_t>(half));
    for (Index i = 0; i < half; ++i) freq[std::size_t(i)] = spec.frequency(i);
    for (Index r = 0; r < Index(positions.size()); ++r) {
        for (Index i = 0; i < half; ++i) {
            const double angle = double(positions[std::size_t(r)]) * freq[std::size_t(i)];
            cos(r, i) = T(std::cos(angle));
            sin(r, i) = T(std::sin(angle));
        }
    }
}

/// Rotate every head of x in place by +angle (forward) or −angle (`inverse`, which is the
/// backward: a rotation's transpose is its inverse).
template <class T>
void rope_rotate(MatRef<T> x, const RopeSpec& spec, const Mat<T>& cos, const Mat<T>& sin,
                 bool inverse) {
    const Index hd = spec.head_dim;
    const Index half = spec.rotated() / 2;
    const Index heads = x.cols() / hd;
    const T sign = inverse ? T(-1) : T(1);
    for (Index r = 0; r < x.rows(); ++r) {
        for (Index h = 0; h < heads; ++h) {
            T* head = x.row(r).data() + h * hd;
            for (Index i = 0; i < half; ++i) {
                const Index a = spec.layout == RopeLayout::kInterleaved ? 2 * i : i;
                const Index b = spec.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
                const T c = cos(r, i), s = sign * sin(r, i);
                const T xa = head[a], xb = head[b];
                head[a] = xa * c - xb * s;
                head[b] = xa * s + xb * c;
            }
        }
    }
}

/// Check the spec against a matrix and a position list; throws ShapeError naming the op.
inline void rope_check(const char* op, Index rows, Index cols, std::size_t n_positions,
                       const RopeSpec& spec) {
    if (spec.head_dim <= 0 || cols % spec.head_dim != 0)
        throw ShapeError(std::string(op) + ": width " + std::to_string(cols) +
                         " is not a multiple of head_dim " + std::to_string(spec.head_dim));
    if (spec.rotated() % 2 != 0 || spec.rotated() > spec.head_dim)
        throw ShapeError(std::string(op) + ": rotary_dim " + std::to_string(spec.rotated()) +
                         " must be even and at most head_dim " + std::to_string(spec.head_dim));
    if (Index(n_positions) != rows)
        throw ShapeError(std::string(op) + ": " + std::to_string(n_positions) + " positions for " +
                         std::to_string(rows) + " rows");
}

}  // namespace softprompt::kernels
