#pragma once
// Read-only file mapping and a bounds-checked little-endian reader: the two pieces every model and
// tokenizer loader (llama2.c, safetensors, GGUF) is built on.
//
// MappedFile
//   Opens a regular file read-only and maps all of it with mmap(PROT_READ, MAP_PRIVATE). Frozen
//   weights viewed through `ConstMap`/`WeightView` over this memory are physically unwritable: a
//   store through a cast-away const faults (SIGSEGV) instead of silently changing the model. Pages
//   are loaded lazily by the kernel and shared with the page cache, so mapping a large model costs
//   no copy and no up-front read. The mapping stays valid after the descriptor is closed (it is
//   closed right after mmap) and until the MappedFile is destroyed; views into it must not outlive
//   it. An empty file is not mapped (mmap of 0 bytes fails): data() is nullptr and size() is 0.
//   Caveat (POSIX): if another process truncates the file while it is mapped, touching the lost
//   pages raises SIGBUS; replace model files by rename, never by rewriting them in place.
//
// ByteReader
//   A cursor over a byte span that reads fixed-width little-endian values (`read<std::int32_t>()`,
//   `read<float>()`, `read<std::uint64_t>()`, ...), raw byte runs and character runs. Every read is
//   checked against the end of the span; running past it throws
//   `FormatError::at(name, offset, "truncated: ...")` with the offset where the read began. Loaders
//   report their own format errors at the cursor with `fail(...)`, so every message names the file
//   and the byte.
//
// Threads: a MappedFile is immutable once built and its bytes are read-only, so any number of
// threads may read one. A ByteReader is a cursor: one per thread.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "softprompt/error.hpp"

namespace softprompt::io {

namespace detail {

/// "<what> '<path>': <strerror(err)>" as an IoError.
inline IoError io_error(std::string_view what, const std::string& path, int err) {
    return IoError(std::string(what) + " '" + path +
                   "': " + std::error_code(err, std::generic_category()).message());
}

}  // namespace detail

/// A whole file mapped read-only (PROT_READ, MAP_PRIVATE). Move-only; unmapped on destruction.
class MappedFile {
public:
    /// An empty mapping with no path (the state a moved-from MappedFile is left in).
    MappedFile() noexcept = default;

    /// Opens and maps `path`. Throws IoError naming the path and the system's reason when the file
    /// cannot be opened, is not a regular file, or cannot be mapped.
    explicit MappedFile(std::string path) : path_(std::move(path)) {
        int fd = -1;
        do {
            fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0) throw detail::io_error("cannot open", path_, errno);

        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int err = errno;
            ::close(fd);
            throw detail::io_error("cannot stat", path_, err);
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            throw IoError("cannot map '" + path_ + "': not a regular file");
        }
        if (static_cast<std::uintmax_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
            ::close(fd);
            throw IoError("cannot map '" + path_ + "': file of " + std::to_string(st.st_size) +
                          " bytes does not fit in the address space");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int err = errno;
                ::close(fd);
                throw detail::io_error("cannot mmap", path_, err);
            }
            data_ = static_cast<const std::byte*>(p);
        }
        ::close(fd);  // the mapping keeps its own reference to the file
    }

    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    MappedFile(MappedFile&& other) noexcept
        : path_(std::move(other.path_)),
          data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)) {
        other.path_.clear();
    }

    MappedFile& operator=(MappedFile&& other) noexcept {
        if (this != &other) {
            unmap();
            path_ = std::move(other.path_);
            other.path_.clear();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }

    ~MappedFile() { unmap(); }

    /// First byte of the file; nullptr when the file is empty (or nothing is mapped).
    [[nodiscard]] const std::byte* data() const noexcept { return data_; }
    /// File size in bytes.
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    /// The whole file as a read-only span.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    /// The path the file was opened with (for error messages).
    [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
    void unmap() noexcept {
        if (data_ != nullptr) {
            // munmap takes a non-const pointer; the memory is never written.
            ::munmap(const_cast<std::byte*>(data_), size_);
            data_ = nullptr;
        }
        size_ = 0;
    }

    std::string path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

namespace detail {

/// Name of a fixed-width type for truncation messages ("int32", "float32", ...).
template <class T>
constexpr std::string_view type_name() {
    if constexpr (std::is_same_v<T, float>) {
        return "float32";
    } else if constexpr (std::is_same_v<T, double>) {
        return "float64";
    } else if constexpr (std::is_integral_v<T>) {
        constexpr std::array<std::string_view, 4> s = {"int8", "int16", "int32", "int64"};
        constexpr std::array<std::string_view, 4> u = {"uint8", "uint16", "uint32", "uint64"};
        constexpr std::size_t i = sizeof(T) == 1 ? 0 : sizeof(T) == 2 ? 1 : sizeof(T) == 4 ? 2 : 3;
        return std::is_signed_v<T> ? s[i] : u[i];
    } else {
        return "value";
    }
}

}  // namespace detail

/// Values ByteReader::read can decode: fixed-width integers and IEEE floats (not bool).
template <class T>
concept LittleEndianValue = std::is_arithmetic_v<T> && !std::is_same_v<T, bool> &&
                            (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8);

/// Bounds-checked cursor over a byte span; reads little-endian values. Does not own the bytes.
class ByteReader {
public:
    /// `name` (usually the file path) prefixes every error message.
    ByteReader(std::span<const std::byte> data, std::string name)
        : data_(data), name_(std::move(name)) {}

    /// Reads one little-endian value and advances past it.
    template <LittleEndianValue T>
    T read() {
        const std::byte* p = take(sizeof(T), detail::type_name<T>());
        std::array<std::byte, sizeof(T)> raw{};
        std::memcpy(raw.data(), p, sizeof(T));
        if constexpr (std::endian::native == std::endian::big) {
            for (std::size_t i = 0; i < sizeof(T) / 2; ++i)
                std::swap(raw[i], raw[sizeof(T) - 1 - i]);
        }
        return std::bit_cast<T>(raw);
    }

    /// The next `n` bytes as a view into the underlying span; advances past them.
    std::span<const std::byte> bytes(std::size_t n) {
        const std::byte* p = take(n, "bytes");
        return {p, n};
    }

    /// The next `n` bytes viewed as characters (a string stored without terminator).
    std::string_view chars(std::size_t n) {
        const std::byte* p = take(n, "characters");
        return {reinterpret_cast<const char*>(p), n};
    }

    /// Advances `n` bytes without reading them.
    void skip(std::size_t n) { (void)take(n, "bytes (skipped)"); }

    /// Moves the cursor to an absolute offset (at most size()).
    void seek(std::size_t offset) {
        if (offset > data_.size()) {
            fail("cannot seek to byte " + std::to_string(offset) + ": the data is only " +
                 std::to_string(data_.size()) + " bytes");
        }
        offset_ = offset;
    }

    [[nodiscard]] std::size_t offset() const noexcept { return offset_; }
    [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - offset_; }
    [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
    [[nodiscard]] bool at_end() const noexcept { return offset_ == data_.size(); }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

    /// Throws FormatError::at(name, offset(), what): a format error at the cursor.
    [[noreturn]] void fail(std::string_view what) const { fail_at(offset_, what); }

    /// Throws FormatError::at(name, offset, what): a format error at an earlier position.
    [[noreturn]] void fail_at(std::size_t offset, std::string_view what) const {
        throw FormatError::at(name_, offset, what);
    }

private:
    const std::byte* take(std::size_t n, std::string_view what) {
        if (n > remaining()) {
            fail("truncated: need " + std::to_string(n) + " byte" + (n == 1 ? "" : "s") + " for " +
                 std::string(what) + ", only " + std::to_string(remaining()) + " left");
        }
        const std::byte* p = data_.data() + offset_;
        offset_ += n;
        return p;
    }

    std::span<const std::byte> data_;
    std::string name_;
    std::size_t offset_ = 0;
};

}  // namespace softprompt::io
