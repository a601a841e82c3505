// Model files: safetensors reading and writing (every header rule, corrupt and bit-flipped files,
// F16/BF16 conversion, atomic writes, lazy zero-copy mapping) and Hugging Face checkpoint folders
// (config.json, the tiny-gpt2 asset, round trips of the golden GPT-2 and LLaMA models, shards).

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <softprompt/io/hf_checkpoint.hpp>
#include <softprompt/io/hf_config.hpp>
#include <softprompt/io/open_model.hpp>
#include <softprompt/io/safetensors.hpp>
#include <softprompt/softprompt.hpp>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "golden_model.hpp"
#include "test_paths.hpp"

namespace {

using namespace softprompt;
using namespace softprompt::io;
using nn::Gpt2;
using nn::Llama;
namespace fs = std::filesystem;
using softprompt::testing::test_data_dir;

// ------------------------------------------------------------------------------------------------
// Helpers

/// A fresh folder under the system temp folder, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "softprompt_io_test_XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    fs::path operator/(const std::string& name) const { return path_ / name; }
    const fs::path& path() const { return path_; }
    /// Names of the files in the folder, sorted.
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(path_))
            out.push_back(e.path().filename().string());
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    fs::path path_;
};

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    // A new file rather than a truncated one: ext4 flushes a file rewritten by truncation on close
    // (auto_da_alloc), which makes the thousands of variants below slow.
    std::error_code ec;
    fs::remove(path, ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string u64_le(std::uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((v >> (8 * i)) & 0xFF);
    return s;
}

/// A safetensors file from a header text (padded with spaces to 8 bytes unless `pad` is false) and
/// raw data bytes.
std::string safetensors_bytes(std::string header, const std::string& data, bool pad = true) {
    if (pad) header.append((8 - header.size() % 8) % 8, ' ');
    return u64_le(header.size()) + header + data;
}

/// `n` floats 0, 1, 2, ... as little-endian bytes.
std::string float_bytes(int n, float start = 0) {
    std::string s;
    for (int i = 0; i < n; ++i) {
        const float v = start + float(i);
        s.append(reinterpret_cast<const char*>(&v), 4);
    }
    return s;
}

/// Opening `path` must throw a FormatError whose message names the file, the byte offset
/// (`at_byte` unless negative) and contains `needle`.
void expect_format_error(const fs::path& path, const std::string& needle, long long at_byte = -1) {
    try {
        SafetensorsFile f(path.string());
        ADD_FAILURE() << "expected a FormatError containing '" << needle << "' for " << path;
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(needle), std::string::npos) << what;
        EXPECT_NE(what.find(path.string()), std::string::npos) << what;
        EXPECT_NE(what.find(" at byte "), std::string::npos) << what;
        if (at_byte >= 0) {
            EXPECT_NE(what.find(" at byte " + std::to_string(at_byte) + ":"), std::string::npos)
                << what;
        }
    }
}

/// `what()` of the exception `f` throws as E ("" and a test failure if it doesn't).
template <class E, class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected an exception";
    return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

/// The golden models of tests/data (see tests/reference/make_golden.py), bound in float.
using GoldenModel = softprompt::testing::Golden<float>;

template <class Arch, class T>
Mat<T> logits_of(const nn::Model<Arch, T>& model, const nn::TokenBatch& batch) {
    autograd::Tape<T> tape;
    return nn::forward(tape, model, batch, {}, nn::LogitsRequest::kRealPositions).logits.value();
}

bool bitwise_equal(const Mat<float>& a, const Mat<float>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

// ------------------------------------------------------------------------------------------------
// F16 / BF16 conversion

TEST(Half, EveryF16PatternRoundTripsThroughFloat) {
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const float f = half_bits_to_float(std::uint16_t(h));
        const std::uint16_t back = float_to_half_bits(f);
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0) {  // NaN: stays a NaN of the same sign
            EXPECT_TRUE(std::isnan(f)) << h;
            EXPECT_EQ(back & 0xFE00, (h & 0x8000) | 0x7E00) << h;
        } else {
            ASSERT_EQ(back, h) << "pattern " << h << " = " << f;
        }
    }
}

TEST(Half, F16RoundsToNearestEvenAtEveryBoundary) {
    struct Case {
        float in;
        std::uint16_t out;
    };
    const Case cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3C00},
        {-2.0f, 0xC000},
        {65504.0f, 0x7BFF},
        {65519.99f, 0x7BFF},
        {65520.0f, 0x7C00},
        {1e10f, 0x7C00},
        {std::numeric_limits<float>::infinity(), 0x7C00},
        {-std::numeric_limits<float>::infinity(), 0xFC00},
        {0x1p-14f, 0x0400},                    // smallest normal
        {0x1p-24f, 0x0001},                    // smallest subnormal
        {0x1p-25f, 0x0000},                    // half of it: tie -> even (zero)
        {0x1.000002p-25f, 0x0001},             // just above the tie
        {0x3p-25f, 0x0002},                    // 1.5 units: tie -> even (2)
        {0x5p-25f, 0x0002},                    // 2.5 units: tie -> even (2)
        {0x3FFp-24f + 0x1p-25f, 0x0400},       // largest subnormal + half unit -> smallest normal
        {1.0f + 0x1p-11f, 0x3C00},             // tie -> even
        {1.0f + 0x3p-11f, 0x3C02},             // tie -> even (up)
        {1.0f + 0x1p-11f + 0x1p-23f, 0x3C01},  // above the tie
        {-0x1p-30f, 0x8000},                   // underflow keeps the sign
        {std::numeric_limits<float>::denorm_min(), 0x0000},
    };
    for (const auto& c : cases) EXPECT_EQ(float_to_half_bits(c.in), c.out) << c.in;
    const std::uint16_t nan = float_to_half_bits(std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(nan & 0x7E00, 0x7E00);
    EXPECT_TRUE(std::isnan(
        half_bits_to_float(float_to_half_bits(-std::numeric_limits<float>::signaling_NaN()))));
    EXPECT_EQ(float_to_half_bits(-std::numeric_limits<float>::quiet_NaN()) & 0x8000, 0x8000);
}

#ifdef __FLT16_MAX__
// GCC's _Float16 conversion (F16C or libgcc's soft-float) is an independent round-to-nearest-even.
TEST(Half, F16MatchesTheCompilersConversionOnAStrideOfAllFloats) {
    std::size_t checked = 0;
    for (std::uint64_t x = 0; x <= 0xFFFFFFFFull; x += 9973) {
        const float f = std::bit_cast<float>(std::uint32_t(x));
        if (std::isnan(f)) continue;
        const auto want = std::bit_cast<std::uint16_t>(static_cast<_Float16>(f));
        ASSERT_EQ(float_to_half_bits(f), want) << std::hexfloat << f;
        ++checked;
    }
    // And densely around the subnormal, normal and overflow boundaries.
    for (float edge : {0x1p-25f, 0x1p-24f, 0x1p-14f, 65504.0f, 65520.0f, 1.0f}) {
        std::uint32_t b = std::bit_cast<std::uint32_t>(edge);
        for (std::uint32_t d = 0; d < 20000; ++d) {
            for (std::uint32_t v : {b + d, b - d, (b + d) | 0x80000000u}) {
                const float f = std::bit_cast<float>(v);
                ASSERT_EQ(float_to_half_bits(f),
                          std::bit_cast<std::uint16_t>(static_cast<_Float16>(f)))
                    << std::hexfloat << f;
                ++checked;
            }
        }
    }
    EXPECT_GT(checked, 400000u);
}
#endif

TEST(Half, Bf16RoundTripsAndRoundsToNearestEven) {
    for (std::uint32_t b = 0; b < 0x10000; ++b) {
        const float f = bf16_bits_to_float(std::uint16_t(b));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
        } else {
            ASSERT_EQ(float_to_bf16_bits(f), b);
        }
    }
    // Independent reference: the nearer of the two neighbouring BF16 values, in double, ties to
    // the even pattern; beyond the largest finite BF16 + half a step: infinity.
    std::mt19937 gen(11);
    for (int i = 0; i < 200000; ++i) {
        const std::uint32_t x = gen();
        const float f = std::bit_cast<float>(x);
        if (std::isnan(f) || std::isinf(f)) continue;
        const std::uint16_t lo = std::uint16_t(x >> 16);
        const std::uint16_t hi = std::uint16_t(lo + 1);  // next magnitude (may be inf)
        const double dlo = bf16_bits_to_float(lo);
        const double dhi = (hi & 0x7F80) == 0x7F80 ? std::ldexp(1.0, 128) * (f < 0 ? -1 : 1)
                                                   : double(bf16_bits_to_float(hi));
        const double elo = std::abs(double(f) - dlo), ehi = std::abs(double(f) - dhi);
        const std::uint16_t want = elo < ehi ? lo : ehi < elo ? hi : (lo & 1 ? hi : lo);
        ASSERT_EQ(float_to_bf16_bits(f), want) << std::hexfloat << f;
    }
    EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7F80);  // rounds to inf
    EXPECT_EQ(float_to_bf16_bits(-std::numeric_limits<float>::infinity()), 0xFF80);
    EXPECT_EQ(float_to_bf16_bits(1.0f + 0x1p-8f), 0x3F80);  // tie -> even
    EXPECT_EQ(float_to_bf16_bits(1.0f + 0x3p-8f), 0x3F82);  // tie -> even (up)
    EXPECT_TRUE(std::isnan(
        bf16_bits_to_float(float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

// ------------------------------------------------------------------------------------------------
// safetensors writer

TEST(SafetensorsWriter, ProducesTheReferenceImplementationsBytes) {
    // Test vectors from the Rust safetensors crate's own tests (tensor.rs).
    TempDir dir;
    const std::vector<float> values = {0, 1, 2, 3, 4, 5};
    auto bytes_of = [](std::initializer_list<int> v) {
        std::string s;
        for (int b : v) s.push_back(char(b));
        return s;
    };
    write_safetensors((dir / "a").string(),
                      {{"attn.0", TensorSource(Dtype::kF32, {1, 2, 3}, values.data())}});
    EXPECT_EQ(
        read_bytes(dir / "a"),
        bytes_of({64, 0,  0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,
                  34, 58, 123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,
                  44, 34, 115, 104, 97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,
                  44, 34, 100, 97,  116, 97,  95,  111, 102, 102, 115, 101, 116, 115, 34,  58,
                  91, 48, 44,  50,  52,  93,  125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
                  0,  0,  0,   64,  0,   0,   64,  64,  0,   0,   128, 64,  0,   0,   160, 64}));
    write_safetensors((dir / "b").string(),
                      {{"attn0", TensorSource(Dtype::kF32, {1, 1, 2, 3}, values.data())}});
    EXPECT_EQ(read_bytes(dir / "b"),
              bytes_of({72,  0,   0,   0,   0,   0,   0,   0,   123, 34, 97, 116, 116, 110, 48,
                        34,  58,  123, 34,  100, 116, 121, 112, 101, 34, 58, 34,  70,  51,  50,
                        34,  44,  34,  115, 104, 97,  112, 101, 34,  58, 91, 49,  44,  49,  44,
                        50,  44,  51,  93,  44,  34,  100, 97,  116, 97, 95, 111, 102, 102, 115,
                        101, 116, 115, 34,  58,  91,  48,  44,  50,  52, 93, 125, 125, 32,  32,
                        32,  32,  32,  32,  32,  0,   0,   0,   0,   0,  0,  128, 63,  0,   0,
                        0,   64,  0,   0,   64,  64,  0,   0,   128, 64, 0,  0,   160, 64}));
    write_safetensors((dir / "c").string(), {});
    EXPECT_EQ(read_bytes(dir / "c"),
              bytes_of({8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32}));
    write_safetensors((dir / "d").string(), {}, {{"framework", "pt"}});
    EXPECT_EQ(
        read_bytes(dir / "d"),
        bytes_of({40,  0,   0,   0,  0,  0,  0,   0,   123, 34,  95,  95,  109, 101, 116, 97,
                  100, 97,  116, 97, 95, 95, 34,  58,  123, 34,  102, 114, 97,  109, 101, 119,
                  111, 114, 107, 34, 58, 34, 112, 116, 34,  125, 125, 32,  32,  32,  32,  32}));
    for (const char* name : {"a", "b", "c", "d"})
        EXPECT_NO_THROW(SafetensorsFile((dir / name).string())) << name;
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"a", "b", "c", "d"}));  // no temporary left
}

TEST(SafetensorsWriter, RewritingTheTinyGpt2CheckpointIsByteIdentical) {
    const fs::path original = test_data_dir() / "models" / "tiny-gpt2-random" / "model.safetensors";
    SOFTPROMPT_REQUIRE_DATA(original);
    const SafetensorsFile in(original.string());
    EXPECT_EQ(in.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
    std::map<std::string, std::vector<float>> values;
    std::map<std::string, TensorSource> sources;
    for (const auto& [name, info] : in.tensors()) {
        values[name] = in.values<float>(name);
        sources.emplace(name, TensorSource(info.dtype, info.shape, values[name].data()));
    }
    TempDir dir;
    write_safetensors((dir / "model.safetensors").string(), sources, in.metadata());
    EXPECT_EQ(read_bytes(dir / "model.safetensors"), read_bytes(original));
}

TEST(SafetensorsWriter, WidestDtypeFirstThenByNameKeepsEveryTensorAligned) {
    TempDir dir;
    const std::vector<float> v(7, 1.5f);
    write_safetensors((dir / "m").string(),
                      {{"a_half", TensorSource(Dtype::kF16, {3}, v.data())},
                       {"b_float", TensorSource(Dtype::kF32, {7}, v.data())},
                       {"c_brain", TensorSource(Dtype::kBF16, {5}, v.data())},
                       {"d_float", TensorSource(Dtype::kF32, {1}, v.data())}});
    const SafetensorsFile f((dir / "m").string());
    EXPECT_EQ(f.data_offset() % 8, 0u);
    EXPECT_EQ(f.info("b_float").begin, 0u);
    EXPECT_EQ(f.info("d_float").begin, 28u);
    EXPECT_EQ(f.info("c_brain").begin, 32u);  // BF16 sorts above F16 in the reference's order
    EXPECT_EQ(f.info("a_half").begin, 42u);
    for (const auto& [name, info] : f.tensors())
        EXPECT_EQ(info.begin % dtype_size(info.dtype), 0u) << name;
}

// ------------------------------------------------------------------------------------------------
// safetensors reader

TEST(SafetensorsReader, ReadsEveryFloatDtypeAsViewOrConvertedCopy) {
    TempDir dir;
    Mat<float> m(3, 4);
    for (Index i = 0; i < m.size(); ++i)
        m.data()[i] = float(i) * 0.25f - 1.0f;  // exact in F16/BF16
    const std::vector<float> vec = {1, 2, 3, 4}, scalar = {7};
    const fs::path path = dir / "t.safetensors";
    write_safetensors(path.string(),
                      {{"m32", TensorSource(m)},
                       {"m16", TensorSource(m, Dtype::kF16)},
                       {"mbf", TensorSource(m, Dtype::kBF16)},
                       {"v", TensorSource(Dtype::kF32, {4}, vec.data())},
                       {"s", TensorSource(Dtype::kF32, {}, scalar.data())},
                       {"empty", TensorSource(Dtype::kF32, {0, 3}, nullptr)}},
                      {{"format", "pt"}, {"note", "ünïcode ✓"}});
    const SafetensorsFile f(path.string());
    EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "m16", "m32", "mbf", "s", "v"}));
    EXPECT_EQ(f.metadata().at("note"), "ünïcode ✓");
    EXPECT_EQ(f.info("m16").dtype, Dtype::kF16);
    EXPECT_EQ(f.info("m16").shape, (std::vector<std::uint64_t>{3, 4}));
    EXPECT_EQ(f.info("s").shape.size(), 0u);
    EXPECT_EQ(f.info("empty").numel, 0u);

    TensorStore store;
    const Weight<float> w32 = f.weight<float>("m32", 3, 4, store);
    const auto* map_begin = reinterpret_cast<const char*>(f.file()->data());
    const auto* p = reinterpret_cast<const char*>(w32.data);
    EXPECT_TRUE(p >= map_begin && p < map_begin + f.file()->size())
        << "F32 as float must be a view";
    EXPECT_EQ(store.owned_buffers(), 0u);
    ASSERT_EQ(store.files().size(), 1u);
    for (const char* name : {"m16", "mbf"}) {
        const Weight<float> w = f.weight<float>(name, 3, 4, store);
        EXPECT_TRUE(Mat<float>(w.view()) == m) << name;
    }
    EXPECT_EQ(store.owned_buffers(), 2u);
    EXPECT_EQ(store.files().size(), 1u);  // kept once
    EXPECT_TRUE(Mat<float>(w32.view()) == m);
    const Weight<double> w64 = f.weight<double>("m32", 3, 4, store);
    EXPECT_TRUE(Mat<double>(w64.view()) == m.cast<double>());
    // A 1-D [n] tensor matches [1, n]; the view's values are the file's.
    EXPECT_TRUE(Mat<float>(f.weight<float>("v", 1, 4, store).view()) ==
                Mat<float>(Eigen::Map<const Mat<float>>(vec.data(), 1, 4)));
    EXPECT_EQ(f.matrix<float>("s")(0, 0), 7.0f);
    EXPECT_EQ(f.matrix<float>("v").rows(), 1);
    EXPECT_EQ(f.values<double>("mbf").size(), 12u);
    EXPECT_EQ(f.raw("m16").size(), 24u);

    // Wrong shapes name the file, the tensor and both shapes.
    std::string e = error_of<FormatError>([&] { f.weight<float>("m32", 4, 3, store); });
    EXPECT_TRUE(contains(e, path.string()) && contains(e, "'m32'") && contains(e, "[3, 4]") &&
                contains(e, "[4 x 3]"))
        << e;
    e = error_of<FormatError>([&] { f.weight<float>("v", 2, 2, store); });
    EXPECT_TRUE(contains(e, "'v'") && contains(e, "[4]") && contains(e, "[2 x 2]")) << e;
    e = error_of<FormatError>(
        [&] { f.weight<float>("m32", 1, 12, store); });  // [3,4] is not [1,12]
    EXPECT_TRUE(contains(e, "[1 x 12]")) << e;
    e = error_of<FormatError>([&] { f.weight<float>("nope", 1, 1, store); });
    EXPECT_TRUE(contains(e, path.string()) && contains(e, "'nope'")) << e;
    EXPECT_THROW(f.weight<float>("s", 1, 1, store), FormatError);  // a scalar is not [1, 1]
}

TEST(SafetensorsReader, NonFloatDtypesAreListedButNotReadAsWeights) {
    TempDir dir;
    const fs::path path = dir / "ints.safetensors";
    write_bytes(path,
                safetensors_bytes(R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                                  R"("w":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                                  std::string(16, '\1') + float_bytes(2)));
    const SafetensorsFile f(path.string());
    EXPECT_EQ(f.info("ids").dtype, Dtype::kI64);
    TensorStore store;
    const std::string e = error_of<FormatError>([&] { f.weight<float>("ids", 1, 2, store); });
    EXPECT_TRUE(contains(e, "'ids'") && contains(e, "I64") && contains(e, path.string())) << e;
    EXPECT_THROW(f.values<float>("ids"), FormatError);
    EXPECT_EQ(f.values<float>("w"), (std::vector<float>{0, 1}));
}

TEST(SafetensorsReader, MisalignedF32DataIsCopiedNotViewed) {
    // An unpadded 45-byte header puts the data at byte 53: no float there is 4-byte aligned, and
    // reading one through a float* would be undefined behaviour.
    TempDir dir;
    const fs::path path = dir / "odd.safetensors";
    const std::string header = R"({"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
    ASSERT_EQ((8 + header.size()) % 4, 1u);
    write_bytes(path, safetensors_bytes(header, float_bytes(6, 1.0f), false));
    const SafetensorsFile f(path.string());
    TensorStore store;
    const Weight<float> w = f.weight<float>("x", 2, 3, store);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(w.data) % alignof(float), 0u);
    EXPECT_EQ(store.owned_buffers(), 1u);
    EXPECT_EQ(w.view()(1, 2), 6.0f);
}

TEST(SafetensorsReader, F16AndBf16KeepValuesWithinTheirPrecisionAndRepresentableValuesExactly) {
    TempDir dir;
    std::mt19937 gen(3);
    std::normal_distribution<float> normal;
    Mat<float> random(64, 50), exact(8, 16);
    for (Index i = 0; i < random.size(); ++i)
        random.data()[i] = normal(gen) * std::pow(10.0f, float(i % 7) - 3);
    for (Index i = 0; i < exact.size(); ++i)
        exact.data()[i] = float(i - 64) / 32.0f;  // ≤ 8 significant bits
    const fs::path path = dir / "h.safetensors";
    write_safetensors(path.string(), {{"r16", TensorSource(random, Dtype::kF16)},
                                      {"rbf", TensorSource(random, Dtype::kBF16)},
                                      {"e16", TensorSource(exact, Dtype::kF16)},
                                      {"ebf", TensorSource(exact, Dtype::kBF16)}});
    const SafetensorsFile f(path.string());
    const Mat<float> r16 = f.matrix<float>("r16"), rbf = f.matrix<float>("rbf");
    for (Index i = 0; i < random.size(); ++i) {
        const float x = random.data()[i];
        // Half a unit in the last place: 2^-11 relative for F16 normals (plus 2^-25 absolute for
        // its subnormals), 2^-8 for BF16.
        EXPECT_LE(std::abs(r16.data()[i] - x), std::abs(x) * 0x1p-11f + 0x1p-25f) << x;
        EXPECT_LE(std::abs(rbf.data()[i] - x), std::abs(x) * 0x1p-8f) << x;
        EXPECT_EQ(r16.data()[i], half_bits_to_float(float_to_half_bits(x)));
        EXPECT_EQ(rbf.data()[i], bf16_bits_to_float(float_to_bf16_bits(x)));
    }
    EXPECT_TRUE(f.matrix<float>("e16") == exact);
    EXPECT_TRUE(f.matrix<float>("ebf") == exact);
}

// ------------------------------------------------------------------------------------------------
// Corrupt files

TEST(SafetensorsCorrupt, EveryBrokenRuleIsAFormatErrorNamingFileAndOffset) {
    TempDir dir;
    const fs::path path = dir / "bad.safetensors";
    auto check = [&](const std::string& bytes, const std::string& needle, long long at_byte = -1) {
        write_bytes(path, bytes);
        SCOPED_TRACE(needle);
        expect_format_error(path, needle, at_byte);
    };
    auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                    const std::string& offsets) {
        return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
               ",\"data_offsets\":" + offsets + "}";
    };
    const std::string good = entry("a", "F32", "[2]", "[0,8]");
    const std::string data = float_bytes(2);
    ASSERT_NO_THROW(SafetensorsFile(
        (write_bytes(path, safetensors_bytes("{" + good + "}", data)), path.string())));

    check("", "truncated", 0);
    check("\x08\0\0", "truncated", 0);
    check(u64_le(1000) + "{}", "runs past the end of the file", 0);
    check(u64_le(std::uint64_t(1) << 63) + "{}      ", "header length 9223372036854775808", 0);
    check(u64_le(~std::uint64_t(0)) + "{}      ", "runs past the end", 0);
    check(safetensors_bytes("", ""), "starting with '{'", 8);
    check(safetensors_bytes("[1,2]", ""), "starting with '{'", 8);
    check(safetensors_bytes(" {}", ""), "starting with '{'", 8);
    check(safetensors_bytes("\"abc\"", ""), "starting with '{'", 8);
    check(safetensors_bytes("{\"a\":", ""), "not valid JSON");
    check(safetensors_bytes("{\"a\":1}x", ""), "not valid JSON", 8 + 7);
    check(safetensors_bytes("{\"a\xff\":1}", ""), "not valid JSON");  // invalid UTF-8
    check(safetensors_bytes("{" + good + "," + good + "}", data), "duplicate key \"a\"",
          8 + 1 + std::ptrdiff_t(good.size()) + 1);
    check(safetensors_bytes(
              "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              data),
          "duplicate key \"dtype\"");
    check(safetensors_bytes("{\"a\":3}", ""), "tensor 'a': entry is 3", 9);
    check(safetensors_bytes("{" + entry("a", "F12", "[2]", "[0,8]") + "}", data),
          "unknown dtype \"F12\"", 9);
    check(safetensors_bytes("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data),
          "missing \"dtype\"");
    check(safetensors_bytes("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", data),
          "\"dtype\" is 7");
    check(safetensors_bytes("{" + entry("a", "F32", "[-2]", "[0,8]") + "}", data),
          "\"shape\"[0] is -2");
    check(safetensors_bytes("{" + entry("a", "F32", "[2.0]", "[0,8]") + "}", data),
          "expected a non-negative integer");
    check(safetensors_bytes("{" + entry("a", "F32", "2", "[0,8]") + "}", data), "\"shape\" is 2");
    check(safetensors_bytes("{" + entry("a", "F32", "[2]", "[0,8,8]") + "}", data), "expected 2");
    check(safetensors_bytes("{" + entry("a", "F32", "[2]", "[8,0]") + "}", data),
          "end before they begin");
    check(safetensors_bytes("{" + entry("a", "F32", "[3]", "[0,8]") + "}", data),
          "needs 12 bytes, but data_offsets [0, 8] hold 8");
    check(safetensors_bytes("{" + entry("a", "F32", "[4294967296,4294967296,2]", "[0,8]") + "}",
                            data),
          "more bytes than fit");
    check(safetensors_bytes("{" + entry("a", "F32", "[2]", "[8,16]") + "}", data),
          "run past the end of the data buffer");
    check(safetensors_bytes(
              "{" + entry("a", "F32", "[2]", "[18446744073709551608,18446744073709551616]") + "}",
              data),
          "expected a non-negative integer");  // 2^64 does not fit an integer
    {                                          // overlap: b starts 4 bytes into a
        const std::string h = "{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                              entry("b", "F32", "[2]", "[4,12]") + "}";
        const std::string bytes = safetensors_bytes(h, float_bytes(3));
        check(bytes, "tensor 'b' (data bytes [4, 12)) overlaps tensor 'a'",
              8 + (bytes.size() - 12 - 8) + 4);
    }
    {  // hole between a and b
        const std::string h = "{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                              entry("b", "F32", "[2]", "[12,20]") + "}";
        const std::string bytes = safetensors_bytes(h, float_bytes(5));
        check(bytes, "data bytes [8, 12) belong to no tensor", bytes.size() - 20 + 8);
    }
    check(safetensors_bytes("{" + entry("a", "F32", "[2]", "[4,12]") + "}", float_bytes(3)),
          "data bytes [0, 4) belong to no tensor");
    check(safetensors_bytes("{" + good + "}", data + "xxxx"),
          "4 trailing bytes after the last tensor");
    check(safetensors_bytes("{\"__metadata__\":{\"k\":1}," + good + "}", data),
          "__metadata__ value of 'k' is 1", 9);
    check(safetensors_bytes("{\"__metadata__\":[]," + good + "}", data),
          "__metadata__ is [], expected an object");
    // A zero-size tensor inside another one overlaps it.
    check(safetensors_bytes("{" + good + "," + entry("z", "F32", "[0]", "[4,4]") + "}", data),
          "overlaps");

    // A header length over the reference's 100 MB limit, in a (sparse) file large enough to hold
    // it.
    write_bytes(path, u64_le(100'000'001) + "{}");
    fs::resize_file(path, 100'000'100);
    expect_format_error(path, "exceeds the limit of 100000000 bytes", 0);
    fs::remove(path);
}

/// A small valid file with every float dtype, a vector, a scalar and metadata.
std::string small_valid_file(const TempDir& dir) {
    Mat<float> m(2, 3);
    m << 1, 2, 3, 4, 5, 6;
    const std::vector<float> v = {0.5f, -1.0f, 2.0f, 8.0f}, s = {3.0f};
    write_safetensors((dir / "valid.safetensors").string(),
                      {{"m", TensorSource(m)},
                       {"h", TensorSource(Dtype::kF16, {4}, v.data())},
                       {"b", TensorSource(Dtype::kBF16, {2, 2}, v.data())},
                       {"s", TensorSource(Dtype::kF32, {}, s.data())}},
                      {{"format", "pt"}});
    return read_bytes(dir / "valid.safetensors");
}

TEST(SafetensorsCorrupt, EveryTruncationIsAFormatError) {
    TempDir dir;
    const std::string bytes = small_valid_file(dir);
    const fs::path path = dir / "cut.safetensors";
    for (std::size_t size = 0; size < bytes.size(); ++size) {
        write_bytes(path, bytes.substr(0, size));
        EXPECT_THROW(SafetensorsFile(path.string()), FormatError) << "cut at " << size;
    }
    write_bytes(path, bytes);
    EXPECT_NO_THROW(SafetensorsFile(path.string()));
}

TEST(SafetensorsCorrupt, EveryBitFlipInTheHeaderLoadsOrThrowsFormatError) {
    TempDir dir;
    const std::string bytes = small_valid_file(dir);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const fs::path path = dir / "flip.safetensors";
    int loaded = 0, rejected = 0;
    for (std::size_t i = 0; i < 8 + n; ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string flipped = bytes;
            flipped[i] = char(flipped[i] ^ (1 << bit));
            write_bytes(path, flipped);
            try {
                const SafetensorsFile f(path.string());
                // Whatever loads must also read without trouble.
                TensorStore store;
                for (const auto& [name, info] : f.tensors()) {
                    if (!is_weight_dtype(info.dtype)) continue;
                    (void)f.values<float>(name);
                    if (info.shape.size() <= 2) (void)f.matrix<double>(name);
                    if (info.shape.size() == 2 && info.shape[0] < 1000 && info.shape[1] < 1000)
                        (void)f.weight<float>(name, Index(info.shape[0]), Index(info.shape[1]),
                                              store);
                }
                ++loaded;
            } catch (const FormatError& e) {
                EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
                ++rejected;
            }
        }
    }
    EXPECT_GT(rejected, 0);
    EXPECT_GT(loaded, 0);  // e.g. flips inside names and metadata values
    std::cout << "[          ] " << loaded << " flips loaded, " << rejected << " rejected\n";
}

// ------------------------------------------------------------------------------------------------
// Atomic writes

TEST(SafetensorsWriter, NothingIsWrittenHalfWay) {
    TempDir dir;
    const fs::path path = dir / "model.safetensors";
    const std::vector<float> v(16 * 1024, 1.0f);
    write_safetensors(path.string(), {{"old", TensorSource(Dtype::kF32, {4}, v.data())}});
    const std::string old = read_bytes(path);

    // Bad input is refused before the disk is touched.
    EXPECT_THROW(
        write_safetensors(path.string(), {{"x", TensorSource(Dtype::kI64, {4}, v.data())}}),
        ConfigError);
    EXPECT_THROW(write_safetensors(path.string(), {{"x", TensorSource(Dtype::kF32, {4}, nullptr)}}),
                 ConfigError);
    EXPECT_THROW(write_safetensors(path.string(),
                                   {{"__metadata__", TensorSource(Dtype::kF32, {4}, v.data())}}),
                 ConfigError);
    EXPECT_THROW(
        write_safetensors(path.string(), {{"bad\xff", TensorSource(Dtype::kF32, {4}, v.data())}}),
        ConfigError);
    EXPECT_EQ(read_bytes(path), old);

    // The system refusing a write (file size limit: write() fails with EFBIG) leaves the old file
    // and no temporary.
    struct rlimit saved {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
    auto* previous = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    std::string e;
    try {
        write_safetensors(path.string(),
                          {{"new", TensorSource(Dtype::kF32, {v.size()}, v.data())}});
    } catch (const IoError& err) {
        e = err.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous);
    EXPECT_TRUE(contains(e, path.string()) && contains(e, "cannot write")) << e;
    EXPECT_EQ(read_bytes(path), old);
    EXPECT_EQ(dir.files(), std::vector<std::string>{"model.safetensors"});

    // A missing folder, or a folder in the way of the file: IoError naming the path, nothing left.
    const std::string missing = (dir / "no_such_dir" / "m.safetensors").string();
    e = error_of<IoError>([&] { write_safetensors(missing, {}); });
    EXPECT_TRUE(contains(e, missing)) << e;
    fs::create_directory(dir / "a_folder");
    e = error_of<IoError>([&] { write_safetensors((dir / "a_folder").string(), {}); });
    EXPECT_TRUE(contains(e, "a_folder") && contains(e, "rename")) << e;
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"a_folder", "model.safetensors"}));

    // Success replaces the file whole.
    write_safetensors(path.string(), {{"new", TensorSource(Dtype::kF32, {v.size()}, v.data())}});
    EXPECT_TRUE(SafetensorsFile(path.string()).contains("new"));
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"a_folder", "model.safetensors"}));
}

// ------------------------------------------------------------------------------------------------
// Zero-copy mapping

/// Resident size (kB) of the mapping that contains `p`, from /proc/self/smaps.
long mapping_rss_kb(const void* p) {
    std::ifstream smaps("/proc/self/smaps");
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    bool inside = false;
    for (std::string line; std::getline(smaps, line);) {
        unsigned long long lo = 0, hi = 0;
        char dash = 0;
        std::istringstream s(line);
        if (s >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(':') > line.find(' ')) {
            inside = address >= lo && address < hi;
        } else if (inside && line.rfind("Rss:", 0) == 0) {
            return std::stol(line.substr(4));
        }
    }
    return -1;
}

/// Resident set of the whole process (kB), from /proc/self/statm.
long process_rss_kb() {
    std::ifstream statm("/proc/self/statm");
    long size = 0, resident = 0;
    statm >> size >> resident;
    return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

TEST(SafetensorsMapping, OpeningMapsTheFileAndReadsNothingUntilTouched) {
    // Why smaps' per-mapping Rss and not mincore(): mincore reports the page cache, and the file
    // was just written, so every page of it is cached before we map it — mincore would say
    // "resident" without the loader having touched anything. Rss counts only pages mapped into
    // this process's page tables, which happens when the loader (or a kernel) reads them.
    TempDir dir;
    const fs::path path = dir / "big.safetensors";
    constexpr Index kRows = 4096, kCols = 4096;  // 64 MiB of F32
    {
        std::vector<float> big(std::size_t(kRows * kCols));
        for (std::size_t i = 0; i < big.size(); ++i) big[i] = float(i % 1000);
        write_safetensors(path.string(),
                          {{"big", TensorSource(Dtype::kF32, {kRows, kCols}, big.data())}});
    }
    const long process_before = process_rss_kb();
    const SafetensorsFile f(path.string());
    TensorStore store;
    const Weight<float> w = f.weight<float>("big", kRows, kCols, store);
    EXPECT_EQ(store.owned_buffers(), 0u);
    const long mapped = mapping_rss_kb(w.data);
    ASSERT_GE(mapped, 0) << "mapping not found in /proc/self/smaps";
    EXPECT_LT(mapped, 4 * 1024) << "opening should touch the header page(s) only";
    EXPECT_LT(process_rss_kb() - process_before, 16 * 1024) << "nothing may be copied";

    double sum = 0;  // touch every page
    for (Index r = 0; r < kRows; ++r)
        sum += double(w.view()(r, 0)) + double(w.view()(r, kCols - 1));
    for (Index i = 0; i < kRows * kCols; i += 1024) sum += double(w.data[i]);
    EXPECT_GT(sum, 0);
    EXPECT_GT(mapping_rss_kb(w.data), 60 * 1024) << "touching the weights pages them in";
    std::cout << "[          ] mapping RSS " << mapped << " kB after opening, "
              << mapping_rss_kb(w.data) << " kB after touching\n";
    EXPECT_EQ(w.view()(kRows - 1, kCols - 1), float((kRows * kCols - 1) % 1000));
}

// ------------------------------------------------------------------------------------------------
// config.json

TEST(HfConfig, ReadsTheTinyGpt2Config) {
    const fs::path path = test_data_dir() / "models" / "tiny-gpt2-random" / "config.json";
    SOFTPROMPT_REQUIRE_DATA(path);
    const HfConfig hf = read_hf_config(path.string());
    EXPECT_EQ(hf.family, HfFamily::kGpt2);
    EXPECT_EQ(hf.config.dim, 2);
    EXPECT_EQ(hf.config.hidden_dim, 8);  // n_inner null -> 4 n_embd
    EXPECT_EQ(hf.config.n_layers, 1);
    EXPECT_EQ(hf.config.n_heads, 1);
    EXPECT_EQ(hf.config.n_kv_heads, 1);
    EXPECT_EQ(hf.config.vocab_size, 21);
    EXPECT_EQ(hf.config.max_seq_len, 1024);
    EXPECT_EQ(hf.config.norm_eps, 1e-5);
    EXPECT_TRUE(hf.config.tied_head);
}

TEST(HfConfig, LlamaDefaultsAndRefusals) {
    const nlohmann::json base = {{"model_type", "llama"},          {"hidden_size", 64},
                                 {"intermediate_size", 172},       {"num_hidden_layers", 5},
                                 {"num_attention_heads", 8},       {"vocab_size", 512},
                                 {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-5}};
    const HfConfig hf = parse_hf_config(base, "cfg.json");
    EXPECT_EQ(hf.family, HfFamily::kLlama);
    EXPECT_EQ(hf.config.n_kv_heads, 8);
    EXPECT_EQ(hf.config.rope_theta, 10000.0);
    EXPECT_FALSE(hf.config.tied_head);
    EXPECT_EQ(hf.config.rope_layout, kernels::RopeLayout::kHalfSplit);

    auto with = [&](const char* key, const nlohmann::json& value) {
        nlohmann::json j = base;
        if (value.is_discarded())
            j.erase(key);
        else
            j[key] = value;
        return j;
    };
    auto refused = [&](const nlohmann::json& j, const std::string& needle) {
        const std::string e = error_of<ConfigError>([&] { parse_hf_config(j, "dir/config.json"); });
        EXPECT_TRUE(contains(e, "dir/config.json") && contains(e, needle)) << e;
    };
    const nlohmann::json drop(nlohmann::json::value_t::discarded);
    EXPECT_EQ(parse_hf_config(with("num_key_value_heads", 2), "c").config.n_kv_heads, 2);
    EXPECT_EQ(parse_hf_config(with("num_key_value_heads", nullptr), "c").config.n_kv_heads, 8);
    EXPECT_EQ(parse_hf_config(with("rope_theta", 500000.0), "c").config.rope_theta, 500000.0);
    EXPECT_TRUE(parse_hf_config(with("tie_word_embeddings", true), "c").config.tied_head);
    EXPECT_NO_THROW(parse_hf_config(with("rope_scaling", nullptr), "c"));
    EXPECT_EQ(parse_hf_config(with("head_dim", 8), "c").config.explicit_head_dim, 0);
    {
        // A head width of its own (Qwen3 style): q is 8 x 16 wide, wider than hidden_size.
        const nn::Config c = parse_hf_config(with("head_dim", 16), "c").config;
        EXPECT_EQ(c.explicit_head_dim, 16);
        EXPECT_EQ(c.head_dim(), 16);
        EXPECT_EQ(c.q_dim(), 128);
    }
    {
        const nn::Config c =
            parse_hf_config(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "c")
                .config;
        EXPECT_EQ(c.rope_scaling.kind, kernels::RopeScaling::Kind::kLinear);
        EXPECT_EQ(c.rope_scaling.factor, 2.0);
        const nlohmann::json llama3 = {{"rope_type", "llama3"},
                                       {"factor", 32.0},
                                       {"low_freq_factor", 1.0},
                                       {"high_freq_factor", 4.0},
                                       {"original_max_position_embeddings", 8192}};
        const nn::Config d = parse_hf_config(with("rope_scaling", llama3), "c").config;
        EXPECT_EQ(d.rope_scaling.kind, kernels::RopeScaling::Kind::kLlama3);
        EXPECT_EQ(d.rope_scaling.factor, 32.0);
        EXPECT_EQ(d.rope_scaling.original_max_positions, 8192.0);
        EXPECT_EQ(parse_hf_config(with("rope_scaling", {{"rope_type", "default"}}), "c")
                      .config.rope_scaling.kind,
                  kernels::RopeScaling::Kind::kNone);
        nlohmann::json no_low = llama3;
        no_low.erase("low_freq_factor");
        refused(with("rope_scaling", no_low), "missing required key \"low_freq_factor\"");
        nlohmann::json inverted = llama3;
        inverted["high_freq_factor"] = 0.5;
        refused(with("rope_scaling", inverted), "low_freq_factor < high_freq_factor");
    }
    refused(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}), "rope_type \"yarn\"");
    refused(with("rope_scaling", {{"type", "dynamic"}, {"factor", 4.0}}), "rope_type \"dynamic\"");
    refused(with("rope_scaling", 2.0), "rope_scaling is 2.0");
    refused(with("hidden_act", "gelu"), "hidden_act \"gelu\"");
    refused(with("head_dim", 0), "\"head_dim\" is 0");
    refused(with("attention_bias", true), "attention_bias");
    refused(with("mlp_bias", true), "mlp_bias");
    refused(with("model_type", "qwen3_moe"), "model_type \"qwen3_moe\"");
    refused(with("model_type", "bert"), "model_type \"bert\"");
    refused(with("hidden_size", drop), "missing required key \"hidden_size\"");
    refused(with("rms_norm_eps", drop), "missing required key \"rms_norm_eps\"");
    refused(with("hidden_size", "64"), "\"hidden_size\" is \"64\"");
    refused(with("hidden_size", 64.0), "expected a positive integer");
    refused(with("num_attention_heads", 0), "\"num_attention_heads\" is 0");
    refused(with("num_key_value_heads", 3), "n_kv_heads");  // 8 heads are not a multiple of 3
    refused(with("model_type", drop), "missing required key \"model_type\"");
    refused(nlohmann::json::array(), "expected a JSON object");

    nlohmann::json mistral = with("model_type", "mistral");
    mistral["max_position_embeddings"] = 32768;
    mistral["sliding_window"] = 4096;
    mistral["sliding_window"] = 1024;
    EXPECT_EQ(parse_hf_config(mistral, "c").config.sliding_window, 1024);
    EXPECT_EQ(parse_hf_config(mistral, "c").config.max_seq_len, 32768);
    mistral["sliding_window"] = nullptr;  // null: no window
    EXPECT_EQ(parse_hf_config(mistral, "c").config.sliding_window, 0);
    mistral.erase("sliding_window");  // absent: MistralConfig's default
    EXPECT_EQ(parse_hf_config(mistral, "c").config.sliding_window, 4096);

    // Qwen: q/k/v biases (qwen2), q/k norms (qwen3); a window only with use_sliding_window.
    nlohmann::json qwen = with("model_type", "qwen2");
    qwen["sliding_window"] = 4096;
    EXPECT_TRUE(parse_hf_config(qwen, "c").config.qkv_bias);
    EXPECT_FALSE(parse_hf_config(qwen, "c").config.qk_norm);
    EXPECT_EQ(parse_hf_config(qwen, "c").config.sliding_window, 0);
    qwen["use_sliding_window"] = true;  // from layer max_window_layers (default 28) on: none of 5
    EXPECT_EQ(parse_hf_config(qwen, "c").config.sliding_window, 0);
    qwen["max_window_layers"] = 5;
    EXPECT_EQ(parse_hf_config(qwen, "c").config.sliding_window, 0);
    qwen["max_window_layers"] = 2;  // layers 2..4 are windowed
    EXPECT_EQ(parse_hf_config(qwen, "c").config.sliding_window, 4096);
    qwen["model_type"] = "qwen3";
    EXPECT_TRUE(parse_hf_config(qwen, "c").config.qk_norm);
    EXPECT_FALSE(parse_hf_config(qwen, "c").config.qkv_bias);

    const nlohmann::json gpt2 = {{"model_type", "gpt2"}, {"n_embd", 16},
                                 {"n_layer", 2},         {"n_head", 4},
                                 {"n_inner", nullptr},   {"vocab_size", 32},
                                 {"n_positions", 64},    {"layer_norm_epsilon", 1e-5}};
    EXPECT_EQ(parse_hf_config(gpt2, "c").config.hidden_dim, 64);
    nlohmann::json g = gpt2;
    g["activation_function"] = "gelu";
    refused(g, "activation_function \"gelu\"");
    g = gpt2;
    g["n_head"] = 3;
    refused(g, "dim 16 is not a multiple of n_heads 3");
    g = gpt2;
    g.erase("n_positions");
    refused(g, "missing required key \"n_positions\"");

    TempDir dir;
    write_bytes(dir / "config.json", "{\"model_type\": \"gpt2\",, }");
    const std::string e =
        error_of<FormatError>([&] { read_hf_config((dir / "config.json").string()); });
    EXPECT_TRUE(contains(e, (dir / "config.json").string()) && contains(e, "at byte 22")) << e;
    EXPECT_THROW(read_hf_config((dir / "absent.json").string()), IoError);
}

TEST(HfConfig, WrittenConfigReadsBackTheSame) {
    for (const char* file : {"golden_gpt2.json", "golden_llama_gqa.json", "golden_llama3.json",
                             "golden_qwen2.json", "golden_qwen3.json", "golden_mistral.json"}) {
        SCOPED_TRACE(file);
        const GoldenModel g(file);
        const HfFamily family = g.json.at("family") == "gpt2" ? HfFamily::kGpt2 : HfFamily::kLlama;
        const nn::Config c = parse_hf_config(hf_config_json(family, g.config), "c").config;
        EXPECT_EQ(c.dim, g.config.dim);
        EXPECT_EQ(c.hidden_dim, g.config.hidden_dim);
        EXPECT_EQ(c.n_layers, g.config.n_layers);
        EXPECT_EQ(c.n_heads, g.config.n_heads);
        EXPECT_EQ(c.n_kv_heads, g.config.n_kv_heads);
        EXPECT_EQ(c.vocab_size, g.config.vocab_size);
        EXPECT_EQ(c.max_seq_len, g.config.max_seq_len);
        EXPECT_EQ(c.norm_eps, g.config.norm_eps);
        EXPECT_EQ(c.tied_head, g.config.tied_head);
        if (family == HfFamily::kLlama) {
            EXPECT_EQ(c.rope_theta, g.config.rope_theta);
            EXPECT_EQ(c.head_dim(), g.config.head_dim());
            EXPECT_EQ(c.explicit_head_dim, g.config.explicit_head_dim);
            EXPECT_TRUE(c.rope_scaling == g.config.rope_scaling);
            EXPECT_EQ(c.qkv_bias, g.config.qkv_bias);
            EXPECT_EQ(c.qk_norm, g.config.qk_norm);
            EXPECT_EQ(c.sliding_window, g.config.sliding_window);
        }
    }
    // The golden files' config.json is transformers'; ours names the same model_type.
    for (const char* file :
         {"golden_llama3.json", "golden_qwen2.json", "golden_qwen3.json", "golden_mistral.json"}) {
        const GoldenModel g(file);
        const nlohmann::json& theirs = g.json.at("hf_config");
        const nlohmann::json ours = hf_config_json(HfFamily::kLlama, g.config);
        EXPECT_EQ(ours.at("model_type"), theirs.at("model_type")) << file;
        EXPECT_EQ(ours.at("architectures"), theirs.at("architectures")) << file;
    }
}

// ------------------------------------------------------------------------------------------------
// Checkpoint folders

TEST(HfCheckpoint, TinyGpt2LoadsWithHfShapesRunsAndSavesByteIdentical) {
    const fs::path dir = test_data_dir() / "models" / "tiny-gpt2-random";
    SOFTPROMPT_REQUIRE_DATA(dir);
    const auto model = load_hf<Gpt2>(dir.string());
    const auto& w = model.weights;
    auto shape = [](const Weight<float>& x) { return std::pair(x.rows, x.cols); };
    EXPECT_EQ(shape(w.wte), (std::pair<Index, Index>(21, 2)));
    EXPECT_EQ(shape(w.wpe), (std::pair<Index, Index>(1024, 2)));
    ASSERT_EQ(w.layers.size(), 1u);
    EXPECT_EQ(shape(w.layers[0].qkv), (std::pair<Index, Index>(2, 6)));
    EXPECT_EQ(shape(w.layers[0].qkv_bias), (std::pair<Index, Index>(1, 6)));
    EXPECT_EQ(shape(w.layers[0].fc), (std::pair<Index, Index>(2, 8)));
    EXPECT_EQ(shape(w.layers[0].fc_proj), (std::pair<Index, Index>(8, 2)));
    EXPECT_EQ(shape(w.lnf_gain), (std::pair<Index, Index>(1, 2)));
    EXPECT_EQ(w.head.data, w.wte.data);  // tied
    const SafetensorsFile file((dir / "model.safetensors").string());
    EXPECT_TRUE(Mat<float>(w.layers[0].qkv.view()) == file.matrix<float>("h.0.attn.c_attn.weight"));

    // Zero-copy: one mapped file, no converted buffer.
    const auto store = std::static_pointer_cast<const TensorStore>(model.storage);
    EXPECT_EQ(store->files().size(), 1u);
    EXPECT_EQ(store->owned_buffers(), 0u);

    const nn::TokenBatch batch{
        .batch = 2, .seq = 4, .ids = {1, 2, 3, 4, 20, 0, 7, 0}, .lengths = {4, 3}, .targets = {}};
    const Mat<float> logits = logits_of(model, batch);
    EXPECT_EQ(logits.rows(), 7);
    EXPECT_EQ(logits.cols(), 21);
    EXPECT_TRUE(logits.allFinite());

    // Written back, the weights file is the one transformers wrote, byte for byte.
    TempDir out;
    save_hf(out.path().string(), model);
    EXPECT_EQ(read_bytes(out / "model.safetensors"), read_bytes(dir / "model.safetensors"));
    EXPECT_TRUE(bitwise_equal(logits_of(load_hf<Gpt2>(out.path().string()), batch), logits));
}

template <class Arch>
void check_round_trip(const std::string& golden_file) {
    SCOPED_TRACE(golden_file);
    const GoldenModel g(golden_file);
    const auto original = g.model<Arch>();
    const Mat<float> want = logits_of(original, g.batch);
    TempDir dir;
    save_hf(dir.path().string(), original);
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"config.json", "model.safetensors"}));
    const auto loaded = load_hf<Arch>(dir.path().string());
    EXPECT_EQ(loaded.config.dim, g.config.dim);
    EXPECT_EQ(loaded.config.n_kv_heads, g.config.n_kv_heads);
    EXPECT_EQ(loaded.config.tied_head, g.config.tied_head);
    EXPECT_EQ(loaded.config.norm_eps, g.config.norm_eps);
    EXPECT_TRUE(bitwise_equal(logits_of(loaded, g.batch), want)) << "F32 round trip must be exact";
    const auto store = std::static_pointer_cast<const TensorStore>(loaded.storage);
    EXPECT_EQ(store->owned_buffers(), 0u);

    // In double, every weight is the float value exactly.
    const auto as_double = load_hf<Arch, double>(dir.path().string());
    const Mat<double> logits64 = logits_of(as_double, g.batch);
    EXPECT_LE((logits64.cast<float>() - want).cwiseAbs().maxCoeff(), 1e-4);
    if constexpr (std::is_same_v<Arch, Llama>) {
        EXPECT_TRUE(Mat<double>(as_double.weights.layers[1].wk.view()) ==
                    Mat<float>(original.weights.layers[1].wk.view()).cast<double>());
    } else {
        EXPECT_TRUE(Mat<double>(as_double.weights.layers[1].qkv.view()) ==
                    Mat<float>(original.weights.layers[1].qkv.view()).cast<double>());
    }

    // F16 and BF16 checkpoints hold the rounded weights and load into float buffers.
    for (Dtype dtype : {Dtype::kF16, Dtype::kBF16}) {
        save_hf(dir.path().string(), original, dtype);
        const auto low = load_hf<Arch>(dir.path().string());
        const auto low_store = std::static_pointer_cast<const TensorStore>(low.storage);
        EXPECT_GT(low_store->owned_buffers(), 0u);
        const Weight<float> a = original.weights.head;  // GPT-2: the tied wte
        const Weight<float> b = low.weights.head;
        for (Index i = 0; i < a.rows * a.cols; ++i) {
            const float x = a.data[i];
            ASSERT_EQ(b.data[i], dtype == Dtype::kF16 ? half_bits_to_float(float_to_half_bits(x))
                                                      : bf16_bits_to_float(float_to_bf16_bits(x)));
        }
        const Mat<float> approx = logits_of(low, g.batch);
        EXPECT_LE((approx - want).cwiseAbs().maxCoeff(),
                  (dtype == Dtype::kF16 ? 0.02 : 0.1) * want.cwiseAbs().maxCoeff());
        EXPECT_EQ(nlohmann::json::parse(read_bytes(dir / "config.json")).at("torch_dtype"),
                  dtype == Dtype::kF16 ? "float16" : "bfloat16");
    }
}

TEST(HfCheckpoint, GoldenGpt2RoundTripsBitForBit) { check_round_trip<Gpt2>("golden_gpt2.json"); }
TEST(HfCheckpoint, GoldenLlamaGqaUntiedRoundTripsBitForBit) {
    check_round_trip<Llama>("golden_llama_gqa.json");
}
TEST(HfCheckpoint, NewerFamiliesRoundTripBitForBit) {
    for (const char* file :
         {"golden_llama3.json", "golden_qwen2.json", "golden_qwen3.json", "golden_mistral.json"})
        check_round_trip<Llama>(file);
}

// open_model: the family comes from the file, and the model is the one the typed loader gives.
TEST(OpenModel, TheFileDecidesTheFamily) {
    auto same_logits = [](const nn::AnyModel<float>& any, const auto& typed,
                          const nn::TokenBatch& batch) {
        return std::visit(
            [&](const auto& m) {
                return bitwise_equal(logits_of(m, batch), logits_of(typed, batch));
            },
            any);
    };
    {
        const GoldenModel g("golden_gpt2.json");
        TempDir dir;
        save_hf(dir.path().string(), g.model<Gpt2>());
        const nn::AnyModel<float> any = open_model(dir.path().string());
        ASSERT_TRUE((std::holds_alternative<nn::Model<Gpt2, float>>(any)));
        EXPECT_EQ(nn::architecture_of(any), "gpt2");
        EXPECT_EQ(nn::config_of(any).dim, g.config.dim);
        EXPECT_TRUE(same_logits(any, load_hf<Gpt2>(dir.path().string()), g.batch));
    }
    for (const char* file : {"golden_llama_gqa.json", "golden_llama3.json", "golden_qwen2.json",
                             "golden_qwen3.json", "golden_mistral.json"}) {
        SCOPED_TRACE(file);
        const GoldenModel g(file);
        TempDir dir;
        save_hf(dir.path().string(), g.model<Llama>());
        const nn::AnyModel<float> any = open_model(dir.path().string());
        ASSERT_TRUE((std::holds_alternative<nn::Model<Llama, float>>(any)));
        EXPECT_EQ(nn::architecture_of(any), "llama");
        EXPECT_EQ(nn::config_of(any).qkv_bias, g.config.qkv_bias);
        EXPECT_EQ(nn::config_of(any).qk_norm, g.config.qk_norm);
        EXPECT_TRUE(same_logits(any, load_hf<Llama>(dir.path().string()), g.batch));
    }
    // GGUF by its magic bytes, whatever the name; anything else is a llama2.c checkpoint.
    nn::TokenBatch batch;
    batch.batch = 1;
    batch.seq = 4;
    batch.ids = {1, 403, 407, 261};
    const fs::path models = test_data_dir() / "models";
    TempDir dir;
    fs::copy_file(models / "stories260K.gguf", dir / "model.bin");
    const nn::AnyModel<float> gguf = open_model((dir / "model.bin").string());
    ASSERT_TRUE((std::holds_alternative<nn::Model<Llama, float>>(gguf)));
    EXPECT_TRUE(same_logits(gguf, load_gguf_llama((models / "stories260K.gguf").string()), batch));
    EXPECT_EQ(model_file_kind((models / "stories260K.bin").string()), ModelFileKind::kLlama2c);
    const nn::AnyModel<float> l2c = open_model((models / "stories260K.bin").string());
    EXPECT_TRUE(
        same_logits(l2c, load_llama2c<float>((models / "stories260K.bin").string()), batch));

    // A family the library does not implement, and a path that is not there, say so.
    TempDir bert;
    std::ofstream(bert / "config.json") << R"({"model_type": "bert", "hidden_size": 8})";
    const std::string e = error_of<ConfigError>([&] { (void)open_model(bert.path().string()); });
    EXPECT_TRUE(contains(e, "model_type") && contains(e, "bert")) << e;
    const std::string missing = (dir / "no-such-model.bin").string();
    EXPECT_TRUE(contains(error_of<IoError>([&] { (void)open_model(missing); }), missing));
}

// A BF16 checkpoint of each family against the float64 reference: the weights are rounded to 8
// bits of mantissa, so the logits move, in proportion to their size: at most 2e-2, or 5e-3 of the
// largest logit where the logits are large (they reach 15 to 20 in the Llama 3 and Qwen2 goldens).
TEST(HfCheckpoint, Bf16CheckpointsOfEachFamilyStayNearTheReference) {
    for (const char* file : {"golden_llama_gqa.json", "golden_llama3.json", "golden_qwen2.json",
                             "golden_qwen3.json", "golden_mistral.json"}) {
        SCOPED_TRACE(file);
        const GoldenModel g(file);
        TempDir dir;
        save_hf(dir.path().string(), g.model<Llama>(), Dtype::kBF16);
        const auto bf16 = load_hf<Llama>(dir.path().string());
        const Mat<float> reference = g.expected("base", "logits").cast<float>();
        const double err = (logits_of(bf16, g.batch) - reference).cwiseAbs().maxCoeff();
        const double scale = reference.cwiseAbs().maxCoeff();
        std::cout << "[ bf16 ] " << file << ": max |logit diff| " << err << ", max |logit| "
                  << scale << "\n";
        EXPECT_LE(err, std::max(2e-2, 5e-3 * scale)) << "max |BF16 logits - float64 reference|";
    }
}

TEST(HfCheckpoint, InterleavedRopeModelsAreSavedInHalfSplitLayout) {
    const GoldenModel g("golden_llama_interleaved.json");
    const auto original = g.model<Llama>();
    ASSERT_EQ(original.config.rope_layout, kernels::RopeLayout::kInterleaved);
    TempDir dir;
    save_hf(dir.path().string(), original);
    const auto loaded = load_hf<Llama>(dir.path().string());
    EXPECT_EQ(loaded.config.rope_layout, kernels::RopeLayout::kHalfSplit);
    const Mat<float> want = logits_of(original, g.batch);
    EXPECT_LE((logits_of(loaded, g.batch) - want).cwiseAbs().maxCoeff(),
              1e-5 * want.cwiseAbs().maxCoeff());
}

TEST(HfCheckpoint, Stories260KThroughHfLayoutStillMatchesLlama2c) {
    // The real stories260K (llama2.c, interleaved RoPE) saved as an HF checkpoint and read back.
    const fs::path bin = test_data_dir() / "models" / "stories260K.bin";
    SOFTPROMPT_REQUIRE_DATA(bin);
    const auto stories = load_llama2c<float>(bin.string());
    TempDir out;
    save_hf(out.path().string(), stories);
    const auto hf = load_hf<Llama>(out.path().string());
    EXPECT_EQ(hf.config.n_kv_heads, 4);
    EXPECT_TRUE(hf.config.tied_head);
    const nn::TokenBatch batch{.batch = 1,
                               .seq = 8,
                               .ids = {1, 403, 407, 261, 378, 429, 260, 363},
                               .lengths = {},
                               .targets = {}};
    const Mat<float> a = logits_of(stories, batch), b = logits_of(hf, batch);
    EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 1e-4);
}

/// Write `g`'s tensors (as HF names, optionally prefixed) to shards: tensor i goes to shard i % 2.
void write_two_shards(const GoldenModel& g, const fs::path& dir, const std::string& prefix) {
    std::map<std::string, TensorSource> shard[2];
    nlohmann::json map = nlohmann::json::object();
    int i = 0;
    for (const auto& [name, m] : g.tensors) {
        const bool vector = g.json.at("tensors").at(name).at("shape").size() == 1;
        const std::string file =
            i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
        shard[i % 2].emplace(prefix + name,
                             vector ? TensorSource(Dtype::kF32, {std::uint64_t(m.cols())}, m.data())
                                    : TensorSource(m));
        map[prefix + name] = file;
        ++i;
    }
    write_safetensors((dir / "model-00001-of-00002.safetensors").string(), shard[0],
                      {{"format", "pt"}});
    write_safetensors((dir / "model-00002-of-00002.safetensors").string(), shard[1],
                      {{"format", "pt"}});
    write_bytes(dir / "model.safetensors.index.json",
                nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2));
    write_bytes(
        dir / "config.json",
        hf_config_json(g.json.at("family") == "gpt2" ? HfFamily::kGpt2 : HfFamily::kLlama, g.config)
            .dump(2));
}

TEST(HfCheckpoint, ShardedCheckpointsLoadAndOpenEachShardOnce) {
    for (const char* file : {"golden_gpt2.json", "golden_llama_gqa.json"}) {
        SCOPED_TRACE(file);
        const GoldenModel g(file);
        TempDir dir;
        const bool gpt2 = g.json.at("family") == "gpt2";
        write_two_shards(g, dir.path(), gpt2 ? "transformer." : "");  // GPT2LMHeadModel's prefix
        const HfCheckpointTensors tensors(dir.path().string());
        EXPECT_EQ(tensors.file_count(), 2u);
        EXPECT_EQ(tensors.names().size(), g.tensors.size());
        Mat<float> got, want;
        if (gpt2) {
            const auto loaded = load_hf<Gpt2>(dir.path().string());
            EXPECT_EQ(std::static_pointer_cast<const TensorStore>(loaded.storage)->files().size(),
                      2u);
            got = logits_of(loaded, g.batch);
            want = logits_of(g.model<Gpt2>(), g.batch);
        } else {
            const auto loaded = load_hf<Llama>(dir.path().string());
            EXPECT_EQ(std::static_pointer_cast<const TensorStore>(loaded.storage)->files().size(),
                      2u);
            got = logits_of(loaded, g.batch);
            want = logits_of(g.model<Llama>(), g.batch);
        }
        EXPECT_TRUE(bitwise_equal(got, want));
    }
}

TEST(HfCheckpoint, BrokenFoldersNameWhatIsWrong) {
    const GoldenModel g("golden_llama_gqa.json");
    TempDir dir;
    const std::string d = dir.path().string();
    EXPECT_TRUE(contains(error_of<IoError>([&] { load_hf<Llama>(d); }), "config.json"));
    write_two_shards(g, dir.path(), "");
    const fs::path index = dir / "model.safetensors.index.json";
    const std::string good_index = read_bytes(index);
    auto with_index = [&](const nlohmann::json& weight_map) {
        write_bytes(index, nlohmann::json{{"weight_map", weight_map}}.dump());
    };
    nlohmann::json map = nlohmann::json::parse(good_index).at("weight_map");

    // Wrong family.
    std::string e = error_of<ConfigError>([&] { load_hf<Gpt2>(d); });
    EXPECT_TRUE(contains(e, "model_type \"llama\"") && contains(e, "gpt2")) << e;
    // A shard that does not exist.
    nlohmann::json m = map;
    m["model.norm.weight"] = "model-00003-of-00002.safetensors";
    with_index(m);
    e = error_of<IoError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, "model-00003-of-00002.safetensors")) << e;
    // An index entry its shard does not hold.
    m = map;
    m["model.norm.weight"] = map["model.norm.weight"] == "model-00001-of-00002.safetensors"
                                 ? "model-00002-of-00002.safetensors"
                                 : "model-00001-of-00002.safetensors";
    with_index(m);
    e = error_of<FormatError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, "'model.norm.weight'") && contains(e, "no such tensor")) << e;
    // A shard outside the folder.
    m = map;
    m["model.norm.weight"] = "../model-00001-of-00002.safetensors";
    with_index(m);
    e = error_of<FormatError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, index.string()) && contains(e, "../model")) << e;
    // A tensor the model needs but no shard lists.
    m = map;
    m.erase("lm_head.weight");
    with_index(m);
    e = error_of<FormatError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, index.string()) && contains(e, "'lm_head.weight'")) << e;
    // Not JSON.
    write_bytes(index, "{\"weight_map\": ");
    e = error_of<FormatError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, index.string()) && contains(e, "at byte")) << e;
    // A shape that disagrees with config.json: the tensor, the file and both shapes.
    write_bytes(index, good_index);
    nlohmann::json config = nlohmann::json::parse(read_bytes(dir / "config.json"));
    config["vocab_size"] = 33;
    write_bytes(dir / "config.json", config.dump());
    e = error_of<FormatError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, "'model.embed_tokens.weight'") && contains(e, "[32, 16]") &&
                contains(e, "[33 x 16]") && contains(e, ".safetensors"))
        << e;
    // A layer count no checkpoint of this size can hold is refused before anything is sized by it.
    config["vocab_size"] = g.config.vocab_size;
    config["num_hidden_layers"] = 1'000'000'000;
    write_bytes(dir / "config.json", config.dump());
    e = error_of<ConfigError>([&] { load_hf<Llama>(d); });
    EXPECT_TRUE(contains(e, "config.json: num_hidden_layers is 1000000000 but") &&
                contains(e, "model.safetensors.index.json holds only"))
        << e;
}

TEST(HfCheckpoint, UntiedGpt2HeadAndUnusedBuffersAreHandled) {
    const GoldenModel g("golden_gpt2.json");
    std::map<std::string, TensorSource> sources;
    for (const auto& [name, m] : g.tensors) {
        const bool vector = g.json.at("tensors").at(name).at("shape").size() == 1;
        sources.emplace(name, vector
                                  ? TensorSource(Dtype::kF32, {std::uint64_t(m.cols())}, m.data())
                                  : TensorSource(m));
    }
    Mat<float> head = g.tensors.at("wte.weight") * 0.5f;
    sources.emplace("lm_head.weight", TensorSource(head));
    const std::vector<float> mask(16, 1.0f);  // like GPT-2's attn.bias buffers: present, unused
    sources.emplace("h.0.attn.bias", TensorSource(Dtype::kF32, {1, 1, 4, 4}, mask.data()));
    TempDir dir;
    write_safetensors((dir / "model.safetensors").string(), sources);
    nn::Config c = g.config;
    c.tied_head = false;
    write_bytes(dir / "config.json", hf_config_json(HfFamily::kGpt2, c).dump());
    const auto loaded = load_hf<Gpt2>(dir.path().string());
    EXPECT_FALSE(loaded.config.tied_head);
    EXPECT_NE(loaded.weights.head.data, loaded.weights.wte.data);
    auto expected = g.model<Gpt2>();
    expected.weights.head = Weight<float>{head.data(), head.rows(), head.cols()};
    EXPECT_TRUE(bitwise_equal(logits_of(loaded, g.batch), logits_of(expected, g.batch)));
    // And save_hf writes the untied head back.
    TempDir out;
    save_hf(out.path().string(), loaded);
    EXPECT_TRUE(SafetensorsFile((out / "model.safetensors").string()).contains("lm_head.weight"));
    EXPECT_TRUE(bitwise_equal(logits_of(load_hf<Gpt2>(out.path().string()), g.batch),
                              logits_of(expected, g.batch)));
}

}  // namespace
