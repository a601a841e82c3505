#pragma once
// Rotary position embedding (RoPE) on every head of a [N, H*hd] matrix, each row at its own
// position.
//   x: [N, H*hd]    positions: [N]    cos, sin: [N, rot/2]
// Layouts: kInterleaved rotates pairs (2i, 2i+1) as llama2.c and GGUF do; kHalfSplit rotates pairs
// (i, i + rot/2) as Hugging Face's rotate_half does. Frequencies are θ^(−2i/rot) in both. Only the
// first `rotary_dim` columns of each head rotate (partial rotary); the rest pass through.

#include <cmath>
#include <cstdint>
#include <span>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"

namespace softprompt::kernels {

enum class RopeLayout { kInterleaved, kHalfSplit };

struct RopeSpec {
    Index head_dim = 0;
    Index rotary_dim = 0;  // 0 means head_dim
    double theta = 10000.0;
    RopeLayout layout = RopeLayout::kInterleaved;

    Index rotated() const { return rotary_dim == 0 ? head_dim : rotary_dim; }
};

/// The cos/sin of every (row position, frequency) pair; angles in double, then rounded to T.
template <class T>
void rope_tables(std::span<const std::int32_t> positions, const RopeSpec& spec, Mat<T>& cos,
                 Mat<T>& sin) {
    const Index half = spec.rotated() / 2;
    cos.resize(Index(positions.size()), half);
    sin.resize(Index(positions.size()), half);
    for (Index r = 0; r < Index(positions.size()); ++r) {
        for (Index i = 0; i < half; ++i) {
            const double freq = std::pow(spec.theta, -2.0 * double(i) / double(spec.rotated()));
            const double angle = double(positions[std::size_t(r)]) * freq;
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
