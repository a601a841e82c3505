#pragma once
// A group of processes training one adapter together (data parallelism), as the Trainer sees it:
// each member's rank and the group's size, and element-wise sums and maxima over every member, in
// place. dist/mpi.hpp implements it over MPI; the core library never needs MPI, and SingleProcess
// is the group of one.
//
// Exact gradient sums. Floating-point addition is not associative, so a plain all-reduce of float
// gradients gives bits that depend on how many processes took part. A data-parallel Trainer
// instead cuts every batch into a fixed number of shards (the same whatever the group's size),
// rounds each shard's gradient once onto a fixed-point int64 grid set by the largest magnitude in
// the whole group (one max over the group), and sums int64s, which is exact in any order and any
// grouping. The grid resolves 2^(E - 61 + h) where 2^E bounds every element and 2^h the number of
// shards summed: about 1e-17 of the largest element for h ≤ 10, far below float's 6e-8, so the
// result is the exact sum rounded to float (up to that grid), and the same bits on 1, 2 or 64
// processes.
//
//   FixedPointGrid grid = FixedPointGrid::for_exponent(E, h);   E from max_exponent() over the group
//   grid.add(gradient, sum)      sum[i] += round(gradient[i] · 2^k), int64
//   group.sum(sum)               the exact total over the group
//   grid.value(sum[i])           back to a floating-point value
//
// Threads: a Collective is used by one thread at a time (MPI's collectives are called in the same
// order on every member).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "softprompt/error.hpp"

namespace softprompt::train {

class Collective {
public:
    virtual ~Collective() = default;

    virtual int rank() const = 0;
    virtual int size() const = 0;

    /// Element-wise sum over every member, in place.
    void sum(std::span<std::int64_t> values) {
        count(values.size_bytes());
        sum_in_place(values);
    }
    /// Element-wise sum of doubles. Exact, and the same on any group, only where at most one
    /// member holds a non-zero value in each slot (how the Trainer uses it: per-shard losses).
    void sum(std::span<double> values) {
        count(values.size_bytes());
        sum_in_place(values);
    }
    /// Element-wise maximum over every member, in place.
    void max(std::span<std::int64_t> values) {
        count(values.size_bytes());
        max_in_place(values);
    }

    /// Bytes this member has handed to sum/max so far (the payload; an all-reduce moves about
    /// 2·(size-1)/size times as much over the network).
    std::uint64_t payload_bytes() const { return payload_bytes_; }
    /// Collective calls so far.
    std::uint64_t calls() const { return calls_; }

protected:
    virtual void sum_in_place(std::span<std::int64_t> values) = 0;
    virtual void sum_in_place(std::span<double> values) = 0;
    virtual void max_in_place(std::span<std::int64_t> values) = 0;

private:
    void count(std::size_t bytes) {
        payload_bytes_ += bytes;
        ++calls_;
    }
    std::uint64_t payload_bytes_ = 0, calls_ = 0;
};

/// The group of one process: every collective leaves its values as they are.
class SingleProcess final : public Collective {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }

protected:
    void sum_in_place(std::span<std::int64_t>) override {}
    void sum_in_place(std::span<double>) override {}
    void max_in_place(std::span<std::int64_t>) override {}
};

/// Exponents that max_exponent() reports instead of a bound.
inline constexpr std::int64_t kAllZeroExponent = std::numeric_limits<std::int64_t>::min() / 2;
inline constexpr std::int64_t kNotFiniteExponent = std::numeric_limits<std::int64_t>::max() / 2;

/// The smallest E with |v| < 2^E for every value (kAllZeroExponent when all are zero,
/// kNotFiniteExponent when one is not finite), combined with `so_far` by max.
template <class T>
std::int64_t max_exponent(std::span<const T> values, std::int64_t so_far = kAllZeroExponent) {
    std::int64_t e = so_far;
    for (const T v : values) {
        if (!std::isfinite(v)) return kNotFiniteExponent;
        // frexp: v = m · 2^x with 0.5 ≤ |m| < 1, so |v| < 2^x.
        if (v != T(0)) e = std::max<std::int64_t>(e, std::ilogb(v) + 1);
    }
    return e;
}

/// A fixed-point int64 grid on which at most 2^headroom_bits values, each below 2^exponent in
/// magnitude, add up without overflow.
class FixedPointGrid {
public:
    static FixedPointGrid for_exponent(std::int64_t exponent, int headroom_bits) {
        if (exponent == kNotFiniteExponent)
            throw NumericError("FixedPointGrid: a value is not finite");
        if (headroom_bits < 0 || headroom_bits > 40)
            throw ConfigError("FixedPointGrid: headroom of " + std::to_string(headroom_bits) +
                              " bits; give 0..40");
        FixedPointGrid grid;
        // All zero: any grid represents zero exactly.
        const std::int64_t e = exponent == kAllZeroExponent ? 0 : exponent;
        // |v| < 2^e, so |v · 2^shift| < 2^(61 - headroom), and 2^headroom of them stay below 2^61.
        grid.shift_ = int(std::clamp<std::int64_t>(61 - headroom_bits - e, -4000, 4000));
        return grid;
    }
    /// The number of headroom bits for `terms` values.
    static int headroom_for(std::uint64_t terms) { return int(std::bit_width(terms)); }

    template <class T>
    std::int64_t to_fixed(T v) const {
        return std::llround(std::ldexp(double(v), shift_));
    }
    double value(std::int64_t fixed) const { return std::ldexp(double(fixed), -shift_); }
    int shift() const { return shift_; }

private:
    int shift_ = 0;
};

}  // namespace softprompt::train
