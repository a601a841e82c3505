// GGUF: the reader (every metadata type, F32/F16/BF16/Q8_0 tensors, corrupt and hostile files),
// the LLaMA loader (stories260K.gguf against llama2.c's golden logits and the llama2.c-format
// model; quantised and tied variants; shape errors) and the embedded tokenizers (stories260K's
// against tok512.bin, llama.cpp's llama-spm test vectors, the gpt2 BPE vocabulary lists).

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <softprompt/io/gguf.hpp>
#include <softprompt/io/gguf_model.hpp>
#include <softprompt/io/llama2c.hpp>
#include <softprompt/io/open_model.hpp>
#include <softprompt/nn/forward.hpp>
#include <softprompt/peft/adapter_io.hpp>
#include <softprompt/tok/gguf_vocab.hpp>
#include <softprompt/tok/spm.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "golden_model.hpp"
#include "stories_golden.hpp"
#include "test_paths.hpp"

namespace {

using softprompt::testing::GoldenLogits;
using softprompt::testing::read_golden_logits;

using namespace softprompt;
using io::GgufFile;
using io::GgufType;
using io::GgufValue;
using tok::SpmTokenizer;
using Ids = std::vector<std::int32_t>;
namespace fs = std::filesystem;
using softprompt::testing::test_data_dir;

// ------------------------------------------------------------------------------------------------
// Helpers

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::span<const std::byte> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A temporary file removed at scope exit.
struct TempFile {
    fs::path path;
    explicit TempFile(const std::string& contents, const std::string& name = "gguf_test.gguf") {
        path =
            fs::temp_directory_path() / ("softprompt_" + std::to_string(::getpid()) + "_" + name);
        std::ofstream(path, std::ios::binary) << contents;
    }
    ~TempFile() {
        std::error_code ec;
        fs::remove(path, ec);
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
};

// Runs `f`, which must throw FormatError whose message holds every needle.
void expect_format_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
    try {
        f();
        ADD_FAILURE() << "no FormatError; expected one containing '" << needles.front() << "'";
    } catch (const FormatError& e) {
        const std::string msg = e.what();
        for (const auto& n : needles)
            EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
}

// ------------------------------------------------------------------------------------------------
// A GGUF writer for the tests: values are written with their type tag by the builder.

template <class T>
void put(std::string& out, T v) {
    static_assert(std::endian::native == std::endian::little);
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    out.append(raw, sizeof(T));
}

void put_str(std::string& out, std::string_view s) {
    put<std::uint64_t>(out, s.size());
    out += s;
}

// A metadata value: type tag and the bytes that follow it.
struct V {
    std::uint32_t type;
    std::string bytes;

    template <class T>
    static V scalar(std::uint32_t type, T v) {
        V out{type, {}};
        put(out.bytes, v);
        return out;
    }
    static V u8(std::uint8_t v) { return scalar(0, v); }
    static V i8(std::int8_t v) { return scalar(1, v); }
    static V u16(std::uint16_t v) { return scalar(2, v); }
    static V i16(std::int16_t v) { return scalar(3, v); }
    static V u32(std::uint32_t v) { return scalar(4, v); }
    static V i32(std::int32_t v) { return scalar(5, v); }
    static V f32(float v) { return scalar(6, v); }
    static V boolean(bool v) { return scalar(7, std::uint8_t(v)); }
    static V str(std::string_view s) {
        V out{8, {}};
        put_str(out.bytes, s);
        return out;
    }
    static V u64(std::uint64_t v) { return scalar(10, v); }
    static V i64(std::int64_t v) { return scalar(11, v); }
    static V f64(double v) { return scalar(12, v); }
    static V array(std::uint32_t elem, const std::vector<V>& items) {
        V out{9, {}};
        put<std::uint32_t>(out.bytes, elem);
        put<std::uint64_t>(out.bytes, items.size());
        for (const V& v : items) out.bytes += v.bytes;
        return out;
    }
    static V strings(const std::vector<std::string>& items) {
        std::vector<V> vs;
        for (const auto& s : items) vs.push_back(str(s));
        return array(8, vs);
    }
    static V floats(const std::vector<float>& items) {
        std::vector<V> vs;
        for (float f : items) vs.push_back(f32(f));
        return array(6, vs);
    }
    static V ints(const std::vector<std::int32_t>& items) {
        std::vector<V> vs;
        for (auto i : items) vs.push_back(i32(i));
        return array(5, vs);
    }
};

struct TensorSpec {
    std::string name;
    std::vector<std::uint64_t> ne;  // ggml order
    std::uint32_t type = 0;
    std::string data;                                    // raw bytes
    std::optional<std::uint64_t> offset = std::nullopt;  // default: packed, aligned
};

struct Builder {
    std::uint32_t version = 3;
    std::uint32_t alignment = 32;  // layout only; add general.alignment yourself to change it
    std::vector<std::pair<std::string, V>> kv;
    std::vector<TensorSpec> tensors;
    std::optional<std::uint64_t> tensor_count, kv_count;

    Builder& add(std::string key, V v) {
        kv.emplace_back(std::move(key), std::move(v));
        return *this;
    }
    Builder& tensor(TensorSpec t) {
        tensors.push_back(std::move(t));
        return *this;
    }

    std::string build() const {
        std::string out = "GGUF";
        put(out, version);
        put<std::uint64_t>(out, tensor_count.value_or(tensors.size()));
        put<std::uint64_t>(out, kv_count.value_or(kv.size()));
        for (const auto& [key, v] : kv) {
            put_str(out, key);
            put(out, v.type);
            out += v.bytes;
        }
        auto align = [&](std::uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
        // Data whose (deliberately bad) offset is beyond 1 MiB is not written.
        auto writable = [](std::uint64_t off) { return off < (1u << 20); };
        std::vector<std::uint64_t> offsets;
        std::uint64_t at = 0;
        for (const auto& t : tensors) {
            const std::uint64_t off = t.offset.value_or(at);
            offsets.push_back(off);
            if (writable(off)) at = align(std::max(at, off + t.data.size()));
        }
        for (std::size_t i = 0; i < tensors.size(); ++i) {
            const auto& t = tensors[i];
            put_str(out, t.name);
            put<std::uint32_t>(out, std::uint32_t(t.ne.size()));
            for (auto d : t.ne) put<std::uint64_t>(out, d);
            put(out, t.type);
            put<std::uint64_t>(out, offsets[i]);
        }
        if (tensors.empty()) return out;
        const std::size_t data_start = align(out.size());
        out.resize(data_start, '\0');
        for (std::size_t i = 0; i < tensors.size(); ++i) {
            if (!writable(offsets[i])) continue;
            const std::size_t pos = data_start + offsets[i];
            if (out.size() < pos + tensors[i].data.size())
                out.resize(pos + tensors[i].data.size(), '\0');
            std::memcpy(out.data() + pos, tensors[i].data.data(), tensors[i].data.size());
        }
        out.resize(align(out.size()), '\0');
        return out;
    }
};

std::string f32_bytes(const std::vector<float>& v) {
    std::string s;
    for (float f : v) put(s, f);
    return s;
}

std::string f16_bytes(const std::vector<std::uint16_t>& v) {
    std::string s;
    for (auto h : v) put(s, h);
    return s;
}

// ggml's reference Q8_0 quantiser: per block of 32, d = max|x| / 127, q = round(x / d).
std::string q8_0_bytes(const std::vector<float>& x) {
    std::string s;
    for (std::size_t b = 0; b < x.size() / 32; ++b) {
        float amax = 0;
        for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
        const float d = amax / 127.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        put(s, io::float_to_half_bits(d));
        for (std::size_t j = 0; j < 32; ++j) put(s, std::int8_t(std::lround(x[32 * b + j] * id)));
    }
    return s;
}

// The values a Q8_0 block list stands for, decoded independently of the reader.
std::vector<float> q8_0_values(const std::string& bytes) {
    std::vector<float> out;
    for (std::size_t b = 0; b + 34 <= bytes.size(); b += 34) {
        std::uint16_t h;
        std::memcpy(&h, bytes.data() + b, 2);
        const float d = io::half_bits_to_float(h);
        for (std::size_t j = 0; j < 32; ++j)
            out.push_back(d * float(std::int8_t(bytes[b + 2 + j])));
    }
    return out;
}

// ------------------------------------------------------------------------------------------------
// Metadata

Builder all_types_builder() {
    Builder b;
    b.add("t.u8", V::u8(255))
        .add("t.i8", V::i8(-128))
        .add("t.u16", V::u16(65535))
        .add("t.i16", V::i16(-32768))
        .add("t.u32", V::u32(4294967295u))
        .add("t.i32", V::i32(-2147483647 - 1))
        .add("t.f32", V::f32(0.15625f))
        .add("t.bool.true", V::boolean(true))
        .add("t.bool.false", V::boolean(false))
        .add("t.str", V::str("héllo ▁ wörld"))
        .add("t.str.empty", V::str(""))
        .add("t.str.nul", V::str(std::string("a\0b", 3)))
        .add("t.u64", V::u64(18446744073709551615ull))
        .add("t.i64", V::i64(std::numeric_limits<std::int64_t>::min()))
        .add("t.f64", V::f64(-1.0e300))
        .add("a.u8", V::array(0, {V::u8(0), V::u8(7), V::u8(255)}))
        .add("a.i8", V::array(1, {V::i8(-1), V::i8(127)}))
        .add("a.u16", V::array(2, {V::u16(1), V::u16(65535)}))
        .add("a.i16", V::array(3, {V::i16(-300)}))
        .add("a.u32", V::array(4, {V::u32(70000)}))
        .add("a.i32", V::ints({-5, 0, 5}))
        .add("a.f32", V::floats({1.5f, -0.25f}))
        .add("a.bool", V::array(7, {V::boolean(true), V::boolean(false), V::boolean(true)}))
        .add("a.str", V::strings({"x", "", "▁y"}))
        .add("a.u64", V::array(10, {V::u64(1ull << 40)}))
        .add("a.i64", V::array(11, {V::i64(-(1ll << 40))}))
        .add("a.f64", V::array(12, {V::f64(0.1), V::f64(2.5)}))
        .add("a.empty", V::array(4, {}))
        .add("a.nested",
             V::array(9, {V::array(5, {V::i32(1), V::i32(2)}), V::array(8, {V::str("deep")}),
                          V::array(9, {V::array(0, {V::u8(9)})})}));
    return b;
}

TEST(GgufMetadata, EveryValueTypeParsesWithItsExactType) {
    const std::string bytes = all_types_builder().build();
    const GgufFile f = GgufFile::from_bytes(as_bytes(bytes), "types.gguf");
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_TRUE(f.tensors().empty());
    ASSERT_EQ(f.metadata().size(), 29u);
    EXPECT_EQ(f.metadata()[0].key(), "t.u8");  // file order kept

    EXPECT_EQ(f.at("t.u8").type(), GgufType::kUint8);
    EXPECT_EQ(f.get_int<int>("t.u8"), 255);
    EXPECT_EQ(f.at("t.i8").type(), GgufType::kInt8);
    EXPECT_EQ(f.get_int<int>("t.i8"), -128);
    EXPECT_EQ(f.at("t.u16").type(), GgufType::kUint16);
    EXPECT_EQ(f.get_int<int>("t.u16"), 65535);
    EXPECT_EQ(f.at("t.i16").type(), GgufType::kInt16);
    EXPECT_EQ(f.get_int<int>("t.i16"), -32768);
    EXPECT_EQ(f.at("t.u32").type(), GgufType::kUint32);
    EXPECT_EQ(f.get_int<std::uint32_t>("t.u32"), 4294967295u);
    EXPECT_EQ(f.at("t.i32").type(), GgufType::kInt32);
    EXPECT_EQ(f.get_int<std::int32_t>("t.i32"), std::numeric_limits<std::int32_t>::min());
    EXPECT_EQ(f.at("t.f32").type(), GgufType::kFloat32);
    EXPECT_EQ(f.at("t.f32").as_float(), 0.15625);
    EXPECT_EQ(f.at("t.bool.true").type(), GgufType::kBool);
    EXPECT_TRUE(f.at("t.bool.true").as_bool());
    EXPECT_FALSE(f.at("t.bool.false").as_bool());
    EXPECT_EQ(f.at("t.str").type(), GgufType::kString);
    EXPECT_EQ(f.get_string("t.str"), "héllo ▁ wörld");
    EXPECT_EQ(f.get_string("t.str.empty"), "");
    EXPECT_EQ(f.get_string("t.str.nul"), std::string("a\0b", 3));
    EXPECT_EQ(f.at("t.u64").type(), GgufType::kUint64);
    EXPECT_EQ(f.get_int<std::uint64_t>("t.u64"), 18446744073709551615ull);
    EXPECT_EQ(f.at("t.i64").type(), GgufType::kInt64);
    EXPECT_EQ(f.get_int<std::int64_t>("t.i64"), std::numeric_limits<std::int64_t>::min());
    EXPECT_EQ(f.at("t.f64").type(), GgufType::kFloat64);
    EXPECT_EQ(f.at("t.f64").as_float(), -1.0e300);
    EXPECT_EQ(f.get_number("t.u16"), 65535.0);
    EXPECT_EQ(f.get_number("t.f32"), 0.15625);

    EXPECT_EQ(f.at("a.u8").array_type(), GgufType::kUint8);
    EXPECT_EQ(f.at("a.u8").as_ints<int>(), (std::vector<int>{0, 7, 255}));
    EXPECT_EQ(f.at("a.i8").as_ints<int>(), (std::vector<int>{-1, 127}));
    EXPECT_EQ(f.at("a.u16").as_ints<int>(), (std::vector<int>{1, 65535}));
    EXPECT_EQ(f.at("a.i16").as_ints<int>(), (std::vector<int>{-300}));
    EXPECT_EQ(f.at("a.u32").as_ints<std::int64_t>(), (std::vector<std::int64_t>{70000}));
    EXPECT_EQ(f.at("a.i32").as_ints<std::int32_t>(), (Ids{-5, 0, 5}));
    EXPECT_EQ(f.at("a.f32").as_floats(), (std::vector<float>{1.5f, -0.25f}));
    EXPECT_EQ(f.at("a.bool").as_bools(), (std::vector<bool>{true, false, true}));
    EXPECT_EQ(f.at("a.str").as_strings(), (std::vector<std::string>{"x", "", "▁y"}));
    EXPECT_EQ(f.at("a.u64").as_ints<std::uint64_t>(), (std::vector<std::uint64_t>{1ull << 40}));
    EXPECT_EQ(f.at("a.i64").as_ints<std::int64_t>(), (std::vector<std::int64_t>{-(1ll << 40)}));
    EXPECT_EQ(f.at("a.f64").as_doubles(), (std::vector<double>{0.1, 2.5}));
    EXPECT_EQ(f.at("a.f64").array_type(), GgufType::kFloat64);
    EXPECT_EQ(f.at("a.empty").array_size(), 0u);
    EXPECT_EQ(f.at("a.empty").array_type(), GgufType::kUint32);
    EXPECT_TRUE(f.at("a.empty").as_ints<int>().empty());
    const auto& nested = f.at("a.nested").as_arrays();
    ASSERT_EQ(nested.size(), 3u);
    EXPECT_EQ(nested[0].as_ints<int>(), (std::vector<int>{1, 2}));
    EXPECT_EQ(nested[1].as_strings(), (std::vector<std::string>{"deep"}));
    EXPECT_EQ(nested[1].key(), "a.nested[1]");
    EXPECT_EQ(nested[2].as_arrays()[0].as_ints<int>(), (std::vector<int>{9}));
    EXPECT_EQ(f.at("a.nested").type_name(), "array of array");

    EXPECT_EQ(f.at("t.str").to_string(), "\"héllo ▁ wörld\"");
    EXPECT_EQ(f.at("a.i32").to_string(), "[-5, 0, 5]");
    EXPECT_EQ(f.at("a.str").to_string(2), "[\"x\", \"\", ... (3 items)]");
    EXPECT_EQ(f.at("t.f32").to_string(), "0.15625");

    EXPECT_EQ(f.find("no.such.key"), nullptr);
    EXPECT_EQ(f.get_int_or<int>("no.such.key", 7), 7);
    EXPECT_EQ(f.get_string_or("no.such.key", "dflt"), "dflt");
    EXPECT_TRUE(f.get_bool_or("no.such.key", true));
    expect_format_error([&] { (void)f.at("no.such.key"); },
                        {"types.gguf at byte 24", "missing metadata key 'no.such.key'"});
}

TEST(GgufMetadata, TypedAccessorsNameKeyExpectedAndFoundTypes) {
    const std::string bytes = all_types_builder().build();
    const GgufFile f = GgufFile::from_bytes(as_bytes(bytes), "types.gguf");
    const std::uint64_t u8_offset = f.at("t.u8").offset();
    expect_format_error([&] { (void)f.at("t.u8").as_string(); },
                        {"types.gguf at byte " + std::to_string(u8_offset),
                         "metadata 't.u8': expected string, found uint8"});
    expect_format_error([&] { (void)f.at("t.str").as_int<int>(); },
                        {"metadata 't.str': expected an integer, found string"});
    expect_format_error([&] { (void)f.at("t.u16").as_int<std::uint8_t>(); },
                        {"metadata 't.u16': expected an integer in [0, 255], found uint16 65535"});
    expect_format_error([&] { (void)f.at("t.i8").as_int<std::uint32_t>(); },
                        {"expected an integer in [0, 4294967295], found int8 -128"});
    expect_format_error([&] { (void)f.at("t.u64").as_int<std::int64_t>(); },
                        {"found uint64 18446744073709551615"});
    expect_format_error([&] { (void)f.at("t.f32").as_bool(); }, {"expected bool, found float32"});
    expect_format_error([&] { (void)f.at("t.bool.true").as_number(); },
                        {"expected a number, found bool"});
    expect_format_error([&] { (void)f.at("t.i32").as_float(); },
                        {"expected float32 or float64, found int32"});
    expect_format_error([&] { (void)f.at("t.i32").as_strings(); },
                        {"expected an array, found int32"});
    expect_format_error([&] { (void)f.at("a.i32").as_strings(); },
                        {"metadata 'a.i32': expected array of string, found array of int32"});
    expect_format_error([&] { (void)f.at("a.str").as_floats(); },
                        {"expected array of float32 or float64, found array of string"});
    expect_format_error([&] { (void)f.at("a.f32").as_ints<int>(); },
                        {"expected array of integers, found array of float32"});
    expect_format_error(
        [&] { (void)f.at("a.u16").as_ints<std::int8_t>(); },
        {"metadata 'a.u16': expected an integer in [-128, 127], found array of uint16 with "
         "element [1] = 65535"});
    expect_format_error(
        [&] { (void)f.at("a.nested").as_arrays()[1].as_ints<int>(); },
        {"metadata 'a.nested[1]': expected array of integers, found array of string"});
}

TEST(GgufMetadata, VersionTwoAndCustomAlignment) {
    Builder b;
    b.version = 2;
    b.alignment = 64;
    b.add("general.alignment", V::u32(64));
    b.tensor({.name = "a", .ne = {3}, .type = 0, .data = f32_bytes({1, 2, 3})});
    b.tensor({.name = "b", .ne = {2}, .type = 0, .data = f32_bytes({4, 5})});
    const std::string bytes = b.build();
    const GgufFile f = GgufFile::from_bytes(as_bytes(bytes));
    EXPECT_EQ(f.version(), 2u);
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_section() % 64, 0u);
    EXPECT_EQ(f.tensor("b").offset, 64u);
    EXPECT_EQ(f.read_tensor<float>("a"), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(f.read_tensor<double>("b"), (std::vector<double>{4, 5}));
}

// ------------------------------------------------------------------------------------------------
// Tensors

TEST(GgufTensors, F32F16Bf16AndQ8_0ValuesAreDecoded) {
    // F16 patterns with known values: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), 2^-14
    // (smallest normal), -0, +inf, 0.333251953125 (0x3555).
    const std::vector<std::uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF, 0x0001,
                                            0x0400, 0x8000, 0x7C00, 0x3555};
    const std::vector<float> f16_values = {1.0f,
                                           -2.0f,
                                           65504.0f,
                                           std::ldexp(1.0f, -24),
                                           std::ldexp(1.0f, -14),
                                           -0.0f,
                                           std::numeric_limits<float>::infinity(),
                                           0.333251953125f};
    // BF16: the top half of a float32.
    const std::vector<std::uint16_t> bf16 = {0x3F80, 0xC0A0, 0x3E20, 0xFF80};
    const std::vector<float> bf16_values = {1.0f, -5.0f, 0.15625f,
                                            -std::numeric_limits<float>::infinity()};
    // Q8_0, 2 blocks: d = 0.5 (0x3800) with q = j - 16; d = -0.25 (0xB400) with q = -128, 127, 0,
    // ...
    std::string q8;
    std::vector<float> q8_values;
    put<std::uint16_t>(q8, 0x3800);
    for (int j = 0; j < 32; ++j) {
        put(q8, std::int8_t(j - 16));
        q8_values.push_back(0.5f * float(j - 16));
    }
    put<std::uint16_t>(q8, 0xB400);
    for (int j = 0; j < 32; ++j) {
        const std::int8_t q = j == 0 ? -128 : j == 1 ? 127 : std::int8_t(j % 5);
        put(q8, q);
        q8_values.push_back(-0.25f * float(q));
    }
    const std::vector<float> f32 = {0.1f, -7.5f, 1e-30f, 3.0f, 4.0f, 5.0f};

    Builder b;
    b.tensor({.name = "f32", .ne = {3, 2}, .type = 0, .data = f32_bytes(f32)});
    b.tensor({.name = "f16", .ne = {4, 2}, .type = 1, .data = f16_bytes(f16)});
    b.tensor({.name = "bf16", .ne = {4}, .type = 30, .data = f16_bytes(bf16)});
    b.tensor({.name = "q8", .ne = {32, 2}, .type = 8, .data = q8});
    b.tensor({.name = "q4", .ne = {32}, .type = 2, .data = std::string(18, '\0')});
    b.tensor({.name = "q4k", .ne = {256, 1, 1, 1}, .type = 12, .data = std::string(144, '\0')});
    const std::string bytes = b.build();
    const TempFile tmp(bytes, "tensors.gguf");
    const GgufFile f(tmp.path.string());

    const auto& t = f.tensor("f32");
    EXPECT_EQ(t.ne, (std::vector<std::uint64_t>{3, 2}));
    EXPECT_EQ(t.shape(), (std::vector<std::uint64_t>{2, 3}));
    EXPECT_EQ(t.rows(), 2u);
    EXPECT_EQ(t.cols(), 3u);
    EXPECT_EQ(t.n_elements, 6u);
    EXPECT_EQ(t.n_bytes, 24u);
    EXPECT_EQ(t.shape_string(), "[2 x 3] (ggml ne [3, 2])");
    EXPECT_EQ(t.data_offset % 32, 0u);
    EXPECT_EQ(f.read_tensor<float>("f32"), f32);
    // F32 is viewed in place, inside the read-only mapping.
    const float* view = f.f32_data(t);
    ASSERT_NE(view, nullptr);
    EXPECT_EQ(reinterpret_cast<const std::byte*>(view), f.mapping()->data() + t.data_offset);
    EXPECT_EQ(view[1], -7.5f);

    const std::vector<float> got16 = f.read_tensor<float>("f16");
    ASSERT_EQ(got16.size(), f16_values.size());
    for (std::size_t i = 0; i < got16.size(); ++i) {
        EXPECT_EQ(got16[i], f16_values[i]) << i;
        EXPECT_EQ(std::signbit(got16[i]), std::signbit(f16_values[i])) << i;
    }
    EXPECT_EQ(f.tensor("f16").n_bytes, 16u);
    EXPECT_EQ(f.f32_data(f.tensor("f16")), nullptr);
    EXPECT_EQ(f.read_tensor<float>("bf16"), bf16_values);
    EXPECT_EQ(f.tensor("q8").n_bytes, 68u);
    EXPECT_EQ(f.read_tensor<float>("q8"), q8_values);
    const std::vector<double> q8d = f.read_tensor<double>("q8");
    for (std::size_t i = 0; i < q8d.size(); ++i) EXPECT_EQ(q8d[i], double(q8_values[i]));

    // Known but unsupported types: the sizes are checked, reading names the tensor and the type.
    EXPECT_EQ(f.tensor("q4").n_bytes, 18u);
    EXPECT_EQ(f.tensor("q4k").n_bytes, 144u);
    expect_format_error(
        [&] { (void)f.read_tensor<float>("q4"); },
        {tmp.path.string() + " at byte " + std::to_string(f.tensor("q4").info_offset),
         "tensor 'q4' has ggml type Q4_0, which this reader cannot convert"});
    expect_format_error([&] { (void)f.read_tensor<float>("q4k"); },
                        {"tensor 'q4k' has ggml type Q4_K"});
    expect_format_error([&] { (void)f.read_tensor<float>("nope"); }, {"missing tensor 'nope'"});
}

// ------------------------------------------------------------------------------------------------
// Corrupt and hostile headers

std::string minimal_file() {
    Builder b;
    b.add("general.architecture", V::str("llama")).add("x", V::ints({1, 2, 3}));
    b.tensor({.name = "w", .ne = {4, 2}, .type = 0, .data = f32_bytes({1, 2, 3, 4, 5, 6, 7, 8})});
    return b.build();
}

void expect_parse_error(const std::string& bytes, const std::vector<std::string>& needles) {
    expect_format_error([&] { (void)GgufFile::from_bytes(as_bytes(bytes), "bad.gguf"); }, needles);
}

TEST(GgufCorrupt, BadMagicAndVersions) {
    const std::string good = minimal_file();
    ASSERT_NO_THROW((void)GgufFile::from_bytes(as_bytes(good)));
    expect_parse_error("", {"bad.gguf at byte 0", "not a GGUF file", "an empty file"});
    expect_parse_error("GGU", {"bad.gguf at byte 0", "found 47 47 55"});
    std::string magic = good;
    magic[3] = 'G';
    expect_parse_error(magic,
                       {"bad.gguf at byte 0", "expected the magic \"GGUF\"", "found 47 47 55 47"});
    auto with_version = [&](std::uint32_t v) {
        std::string s = good;
        std::memcpy(s.data() + 4, &v, 4);
        return s;
    };
    expect_parse_error(with_version(1),
                       {"bad.gguf at byte 4", "unsupported GGUF version 1", "32-bit counts"});
    expect_parse_error(with_version(4),
                       {"bad.gguf at byte 4", "unsupported GGUF version 4", "versions 2 and 3"});
    expect_parse_error(with_version(0x03000000), {"big-endian GGUF"});
    expect_parse_error(good.substr(0, 6), {"bad.gguf at byte 4", "truncated"});
}

TEST(GgufCorrupt, HugeCountsAndLengthsFailBeforeAllocating) {
    Builder b;
    b.add("k", V::u8(1));
    b.tensor_count = 1ull << 40;
    expect_parse_error(b.build(), {"bad.gguf at byte 8", "tensor count 1099511627776 cannot fit"});
    b.tensor_count = std::numeric_limits<std::uint64_t>::max();
    expect_parse_error(b.build(), {"tensor count 18446744073709551615 cannot fit"});
    b.tensor_count.reset();
    b.kv_count = 1ull << 61;
    expect_parse_error(b.build(),
                       {"bad.gguf at byte 16", "metadata count 2305843009213693952 cannot fit"});

    // A key length far beyond the file.
    std::string key = Builder().add("key", V::u8(1)).build();
    const std::uint64_t huge = 1ull << 62;
    std::memcpy(key.data() + 24, &huge, 8);
    expect_parse_error(
        key, {"bad.gguf at byte 24",
              "key of metadata pair 0: string length 4611686018427387904 runs past the end"});
    // A string value length beyond the file.
    V s = V::str("abc");
    std::memcpy(s.bytes.data(), &huge, 8);
    expect_parse_error(Builder().add("s", s).build(),
                       {"metadata 's': string length 4611686018427387904"});
    // Arrays whose counts cannot fit: scalars, strings, nested arrays.
    for (std::uint32_t elem : {0u, 6u, 8u, 9u, 12u}) {
        V a = V::array(elem, {});
        const std::uint64_t n = (1ull << 50) + elem;
        std::memcpy(a.bytes.data() + 4, &n, 8);
        expect_parse_error(Builder().add("arr", a).build(),
                           {"metadata 'arr': array of " + std::to_string(n), "cannot fit in the"});
    }
    // A count that would fit as bytes but not as strings (each needs at least 8 bytes).
    V strs = V::strings({"a", "b"});
    const std::uint64_t three = 3;
    std::memcpy(strs.bytes.data() + 4, &three, 8);
    expect_parse_error(
        Builder().add("strs", strs).build(),
        {"metadata 'strs': array of 3 string values cannot fit in the 18 bytes left"});
    // A string count that fits, with the last string cut short.
    V cut = V::strings({"a", "bcdefghijklmnop"});
    cut.bytes.resize(cut.bytes.size() - 10);
    expect_parse_error(Builder().add("cut", cut).build(),
                       {"metadata 'cut' item 1: string length 15 runs past the end"});
}

TEST(GgufCorrupt, BadValuesAndDuplicates) {
    expect_parse_error(Builder().add("k", V{13, "x"}).build(),
                       {"metadata 'k': unknown value type 13"});
    V bad_elem = V::array(0, {});
    const std::uint32_t thirteen = 13;
    std::memcpy(bad_elem.bytes.data(), &thirteen, 4);
    expect_parse_error(Builder().add("k", bad_elem).build(),
                       {"metadata 'k': unknown array element type 13"});
    expect_parse_error(Builder().add("k", V::scalar(7, std::uint8_t(2))).build(),
                       {"metadata 'k': bool byte is 2; expected 0 or 1"});
    expect_parse_error(Builder().add("k", V::u8(1)).add("k", V::u8(2)).build(),
                       {"duplicate metadata key 'k'"});
    // Nested arrays: 8 levels parse, 9 do not.
    auto nest = [](int depth) {
        V v = V::array(0, {V::u8(1)});
        for (int i = 1; i < depth; ++i) v = V::array(9, {v});
        return v;
    };
    EXPECT_NO_THROW((void)GgufFile::from_bytes(as_bytes(Builder().add("n", nest(8)).build())));
    expect_parse_error(Builder().add("n", nest(9)).build(), {"arrays nested more than 8 deep"});
    // Alignment: must be an integer power of two.
    expect_parse_error(Builder().add("general.alignment", V::u32(0)).build(),
                       {"'general.alignment' is 0; it must be a power of two"});
    expect_parse_error(Builder().add("general.alignment", V::u32(48)).build(),
                       {"is 48; it must be a power of two"});
    expect_parse_error(Builder().add("general.alignment", V::str("32")).build(),
                       {"metadata 'general.alignment': expected an integer, found string"});
}

TEST(GgufCorrupt, BadTensorRecords) {
    const std::string w = f32_bytes({1, 2, 3, 4, 5, 6, 7, 8});
    auto with = [&](TensorSpec t) { return Builder().tensor(std::move(t)).build(); };
    expect_parse_error(with({.name = "w", .ne = {}, .type = 0, .data = w}),
                       {"tensor 'w': 0 dimensions; expected 1 to 4"});
    expect_parse_error(with({.name = "w", .ne = {2, 2, 2, 1, 1}, .type = 0, .data = w}),
                       {"tensor 'w': 5 dimensions; expected 1 to 4"});
    expect_parse_error(with({.name = "w", .ne = {1ull << 32, 1ull << 32}, .type = 0, .data = w}),
                       {"tensor 'w': the element count of ne [4294967296, 4294967296] overflows"});
    expect_parse_error(with({.name = "w", .ne = {1ull << 63}, .type = 0, .data = w}),
                       {"overflows 63 bits"});
    expect_parse_error(with({.name = "w", .ne = {1ull << 62}, .type = 0, .data = w}),
                       {"tensor 'w': its byte size overflows 64 bits"});
    expect_parse_error(with({.name = "w", .ne = {8}, .type = 99, .data = w}),
                       {"tensor 'w': unknown ggml type 99"});
    expect_parse_error(with({.name = "w", .ne = {8}, .type = 4, .data = w}),
                       {"unknown ggml type 4"});
    expect_parse_error(with({.name = "w", .ne = {40}, .type = 8, .data = std::string(68, '\0')}),
                       {"tensor 'w': ne[0] = 40 is not a multiple of the Q8_0 block size 32"});
    expect_parse_error(with({.name = "w", .ne = {8}, .type = 0, .data = w, .offset = 4}),
                       {"tensor 'w': data offset 4 is not a multiple of the alignment 32"});
    // Out of range: past the end, and an offset so large that offset + size wraps around.
    std::string past = with({.name = "w", .ne = {8}, .type = 0, .data = w});
    expect_parse_error(past.substr(0, past.size() - 1),
                       {"tensor 'w': data of 32 bytes at data offset 0", "runs past the end"});
    expect_parse_error(with({.name = "w", .ne = {8}, .type = 0, .data = w, .offset = 1ull << 40}),
                       {"at data offset 1099511627776", "runs past the end of the file"});
    expect_parse_error(with({.name = "w",
                             .ne = {8},
                             .type = 0,
                             .data = w,
                             .offset = std::numeric_limits<std::uint64_t>::max() - 31}),
                       {"runs past the end of the file"});
    Builder dup;
    dup.tensor({.name = "w", .ne = {8}, .type = 0, .data = w})
        .tensor({.name = "w", .ne = {8}, .type = 0, .data = w});
    expect_parse_error(dup.build(), {"duplicate tensor 'w'"});
    // Alignment 1 (allowed): data may sit at any byte; F32 is then copied, not viewed.
    Builder one;
    one.alignment = 1;
    one.add("general.alignment", V::u8(1)).add("pad", V::str("x"));
    one.tensor({.name = "w", .ne = {8}, .type = 0, .data = w});
    const std::string odd = one.build();
    const GgufFile f = GgufFile::from_bytes(as_bytes(odd));
    EXPECT_EQ(f.read_tensor<float>("w"), (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f.tensor_bytes(f.tensor("w")).data()) % 4 != 0,
              f.f32_data(f.tensor("w")) == nullptr);
    // A file without tensors may end before the aligned data section.
    const std::string no_tensors = Builder().add("k", V::str("abc")).build();
    EXPECT_NE(no_tensors.size() % 32, 0u);
    EXPECT_NO_THROW((void)GgufFile::from_bytes(as_bytes(no_tensors)));
}

TEST(GgufCorrupt, EveryTruncationOfASmallFileIsAFormatError) {
    const std::string good = minimal_file();
    for (std::size_t n = 0; n < good.size(); ++n) {
        try {
            (void)GgufFile::from_bytes(as_bytes(good).subspan(0, n), "cut.gguf");
            ADD_FAILURE() << "truncated at " << n << " parsed";
        } catch (const FormatError& e) {
            EXPECT_NE(std::string(e.what()).find("cut.gguf at byte"), std::string::npos)
                << e.what();
        }
    }
}

TEST(GgufCorrupt, EveryBitFlipOfASmallFileLoadsOrIsAFormatError) {
    const std::string good = minimal_file();
    std::size_t rejected = 0, loaded = 0;
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string bad = good;
            bad[i] = char(bad[i] ^ (1 << bit));
            try {
                const GgufFile f = GgufFile::from_bytes(as_bytes(bad), "flip.gguf");
                for (const auto& t : f.tensors())
                    if (GgufFile::convertible(t.type)) (void)f.read_tensor<float>(t.name);
                ++loaded;
            } catch (const FormatError&) {
                ++rejected;
            }
        }
    }
    EXPECT_GT(rejected, 0u);
    EXPECT_GT(loaded, 0u);
}

// ------------------------------------------------------------------------------------------------
// A small LLaMA written by the test: layouts, quantised weights, tied head, shape errors.

struct TinyLlama {
    // dim 32 and hidden 64 keep every matrix row a whole number of Q8_0 blocks.
    static constexpr std::uint64_t d = 32, h = 64, L = 2, H = 4, Hkv = 2, V = 40, hd = d / H;
    std::map<std::string, std::pair<std::vector<std::uint64_t>, std::vector<float>>> weights;

    TinyLlama() {
        std::mt19937 rng(7);
        std::normal_distribution<float> n(0.0f, 0.3f);
        auto add = [&](const std::string& name, std::vector<std::uint64_t> ne) {
            std::uint64_t count = 1;
            for (auto x : ne) count *= x;
            std::vector<float> v(count);
            for (auto& x : v) x = n(rng);
            if (ne.size() == 1)
                for (auto& x : v) x = 1.0f + 0.1f * x;  // norm gains near 1
            weights[name] = {ne, v};
        };
        add("token_embd.weight", {d, V});
        for (std::uint64_t i = 0; i < L; ++i) {
            const std::string b = "blk." + std::to_string(i) + ".";
            add(b + "attn_norm.weight", {d});
            add(b + "attn_q.weight", {d, d});
            add(b + "attn_k.weight", {d, Hkv * hd});
            add(b + "attn_v.weight", {d, Hkv * hd});
            add(b + "attn_output.weight", {d, d});
            add(b + "ffn_norm.weight", {d});
            add(b + "ffn_gate.weight", {d, h});
            add(b + "ffn_down.weight", {h, d});
            add(b + "ffn_up.weight", {d, h});
        }
        add("output_norm.weight", {d});
        add("output.weight", {d, V});
    }

    static Builder header() {
        Builder b;
        b.add("general.architecture", V::str("llama"))
            .add("llama.context_length", V::u32(64))
            .add("llama.embedding_length", V::u32(d))
            .add("llama.feed_forward_length", V::u32(h))
            .add("llama.block_count", V::u32(L))
            .add("llama.attention.head_count", V::u32(H))
            .add("llama.attention.head_count_kv", V::u32(Hkv))
            .add("llama.attention.layer_norm_rms_epsilon", V::f32(1e-5f))
            .add("llama.rope.freq_base", V::f32(10000.0f))
            .add("llama.rope.dimension_count", V::u32(hd));
        return b;
    }

    // The file, with 2-D weights stored as `type` (0 F32, 1 F16, 8 Q8_0); vectors stay F32.
    // `expected` receives the values the reader must produce for each tensor.
    std::string file(std::uint32_t type, std::map<std::string, std::vector<float>>* expected,
                     const std::function<void(Builder&)>& edit = {}) const {
        Builder b = header();
        for (const auto& [name, w] : weights) {
            const auto& [ne, v] = w;
            TensorSpec t{.name = name, .ne = ne, .type = ne.size() == 1 ? 0u : type, .data = {}};
            std::vector<float> values = v;
            if (t.type == 0) {
                t.data = f32_bytes(v);
            } else if (t.type == 1) {
                std::vector<std::uint16_t> hb;
                values.clear();
                for (float x : v) {
                    hb.push_back(io::float_to_half_bits(x));
                    values.push_back(io::half_bits_to_float(hb.back()));
                }
                t.data = f16_bytes(hb);
            } else {
                t.data = q8_0_bytes(v);
                values = q8_0_values(t.data);
            }
            if (expected) (*expected)[name] = values;
            b.tensor(std::move(t));
        }
        if (edit) edit(b);
        return b.build();
    }
};

template <class T>
void expect_weight(const Weight<T>& w, const std::vector<float>& values, Index rows, Index cols,
                   const std::string& name) {
    ASSERT_EQ(w.rows, rows) << name;
    ASSERT_EQ(w.cols, cols) << name;
    for (Index i = 0; i < rows * cols; ++i)
        ASSERT_EQ(w.data[i], T(values[std::size_t(i)])) << name << " element " << i;
}

template <class T>
void check_tiny_weights(const nn::Model<nn::Llama, T>& m,
                        const std::map<std::string, std::vector<float>>& e) {
    constexpr Index d = TinyLlama::d, h = TinyLlama::h, V = TinyLlama::V,
                    kv = TinyLlama::Hkv * TinyLlama::hd;
    expect_weight(m.weights.embed, e.at("token_embd.weight"), V, d, "embed");
    for (Index i = 0; i < Index(TinyLlama::L); ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        const auto& l = m.weights.layers[std::size_t(i)];
        expect_weight(l.attn_norm, e.at(b + "attn_norm.weight"), 1, d, b + "attn_norm");
        expect_weight(l.wq, e.at(b + "attn_q.weight"), d, d, b + "attn_q");
        expect_weight(l.wk, e.at(b + "attn_k.weight"), kv, d, b + "attn_k");
        expect_weight(l.wv, e.at(b + "attn_v.weight"), kv, d, b + "attn_v");
        expect_weight(l.wo, e.at(b + "attn_output.weight"), d, d, b + "attn_output");
        expect_weight(l.ffn_norm, e.at(b + "ffn_norm.weight"), 1, d, b + "ffn_norm");
        expect_weight(l.gate, e.at(b + "ffn_gate.weight"), h, d, b + "ffn_gate");
        expect_weight(l.down, e.at(b + "ffn_down.weight"), d, h, b + "ffn_down");
        expect_weight(l.up, e.at(b + "ffn_up.weight"), h, d, b + "ffn_up");
    }
    expect_weight(m.weights.final_norm, e.at("output_norm.weight"), 1, d, "output_norm");
    if (!m.config.tied_head) expect_weight(m.weights.head, e.at("output.weight"), V, d, "output");
}

template <class Arch, class T>
Mat<T> logits_of(const nn::Model<Arch, T>& m, const Ids& ids) {
    autograd::Tape<T> tape;
    nn::TokenBatch batch{
        .batch = 1, .seq = Index(ids.size()), .ids = ids, .lengths = {}, .targets = {}};
    return nn::forward(tape, m, batch, {}, nn::LogitsRequest::kRealPositions).logits.value();
}

TEST(GgufLlama, TinyModelInF32F16AndQ8_0) {
    const TinyLlama tiny;
    const Ids ids = {1, 5, 9, 33, 2, 17};
    Mat<float> reference;
    for (std::uint32_t type : {0u, 1u, 8u}) {
        SCOPED_TRACE("ggml type " + io::ggml_type_name(type));
        std::map<std::string, std::vector<float>> expected;
        const TempFile tmp(tiny.file(type, &expected), "tiny.gguf");
        const auto m = io::load_gguf_llama<float>(tmp.path.string());
        EXPECT_EQ(m.config.dim, 32);
        EXPECT_EQ(m.config.hidden_dim, 64);
        EXPECT_EQ(m.config.n_layers, 2);
        EXPECT_EQ(m.config.n_heads, 4);
        EXPECT_EQ(m.config.n_kv_heads, 2);
        EXPECT_EQ(m.config.vocab_size, 40);
        EXPECT_EQ(m.config.max_seq_len, 64);
        EXPECT_FALSE(m.config.tied_head);
        EXPECT_EQ(m.config.rope_layout, kernels::RopeLayout::kInterleaved);
        EXPECT_EQ(m.config.norm_eps, double(1e-5f));
        check_tiny_weights(m, expected);
        const Mat<float> logits = logits_of(m, ids);
        ASSERT_TRUE(logits.allFinite());
        if (type == 0) {
            reference = logits;
            // F32 weights are views into the mapping: storage is the mapped file itself.
            const auto* mapped = static_cast<const io::MappedFile*>(m.storage.get());
            const auto* p = reinterpret_cast<const std::byte*>(m.weights.layers[1].wq.data);
            EXPECT_TRUE(p >= mapped->data() && p < mapped->data() + mapped->size());
        } else {
            // Quantisation moves the logits a little: relative to their scale, F16 by ~1e-3 and
            // Q8_0 by ~1e-2.
            const double scale = double(reference.cwiseAbs().maxCoeff());
            const double moved = double((logits - reference).cwiseAbs().maxCoeff()) / scale;
            std::cout << "[ tiny llama ] " << io::ggml_type_name(type)
                      << ": max |logit diff| / max |logit| = " << moved << " (max |logit| " << scale
                      << ")\n";
            EXPECT_LT(moved, type == 1 ? 5e-3 : 5e-2);
        }
        // double: the same values, converted.
        const auto md = io::load_gguf_llama<double>(tmp.path.string());
        check_tiny_weights(md, expected);
        EXPECT_LT(double((logits_of(md, ids).cast<float>() - logits).cwiseAbs().maxCoeff()), 1e-4);
    }
}

// A GGUF twin of a golden model, written as llama.cpp's converter writes that architecture:
// every tensor of the family's weight table under its GGUF name (F32, ggml dims reversed) and the
// architecture's metadata. "llama" files rotate interleaved pairs, so the q/k rows of a half-split
// checkpoint are permuted as the converter permutes them, and Llama 3's scaling becomes the
// divisors of rope_freqs. Qwen files keep the half-split layout. GPT-2's Conv1D weights are stored
// transposed and its tied head as a copy of the embedding.
template <class Arch>
Builder gguf_twin_builder(const softprompt::testing::Golden<float>& g, const std::string& arch) {
    const nn::Config& c = g.config;
    Builder b;
    const std::string p = arch + ".";
    b.add("general.architecture", V::str(arch))
        .add(p + "context_length", V::u32(std::uint32_t(c.max_seq_len)))
        .add(p + "embedding_length", V::u32(std::uint32_t(c.dim)))
        .add(p + "feed_forward_length", V::u32(std::uint32_t(c.hidden_dim)))
        .add(p + "block_count", V::u32(std::uint32_t(c.n_layers)))
        .add(p + "attention.head_count", V::u32(std::uint32_t(c.n_heads)));
    const Index hd = c.head_dim();
    if (arch == "gpt2") {
        b.add(p + "attention.layer_norm_epsilon", V::f32(float(c.norm_eps)));
    } else {
        b.add(p + "attention.head_count_kv", V::u32(std::uint32_t(c.n_kv_heads)))
            .add(p + "attention.layer_norm_rms_epsilon", V::f32(float(c.norm_eps)))
            .add(p + "rope.freq_base", V::f32(float(c.rope_theta)))
            .add(p + "rope.dimension_count", V::u32(std::uint32_t(hd)))
            .add(p + "attention.key_length", V::u32(std::uint32_t(hd)))
            .add(p + "attention.value_length", V::u32(std::uint32_t(hd)));
    }
    const bool permute = arch == "llama" && c.rope_layout == kernels::RopeLayout::kHalfSplit;
    if (arch == "llama" && c.rope_scaling.kind == kernels::RopeScaling::Kind::kLlama3) {
        std::vector<float> divisors;
        for (Index i = 0; i < hd / 2; ++i) {
            const double f = std::pow(c.rope_theta, -2.0 * double(i) / double(hd));
            divisors.push_back(float(f / c.rope_scaling.apply(f, std::size_t(i))));
        }
        b.tensor({.name = "rope_freqs.weight",
                  .ne = {std::uint64_t(hd / 2)},
                  .type = 0,
                  .data = f32_bytes(divisors)});
    }
    const auto model = g.model<Arch>();
    Arch::for_each_weight(
        model.weights, c, [&](const nn::WeightSpec& spec, const Weight<float>& w) {
            std::vector<float> v(w.data, w.data + w.rows * w.cols);
            if (permute && spec.rope_rows) {
                // Hugging Face row half·hd/2 + i of each head is GGUF row 2i + half.
                EXPECT_FALSE(spec.one_dimensional) << "llama has no q/k biases";
                for (Index head = 0; head < w.rows / hd; ++head)
                    for (Index half = 0; half < 2; ++half)
                        for (Index i = 0; i < hd / 2; ++i)
                            for (Index k = 0; k < w.cols; ++k)
                                v[std::size_t((head * hd + 2 * i + half) * w.cols + k)] =
                                    w.data[(head * hd + half * hd / 2 + i) * w.cols + k];
            }
            std::vector<std::uint64_t> ne = {std::uint64_t(w.cols)};
            if (!spec.one_dimensional) ne.push_back(std::uint64_t(w.rows));
            if (spec.gguf_transposed) {
                for (Index r = 0; r < w.rows; ++r)
                    for (Index k = 0; k < w.cols; ++k)
                        v[std::size_t(k * w.rows + r)] = w.data[r * w.cols + k];
                ne = {std::uint64_t(w.rows), std::uint64_t(w.cols)};
            }
            b.tensor({.name = spec.gguf, .ne = ne, .type = 0, .data = f32_bytes(v)});
            if (arch == "gpt2" && c.tied_head && spec.gguf == "token_embd.weight")
                b.tensor({.name = "output.weight", .ne = ne, .type = 0, .data = f32_bytes(v)});
        });
    return b;
}

template <class Arch>
std::string gguf_twin(const softprompt::testing::Golden<float>& g, const std::string& arch) {
    return gguf_twin_builder<Arch>(g, arch).build();
}

// One GGUF per family llama.cpp defines, each against its safetensors twin and the float64
// reference: "llama" for Llama 3 (llama3 scaling), Mistral and the half-split LLaMA (permuted
// rows), "qwen2", "qwen3" and "gpt2".
// An adapter made on a GGUF LLaMA (interleaved RoPE: Meta's q/k row order) is saved in PEFT's
// order, the Hugging Face checkpoints', and gives the same logits on the safetensors twin; and the
// other way round. LoRA on q, k, v and o (the lora_B rows of q and k reordered) and a prefix (its
// key columns reordered). Used as they are, without the reordering, the same values disagree.
TEST(GgufTwins, AdaptersMoveBetweenTwinsInPeftsHeadOrder) {
    const softprompt::testing::Golden<float> g("golden_llama_gqa.json");  // 4 heads, 2 KV heads
    const TempFile tmp(gguf_twin<nn::Llama>(g, "llama"), "twin.gguf");
    const auto twin = io::load_gguf_llama<float>(tmp.path.string());
    ASSERT_EQ(twin.config.rope_layout, kernels::RopeLayout::kInterleaved);
    auto hf = g.model<nn::Llama>();
    hf.config.rope_theta = double(float(hf.config.rope_theta));
    hf.config.norm_eps = double(float(hf.config.norm_eps));
    const Ids ids(g.batch.ids.begin(), g.batch.ids.begin() + g.batch.length(0));
    auto logits_with = [&](const nn::Model<nn::Llama, float>& m, peft::Method<float>& method) {
        autograd::Tape<float> tape;
        const peft::EvaluationOnly<float> eval_only(method.parameters());
        nn::TokenBatch batch{
            .batch = 1, .seq = Index(ids.size()), .ids = ids, .lengths = {}, .targets = {}};
        return Mat<float>(
            nn::forward(tape, m, batch, method.input(tape), nn::LogitsRequest::kRealPositions)
                .logits.value());
    };
    const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                      ("softprompt_gguf_adapters_" + std::to_string(::getpid()));
    const nn::Config& c = hf.config;
    Rng rng(5);
    for (const bool from_twin : {true, false}) {
        SCOPED_TRACE(from_twin ? "GGUF -> safetensors" : "safetensors -> GGUF");
        const auto& source = from_twin ? twin : hf;
        const auto& target = from_twin ? hf : twin;
        peft::Lora<nn::Llama, float> lora(
            source.config,
            {.rank = 2, .alpha = 4, .query = true, .key = true, .value = true, .output = true},
            rng);
        for (auto& u : lora.updates())
            u.b->value() =
                peft::init_normal<float>(u.b->value().rows(), u.b->value().cols(), 1.0, rng);
        peft::save_adapter((dir / "lora").string(), lora, source);
        const auto moved = peft::lora_method<nn::Llama>(
            peft::load_adapter((dir / "lora").string(), target.config), target.config);
        EXPECT_LT((logits_with(target, *moved) - logits_with(source, lora)).cwiseAbs().maxCoeff(),
                  1e-5f);

        peft::PrefixTuning<float> prefix(
            source.config, peft::init_normal<float>(3, c.n_layers * 2 * c.kv_dim(), 1.0, rng));
        peft::save_adapter((dir / "prefix").string(), prefix, source);
        const auto moved_prefix = peft::prompt_method<nn::Llama>(
            peft::load_adapter((dir / "prefix").string(), target.config), target.config);
        EXPECT_LT((logits_with(target, *moved_prefix) - logits_with(source, prefix))
                      .cwiseAbs()
                      .maxCoeff(),
                  1e-5f);
        // The same prefix values on the other twin, not reordered: another computation.
        peft::PrefixTuning<float> as_is(target.config, prefix.fold());
        EXPECT_GT((logits_with(target, as_is) - logits_with(source, prefix)).cwiseAbs().maxCoeff(),
                  1e-3f);
    }
    std::filesystem::remove_all(dir);
}

TEST(GgufTwins, EveryFamilyGivesTheLogitsOfItsSafetensorsModel) {
    struct Case {
        const char* golden;
        const char* arch;
        float vs_twin;  // 0: bit-identical
    };
    // Permuted rows sum q·k in another order, and rope_freqs holds f32 divisors: not bit-equal.
    for (const Case& t :
         {Case{"golden_llama3.json", "llama", 1e-5f}, Case{"golden_mistral.json", "llama", 1e-5f},
          Case{"golden_llama_gqa.json", "llama", 1e-5f}, Case{"golden_qwen2.json", "qwen2", 0},
          Case{"golden_qwen3.json", "qwen3", 0}}) {
        SCOPED_TRACE(t.golden);
        const softprompt::testing::Golden<float> g(t.golden);
        const TempFile tmp(gguf_twin<nn::Llama>(g, t.arch), "twin.gguf");
        const auto twin = io::load_gguf_llama<float>(tmp.path.string());
        EXPECT_EQ(twin.config.rope_layout, std::string(t.arch) == "llama"
                                               ? kernels::RopeLayout::kInterleaved
                                               : kernels::RopeLayout::kHalfSplit);
        EXPECT_EQ(twin.config.qkv_bias, g.config.qkv_bias);
        EXPECT_EQ(twin.config.qk_norm, g.config.qk_norm);
        EXPECT_EQ(twin.config.head_dim(), g.config.head_dim());
        EXPECT_EQ(twin.config.tied_head, g.config.tied_head);
        EXPECT_EQ(twin.config.sliding_window, 0) << "GGUF keeps no sliding window";
        EXPECT_EQ(twin.config.rope_scaling.kind,
                  g.config.rope_scaling.kind == kernels::RopeScaling::Kind::kLlama3
                      ? kernels::RopeScaling::Kind::kFactors
                      : g.config.rope_scaling.kind);
        const Index n = g.batch.length(0);
        ASSERT_TRUE(g.config.sliding_window == 0 || n <= g.config.sliding_window);
        const Ids ids(g.batch.ids.begin(), g.batch.ids.begin() + n);
        auto model = g.model<nn::Llama>();
        // float rounds rope_theta and the epsilon as GGUF's f32 metadata does.
        model.config.rope_theta = double(float(model.config.rope_theta));
        model.config.norm_eps = double(float(model.config.norm_eps));
        const Mat<float> got = logits_of(twin, ids);
        const double vs_twin = double((got - logits_of(model, ids)).cwiseAbs().maxCoeff());
        std::cout << "[ " << t.golden << " as " << t.arch << " GGUF ] max |logit diff| vs the "
                  << "safetensors model " << vs_twin << "\n";
        if (t.vs_twin == 0) {
            EXPECT_EQ(vs_twin, 0.0) << "F32 twins without permutation are exact";
        } else {
            EXPECT_LE(vs_twin, t.vs_twin);
        }
        const Mat<float> want = g.expected("base", "logits").topRows(n);
        EXPECT_LE((got - want).cwiseAbs().maxCoeff(), 1e-4) << "vs the float64 reference";
    }
    {
        const softprompt::testing::Golden<float> g("golden_gpt2.json");
        const TempFile tmp(gguf_twin<nn::Gpt2>(g, "gpt2"), "twin.gguf");
        const auto twin = io::load_gguf_gpt2<float>(tmp.path.string());
        EXPECT_TRUE(twin.config.tied_head) << "output.weight is the embedding's copy";
        EXPECT_EQ(twin.weights.head.data, twin.weights.wte.data);
        const Ids ids(g.batch.ids.begin(), g.batch.ids.begin() + g.batch.length(0));
        const auto model = g.model<nn::Gpt2>();
        EXPECT_TRUE(logits_of(twin, ids) == logits_of(model, ids)) << "F32 twins are exact";
        const Mat<float> want = g.expected("base", "logits").topRows(g.batch.length(0));
        EXPECT_LE((logits_of(twin, ids) - want).cwiseAbs().maxCoeff(), 1e-4);
        // open_model picks the family from general.architecture.
        const auto any = io::open_model<float>(tmp.path.string());
        EXPECT_EQ(nn::architecture_of(any), "gpt2");
    }
    // A Qwen3 file without its q/k norms names the first missing one.
    const softprompt::testing::Golden<float> g("golden_qwen2.json");
    const TempFile tmp(gguf_twin<nn::Llama>(g, "qwen3"), "wrong.gguf");
    expect_format_error([&] { io::load_gguf_llama<float>(tmp.path.string()); },
                        {"missing tensor 'blk.0.attn_q_norm.weight'"});
}

TEST(GgufGpt2, HeadsTranspositionAndErrors) {
    const softprompt::testing::Golden<float> g("golden_gpt2.json");
    const std::string bytes = gguf_twin<nn::Gpt2>(g, "gpt2");
    const GgufFile file = GgufFile::from_bytes(as_bytes(bytes), "g.gguf");
    // Conv1D weights come back [in, out]: c_attn of layer 0 as the golden model holds it.
    const auto m = io::load_gguf_gpt2<float>(file);
    const auto model = g.model<nn::Gpt2>();
    const Weight<float>& a = m.weights.layers[0].qkv;
    const Weight<float>& want = model.weights.layers[0].qkv;
    ASSERT_EQ(a.rows, want.rows);
    ASSERT_EQ(a.cols, want.cols);
    EXPECT_TRUE(std::equal(a.data, a.data + a.rows * a.cols, want.data));
    // double converts the same values.
    const auto md = io::load_gguf_gpt2<double>(file);
    EXPECT_EQ(md.weights.layers[0].qkv.data[1], double(want.data[1]));
    // An output that is not the embedding's copy is an untied head, and the logits use it.
    const Ids ids = {1, 2, 3};
    {
        Builder b = gguf_twin_builder<nn::Gpt2>(g, "gpt2");
        for (TensorSpec& t : b.tensors)
            if (t.name == "output.weight") t.data[5] = char(t.data[5] ^ 0x40);
        const std::string changed = b.build();
        const auto untied =
            io::load_gguf_gpt2<float>(GgufFile::from_bytes(as_bytes(changed), "untied.gguf"));
        EXPECT_FALSE(untied.config.tied_head);
        EXPECT_NE(untied.weights.head.data, untied.weights.wte.data);
        EXPECT_FALSE(logits_of(untied, ids) == logits_of(m, ids));
    }
    auto load = [&](const std::function<void(Builder&)>& edit) {
        Builder b = gguf_twin_builder<nn::Gpt2>(g, "gpt2");
        edit(b);
        const std::string edited = b.build();
        return [edited] {
            (void)io::load_gguf_gpt2<float>(GgufFile::from_bytes(as_bytes(edited), "g.gguf"));
        };
    };
    const std::string d = std::to_string(g.config.dim), d3 = std::to_string(3 * g.config.dim);
    expect_format_error(load([](Builder& b) { b.add("gpt2.attention.head_count_kv", V::u32(1)); }),
                        {"'gpt2.attention.head_count_kv' is 1; GPT-2 has no grouped-query"});
    expect_format_error(load([](Builder& b) {
                            for (TensorSpec& t : b.tensors)
                                if (t.name == "blk.0.attn_qkv.weight") std::swap(t.ne[0], t.ne[1]);
                        }),
                        {"tensor 'blk.0.attn_qkv.weight': expected [" + d3 + " x " + d +
                         "] (ggml ne [" + d + ", " + d3 + "])"});
    expect_format_error(load([](Builder& b) {
                            std::erase_if(b.tensors, [](const TensorSpec& t) {
                                return t.name == "position_embd.weight";
                            });
                        }),
                        {"missing tensor 'position_embd.weight'"});
    expect_format_error(load([](Builder& b) { b.kv[0].second = V::str("llama"); }),
                        {"general.architecture is 'llama'; load_gguf_gpt2 reads 'gpt2'"});
}

// llama.cpp's own vocabulary-only GPT-2 file carries the hyperparameters of GPT-2 small under the
// keys its converter writes: every one is read, and only the tensors are missing.
TEST(GgufGpt2, LlamaCppsKeysAreTheOnesRead) {
    const fs::path file = test_data_dir() / "tokenizers" / "llama.cpp" / "ggml-vocab-gpt-2.gguf";
    SOFTPROMPT_REQUIRE_DATA(file);
    const GgufFile f(file.string());
    EXPECT_EQ(f.get_int<std::int64_t>("gpt2.embedding_length"), 768);
    expect_format_error([&] { (void)io::load_gguf_gpt2<float>(f); },
                        {"missing tensor 'token_embd.weight'"});
}

TEST(GgufLlama, TiedHeadAlignmentOneAndCallerOwnedBytes) {
    const TinyLlama tiny;
    std::map<std::string, std::vector<float>> expected;
    const std::string bytes = tiny.file(0, &expected, [](Builder& b) {
        b.tensors.erase(
            std::remove_if(b.tensors.begin(), b.tensors.end(),
                           [](const TensorSpec& t) { return t.name == "output.weight"; }),
            b.tensors.end());
        b.alignment = 1;
        b.add("general.alignment", V::u32(1)).add("odd", V::str("xyz"));
    });
    auto copy = std::make_unique<std::string>(bytes);
    const GgufFile f = GgufFile::from_bytes(as_bytes(*copy), "tied.gguf");
    const auto m = io::load_gguf_llama<float>(f);
    copy.reset();  // the model copied what it needs
    EXPECT_TRUE(m.config.tied_head);
    EXPECT_EQ(m.weights.head.data, m.weights.embed.data);
    check_tiny_weights(m, expected);
    EXPECT_TRUE(logits_of(m, {1, 2, 3}).allFinite());
}

TEST(GgufLlama, ErrorsNameKeysTensorsAndShapes) {
    const TinyLlama tiny;
    auto load = [&](const std::function<void(Builder&)>& edit) {
        const std::string bytes = tiny.file(0, nullptr, edit);
        return [bytes] {
            (void)io::load_gguf_llama<float>(GgufFile::from_bytes(as_bytes(bytes), "m.gguf"));
        };
    };
    auto set = [](const std::string& key, V v) {
        return [key, v](Builder& b) {
            for (auto& [k, value] : b.kv)
                if (k == key) value = v;
        };
    };
    auto drop_key = [](const std::string& key) {
        return [key](Builder& b) {
            std::erase_if(b.kv, [&](const auto& kv) { return kv.first == key; });
        };
    };
    auto edit_tensor = [](const std::string& name, const std::function<void(TensorSpec&)>& f) {
        return [name, f](Builder& b) {
            for (auto& t : b.tensors)
                if (t.name == name) f(t);
        };
    };
    expect_format_error(
        load(set("general.architecture", V::str("gpt2"))),
        {"m.gguf at byte",
         "general.architecture is 'gpt2'; load_gguf_llama reads 'llama', 'qwen2', 'qwen3'"});
    expect_format_error(load(drop_key("llama.block_count")),
                        {"missing metadata key 'llama.block_count'"});
    expect_format_error(load(set("llama.block_count", V::str("2"))),
                        {"metadata 'llama.block_count': expected an integer, found string"});
    expect_format_error(load(set("llama.block_count", V::i32(-2))),
                        {"'llama.block_count' is -2; expected a positive count"});
    expect_format_error(load(set("llama.block_count", V::u32(3))),
                        {"missing tensor 'blk.2.attn_norm.weight', expected [1 x 32]"});
    expect_format_error(load(set("llama.block_count", V::u32(1))), {"unexpected tensor 'blk.1."});
    // A count no file of this size can hold is refused before anything is sized by it.
    expect_format_error(load(set("llama.block_count", V::u32(1'000'000'000))),
                        {"metadata 'llama.block_count' is 1000000000 but the file holds only 21 "
                         "tensors"});
    expect_format_error(load(set("llama.attention.head_count", V::u32(5))), {"inconsistent heads"});
    expect_format_error(load(set("llama.rope.dimension_count", V::u32(4))),
                        {"partial rotary embeddings are not supported"});
    {
        // Linear scaling is read; a factor that cannot be one is refused.
        const std::string bytes = tiny.file(0, nullptr, [](Builder& b) {
            b.add("llama.rope.scaling.type", V::str("linear"))
                .add("llama.rope.scaling.factor", V::f32(4));
        });
        const auto m = io::load_gguf_llama<float>(GgufFile::from_bytes(as_bytes(bytes), "m.gguf"));
        EXPECT_EQ(m.config.rope_scaling.kind, kernels::RopeScaling::Kind::kLinear);
        EXPECT_EQ(m.config.rope_scaling.factor, 4.0);
    }
    expect_format_error(load([](Builder& b) {
                            b.add("llama.rope.scaling.type", V::str("linear"))
                                .add("llama.rope.scaling.factor", V::f32(-1));
                        }),
                        {"'llama.rope.scaling.factor' is -1; expected a positive RoPE scaling"});
    EXPECT_NO_THROW(load([](Builder& b) {
        b.add("llama.rope.scaling.type", V::str("none"))
            .add("llama.rope.scaling.factor", V::f32(4));
    })());
    expect_format_error(load([](Builder& b) { b.add("llama.rope.scaling.type", V::str("yarn")); }),
                        {"'llama.rope.scaling.type' is 'yarn'"});
    expect_format_error(load([](Builder& b) { b.add("llama.expert_count", V::u32(8)); }),
                        {"mixture-of-experts"});
    expect_format_error(load([](Builder& b) { b.add("llama.vocab_size", V::u32(41)); }),
                        {"'llama.vocab_size' is 41 but token_embd.weight has 40 rows"});
    {
        // Per-frequency divisors (rope_freqs, Llama 3 as llama.cpp converts it) are read, one per
        // rotated pair of a head of 8; a linear factor divides them further.
        const std::string bytes = tiny.file(0, nullptr, [](Builder& b) {
            b.add("llama.rope.scaling.type", V::str("linear"))
                .add("llama.rope.scaling.factor", V::f32(2));
            b.tensor({.name = "rope_freqs.weight",
                      .ne = {4},
                      .type = 0,
                      .data = f32_bytes({1, 1.5f, 4, 8})});
        });
        const auto m = io::load_gguf_llama<float>(GgufFile::from_bytes(as_bytes(bytes), "m.gguf"));
        EXPECT_EQ(m.config.rope_scaling.kind, kernels::RopeScaling::Kind::kFactors);
        EXPECT_EQ(m.config.rope_scaling.divisors, (std::vector<double>{2, 3, 8, 16}));
        // config.json cannot say it.
        EXPECT_THROW((void)io::hf_config_json(io::HfFamily::kLlama, m.config), ConfigError);
    }
    auto rope_freqs = [](std::vector<std::uint64_t> ne, std::vector<float> v) {
        return [ne, v](Builder& b) {
            b.tensor({.name = "rope_freqs.weight", .ne = ne, .type = 0, .data = f32_bytes(v)});
        };
    };
    expect_format_error(load(rope_freqs({3}, {1, 1, 1})),
                        {"tensor 'rope_freqs.weight' is [3] (ggml ne [3]); expected [4] (one "
                         "divisor per rotated pair)"});
    expect_format_error(load(rope_freqs({4}, {1, 1, -2, 1})),
                        {"tensor 'rope_freqs.weight': divisor 2 is -2"});
    expect_format_error(
        load([](Builder& b) {
            b.tensor({.name = "extra.weight", .ne = {2}, .type = 0, .data = f32_bytes({1, 1})});
        }),
        {"unexpected tensor 'extra.weight' [2] (ggml ne [2])"});
    // Shapes: both, row-major and in ggml order. attn_k stored transposed: ne [16, 32] = [32 x 16].
    expect_format_error(load(edit_tensor("blk.0.attn_k.weight",
                                         [](TensorSpec& t) {
                                             t.ne = {16, 32};
                                         })),
                        {"tensor 'blk.0.attn_k.weight': expected [16 x 32] (ggml ne [32, 16]), "
                         "found [32 x 16] (ggml ne [16, 32])"});
    expect_format_error(
        load(edit_tensor("blk.1.ffn_norm.weight",
                         [](TensorSpec& t) {
                             t.ne = {16, 2};
                         })),
        {"tensor 'blk.1.ffn_norm.weight': expected [1 x 32] (ggml ne [32]), found [2 x 16]"});
    // Trailing ggml dims of 1 are the same shape.
    EXPECT_NO_THROW(load(edit_tensor("blk.1.ffn_norm.weight", [](TensorSpec& t) {
        t.ne = {32, 1, 1};
    }))());
    expect_format_error(
        load(edit_tensor("blk.0.ffn_up.weight",
                         [](TensorSpec& t) {
                             t.type = 2;  // Q4_0: 64 blocks of 18 bytes
                             t.data.resize(64 * 18);
                         })),
        {"tensor 'blk.0.ffn_up.weight' has ggml type Q4_0, which this reader cannot convert"});
    EXPECT_THROW((void)io::load_gguf_llama<float>(
                     (fs::temp_directory_path() / "no_such_model.gguf").string()),
                 IoError);
}

// ------------------------------------------------------------------------------------------------
// stories260K.gguf: the real model against llama2.c

fs::path stories_gguf() { return test_data_dir() / "models" / "stories260K.gguf"; }

TEST(GgufStories260K, MetadataAndTensors) {
    SOFTPROMPT_REQUIRE_DATA(stories_gguf());
    const GgufFile f(stories_gguf().string());
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.tensors().size(), 48u);
    EXPECT_EQ(f.metadata().size(), 19u);
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_int<int>("llama.context_length"), 128);
    EXPECT_EQ(f.get_int<int>("llama.rope.dimension_count"), 8);
    EXPECT_EQ(f.at("llama.attention.layer_norm_rms_epsilon").as_float(), double(1e-5f));
    EXPECT_EQ(f.at("tokenizer.ggml.tokens").array_size(), 512u);
    EXPECT_EQ(f.at("tokenizer.ggml.seperator_token_id").as_int<std::uint32_t>(), 0xFFFFFFFFu);
    const auto& embd = f.tensor("token_embd.weight");
    EXPECT_EQ(embd.ne, (std::vector<std::uint64_t>{64, 512}));
    EXPECT_EQ(embd.type, 0u);
    EXPECT_EQ(f.data_section(), 14176u);
    EXPECT_EQ(f.tensor("blk.4.ffn_norm.weight").data_offset + 256, f.bytes().size());
}

TEST(GgufStories260K, LogitsEqualLlama2cGoldenAndTheLlama2cFormatModel) {
    SOFTPROMPT_REQUIRE_DATA(stories_gguf());
    const fs::path bin = test_data_dir() / "models" / "stories260K.bin";
    const fs::path golden_path =
        test_data_dir() / "golden" / "stories260K" / "logits_once_upon_a_time.txt";
    SOFTPROMPT_REQUIRE_DATA(bin);
    SOFTPROMPT_REQUIRE_DATA(golden_path);
    const auto model = io::load_gguf_llama<float>(stories_gguf().string());
    const nn::Config& c = model.config;
    EXPECT_EQ(c.dim, 64);
    EXPECT_EQ(c.hidden_dim, 172);
    EXPECT_EQ(c.n_layers, 5);
    EXPECT_EQ(c.n_heads, 8);
    EXPECT_EQ(c.n_kv_heads, 4);
    EXPECT_EQ(c.vocab_size, 512);
    EXPECT_EQ(c.max_seq_len, 128);  // the converter's constant, kept as stated
    EXPECT_FALSE(c.tied_head);      // `output` is an untied copy
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_EQ(c.rope_layout, kernels::RopeLayout::kInterleaved);

    // Zero copy: every weight points into the read-only mapping that storage holds.
    const auto* mapped = static_cast<const io::MappedFile*>(model.storage.get());
    ASSERT_EQ(mapped->size(), 1185376u);
    auto inside = [&](const float* p) {
        const auto* b = reinterpret_cast<const std::byte*>(p);
        return b >= mapped->data() && b < mapped->data() + mapped->size();
    };
    EXPECT_TRUE(inside(model.weights.embed.data));
    EXPECT_TRUE(inside(model.weights.head.data));
    EXPECT_TRUE(inside(model.weights.layers[4].down.data));

    const GoldenLogits g = read_golden_logits(golden_path);
    ASSERT_EQ(g.tokens.size(), 16u);
    ASSERT_EQ(g.logits.rows(), 16);
    const Mat<float> logits = logits_of(model, g.tokens);
    const double vs_golden = double((logits - g.logits).cwiseAbs().maxCoeff());
    EXPECT_LE(vs_golden, 1e-4);
    const auto llama2c = io::load_llama2c<float>(bin.string());
    const double vs_llama2c = double((logits - logits_of(llama2c, g.tokens)).cwiseAbs().maxCoeff());
    EXPECT_LE(vs_llama2c, 1e-4);
    ::testing::Test::RecordProperty("max_abs_vs_golden", std::to_string(vs_golden));
    ::testing::Test::RecordProperty("max_abs_vs_llama2c", std::to_string(vs_llama2c));
    std::cout << "[ stories260K.gguf ] max |logit diff| vs llama2.c golden " << vs_golden
              << ", vs the llama2.c-format model " << vs_llama2c << "\n";

    // The same weights as the llama2.c file, tensor by tensor.
    auto same = [](const Weight<float>& a, const Weight<float>& b) {
        return a.rows == b.rows && a.cols == b.cols &&
               std::memcmp(a.data, b.data, sizeof(float) * std::size_t(a.rows * a.cols)) == 0;
    };
    EXPECT_TRUE(same(model.weights.embed, llama2c.weights.embed));
    for (std::size_t i = 0; i < 5; ++i) {
        EXPECT_TRUE(same(model.weights.layers[i].wq, llama2c.weights.layers[i].wq)) << i;
        EXPECT_TRUE(same(model.weights.layers[i].wk, llama2c.weights.layers[i].wk)) << i;
        EXPECT_TRUE(same(model.weights.layers[i].down, llama2c.weights.layers[i].down)) << i;
    }

    // Positions past the stated context length of 128 work (RoPE bounds nothing).
    Ids long_ids(200, 261);
    long_ids[0] = 1;
    EXPECT_TRUE(logits_of(model, long_ids).allFinite());
    // In double too.
    const auto md = io::load_gguf_llama<double>(stories_gguf().string());
    EXPECT_LE(double((logits_of(md, g.tokens).cast<float>() - g.logits).cwiseAbs().maxCoeff()),
              1e-4);
}

// Truncations and bit flips of the real file: each loads (model and tokenizer) or throws
// FormatError; nothing else, never a crash.
enum class Outcome { kLoaded, kRejected };

Outcome try_load(std::span<const std::byte> bytes) {
    try {
        const GgufFile f = GgufFile::from_bytes(bytes, "corrupt.gguf");
        bool ok = true;
        try {
            (void)io::load_gguf_llama<float>(f);
        } catch (const FormatError&) {
            ok = false;
        }
        try {
            const SpmTokenizer spm = tok::gguf_spm_tokenizer(f);
            (void)spm.decode(spm.encode("Once upon a time, a bird.", true, false));
        } catch (const FormatError&) {
            ok = false;
        }
        return ok ? Outcome::kLoaded : Outcome::kRejected;
    } catch (const FormatError&) {
        return Outcome::kRejected;
    }
}

TEST(GgufStories260K, TruncatedAnywhereIsAFormatError) {
    SOFTPROMPT_REQUIRE_DATA(stories_gguf());
    const std::string bytes = read_file(stories_gguf());
    std::vector<std::size_t> cuts;
    for (std::size_t n = 0; n < 14176; n += (n < 512 ? 1 : 7)) cuts.push_back(n);
    for (std::size_t n = 14176; n < bytes.size(); n += 4099) cuts.push_back(n);
    cuts.push_back(bytes.size() - 1);
    for (const std::size_t n : cuts) {
        try {
            (void)GgufFile::from_bytes(as_bytes(bytes).subspan(0, n), "cut.gguf");
            ADD_FAILURE() << "truncated at " << n << " parsed";
        } catch (const FormatError& e) {
            ASSERT_NE(std::string(e.what()).find("cut.gguf at byte"), std::string::npos)
                << e.what();
        }
    }
    std::cout << "[ stories260K.gguf ] " << cuts.size() << " truncations, all FormatError\n";
}

TEST(GgufStories260K, BitFlipsInTheHeaderLoadOrAreFormatErrors) {
    SOFTPROMPT_REQUIRE_DATA(stories_gguf());
    const std::string good = read_file(stories_gguf());
    ASSERT_EQ(try_load(as_bytes(good)), Outcome::kLoaded);
    std::string bytes = good;
    std::mt19937 rng(2024);
    std::size_t loaded = 0, rejected = 0;
    // Every bit of the fixed 24-byte header; then one seeded bit of every byte of the first
    // metadata pairs and of the tensor records, and of every 4th byte of the long token, score and
    // type arrays in between (the header region is 14,152 bytes).
    const std::uint64_t records = GgufFile::from_bytes(as_bytes(good)).tensors_offset();
    auto flip = [&](std::size_t at, int bit) {
        bytes[at] = char(bytes[at] ^ (1 << bit));
        (try_load(as_bytes(bytes)) == Outcome::kLoaded ? loaded : rejected) += 1;
        bytes[at] = good[at];
    };
    for (std::size_t at = 0; at < 24; ++at)
        for (int bit = 0; bit < 8; ++bit) flip(at, bit);
    for (std::size_t at = 24; at < 14152; at += (at < 512 || at >= records) ? 1 : 4)
        flip(at, int(rng() % 8));
    std::cout << "[ stories260K.gguf ] " << loaded + rejected << " bit flips: " << loaded
              << " still load, " << rejected << " FormatError\n";
    EXPECT_GT(rejected, 100u);
    EXPECT_GT(loaded, 100u);
}

// ------------------------------------------------------------------------------------------------
// Tokenizers

std::vector<std::string> odd_strings() {
    return {"",
            " ",
            "  ",
            "a",
            "  leading and trailing spaces  ",
            "Once upon a time, there was a little girl named Lily.",
            "Tabs\tand\nnewlines\r\n and \"quotes\"!",
            "naïve café — 日本語 🙂",
            "Привет, мир",
            "👩‍👩‍👧 family (ZWJ)",
            std::string("nul\0byte", 8),
            "1234567890 ... ,,, !!! ???",
            "<s> </s> <unk> <0x41> ▁ literal markers",
            "The  quick\u00a0brown fox"};
}

TEST(GgufTokenizer, Stories260KEqualsTok512OnRealText) {
    SOFTPROMPT_REQUIRE_DATA(stories_gguf());
    const fs::path tok_path = test_data_dir() / "tokenizers" / "tok512.bin";
    SOFTPROMPT_REQUIRE_DATA(tok_path);
    const SpmTokenizer gguf = tok::load_gguf_spm_tokenizer(stories_gguf().string());
    const SpmTokenizer bin = SpmTokenizer::from_llama2c(tok_path.string(), 512);
    ASSERT_EQ(gguf.vocab_size(), 512);
    EXPECT_EQ(gguf.options().rules, tok::SpmRules::kSentencePiece);
    EXPECT_TRUE(gguf.options().add_dummy_prefix);
    EXPECT_EQ(gguf.piece(410), " ");  // GGUF's ▁, stored as a space like tokenizer.bin's
    EXPECT_EQ(gguf.piece(259), " t");
    EXPECT_EQ(gguf.piece(1), "<s>");
    EXPECT_EQ(gguf.type(0), tok::SpmTokenType::kUnknown);
    EXPECT_EQ(gguf.type(1), tok::SpmTokenType::kControl);
    EXPECT_EQ(gguf.type(3), tok::SpmTokenType::kByte);
    EXPECT_EQ(gguf.type(300), tok::SpmTokenType::kNormal);
    for (std::int32_t id = 0; id < 512; ++id) {
        if (id != 1 && id != 2) {
            EXPECT_EQ(gguf.piece(id), bin.piece(id)) << id;  // BOS/EOS texts differ
        }
        EXPECT_EQ(gguf.score(id), bin.score(id)) << id;
        EXPECT_EQ(gguf.type(id), bin.type(id)) << id;
    }

    std::vector<std::string> corpus = odd_strings();
    const fs::path moby = test_data_dir() / "text" / "moby_dick.txt";
    SOFTPROMPT_REQUIRE_DATA(moby);
    {
        std::istringstream in(read_file(moby));
        std::string line;
        for (int i = 0; std::getline(in, line); ++i)
            if (i % 50 == 0) corpus.push_back(line);  // ~430 lines from all over the book
        const std::string all = read_file(moby);
        for (std::size_t at = 5000; at + 2000 < all.size(); at += all.size() / 10)
            corpus.push_back(all.substr(at, 2000));
    }
    ASSERT_GT(corpus.size(), 300u);
    std::size_t tokens = 0;
    for (const std::string& s : corpus) {
        const Ids a = gguf.encode(s, true, false);
        ASSERT_EQ(a, bin.encode(s, true, false)) << s;
        ASSERT_EQ(gguf.decode(a), bin.decode(a)) << s;
        ASSERT_EQ(gguf.decode(a), s);
        tokens += a.size();
    }
    std::cout << "[ stories260K.gguf ] tokenizer equals tok512.bin on " << corpus.size()
              << " texts (" << tokens << " tokens)\n";
    // The golden prompt.
    EXPECT_EQ(gguf.encode("Once upon a time, there was a little girl named Lily.", true, false),
              (Ids{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426}));
    // Invalid UTF-8 is cut differently by the two rule sets (lead byte only vs. continuation
    // bytes), but both round-trip.
    for (const std::string s : {"\xff\xfe invalid UTF-8 \xc3", "\x80\x80\x80\x80\x80 cont"}) {
        EXPECT_EQ(gguf.decode(gguf.encode(s, true, false)), s);
        EXPECT_EQ(bin.decode(bin.encode(s, true, false)), s);
    }
}

std::vector<std::string> read_vocab_inputs(const fs::path& inp) {
    const std::string all = read_file(inp);
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> out;
    for (std::size_t at = 0; at < all.size();) {
        const std::size_t end = all.find(sep, at);
        if (end == std::string::npos) break;
        out.push_back(all.substr(at, end - at));
        at = end + sep.size();
    }
    return out;
}

std::vector<Ids> read_vocab_outputs(const fs::path& out) {
    std::ifstream in(out);
    std::vector<Ids> ids;
    for (std::string line; std::getline(in, line);) {
        std::istringstream s(line);
        Ids row;
        for (std::int32_t id; s >> id;) row.push_back(id);
        ids.push_back(row);
    }
    return ids;
}

TEST(GgufTokenizer, LlamaSpmMatchesLlamaCppVectors) {
    const fs::path dir = test_data_dir() / "tokenizers" / "llama.cpp";
    SOFTPROMPT_REQUIRE_DATA(dir / "ggml-vocab-llama-spm.gguf");
    const SpmTokenizer tok =
        tok::load_gguf_spm_tokenizer((dir / "ggml-vocab-llama-spm.gguf").string());
    EXPECT_EQ(tok.vocab_size(), 32000);
    EXPECT_EQ(tok.encode("Hello world", false, false), (Ids{15043, 3186}));
    const auto inputs = read_vocab_inputs(dir / "ggml-vocab-llama-spm.gguf.inp");
    const auto outputs = read_vocab_outputs(dir / "ggml-vocab-llama-spm.gguf.out");
    ASSERT_EQ(inputs.size(), 46u);
    ASSERT_GE(outputs.size(), 46u);
    int matched = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const Ids got = tok.encode(inputs[i], false, false);
        if (got == outputs[i]) {
            ++matched;
        } else {
            ADD_FAILURE() << "vector " << i << " " << ::testing::PrintToString(inputs[i])
                          << ": got " << ::testing::PrintToString(got) << ", llama.cpp "
                          << ::testing::PrintToString(outputs[i]);
        }
        // SentencePiece decoding drops the dummy prefix after BOS: the text comes back.
        Ids with_bos = got;
        with_bos.insert(with_bos.begin(), 1);
        EXPECT_EQ(tok.decode(with_bos), inputs[i]) << i;
    }
    ::testing::Test::RecordProperty("llama_spm_matched", matched);
    std::cout << "[ llama-spm ] " << matched << "/" << inputs.size()
              << " llama.cpp vectors match\n";
    EXPECT_EQ(matched, 46);
}

TEST(GgufTokenizer, SentencePieceRulesOnAHandMadeVocabulary) {
    // <unk> <s> </s>, the bytes, then: "▁" "a" "b" "ab" "▁ab" and a control piece "ab!" that
    // merges must never produce, and "é" missing so it can only merge into "éa".
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<std::int32_t> types = {2, 3, 3};
    constexpr char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
        tokens.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
        scores.push_back(0);
        types.push_back(6);
    }
    auto add = [&](std::string t, float s, std::int32_t type) {
        tokens.push_back(std::move(t));
        scores.push_back(s);
        types.push_back(type);
    };
    add("▁", -10, 1);   // 259
    add("a", -10, 1);   // 260
    add("b", -10, 1);   // 261
    add("ab", -1, 1);   // 262
    add("▁ab", -2, 1);  // 263
    add("!", -10, 1);   // 264
    add("ab!", 5, 3);   // 265 control: never merged
    add("éa", -3, 1);   // 266 (é itself is not a piece)
    add("b!", -4, 5);   // 267 unused: never merged
    Builder b;
    b.add("tokenizer.ggml.model", V::str("llama"))
        .add("tokenizer.ggml.tokens", V::strings(tokens))
        .add("tokenizer.ggml.scores", V::floats(scores))
        .add("tokenizer.ggml.token_type", V::ints(types));
    const std::string bytes = b.build();
    const SpmTokenizer tok =
        tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(bytes), "hand.gguf"));
    EXPECT_EQ(tok.encode("ab", false, false), (Ids{263}));
    EXPECT_EQ(tok.encode("ab!", false, false), (Ids{263, 264}));
    EXPECT_EQ(tok.encode("xab", false, false), (Ids{259, 3 + 'x', 262}));
    EXPECT_EQ(tok.encode("éa", false, false), (Ids{259, 266}));  // merges across a missing char
    EXPECT_EQ(tok.encode("éb", false, false),
              (Ids{259, 3 + 0xC3, 3 + 0xA9, 261}));          // byte fallback
    EXPECT_EQ(tok.decode(Ids{1, 263, 265, 2, 264}), "ab!");  // control pieces decode to nothing
    EXPECT_EQ(tok.decode(Ids{1, 266}), "éa");

    // add_space_prefix false: no dummy prefix, and decoding keeps a leading space.
    Builder nb = b;
    nb.add("tokenizer.ggml.add_space_prefix", V::boolean(false));
    const std::string no_prefix = nb.build();
    const SpmTokenizer raw = tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(no_prefix)));
    EXPECT_FALSE(raw.options().add_dummy_prefix);
    EXPECT_EQ(raw.encode("ab", false, false), (Ids{262}));
    EXPECT_EQ(raw.encode(" ab", false, false), (Ids{263}));
    EXPECT_EQ(raw.decode(Ids{1, 263}), " ab");

    // Layout and metadata errors.
    Builder bad = b;
    bad.add("tokenizer.ggml.bos_token_id", V::u32(5));
    expect_format_error(
        [&] {
            (void)tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(bad.build()), "bos.gguf"));
        },
        {"bos.gguf at byte", "'tokenizer.ggml.bos_token_id' is 5; SpmTokenizer's layout needs 1"});
    Builder short_scores = b;
    short_scores.kv[2].second = V::floats({1, 2});
    expect_format_error(
        [&] {
            (void)tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(short_scores.build())));
        },
        {"'tokenizer.ggml.scores' has 2 items but there are 268 tokens"});
    Builder bad_type = b;
    types[262] = 9;
    bad_type.kv[3].second = V::ints(types);
    expect_format_error(
        [&] { (void)tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(bad_type.build()))); },
        {"token 262 has unknown type 9"});
    Builder bad_bytes = b;
    tokens[3 + 65] = "<0x42>";
    bad_bytes.kv[1].second = V::strings(tokens);
    expect_format_error(
        [&] {
            (void)tok::gguf_spm_tokenizer(
                GgufFile::from_bytes(as_bytes(bad_bytes.build()), "l.gguf"));
        },
        {"l.gguf at byte", "tokenizer.ggml.tokens:", "token 68 should be the byte token <0x41>"});
    Builder gpt2 = b;
    gpt2.kv[0].second = V::str("gpt2");
    expect_format_error(
        [&] { (void)tok::gguf_spm_tokenizer(GgufFile::from_bytes(as_bytes(gpt2.build()))); },
        {"tokenizer.ggml.model is 'gpt2'", "gguf_bpe_vocab"});
}

TEST(GgufTokenizer, Gpt2VocabularyListsMatchTheOpenAiFiles) {
    const fs::path dir = test_data_dir() / "tokenizers";
    SOFTPROMPT_REQUIRE_DATA(dir / "llama.cpp" / "ggml-vocab-gpt-2.gguf");
    const tok::GgufBpeVocab v =
        tok::gguf_bpe_vocab((dir / "llama.cpp" / "ggml-vocab-gpt-2.gguf").string());
    ASSERT_EQ(v.tokens.size(), 50257u);
    ASSERT_EQ(v.merges.size(), 50000u);
    EXPECT_EQ(v.bos, 50256);
    EXPECT_EQ(v.eos, 50256);
    EXPECT_EQ(v.pre, "gpt-2");
    EXPECT_EQ(v.token_types.size(), 50257u);
    EXPECT_EQ(v.tokens[0], "!");
    EXPECT_EQ(v.tokens[50256], "<|endoftext|>");
    EXPECT_EQ(v.merges[0], "Ġ t");
    if (fs::exists(dir / "gpt2" / "encoder.json") && fs::exists(dir / "gpt2" / "vocab.bpe")) {
        const auto encoder = nlohmann::json::parse(read_file(dir / "gpt2" / "encoder.json"));
        ASSERT_EQ(encoder.size(), 50257u);
        for (const auto& [token, id] : encoder.items())
            ASSERT_EQ(v.tokens[id.get<std::size_t>()], token);
        std::istringstream bpe(read_file(dir / "gpt2" / "vocab.bpe"));
        std::string line;
        std::getline(bpe, line);  // "#version: 0.2"
        std::size_t i = 0;
        while (std::getline(bpe, line)) {
            if (line.empty()) continue;
            ASSERT_LT(i, v.merges.size());
            ASSERT_EQ(v.merges[i], line) << i;
            ++i;
        }
        EXPECT_EQ(i, 50000u);
    }
    expect_format_error(
        [&] {
            (void)tok::load_gguf_spm_tokenizer(
                (dir / "llama.cpp" / "ggml-vocab-gpt-2.gguf").string());
        },
        {"tokenizer.ggml.model is 'gpt2'"});
    if (fs::exists(dir / "llama.cpp" / "ggml-vocab-llama-spm.gguf"))
        expect_format_error(
            [&] {
                (void)tok::gguf_bpe_vocab(
                    (dir / "llama.cpp" / "ggml-vocab-llama-spm.gguf").string());
            },
            {"tokenizer.ggml.model is 'llama'", "gguf_spm_tokenizer"});
}

}  // namespace
