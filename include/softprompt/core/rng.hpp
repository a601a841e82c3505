#pragma once
// A seeded random generator whose draws are identical on every platform: std::mt19937_64's output
// sequence is fixed by the standard, and the conversions to uniform and normal numbers are written
// here (the standard distributions are implementation-defined). Its state saves to text and
// restores, so a resumed training run draws exactly what an uninterrupted one would.

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>

#include "softprompt/error.hpp"

namespace softprompt {

class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}

    std::uint64_t next() { return engine_(); }
    /// Uniform in [0, 1) with 53 random bits.
    double uniform() { return double(engine_() >> 11) * 0x1.0p-53; }
    /// Uniform in [low, high).
    double uniform(double low, double high) { return low + (high - low) * uniform(); }
    /// Uniform integer in [0, n).
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : engine_() % n; }
    /// Standard normal (Box–Muller; one draw per call, the pair's partner is discarded for
    /// simplicity of state).
    double normal() {
        const double u1 = 1.0 - uniform();  // (0, 1]
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.14159265358979323846 * u2);
    }
    double normal(double mean, double stddev) { return mean + stddev * normal(); }

    /// The full generator state as text (the standard's textual representation of mt19937_64).
    std::string state() const {
        std::ostringstream out;
        out << engine_;
        return out.str();
    }
    void set_state(const std::string& text) {
        std::istringstream in(text);
        std::mt19937_64 restored;
        in >> restored;
        if (in.fail()) throw FormatError("Rng: the saved generator state is not valid");
        engine_ = restored;
    }

private:
    std::mt19937_64 engine_;
};

}  // namespace softprompt
