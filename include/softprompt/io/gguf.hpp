#pragma once
// Reader for GGUF files (llama.cpp's model format, versions 2 and 3): metadata, tensor infos and
// tensor data. The models stored in it are loaded by io/gguf_model.hpp, its embedded vocabularies
// by tok/gguf_vocab.hpp.
//
// Bytes (all little-endian; big-endian GGUF files are recognised and refused):
//   magic         4 bytes "GGUF"
//   version       u32: 3 (current) or 2 (same layout); 1 (32-bit counts) is refused
//   tensor_count  u64
//   kv_count      u64
//   kv pairs      kv_count times: key (gguf string), value type (u32), value
//   tensor infos  tensor_count times:
//                   name (gguf string), n_dims (u32, 1..4), ne (n_dims × u64: ggml order, ne[0] is
//                   the contiguous dimension, so the row-major shape is ne reversed: a matrix with
//                   ne = [in, out] is [out x in]), ggml type (u32), offset (u64, relative to the
//                   data section, a multiple of the alignment)
//   padding       to the next multiple of the alignment (`general.alignment`, u32, a power of
//                 two; 32 when absent)
//   data section  tensor data; a file with no tensors may end before it
//
//   gguf string   u64 byte length, then that many bytes (UTF-8, no terminator)
//   value types   0 UINT8, 1 INT8, 2 UINT16, 3 INT16, 4 UINT32, 5 INT32, 6 FLOAT32, 7 BOOL (one
//                 byte, 0 or 1), 8 STRING, 9 ARRAY (element type u32, u64 count, the elements:
//                 strings and nested arrays are allowed, nested at most 8 deep), 10 UINT64,
//                 11 INT64, 12 FLOAT64
//   ggml types    sizes are known for every type up to MXFP4 (39) so that every tensor's byte range
//                 can be checked; data can be converted for F32 (0), F16 (1), BF16 (30) and
//                 Q8_0 (8: blocks of 32 values, an f16 scale d then 32 int8 q, value = d·q).
//                 Reading any other type throws a FormatError naming the tensor and the type.
//
// Validation: every count and length is checked against the bytes that remain before anything is
// allocated for it (a corrupt count fails at once instead of allocating terabytes); keys and
// tensor names must be unique; element counts and byte sizes must not overflow; tensor data must
// lie inside the file, aligned. Every failure is a FormatError::at(path, byte offset, what), also
// for typed access to a value of the wrong type and for tensor data of a type it cannot convert.
//
// Host requirement: tensor data is read as little-endian (every supported platform).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/half.hpp"
#include "softprompt/io/mmap.hpp"

namespace softprompt::io {

// ------------------------------------------------------------------------------------------------
// Types

/// GGUF metadata value types, numbered as in the file.
enum class GgufType : std::uint32_t {
    kUint8 = 0,
    kInt8 = 1,
    kUint16 = 2,
    kInt16 = 3,
    kUint32 = 4,
    kInt32 = 5,
    kFloat32 = 6,
    kBool = 7,
    kString = 8,
    kArray = 9,
    kUint64 = 10,
    kInt64 = 11,
    kFloat64 = 12,
};

/// "uint8", ..., "float64", or "type N" for a number that is not a GGUF type.
inline std::string gguf_type_name(GgufType t) {
    static constexpr std::array<const char*, 13> names = {
        "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
        "bool",  "string", "array",  "uint64", "int64",  "float64"};
    const auto i = static_cast<std::uint32_t>(t);
    return i < names.size() ? names[i] : "type " + std::to_string(i);
}

/// ggml tensor types this reader knows by number (sizes of the rest are known too, see
/// ggml_type_info). Only F32, F16, BF16 and Q8_0 can be read as numbers.
enum class GgmlType : std::uint32_t {
    kF32 = 0,
    kF16 = 1,
    kQ4_0 = 2,
    kQ4_1 = 3,
    kQ5_0 = 6,
    kQ5_1 = 7,
    kQ8_0 = 8,
    kQ8_1 = 9,
    kQ2_K = 10,
    kQ3_K = 11,
    kQ4_K = 12,
    kQ5_K = 13,
    kQ6_K = 14,
    kQ8_K = 15,
    kI8 = 24,
    kI16 = 25,
    kI32 = 26,
    kI64 = 27,
    kF64 = 28,
    kBF16 = 30,
};

/// Name, values per block and bytes per block of a ggml type.
struct GgmlTypeInfo {
    const char* name;
    std::uint32_t block;  // values per block (1 for plain types)
    std::uint32_t bytes;  // bytes per block
};

/// The layout of ggml type `type`, or nullopt for a number ggml does not (or no longer) define.
inline std::optional<GgmlTypeInfo> ggml_type_info(std::uint32_t type) {
    // Sizes from ggml's type traits (gguf-py GGML_QUANT_SIZES); ids 4, 5 and 31..33, 36..38 are
    // retired layouts.
    constexpr std::uint32_t K = 256;
    switch (type) {
        case 0:
            return GgmlTypeInfo{"F32", 1, 4};
        case 1:
            return GgmlTypeInfo{"F16", 1, 2};
        case 2:
            return GgmlTypeInfo{"Q4_0", 32, 2 + 16};
        case 3:
            return GgmlTypeInfo{"Q4_1", 32, 2 + 2 + 16};
        case 6:
            return GgmlTypeInfo{"Q5_0", 32, 2 + 4 + 16};
        case 7:
            return GgmlTypeInfo{"Q5_1", 32, 2 + 2 + 4 + 16};
        case 8:
            return GgmlTypeInfo{"Q8_0", 32, 2 + 32};
        case 9:
            return GgmlTypeInfo{"Q8_1", 32, 4 + 4 + 32};
        case 10:
            return GgmlTypeInfo{"Q2_K", K, 2 + 2 + K / 16 + K / 4};
        case 11:
            return GgmlTypeInfo{"Q3_K", K, 2 + K / 4 + K / 8 + 12};
        case 12:
            return GgmlTypeInfo{"Q4_K", K, 2 + 2 + K / 2 + 12};
        case 13:
            return GgmlTypeInfo{"Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12};
        case 14:
            return GgmlTypeInfo{"Q6_K", K, 2 + K / 2 + K / 4 + K / 16};
        case 15:
            return GgmlTypeInfo{"Q8_K", K, 4 + K + K / 8};
        case 16:
            return GgmlTypeInfo{"IQ2_XXS", K, 2 + K / 4};
        case 17:
            return GgmlTypeInfo{"IQ2_XS", K, 2 + K / 4 + K / 32};
        case 18:
            return GgmlTypeInfo{"IQ3_XXS", K, 2 + K / 4 + K / 8};
        case 19:
            return GgmlTypeInfo{"IQ1_S", K, 2 + K / 8 + K / 16};
        case 20:
            return GgmlTypeInfo{"IQ4_NL", 32, 2 + 16};
        case 21:
            return GgmlTypeInfo{"IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4};
        case 22:
            return GgmlTypeInfo{"IQ2_S", K, 2 + K / 4 + K / 16};
        case 23:
            return GgmlTypeInfo{"IQ4_XS", K, 2 + 2 + K / 2 + K / 64};
        case 24:
            return GgmlTypeInfo{"I8", 1, 1};
        case 25:
            return GgmlTypeInfo{"I16", 1, 2};
        case 26:
            return GgmlTypeInfo{"I32", 1, 4};
        case 27:
            return GgmlTypeInfo{"I64", 1, 8};
        case 28:
            return GgmlTypeInfo{"F64", 1, 8};
        case 29:
            return GgmlTypeInfo{"IQ1_M", K, K / 8 + K / 16 + K / 32};
        case 30:
            return GgmlTypeInfo{"BF16", 1, 2};
        case 34:
            return GgmlTypeInfo{"TQ1_0", K, 2 + 4 * 13};
        case 35:
            return GgmlTypeInfo{"TQ2_0", K, 2 + 64};
        case 39:
            return GgmlTypeInfo{"MXFP4", 32, 1 + 16};
        default:
            return std::nullopt;
    }
}

/// "Q8_0", or "ggml type N" for an unknown number.
inline std::string ggml_type_name(std::uint32_t type) {
    const auto info = ggml_type_info(type);
    return info ? std::string(info->name) : "ggml type " + std::to_string(type);
}

// ------------------------------------------------------------------------------------------------
// Metadata values

class GgufFile;

/// One metadata value: a scalar, a string or an array (of scalars, strings or arrays), with the
/// exact type the file stores. Typed accessors throw FormatError::at(file, offset, ...) naming the
/// key and the expected and found types; integer accessors also check the value fits.
class GgufValue {
public:
    /// The exact stored type.
    [[nodiscard]] GgufType type() const noexcept { return type_; }
    /// "uint32", "string", "array of float32", ...
    [[nodiscard]] std::string type_name() const {
        return type_ == GgufType::kArray ? "array of " + gguf_type_name(array_->type)
                                         : gguf_type_name(type_);
    }
    /// The key ("llama.block_count"); for an element of a nested array "key[i]".
    [[nodiscard]] const std::string& key() const noexcept { return key_; }
    /// Byte offset in the file of the value's type tag (of a nested array: of its element type).
    [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }

    [[nodiscard]] bool is_integer() const noexcept {
        return type_ <= GgufType::kInt32 || type_ == GgufType::kUint64 || type_ == GgufType::kInt64;
    }
    [[nodiscard]] bool is_float() const noexcept {
        return type_ == GgufType::kFloat32 || type_ == GgufType::kFloat64;
    }
    [[nodiscard]] bool is_string() const noexcept { return type_ == GgufType::kString; }
    [[nodiscard]] bool is_array() const noexcept { return type_ == GgufType::kArray; }

    /// Any integer type (not bool) whose value fits in I.
    template <class I>
    [[nodiscard]] I as_int() const {
        static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>);
        if (!is_integer()) fail("an integer", type_name());
        return fit<I>(scalar_, std::string(""));
    }
    /// FLOAT32 or FLOAT64.
    [[nodiscard]] double as_float() const {
        if (!is_float()) fail("float32 or float64", type_name());
        return std::get<double>(scalar_);
    }
    /// Any integer or float type, as double.
    [[nodiscard]] double as_number() const {
        if (is_float()) return std::get<double>(scalar_);
        if (!is_integer()) fail("a number", type_name());
        return std::visit([](auto v) { return static_cast<double>(v); }, scalar_);
    }
    [[nodiscard]] bool as_bool() const {
        if (type_ != GgufType::kBool) fail("bool", type_name());
        return std::get<std::uint64_t>(scalar_) != 0;
    }
    [[nodiscard]] const std::string& as_string() const {
        if (!is_string()) fail("string", type_name());
        return string_;
    }

    /// Element type of an array (throws for a non-array).
    [[nodiscard]] GgufType array_type() const { return array().type; }
    /// Number of elements of an array (throws for a non-array).
    [[nodiscard]] std::size_t array_size() const { return array().size(); }
    /// An array of strings.
    [[nodiscard]] const std::vector<std::string>& as_strings() const {
        const Array& a = array_of(GgufType::kString, "array of string");
        return a.strings;
    }
    /// An array of float32 or float64, as float.
    [[nodiscard]] std::vector<float> as_floats() const {
        const Array& a = array();
        if (a.type != GgufType::kFloat32 && a.type != GgufType::kFloat64)
            fail("array of float32 or float64", type_name());
        return std::vector<float>(a.floats.begin(), a.floats.end());
    }
    /// An array of float32 or float64, as double.
    [[nodiscard]] const std::vector<double>& as_doubles() const {
        const Array& a = array();
        if (a.type != GgufType::kFloat32 && a.type != GgufType::kFloat64)
            fail("array of float32 or float64", type_name());
        return a.floats;
    }
    /// An array of any integer type whose every element fits in I.
    template <class I>
    [[nodiscard]] std::vector<I> as_ints() const {
        static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>);
        const Array& a = array();
        const bool integer =
            a.type <= GgufType::kInt32 || a.type == GgufType::kUint64 || a.type == GgufType::kInt64;
        if (!integer) fail("array of integers", type_name());
        std::vector<I> out;
        out.reserve(a.size());
        for (std::size_t i = 0; i < a.unsigned_ints.size(); ++i)
            out.push_back(fit<I>(Scalar(a.unsigned_ints[i]), "[" + std::to_string(i) + "]"));
        for (std::size_t i = 0; i < a.signed_ints.size(); ++i)
            out.push_back(fit<I>(Scalar(a.signed_ints[i]), "[" + std::to_string(i) + "]"));
        return out;
    }
    /// An array of bools.
    [[nodiscard]] std::vector<bool> as_bools() const {
        const Array& a = array_of(GgufType::kBool, "array of bool");
        return std::vector<bool>(a.unsigned_ints.begin(), a.unsigned_ints.end());
    }
    /// An array of arrays: its elements (keys "key[i]").
    [[nodiscard]] const std::vector<GgufValue>& as_arrays() const {
        return array_of(GgufType::kArray, "array of array").arrays;
    }

    /// A short human-readable form: `42`, `"llama"`, `[1, 2, 3, ... (512 items)]`.
    [[nodiscard]] std::string to_string(std::size_t max_items = 8) const {
        auto quote = [](const std::string& s) { return "\"" + s + "\""; };
        auto number = [](double d) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.9g", d);
            return std::string(buf);
        };
        switch (type_) {
            case GgufType::kString:
                return quote(string_);
            case GgufType::kBool:
                return std::get<std::uint64_t>(scalar_) ? "true" : "false";
            case GgufType::kFloat32:
            case GgufType::kFloat64:
                return number(std::get<double>(scalar_));
            case GgufType::kArray: {
                const Array& a = *array_;
                std::string out = "[";
                const std::size_t shown = std::min(a.size(), max_items);
                for (std::size_t i = 0; i < shown; ++i) {
                    if (i) out += ", ";
                    if (!a.strings.empty())
                        out += quote(a.strings[i]);
                    else if (!a.floats.empty())
                        out += number(a.floats[i]);
                    else if (!a.unsigned_ints.empty())
                        out += a.type == GgufType::kBool ? (a.unsigned_ints[i] ? "true" : "false")
                                                         : std::to_string(a.unsigned_ints[i]);
                    else if (!a.signed_ints.empty())
                        out += std::to_string(a.signed_ints[i]);
                    else
                        out += a.arrays[i].to_string(max_items);
                }
                if (shown < a.size()) out += ", ... (" + std::to_string(a.size()) + " items)";
                return out + "]";
            }
            default:
                return std::visit([](auto v) { return std::to_string(v); }, scalar_);
        }
    }

private:
    friend class GgufFile;
    using Scalar = std::variant<std::uint64_t, std::int64_t, double>;

    // One of the vectors holds the elements, chosen by the element type.
    struct Array {
        GgufType type = GgufType::kUint8;
        std::vector<std::uint64_t> unsigned_ints;  // UINT8/16/32/64, BOOL
        std::vector<std::int64_t> signed_ints;     // INT8/16/32/64
        std::vector<double> floats;                // FLOAT32/64
        std::vector<std::string> strings;
        std::vector<GgufValue> arrays;
        std::size_t size() const {
            return unsigned_ints.size() + signed_ints.size() + floats.size() + strings.size() +
                   arrays.size();
        }
    };

    const Array& array() const {
        if (!is_array()) fail("an array", type_name());
        return *array_;
    }
    const Array& array_of(GgufType element, const char* expected) const {
        const Array& a = array();
        if (a.type != element) fail(expected, type_name());
        return a;
    }

    template <class I>
    I fit(const Scalar& s, const std::string& where) const {
        bool ok = false;
        I out{};
        std::string shown;
        if (const auto* u = std::get_if<std::uint64_t>(&s)) {
            ok = std::in_range<I>(*u);
            out = static_cast<I>(*u);
            shown = std::to_string(*u);
        } else if (const auto* i = std::get_if<std::int64_t>(&s)) {
            ok = std::in_range<I>(*i);
            out = static_cast<I>(*i);
            shown = std::to_string(*i);
        }
        if (!ok) {
            fail("an integer in [" + std::to_string(std::numeric_limits<I>::min()) + ", " +
                     std::to_string(std::numeric_limits<I>::max()) + "]",
                 type_name() + (where.empty() ? " " : " with element " + where + " = ") + shown);
        }
        return out;
    }

    [[noreturn]] void fail(const std::string& expected, const std::string& found) const {
        throw FormatError::at(file_ ? *file_ : std::string("<gguf>"), offset_,
                              "metadata '" + key_ + "': expected " + expected + ", found " + found);
    }

    GgufType type_ = GgufType::kUint8;
    Scalar scalar_{std::uint64_t{0}};
    std::string string_;
    std::shared_ptr<const Array> array_;
    std::string key_;
    std::uint64_t offset_ = 0;
    std::shared_ptr<const std::string> file_;  // the file's path, for messages
};

// ------------------------------------------------------------------------------------------------
// Tensor infos

/// One tensor's record: name, ggml dims, type and where its data is.
struct GgufTensorInfo {
    std::string name;
    std::vector<std::uint64_t> ne;  // ggml order: ne[0] is contiguous (row-major shape reversed)
    std::uint32_t type = 0;         // ggml type id
    std::uint64_t offset = 0;       // relative to the data section
    std::uint64_t data_offset = 0;  // absolute byte offset of the data in the file
    std::uint64_t n_elements = 0;
    std::uint64_t n_bytes = 0;
    std::uint64_t info_offset = 0;  // where this record starts in the file (for messages)

    /// Row-major shape (ne reversed).
    [[nodiscard]] std::vector<std::uint64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
    /// As a 2-D row-major matrix: ne[0] columns, every other dimension folded into rows.
    [[nodiscard]] std::uint64_t cols() const { return ne.empty() ? 1 : ne[0]; }
    [[nodiscard]] std::uint64_t rows() const { return cols() == 0 ? 0 : n_elements / cols(); }
    /// "[out x in]" row-major, with "(ggml ne [in, out])".
    [[nodiscard]] std::string shape_string() const {
        std::string rm = "[", gg = "[";
        for (std::size_t i = 0; i < ne.size(); ++i) {
            rm += (i ? " x " : "") + std::to_string(ne[ne.size() - 1 - i]);
            gg += (i ? ", " : "") + std::to_string(ne[i]);
        }
        return rm + "] (ggml ne " + gg + "])";
    }
    [[nodiscard]] std::string type_name() const { return ggml_type_name(type); }
};

// ------------------------------------------------------------------------------------------------
// The file

/// A parsed GGUF file: metadata, tensor records and access to tensor data. Parsing reads only the
/// header; tensor data stays in the read-only mapping until asked for. Cheap to copy (shares the
/// mapping); immutable.
class GgufFile {
public:
    static constexpr std::uint32_t kDefaultAlignment = 32;
    static constexpr std::uint32_t kMaxDims = 4;
    static constexpr int kMaxArrayDepth = 8;

    /// Maps `path` read-only and parses its header. Throws IoError (cannot read) or FormatError.
    explicit GgufFile(const std::string& path) {
        auto file = std::make_shared<const MappedFile>(path);
        parse(file->bytes(), path);
        mapping_ = std::move(file);
    }

    /// Parses GGUF bytes the caller keeps alive at least as long as this object and every view or
    /// model made from it; `name` stands for the file in messages.
    static GgufFile from_bytes(std::span<const std::byte> bytes, std::string name = "<memory>") {
        GgufFile f;
        f.parse(bytes, std::move(name));
        return f;
    }

    [[nodiscard]] const std::string& path() const noexcept { return *path_; }
    [[nodiscard]] std::uint32_t version() const noexcept { return version_; }
    [[nodiscard]] std::uint32_t alignment() const noexcept { return alignment_; }
    /// Absolute byte offset of the data section.
    [[nodiscard]] std::uint64_t data_section() const noexcept { return data_section_; }
    /// Absolute byte offsets where the metadata pairs and the tensor records begin.
    [[nodiscard]] std::uint64_t metadata_offset() const noexcept { return kv_begin_; }
    [[nodiscard]] std::uint64_t tensors_offset() const noexcept { return tensors_begin_; }
    /// The whole file.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
    /// The read-only mapping (null when parsed from caller-owned bytes).
    [[nodiscard]] const std::shared_ptr<const MappedFile>& mapping() const noexcept {
        return mapping_;
    }

    /// Every metadata value in file order (each knows its key()).
    [[nodiscard]] const std::vector<GgufValue>& metadata() const noexcept { return *kv_; }
    [[nodiscard]] const GgufValue* find(std::string_view key) const {
        const auto it = kv_index_->find(std::string(key));
        return it == kv_index_->end() ? nullptr : &(*kv_)[it->second];
    }
    [[nodiscard]] bool contains(std::string_view key) const { return find(key) != nullptr; }
    /// The value of `key`; FormatError "missing metadata key" when absent.
    [[nodiscard]] const GgufValue& at(std::string_view key) const {
        if (const GgufValue* v = find(key)) return *v;
        throw FormatError::at(*path_, kv_begin_, "missing metadata key '" + std::string(key) + "'");
    }
    template <class I>
    [[nodiscard]] I get_int(std::string_view key) const {
        return at(key).as_int<I>();
    }
    template <class I>
    [[nodiscard]] I get_int_or(std::string_view key, I fallback) const {
        const GgufValue* v = find(key);
        return v ? v->as_int<I>() : fallback;
    }
    [[nodiscard]] double get_number(std::string_view key) const { return at(key).as_number(); }
    [[nodiscard]] double get_number_or(std::string_view key, double fallback) const {
        const GgufValue* v = find(key);
        return v ? v->as_number() : fallback;
    }
    [[nodiscard]] const std::string& get_string(std::string_view key) const {
        return at(key).as_string();
    }
    [[nodiscard]] std::string get_string_or(std::string_view key, std::string fallback) const {
        const GgufValue* v = find(key);
        return v ? v->as_string() : fallback;
    }
    [[nodiscard]] bool get_bool_or(std::string_view key, bool fallback) const {
        const GgufValue* v = find(key);
        return v ? v->as_bool() : fallback;
    }

    /// Every tensor record in file order.
    [[nodiscard]] const std::vector<GgufTensorInfo>& tensors() const noexcept { return *tensors_; }
    [[nodiscard]] const GgufTensorInfo* find_tensor(std::string_view name) const {
        const auto it = tensor_index_->find(std::string(name));
        return it == tensor_index_->end() ? nullptr : &(*tensors_)[it->second];
    }
    /// The record of `name`; FormatError "missing tensor" when absent.
    [[nodiscard]] const GgufTensorInfo& tensor(std::string_view name) const {
        if (const GgufTensorInfo* t = find_tensor(name)) return *t;
        throw FormatError::at(*path_, tensors_begin_, "missing tensor '" + std::string(name) + "'");
    }

    /// The raw bytes of a tensor (already checked to lie inside the file).
    [[nodiscard]] std::span<const std::byte> tensor_bytes(const GgufTensorInfo& t) const {
        return bytes_.subspan(static_cast<std::size_t>(t.data_offset),
                              static_cast<std::size_t>(t.n_bytes));
    }

    /// True when the tensor's values can be read as numbers (F32, F16, BF16, Q8_0).
    [[nodiscard]] static bool convertible(std::uint32_t type) noexcept {
        return type == 0 || type == 1 || type == 8 || type == 30;
    }

    /// Converts a tensor to T in ggml order (= row-major order of shape()), into `out` of exactly
    /// n_elements values. FormatError naming the tensor and its type for other ggml types.
    template <class T>
    void read_tensor(const GgufTensorInfo& t, std::span<T> out) const {
        check_convertible(t);
        if (out.size() != t.n_elements)
            throw Error("GgufFile::read_tensor: tensor '" + t.name + "' has " +
                        std::to_string(t.n_elements) + " elements, the output " +
                        std::to_string(out.size()));
        const std::byte* p = tensor_bytes(t).data();
        auto u16 = [](const std::byte* q) {
            std::uint16_t v;
            std::memcpy(&v, q, 2);
            return v;
        };
        const std::size_t n = out.size();
        switch (t.type) {
            case 0:  // F32
                if constexpr (std::is_same_v<T, float>) {
                    if (n > 0) std::memcpy(out.data(), p, 4 * n);
                    return;
                }
                for (std::size_t i = 0; i < n; ++i) {
                    float v;
                    std::memcpy(&v, p + 4 * i, 4);
                    out[i] = T(v);
                }
                return;
            case 1:  // F16
                for (std::size_t i = 0; i < n; ++i) out[i] = T(half_bits_to_float(u16(p + 2 * i)));
                return;
            case 30:  // BF16
                for (std::size_t i = 0; i < n; ++i) out[i] = T(bf16_bits_to_float(u16(p + 2 * i)));
                return;
            case 8:  // Q8_0: per block of 32, f16 scale d then int8 q[32]; value = d * q
                for (std::size_t b = 0; b < n / 32; ++b) {
                    const std::byte* block = p + 34 * b;
                    const float d = half_bits_to_float(u16(block));
                    for (std::size_t j = 0; j < 32; ++j) {
                        const auto q = static_cast<std::int8_t>(block[2 + j]);
                        out[32 * b + j] = T(d * float(q));
                    }
                }
                return;
            default:
                return;  // check_convertible threw
        }
    }

    /// A tensor converted to T (see read_tensor).
    template <class T = float>
    [[nodiscard]] std::vector<T> read_tensor(std::string_view name) const {
        const GgufTensorInfo& t = tensor(name);
        check_convertible(t);  // before allocating
        std::vector<T> out(static_cast<std::size_t>(t.n_elements));
        read_tensor<T>(t, std::span<T>(out));
        return out;
    }

    /// FormatError naming the tensor and its type unless read_tensor can convert it.
    void check_convertible(const GgufTensorInfo& t) const {
        if (!convertible(t.type))
            throw FormatError::at(*path_, t.info_offset,
                                  "tensor '" + t.name + "' has ggml type " + t.type_name() +
                                      ", which this reader cannot convert (it reads F32, F16, "
                                      "BF16 and Q8_0)");
    }

    /// The data of an F32 tensor in place (no copy), or nullptr when it is not F32 or not aligned
    /// for float in memory.
    [[nodiscard]] const float* f32_data(const GgufTensorInfo& t) const {
        if (t.type != 0) return nullptr;
        const std::byte* p = tensor_bytes(t).data();
        if (reinterpret_cast<std::uintptr_t>(p) % alignof(float) != 0) return nullptr;
        return reinterpret_cast<const float*>(p);
    }

private:
    GgufFile() = default;

    void parse(std::span<const std::byte> bytes, std::string name) {
        bytes_ = bytes;
        path_ = std::make_shared<const std::string>(std::move(name));
        ByteReader in(bytes, *path_);
        auto kv = std::make_shared<std::vector<GgufValue>>();
        auto kv_index = std::make_shared<std::unordered_map<std::string, std::size_t>>();
        auto tensors = std::make_shared<std::vector<GgufTensorInfo>>();
        auto tensor_index = std::make_shared<std::unordered_map<std::string, std::size_t>>();

        // Header.
        if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) {
            std::string found;
            for (std::size_t i = 0; i < std::min<std::size_t>(4, bytes.size()); ++i) {
                constexpr char hex[] = "0123456789abcdef";
                const auto c = static_cast<unsigned char>(bytes[i]);
                found += std::string(i ? " " : "") + hex[c >> 4] + hex[c & 15];
            }
            in.fail_at(0, "not a GGUF file: expected the magic \"GGUF\" (47 47 55 46), found " +
                              (found.empty() ? std::string("an empty file") : found));
        }
        in.skip(4);
        version_ = in.read<std::uint32_t>();
        if (version_ != 2 && version_ != 3) {
            const std::uint32_t swapped = ((version_ & 0xFFu) << 24) | ((version_ & 0xFF00u) << 8) |
                                          ((version_ >> 8) & 0xFF00u) | (version_ >> 24);
            if (swapped == 2 || swapped == 3)
                in.fail_at(4, "big-endian GGUF (version " + std::to_string(swapped) +
                                  " with swapped bytes) is not supported");
            in.fail_at(4, "unsupported GGUF version " + std::to_string(version_) +
                              (version_ == 1 ? " (version 1 used 32-bit counts; convert the file "
                                               "again with a current llama.cpp)"
                                             : " (this reader knows versions 2 and 3)"));
        }
        const std::uint64_t n_tensors = in.read<std::uint64_t>();
        const std::uint64_t n_kv = in.read<std::uint64_t>();
        // Smallest possible records: a tensor info is a name length, n_dims, one dim, type and
        // offset (32 bytes); a pair is a key length, a type and a 1-byte value (13 bytes).
        if (n_tensors > in.remaining() / 32)
            in.fail_at(8, "tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                              std::to_string(in.remaining()) + " bytes after the header");
        if (n_kv > in.remaining() / 13)
            in.fail_at(16, "metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                               std::to_string(in.remaining()) + " bytes after the header");
        if (n_tensors * 32 + n_kv * 13 > in.remaining())
            in.fail_at(8, std::to_string(n_tensors) + " tensor records and " +
                              std::to_string(n_kv) + " metadata pairs cannot fit in the " +
                              std::to_string(in.remaining()) + " bytes after the header");

        // Metadata.
        kv_begin_ = in.offset();
        kv->reserve(static_cast<std::size_t>(n_kv));
        for (std::uint64_t i = 0; i < n_kv; ++i) {
            const std::size_t pair_offset = in.offset();
            std::string key = read_string(in, "key of metadata pair " + std::to_string(i));
            if (kv_index->count(key))
                in.fail_at(pair_offset, "duplicate metadata key '" + key + "'");
            const std::size_t type_offset = in.offset();
            const auto type = in.read<std::uint32_t>();
            if (type > 12)
                in.fail_at(type_offset,
                           "metadata '" + key + "': unknown value type " + std::to_string(type));
            GgufValue v = read_value(in, static_cast<GgufType>(type), key, type_offset, 0);
            kv_index->emplace(key, kv->size());
            kv->push_back(std::move(v));
        }

        // Alignment.
        alignment_ = kDefaultAlignment;
        if (const auto it = kv_index->find("general.alignment"); it != kv_index->end()) {
            const GgufValue& a = (*kv)[it->second];
            const auto value = a.as_int<std::uint32_t>();
            if (value == 0 || (value & (value - 1)) != 0)
                in.fail_at(a.offset(), "metadata 'general.alignment' is " + std::to_string(value) +
                                           "; it must be a power of two");
            alignment_ = value;
        }

        // Tensor infos.
        tensors_begin_ = in.offset();
        tensors->reserve(static_cast<std::size_t>(n_tensors));
        for (std::uint64_t i = 0; i < n_tensors; ++i) {
            GgufTensorInfo t;
            t.info_offset = in.offset();
            t.name = read_string(in, "name of tensor " + std::to_string(i));
            const std::string what = "tensor '" + t.name + "'";
            if (tensor_index->count(t.name)) in.fail_at(t.info_offset, "duplicate " + what);
            const std::size_t dims_offset = in.offset();
            const auto n_dims = in.read<std::uint32_t>();
            if (n_dims < 1 || n_dims > kMaxDims)
                in.fail_at(dims_offset, what + ": " + std::to_string(n_dims) +
                                            " dimensions; expected 1 to " +
                                            std::to_string(kMaxDims));
            t.n_elements = 1;
            bool overflow = false;
            for (std::uint32_t d = 0; d < n_dims; ++d) {
                const auto dim = in.read<std::uint64_t>();
                t.ne.push_back(dim);
                if (dim > std::uint64_t(std::numeric_limits<std::int64_t>::max()) ||
                    (dim != 0 &&
                     t.n_elements > std::uint64_t(std::numeric_limits<std::int64_t>::max()) / dim))
                    overflow = true;
                else
                    t.n_elements *= dim;
            }
            if (overflow)
                in.fail_at(dims_offset, what + ": the element count of ne " + ne_string(t.ne) +
                                            " overflows 63 bits");
            const std::size_t type_offset = in.offset();
            t.type = in.read<std::uint32_t>();
            const auto info = ggml_type_info(t.type);
            if (!info)
                in.fail_at(type_offset, what + ": unknown ggml type " + std::to_string(t.type));
            if (t.ne[0] % info->block != 0)
                in.fail_at(dims_offset, what + ": ne[0] = " + std::to_string(t.ne[0]) +
                                            " is not a multiple of the " + info->name +
                                            " block size " + std::to_string(info->block));
            const std::uint64_t blocks = t.n_elements / info->block;
            if (blocks > std::numeric_limits<std::uint64_t>::max() / info->bytes)
                in.fail_at(dims_offset, what + ": its byte size overflows 64 bits");
            t.n_bytes = blocks * info->bytes;
            const std::size_t offset_offset = in.offset();
            t.offset = in.read<std::uint64_t>();
            if (t.offset % alignment_ != 0)
                in.fail_at(offset_offset, what + ": data offset " + std::to_string(t.offset) +
                                              " is not a multiple of the alignment " +
                                              std::to_string(alignment_));
            tensor_index->emplace(t.name, tensors->size());
            tensors->push_back(std::move(t));
        }

        // Data section.
        const std::uint64_t end_of_infos = in.offset();
        data_section_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
        const std::uint64_t size = bytes.size();
        for (GgufTensorInfo& t : *tensors) {
            const bool inside = data_section_ <= size && t.offset <= size - data_section_ &&
                                t.n_bytes <= size - data_section_ - t.offset;
            if (!inside)
                in.fail_at(t.info_offset,
                           "tensor '" + t.name + "': data of " + std::to_string(t.n_bytes) +
                               " bytes at data offset " + std::to_string(t.offset) +
                               " (file byte " + std::to_string(data_section_) + " + " +
                               std::to_string(t.offset) + ") runs past the end of the file (" +
                               std::to_string(size) + " bytes)");
            t.data_offset = data_section_ + t.offset;
        }

        kv_ = std::move(kv);
        kv_index_ = std::move(kv_index);
        tensors_ = std::move(tensors);
        tensor_index_ = std::move(tensor_index);
    }

    static std::string ne_string(const std::vector<std::uint64_t>& ne) {
        std::string s = "[";
        for (std::size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
        return s + "]";
    }

    std::string read_string(ByteReader& in, const std::string& what) const {
        const std::size_t at = in.offset();
        const auto n = in.read<std::uint64_t>();
        if (n > in.remaining())
            in.fail_at(at, what + ": string length " + std::to_string(n) +
                               " runs past the end of the file (" + std::to_string(in.remaining()) +
                               " bytes left)");
        return std::string(in.chars(static_cast<std::size_t>(n)));
    }

    // Smallest encoding of one element of `type` (arrays: element type + count).
    static std::size_t min_size(GgufType type) {
        switch (type) {
            case GgufType::kUint8:
            case GgufType::kInt8:
            case GgufType::kBool:
                return 1;
            case GgufType::kUint16:
            case GgufType::kInt16:
                return 2;
            case GgufType::kUint32:
            case GgufType::kInt32:
            case GgufType::kFloat32:
                return 4;
            case GgufType::kString:
            case GgufType::kUint64:
            case GgufType::kInt64:
            case GgufType::kFloat64:
                return 8;
            case GgufType::kArray:
                return 12;
        }
        return 1;
    }

    // Reads one scalar of `type` into the slots of an array or a value.
    template <class Sink>
    void read_scalar(ByteReader& in, GgufType type, const std::string& key, Sink&& sink) const {
        switch (type) {
            case GgufType::kUint8:
                sink(std::uint64_t(in.read<std::uint8_t>()));
                return;
            case GgufType::kInt8:
                sink(std::int64_t(in.read<std::int8_t>()));
                return;
            case GgufType::kUint16:
                sink(std::uint64_t(in.read<std::uint16_t>()));
                return;
            case GgufType::kInt16:
                sink(std::int64_t(in.read<std::int16_t>()));
                return;
            case GgufType::kUint32:
                sink(std::uint64_t(in.read<std::uint32_t>()));
                return;
            case GgufType::kInt32:
                sink(std::int64_t(in.read<std::int32_t>()));
                return;
            case GgufType::kUint64:
                sink(in.read<std::uint64_t>());
                return;
            case GgufType::kInt64:
                sink(in.read<std::int64_t>());
                return;
            case GgufType::kFloat32:
                sink(double(in.read<float>()));
                return;
            case GgufType::kFloat64:
                sink(in.read<double>());
                return;
            case GgufType::kBool: {
                const std::size_t at = in.offset();
                const auto b = in.read<std::uint8_t>();
                if (b > 1)
                    in.fail_at(at, "metadata '" + key + "': bool byte is " + std::to_string(b) +
                                       "; expected 0 or 1");
                sink(std::uint64_t(b));
                return;
            }
            default:
                return;  // strings and arrays are read by the caller
        }
    }

    GgufValue read_value(ByteReader& in, GgufType type, const std::string& key,
                         std::size_t type_offset, int depth) const {
        GgufValue v;
        v.type_ = type;
        v.key_ = key;
        v.offset_ = type_offset;
        v.file_ = path_;
        if (type == GgufType::kString) {
            v.string_ = read_string(in, "metadata '" + key + "'");
        } else if (type == GgufType::kArray) {
            if (depth >= kMaxArrayDepth)
                in.fail_at(type_offset, "metadata '" + key + "': arrays nested more than " +
                                            std::to_string(kMaxArrayDepth) + " deep");
            const std::size_t elem_offset = in.offset();
            const auto elem = in.read<std::uint32_t>();
            if (elem > 12)
                in.fail_at(elem_offset, "metadata '" + key + "': unknown array element type " +
                                            std::to_string(elem));
            const auto et = static_cast<GgufType>(elem);
            const std::size_t count_offset = in.offset();
            const auto n = in.read<std::uint64_t>();
            if (n > in.remaining() / min_size(et))
                in.fail_at(count_offset, "metadata '" + key + "': array of " + std::to_string(n) +
                                             " " + gguf_type_name(et) +
                                             " values cannot fit in the " +
                                             std::to_string(in.remaining()) + " bytes left");
            auto a = std::make_shared<GgufValue::Array>();
            a->type = et;
            const auto count = static_cast<std::size_t>(n);
            if (et == GgufType::kString) {
                a->strings.reserve(count);
                for (std::size_t i = 0; i < count; ++i)
                    a->strings.push_back(
                        read_string(in, "metadata '" + key + "' item " + std::to_string(i)));
            } else if (et == GgufType::kArray) {
                a->arrays.reserve(count);
                for (std::size_t i = 0; i < count; ++i)
                    a->arrays.push_back(read_value(in, GgufType::kArray,
                                                   key + "[" + std::to_string(i) + "]", in.offset(),
                                                   depth + 1));
            } else {
                auto sink = [&](auto x) {
                    using X = decltype(x);
                    if constexpr (std::is_same_v<X, std::uint64_t>)
                        a->unsigned_ints.push_back(x);
                    else if constexpr (std::is_same_v<X, std::int64_t>)
                        a->signed_ints.push_back(x);
                    else
                        a->floats.push_back(x);
                };
                if (et == GgufType::kFloat32 || et == GgufType::kFloat64)
                    a->floats.reserve(count);
                else if (et == GgufType::kInt8 || et == GgufType::kInt16 ||
                         et == GgufType::kInt32 || et == GgufType::kInt64)
                    a->signed_ints.reserve(count);
                else
                    a->unsigned_ints.reserve(count);
                for (std::size_t i = 0; i < count; ++i) read_scalar(in, et, key, sink);
            }
            v.array_ = std::move(a);
        } else {
            read_scalar(in, type, key, [&](auto x) { v.scalar_ = x; });
        }
        return v;
    }

    std::span<const std::byte> bytes_;
    std::shared_ptr<const MappedFile> mapping_;
    std::shared_ptr<const std::string> path_ = std::make_shared<const std::string>();
    std::uint32_t version_ = 0;
    std::uint32_t alignment_ = kDefaultAlignment;
    std::uint64_t data_section_ = 0;
    std::uint64_t kv_begin_ = 0;
    std::uint64_t tensors_begin_ = 0;
    std::shared_ptr<const std::vector<GgufValue>> kv_ = std::make_shared<std::vector<GgufValue>>();
    std::shared_ptr<const std::unordered_map<std::string, std::size_t>> kv_index_ =
        std::make_shared<std::unordered_map<std::string, std::size_t>>();
    std::shared_ptr<const std::vector<GgufTensorInfo>> tensors_ =
        std::make_shared<std::vector<GgufTensorInfo>>();
    std::shared_ptr<const std::unordered_map<std::string, std::size_t>> tensor_index_ =
        std::make_shared<std::unordered_map<std::string, std::size_t>>();
};

}  // namespace softprompt::io
