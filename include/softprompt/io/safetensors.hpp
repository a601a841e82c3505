#pragma once
// safetensors: Hugging Face's tensor file format. Reader over a read-only mapping, and an atomic
// writer that produces the same bytes as the reference implementation (Rust `safetensors`, used by
// the Python package).
//
// Bytes:
//   [0, 8)        N: uint64, little-endian, the header length
//   [8, 8+N)      header: UTF-8 JSON object, starting with '{', possibly padded with spaces
//                   { "__metadata__": { "<key>": "<string>", ... },            (optional)
//                     "<tensor name>": { "dtype": "F32", "shape": [d0, d1, ...],
//                                        "data_offsets": [begin, end] }, ... }
//   [8+N, EOF)    data buffer: each tensor's elements, little-endian, row-major ('C' order), at
//                 [begin, end) relative to the start of the buffer (not of the file)
// Rules (the reference reader's, all checked here): N ≤ 100 MB and within the file; keys unique;
// dtype one of BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64; shape a list of
// non-negative integers (rank 0 = scalar, a 0 dimension = empty tensor); end - begin =
// numel · dtype size; the tensors tile the buffer exactly — no overlap, no hole, nothing after the
// last one; metadata values are strings. Only F32, F16 and BF16 can be read as weights; the other
// dtypes may be listed (a checkpoint's integer buffers) but reading them as weights throws.
//
// Reading. `SafetensorsFile` maps the file (PROT_READ) and parses only the header: opening a large
// model reads a few kilobytes, and weights are paged in when first used. `weight<T>(name, rows,
// cols, store)` returns a frozen weight of the shape the model expects (a 1-D [n] tensor matches
// [1, n]; anything else must match exactly):
//   - F32 read as float: a zero-copy view into the mapping; `store` keeps the mapping alive.
//     (The reference writer pads the header to 8 bytes and puts wider dtypes first, so F32 data is
//     4-byte aligned. A file that isn't gets its misaligned tensors copied, since dereferencing a
//     misaligned float* is undefined behaviour.)
//   - F16/BF16, or T = double: converted into a buffer that `store` owns.
// A `TensorStore` is what a loaded `nn::Model::storage` holds: the mapped files and converted
// buffers its weights point into.
//
// Writing. `write_safetensors(path, tensors, metadata)` stores float data as F32, F16 or BF16
// (round to nearest even), tensors sorted like the reference (wider dtype first, then by name:
// every tensor stays aligned to its element size), header padded with spaces to a multiple of 8
// bytes. The file is written to `<path>.tmp-XXXXXXXX` in the same folder, fsync'ed and renamed over
// `path`: a reader sees the old file or the new one, never half of one; on failure the temporary
// file is removed and IoError names the path. A save killed before its rename leaves its temporary
// file; the next save to the same path removes it (a live save's file is flock'ed, so only dead
// ones go).
//
// Threads: a SafetensorsFile is immutable once parsed; its const functions may run on several
// threads at once. weight() adds to the TensorStore it is given, so a store serves one loader at a
// time. Writers of different paths are independent; two writers of one path each write a whole
// temporary file, and the last rename wins.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/io/half.hpp"
#include "softprompt/io/mmap.hpp"
#include "softprompt/nn/weights.hpp"

namespace softprompt::io {

// ------------------------------------------------------------------------------------------------
// Element types

/// safetensors dtypes, in the reference implementation's order (which its writer sorts by).
enum class Dtype : std::uint8_t {
    kBool,
    kU8,
    kI8,
    kF8E5M2,
    kF8E4M3,
    kI16,
    kU16,
    kF16,
    kBF16,
    kI32,
    kU32,
    kF32,
    kF64,
    kI64,
    kU64
};

namespace detail {

struct DtypeEntry {
    Dtype dtype;
    std::string_view name;
    std::uint8_t size;
};

inline constexpr std::array<DtypeEntry, 15> kDtypes = {{
    {Dtype::kBool, "BOOL", 1},
    {Dtype::kU8, "U8", 1},
    {Dtype::kI8, "I8", 1},
    {Dtype::kF8E5M2, "F8_E5M2", 1},
    {Dtype::kF8E4M3, "F8_E4M3", 1},
    {Dtype::kI16, "I16", 2},
    {Dtype::kU16, "U16", 2},
    {Dtype::kF16, "F16", 2},
    {Dtype::kBF16, "BF16", 2},
    {Dtype::kI32, "I32", 4},
    {Dtype::kU32, "U32", 4},
    {Dtype::kF32, "F32", 4},
    {Dtype::kF64, "F64", 8},
    {Dtype::kI64, "I64", 8},
    {Dtype::kU64, "U64", 8},
}};

}  // namespace detail

/// "F32", "BF16", ...
constexpr std::string_view dtype_name(Dtype d) { return detail::kDtypes[std::size_t(d)].name; }
/// Bytes per element.
constexpr std::size_t dtype_size(Dtype d) { return detail::kDtypes[std::size_t(d)].size; }
/// The dtypes that hold weights: F32, F16, BF16.
constexpr bool is_weight_dtype(Dtype d) {
    return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}
/// The dtype spelled `name` in a header, if it is one.
constexpr std::optional<Dtype> dtype_from_name(std::string_view name) {
    for (const auto& e : detail::kDtypes)
        if (e.name == name) return e.dtype;
    return std::nullopt;
}

/// "[2, 6]" (a safetensors shape, any rank).
inline std::string shape_text(const std::vector<std::uint64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// ------------------------------------------------------------------------------------------------
// Reading

/// One tensor's header entry.
struct TensorInfo {
    Dtype dtype = Dtype::kF32;
    std::vector<std::uint64_t> shape;  // any rank; [] is a scalar
    std::uint64_t begin = 0, end = 0;  // byte range in the data buffer
    std::uint64_t numel = 1;

    std::uint64_t bytes() const { return end - begin; }
};

/// Owner of the memory a loaded model's weights view: mapped files (zero-copy F32 views) and
/// converted buffers (F16/BF16, or double). Held by `nn::Model::storage`.
class TensorStore {
public:
    /// Keep `file` mapped as long as the store lives (idempotent).
    void keep(const std::shared_ptr<const MappedFile>& file) {
        if (std::find(files_.begin(), files_.end(), file) == files_.end()) files_.push_back(file);
    }

    /// Take ownership of a converted buffer; its data stay where they are.
    template <class T>
    const T* adopt(std::vector<T> buffer) {
        auto owned = std::make_shared<const std::vector<T>>(std::move(buffer));
        owned_bytes_ += owned->size() * sizeof(T);
        buffers_.push_back(owned);
        return owned->data();
    }

    /// Mapped files kept alive.
    const std::vector<std::shared_ptr<const MappedFile>>& files() const { return files_; }
    /// Number and total size of converted buffers (0 when every weight is a view of a mapping).
    std::size_t owned_buffers() const { return buffers_.size(); }
    std::size_t owned_bytes() const { return owned_bytes_; }

private:
    std::vector<std::shared_ptr<const MappedFile>> files_;
    std::vector<std::shared_ptr<const void>> buffers_;
    std::size_t owned_bytes_ = 0;
};

namespace detail {

/// Unsigned little-endian value at p (any alignment).
template <class U>
U load_le(const std::byte* p) {
    U v;
    std::memcpy(&v, p, sizeof(U));
    if constexpr (std::endian::native == std::endian::big) {
        auto raw = std::bit_cast<std::array<std::byte, sizeof(U)>>(v);
        std::reverse(raw.begin(), raw.end());
        v = std::bit_cast<U>(raw);
    }
    return v;
}

/// Decode n elements of a weight dtype at src (any alignment) into dst.
template <class T>
void decode(Dtype dtype, const std::byte* src, std::size_t n, T* dst) {
    if constexpr (std::is_same_v<T, float> && std::endian::native == std::endian::little) {
        if (dtype == Dtype::kF32) {
            if (n) std::memcpy(dst, src, n * sizeof(float));
            return;
        }
    }
    for (std::size_t i = 0; i < n; ++i) {
        float v = 0;
        switch (dtype) {
            case Dtype::kF32:
                v = std::bit_cast<float>(load_le<std::uint32_t>(src + 4 * i));
                break;
            case Dtype::kF16:
                v = half_bits_to_float(load_le<std::uint16_t>(src + 2 * i));
                break;
            case Dtype::kBF16:
                v = bf16_bits_to_float(load_le<std::uint16_t>(src + 2 * i));
                break;
            default:
                break;  // callers check is_weight_dtype first
        }
        dst[i] = T(v);
    }
}

/// a·b, or nullopt on uint64 overflow.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}

/// A JSON value for an error message, cut to a readable length.
template <class Json>
std::string brief(const Json& j) {
    std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
    return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

/// The reference reader's limit on the header size.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

}  // namespace detail

/// A safetensors file mapped read-only, header parsed and validated. Cheap to open (the data are
/// not read); copy it around via shared_ptr if needed, the mapping is shared.
class SafetensorsFile {
public:
    /// Maps and validates `path`. Throws IoError if it cannot be opened or mapped, FormatError
    /// (file, byte offset, tensor, expected, found) if its bytes break any rule above.
    explicit SafetensorsFile(const std::string& path)
        : SafetensorsFile(std::make_shared<const MappedFile>(path)) {}

    /// Validates an already mapped file.
    explicit SafetensorsFile(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {
        parse();
    }

    const std::string& path() const { return file_->path(); }
    const std::shared_ptr<const MappedFile>& file() const { return file_; }
    /// Every tensor's header entry, by name.
    const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
    /// Tensor names, sorted.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(tensors_.size());
        for (const auto& [name, info] : tensors_) out.push_back(name);
        return out;
    }
    bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
    /// `__metadata__` (empty when absent).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    /// Absolute file offset of the data buffer (8 + N).
    std::uint64_t data_offset() const { return data_offset_; }

    /// Header entry of `name`; FormatError naming the file and tensor when there is none.
    const TensorInfo& info(const std::string& name) const {
        const auto it = tensors_.find(name);
        if (it == tensors_.end())
            throw FormatError(path() + ": no tensor '" + name + "' (the file has " +
                              std::to_string(tensors_.size()) + " tensors)");
        return it->second;
    }

    /// The tensor's raw little-endian bytes, inside the mapping.
    std::span<const std::byte> raw(const std::string& name) const {
        const TensorInfo& t = info(name);
        return {file_->data() + data_offset_ + t.begin, std::size_t(t.bytes())};
    }

    /// A frozen [rows, cols] weight (see the top of this file): a view into the mapping for F32
    /// read as float, else converted into a buffer owned by `store`. `store` must outlive every
    /// use of the weight (give it to the model's `storage`). Throws FormatError naming the tensor
    /// for a missing tensor, a non-float dtype or a shape that does not match.
    template <class T>
    Weight<T> weight(const std::string& name, Index rows, Index cols, TensorStore& store) const {
        const TensorInfo& t = checked(name, rows, cols);
        const std::byte* p = file_->data() + data_offset_ + t.begin;
        if constexpr (std::is_same_v<T, float> && std::endian::native == std::endian::little) {
            if (t.dtype == Dtype::kF32 &&
                reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0) {
                store.keep(file_);
                return {reinterpret_cast<const float*>(p), rows, cols};
            }
        }
        std::vector<T> buffer(static_cast<std::size_t>(t.numel));
        detail::decode(t.dtype, p, buffer.size(), buffer.data());
        return {store.adopt(std::move(buffer)), rows, cols};
    }

    /// An `nn::WeightLookup` over this file (for `Arch::bind_hf`). It refers to this file and to
    /// `store`: both must outlive the lookup.
    template <class T>
    nn::WeightLookup<T> lookup(TensorStore& store) const {
        return [this, &store](const std::string& name, Index rows, Index cols) {
            return weight<T>(name, rows, cols, store);
        };
    }

    /// Every element of a float tensor (F32/F16/BF16, any rank), converted, row-major.
    template <class T>
    std::vector<T> values(const std::string& name) const {
        const TensorInfo& t = info(name);
        require_weight_dtype(name, t);
        std::vector<T> out(std::size_t(t.numel));
        detail::decode(t.dtype, file_->data() + data_offset_ + t.begin, out.size(), out.data());
        return out;
    }

    /// An owned copy of a float tensor of rank ≤ 2 as a matrix: [] -> [1, 1], [n] -> [1, n].
    template <class T>
    Mat<T> matrix(const std::string& name) const {
        const TensorInfo& t = info(name);
        require_weight_dtype(name, t);
        if (t.shape.size() > 2)
            fail_tensor(name,
                        "has shape " + shape_text(t.shape) + "; expected a vector or a matrix");
        const std::uint64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
        const std::uint64_t cols = t.shape.empty() ? 1 : t.shape.back();
        // numel ≤ file size, so both fit in Index unless one is 0 and the other huge.
        constexpr auto kMax = std::uint64_t(std::numeric_limits<Index>::max());
        if (rows > kMax || cols > kMax)
            fail_tensor(name, "has shape " + shape_text(t.shape) + ", too large for a matrix");
        Mat<T> m(static_cast<Index>(rows), static_cast<Index>(cols));
        detail::decode(t.dtype, file_->data() + data_offset_ + t.begin, std::size_t(t.numel),
                       m.data());
        return m;
    }

    /// Absolute offset of `name`'s key in the header (for error messages), or of the header.
    std::uint64_t header_offset_of(const std::string& name) const {
        const std::string_view header(reinterpret_cast<const char*>(file_->data()) + 8,
                                      std::size_t(data_offset_ - 8));
        const std::string key =
            nlohmann::json(name).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        const std::size_t at = header.find(key);
        return at == std::string_view::npos ? 8 : 8 + at;
    }

private:
    [[noreturn]] void fail_tensor(const std::string& name, const std::string& what) const {
        throw FormatError::at(path(), header_offset_of(name), "tensor '" + name + "' " + what);
    }

    void require_weight_dtype(const std::string& name, const TensorInfo& t) const {
        if (!is_weight_dtype(t.dtype))
            fail_tensor(name, "has dtype " + std::string(dtype_name(t.dtype)) +
                                  "; only F32, F16 and BF16 tensors can be read as weights");
    }

    /// The entry of `name`, checked to be a float tensor of shape [rows, cols] (or [cols] when
    /// rows is 1).
    const TensorInfo& checked(const std::string& name, Index rows, Index cols) const {
        const TensorInfo& t = info(name);
        require_weight_dtype(name, t);
        const bool ok = rows >= 0 && cols >= 0 &&
                        ((t.shape.size() == 2 && t.shape[0] == std::uint64_t(rows) &&
                          t.shape[1] == std::uint64_t(cols)) ||
                         (t.shape.size() == 1 && rows == 1 && t.shape[0] == std::uint64_t(cols)));
        if (!ok)
            fail_tensor(name,
                        "has shape " + shape_text(t.shape) + "; expected " +
                            shape_string(rows, cols) +
                            (rows == 1 ? " or [" + std::to_string(cols) + "]" : std::string()));
        return t;
    }

    void parse();

    std::shared_ptr<const MappedFile> file_;
    std::map<std::string, TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
    std::uint64_t data_offset_ = 8;
};

inline void SafetensorsFile::parse() {
    using nlohmann::json;
    const std::string& file = path();
    ByteReader in(file_->bytes(), file);
    const std::uint64_t n = in.read<std::uint64_t>();  // "truncated" below 8 bytes
    if (n > in.remaining())
        in.fail_at(0, "header length " + std::to_string(n) + " runs past the end of the file (" +
                          std::to_string(in.remaining()) + " bytes follow the 8-byte length)");
    if (n > detail::kMaxHeaderBytes)
        in.fail_at(0, "header length " + std::to_string(n) + " exceeds the limit of " +
                          std::to_string(detail::kMaxHeaderBytes) + " bytes");
    const std::string_view header = in.chars(std::size_t(n));
    data_offset_ = 8 + n;
    const std::uint64_t buffer_size = file_->size() - data_offset_;
    if (header.empty() || header.front() != '{')
        in.fail_at(8, "the header must be a JSON object starting with '{'");

    // Parse, rejecting duplicate keys at any level (the spec forbids them; nlohmann would keep
    // the last one silently). Keys seen so far, one set per open object.
    struct DuplicateKey {
        std::string key;
    };
    std::vector<std::set<std::string>> open_objects;
    const json::parser_callback_t reject_duplicates = [&](int, json::parse_event_t event,
                                                          json& parsed) {
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        if (event == json::parse_event_t::object_end && !open_objects.empty())
            open_objects.pop_back();
        if (event == json::parse_event_t::key && !open_objects.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second)
            throw DuplicateKey{parsed.get<std::string>()};
        return true;
    };
    json root;
    try {
        root = json::parse(header.begin(), header.end(), reject_duplicates);
    } catch (const json::parse_error& e) {
        const std::uint64_t at = e.byte == 0 ? 0 : std::min<std::uint64_t>(e.byte - 1, n);
        in.fail_at(std::size_t(8 + at), std::string("the header is not valid JSON: ") + e.what());
    } catch (const json::exception& e) {
        in.fail_at(8, std::string("the header is not valid JSON: ") + e.what());
    } catch (const DuplicateKey& d) {
        // Report where the second copy of the key is.
        const std::string key = json(d.key).dump();
        const std::size_t first = header.find(key);
        const std::size_t second =
            first == std::string_view::npos ? first : header.find(key, first + 1);
        in.fail_at(std::size_t(8 + (second == std::string_view::npos ? 0 : second)),
                   "duplicate key " + key + " in the header");
    }
    if (!root.is_object())  // unreachable after the '{' check, kept as a guard
        in.fail_at(
            8, std::string("the header is a JSON ") + root.type_name() + ", expected an object");

    // Checks of one entry; errors point at the entry's key in the header.
    auto key_offset = [&](const std::string& key) {
        const std::size_t at = header.find(json(key).dump());
        return std::size_t(8 + (at == std::string_view::npos ? 0 : at));
    };
    for (const auto& item : root.items()) {
        // Named references, not a structured binding: clang before 16 cannot capture a
        // binding in the lambdas below.
        const std::string& name = item.key();
        const json& entry = item.value();
        if (name == "__metadata__") {
            if (!entry.is_object())
                in.fail_at(key_offset(name), "__metadata__ is " + detail::brief(entry) +
                                                 ", expected an object of strings");
            for (const auto& [k, v] : entry.items()) {
                if (!v.is_string())
                    in.fail_at(key_offset(name), "__metadata__ value of '" + k + "' is " +
                                                     detail::brief(v) + ", expected a string");
                metadata_[k] = v.get<std::string>();
            }
            continue;
        }
        auto fail = [&](const std::string& what) -> void {
            in.fail_at(key_offset(name), "tensor '" + name + "': " + what);
        };
        if (!entry.is_object())
            fail("entry is " + detail::brief(entry) +
                 ", expected an object with dtype, shape and data_offsets");
        auto field = [&](const char* key) -> const json& {
            const auto it = entry.find(key);
            if (it == entry.end()) fail(std::string("missing \"") + key + "\"");
            return *it;
        };
        // Non-negative integer list; nlohmann parses those as number_unsigned.
        auto integers = [&](const char* key, const json& list) {
            if (!list.is_array())
                fail(std::string("\"") + key + "\" is " + detail::brief(list) +
                     ", expected a list of non-negative integers");
            std::vector<std::uint64_t> out;
            for (std::size_t i = 0; i < list.size(); ++i) {
                if (!list[i].is_number_unsigned())
                    fail(std::string("\"") + key + "\"[" + std::to_string(i) + "] is " +
                         detail::brief(list[i]) + ", expected a non-negative integer");
                out.push_back(list[i].get<std::uint64_t>());
            }
            return out;
        };
        TensorInfo t;
        const json& dtype = field("dtype");
        if (!dtype.is_string())
            fail("\"dtype\" is " + detail::brief(dtype) + ", expected a string");
        const auto known = dtype_from_name(dtype.get<std::string>());
        if (!known)
            fail("unknown dtype " + detail::brief(dtype) +
                 " (known: BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64)");
        t.dtype = *known;
        t.shape = integers("shape", field("shape"));
        const std::vector<std::uint64_t> offsets = integers("data_offsets", field("data_offsets"));
        if (offsets.size() != 2)
            fail("\"data_offsets\" has " + std::to_string(offsets.size()) +
                 " entries, expected 2 ([begin, end])");
        t.begin = offsets[0];
        t.end = offsets[1];
        std::optional<std::uint64_t> numel = 1;
        for (std::uint64_t d : t.shape) numel = numel ? detail::checked_mul(*numel, d) : numel;
        const auto bytes = numel ? detail::checked_mul(*numel, dtype_size(t.dtype)) : numel;
        if (!bytes) fail("shape " + shape_text(t.shape) + " has more bytes than fit in 64 bits");
        t.numel = *numel;
        if (t.end < t.begin)
            fail("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 "] end before they begin");
        if (t.end - t.begin != *bytes)
            fail("shape " + shape_text(t.shape) + " of " + std::string(dtype_name(t.dtype)) +
                 " needs " + std::to_string(*bytes) + " bytes, but data_offsets [" +
                 std::to_string(t.begin) + ", " + std::to_string(t.end) + "] hold " +
                 std::to_string(t.end - t.begin));
        if (t.end > buffer_size)
            fail("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 "] run past the end of the data buffer (" + std::to_string(buffer_size) +
                 " bytes from byte " + std::to_string(data_offset_) + "): truncated file?");
        tensors_.emplace(name, std::move(t));
    }

    // The tensors must tile the buffer: sorted by offset, each starts where the previous ends.
    std::vector<std::pair<const std::string*, const TensorInfo*>> order;
    for (const auto& [name, t] : tensors_) order.emplace_back(&name, &t);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        return std::pair(a.second->begin, a.second->end) <
               std::pair(b.second->begin, b.second->end);
    });
    std::uint64_t at = 0;
    const std::string* previous = nullptr;
    for (const auto& [name, t] : order) {
        auto range = [](const TensorInfo& x) {
            return "[" + std::to_string(x.begin) + ", " + std::to_string(x.end) + ")";
        };
        if (t->begin < at)
            in.fail_at(std::size_t(data_offset_ + t->begin),
                       "tensor '" + *name + "' (data bytes " + range(*t) + ") overlaps tensor '" +
                           *previous + "' (data bytes " + range(tensors_.at(*previous)) + ")");
        if (t->begin > at)
            in.fail_at(std::size_t(data_offset_ + at),
                       "data bytes [" + std::to_string(at) + ", " + std::to_string(t->begin) +
                           ") belong to no tensor (a hole before tensor '" + *name +
                           "'); tensors must cover the data buffer contiguously");
        at = t->end;
        previous = name;
    }
    if (at != buffer_size)
        in.fail_at(std::size_t(data_offset_ + at), std::to_string(buffer_size - at) +
                                                       " trailing bytes after the last tensor (the "
                                                       "tensors cover " +
                                                       std::to_string(at) + " of the " +
                                                       std::to_string(buffer_size) +
                                                       " data bytes)");
}

// ------------------------------------------------------------------------------------------------
// Writing

namespace detail {

/// Whether `name` is one of AtomicFile's temporary names for the destination file `base`:
/// "<base>.tmp-" and 8 lowercase hex digits.
inline bool is_temporary_name_of(std::string_view name, std::string_view base) {
    constexpr std::string_view kMark = ".tmp-";
    if (name.size() != base.size() + kMark.size() + 8 || !name.starts_with(base) ||
        name.substr(base.size(), kMark.size()) != kMark)
        return false;
    for (char c : name.substr(base.size() + kMark.size()))
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

/// Remove the temporary files that killed saves to `path` left behind. A live save holds an
/// exclusive flock on its temporary file from creation to rename, and the lock dies with its
/// process: a temporary file that can be locked has no writer left and goes. Best effort: errors
/// leave a file where it is, they never fail the save.
inline void remove_stale_temporaries(const std::string& path) {
    namespace fs = std::filesystem;
    const fs::path dest(path);
    const std::string base = dest.filename().string();
    const fs::path folder = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!is_temporary_name_of(name, base)) continue;
        const std::string stale = it->path().string();
        const int fd = ::open(stale.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        // Locked, and the name still leads to this very file (its writer may have renamed it into
        // place between our open and our lock): then nobody is writing it.
        struct stat held {
        }, named{};
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &held) == 0 &&
            ::lstat(stale.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
            held.st_ino == named.st_ino)
            (void)::unlink(stale.c_str());
        ::close(fd);
    }
}

/// A file written under a temporary name (`<path>.tmp-XXXXXXXX`) in the destination's folder and
/// renamed into place by commit(); destroyed before commit(), it removes the temporary file.
/// Creating one first removes the temporary files of earlier saves to `path` that were killed
/// (see remove_stale_temporaries), so leftovers never pile up: at most one per destination, until
/// its next save. Errors throw IoError naming the destination.
class AtomicFile {
public:
    explicit AtomicFile(std::string path) : path_(std::move(path)) {
        remove_stale_temporaries(path_);
        // A random suffix; O_EXCL makes a clash fail instead of sharing a file, so retry.
        std::random_device rd;
        std::mt19937_64 gen(
            (std::uint64_t(rd()) << 32) ^ rd() ^ std::uint64_t(::getpid()) ^
            std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
        for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
            char suffix[16];
            std::snprintf(suffix, sizeof suffix, "%08llx",
                          static_cast<unsigned long long>(gen() & 0xFFFFFFFFu));
            temp_ = path_ + ".tmp-" + suffix;
            do {
                fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            } while (fd_ < 0 && errno == EINTR);
            if (fd_ < 0 && errno != EEXIST) fail("cannot create a temporary file for");
            if (fd_ >= 0 && !lock_temporary()) {
                ::close(fd_);  // another save's cleanup removed it before we locked it: retry
                fd_ = -1;
            }
        }
        if (fd_ < 0) fail("cannot create a temporary file for");
    }

    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    ~AtomicFile() {
        // Unlink while the lock is still held, then close (which releases it).
        if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
        if (fd_ >= 0) ::close(fd_);
    }

    void write(const void* data, std::size_t n) {
        const char* p = static_cast<const char*>(data);
        while (n > 0) {
            const ssize_t w = ::write(fd_, p, std::min<std::size_t>(n, std::size_t(1) << 30));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) fail("cannot write");
            p += w;
            n -= std::size_t(w);
        }
    }

    /// fsync, rename over the destination, close, fsync the folder (so the rename survives a
    /// crash; best effort, some filesystems refuse to fsync a folder). The rename comes before the
    /// close so that the lock covers the file for as long as it has its temporary name.
    void commit() {
        if (::fsync(fd_) != 0) fail("cannot sync");
        if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("cannot rename a temporary file to");
        committed_ = true;
        // The data is on disk (fsync above) and in place: a failing close changes nothing.
        (void)::close(std::exchange(fd_, -1));
        const std::string folder = std::filesystem::path(path_).parent_path().string();
        const int dir =
            ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0) {
            (void)::fsync(dir);
            ::close(dir);
        }
    }

    const std::string& temp_path() const { return temp_; }

private:
    [[noreturn]] void fail(const char* what) const { throw io_error(what, path_, errno); }

    // Takes the lock that marks the temporary file as in use; false when the file was removed
    // between its creation and the lock (remove_stale_temporaries of a concurrent save to the same
    // destination can lock it in that instant).
    bool lock_temporary() {
        int rc;
        do {
            rc = ::flock(fd_, LOCK_EX);
        } while (rc != 0 && errno == EINTR);
        if (rc != 0) return true;  // no locks here (some network filesystems): carry on unlocked
        struct stat held {
        }, named{};
        return ::fstat(fd_, &held) == 0 && ::lstat(temp_.c_str(), &named) == 0 &&
               held.st_dev == named.st_dev && held.st_ino == named.st_ino;
    }

    std::string path_, temp_;
    int fd_ = -1;
    bool committed_ = false;
};

}  // namespace detail

/// One tensor to write: float data stored as F32, F16 or BF16. `data` holds numel(shape) floats,
/// row-major, and must stay valid until write_safetensors returns.
struct TensorSource {
    Dtype dtype = Dtype::kF32;
    std::vector<std::uint64_t> shape;
    const float* data = nullptr;

    TensorSource(Dtype dtype_, std::vector<std::uint64_t> shape_, const float* data_)
        : dtype(dtype_), shape(std::move(shape_)), data(data_) {}
    /// A matrix as a [rows, cols] tensor.
    TensorSource(const Mat<float>& m, Dtype dtype_ = Dtype::kF32)  // NOLINT: implicit by design
        : dtype(dtype_), shape{std::uint64_t(m.rows()), std::uint64_t(m.cols())}, data(m.data()) {}
    TensorSource(Mat<float>&&, Dtype = Dtype::kF32) = delete;  // would dangle
};

/// Write `tensors` (name -> source) and optional string metadata to `path` atomically (see the
/// top of this file). Throws ConfigError for unusable input (dtype other than F32/F16/BF16, null
/// data, the name "__metadata__", a name that is not UTF-8) before touching the disk, IoError
/// naming the path when the system refuses a step; either way `path` is left as it was.
inline void write_safetensors(const std::string& path,
                              const std::map<std::string, TensorSource>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    using Json = nlohmann::ordered_json;  // keeps the reference's key order
    const std::string who = "write_safetensors '" + path + "': ";
    std::vector<std::pair<const std::string*, const TensorSource*>> order;
    for (const auto& [name, t] : tensors) {
        if (name == "__metadata__") throw ConfigError(who + "'__metadata__' cannot name a tensor");
        if (!is_weight_dtype(t.dtype))
            throw ConfigError(who + "tensor '" + name + "': cannot store floats as " +
                              std::string(dtype_name(t.dtype)) + " (use F32, F16 or BF16)");
        order.emplace_back(&name, &t);
    }
    // Like the reference: wider dtypes first (so each tensor is aligned to its element size),
    // then by name.
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        return a.second->dtype > b.second->dtype;
    });

    Json header = Json::object();
    if (!metadata.empty()) {
        Json m = Json::object();
        for (const auto& [k, v] : metadata) m[k] = v;
        header["__metadata__"] = std::move(m);
    }
    std::uint64_t offset = 0;
    for (const auto& [name, t] : order) {
        std::optional<std::uint64_t> numel = 1;
        for (std::uint64_t d : t->shape) numel = numel ? detail::checked_mul(*numel, d) : numel;
        const auto bytes = numel ? detail::checked_mul(*numel, dtype_size(t->dtype)) : numel;
        if (!bytes || offset + *bytes < offset)
            throw ConfigError(who + "tensor '" + *name + "': shape " + shape_text(t->shape) +
                              " is too large");
        if (*numel > 0 && t->data == nullptr)
            throw ConfigError(who + "tensor '" + *name + "' has no data");
        header[*name] = Json{{"dtype", std::string(dtype_name(t->dtype))},
                             {"shape", t->shape},
                             {"data_offsets", {offset, offset + *bytes}}};
        offset += *bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const Json::exception& e) {  // invalid UTF-8 in a name or metadata
        throw ConfigError(who + "names and metadata must be UTF-8: " + e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');

    detail::AtomicFile out(path);
    std::array<std::byte, 8> length{};
    for (int i = 0; i < 8; ++i)
        length[std::size_t(i)] = std::byte(std::uint64_t(text.size()) >> (8 * i));
    out.write(length.data(), length.size());
    out.write(text.data(), text.size());
    // Elements go out through a 1 MiB buffer (little-endian encoding, F16/BF16 rounding).
    constexpr std::size_t kChunk = std::size_t(1) << 18;  // elements
    std::vector<std::byte> buffer;
    for (const auto& [name, t] : order) {
        std::size_t numel = 1;
        for (std::uint64_t d : t->shape) numel *= std::size_t(d);  // checked above
        if (t->dtype == Dtype::kF32 && std::endian::native == std::endian::little) {
            out.write(t->data, numel * sizeof(float));
            continue;
        }
        const std::size_t size = dtype_size(t->dtype);
        buffer.resize(std::min(numel, kChunk) * size);
        for (std::size_t start = 0; start < numel; start += kChunk) {
            const std::size_t n = std::min(kChunk, numel - start);
            for (std::size_t i = 0; i < n; ++i) {
                const float v = t->data[start + i];
                const std::uint32_t bits = t->dtype == Dtype::kF32 ? std::bit_cast<std::uint32_t>(v)
                                           : t->dtype == Dtype::kF16 ? float_to_half_bits(v)
                                                                     : float_to_bf16_bits(v);
                for (std::size_t b = 0; b < size; ++b)
                    buffer[i * size + b] = std::byte((bits >> (8 * b)) & 0xFFu);
            }
            out.write(buffer.data(), n * size);
        }
    }
    out.commit();
}

}  // namespace softprompt::io
