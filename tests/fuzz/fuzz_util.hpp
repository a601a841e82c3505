#pragma once
// What every fuzz target shares: writing the input to a scratch file for parsers that only read
// from a path, and cutting one input into two files.
//
// The contract every target enforces: on any bytes, a parser either succeeds or throws a
// softprompt::Error subclass. Targets catch `const softprompt::Error&` and nothing else, so any
// other exception (nlohmann::json's, std::out_of_range, std::bad_alloc, std::length_error)
// escapes and libFuzzer reports it as a crash, as it does sanitizer reports and timeouts.

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "softprompt/error.hpp"

namespace softprompt_fuzz {

/// Called with every error a parser throws. Silent unless SOFTPROMPT_FUZZ_VERBOSE is set, which
/// shows why each input was rejected (run a target on one file to see whether a seed loads).
inline void rejected(const softprompt::Error& e) {
    static const bool verbose = std::getenv("SOFTPROMPT_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

/// A scratch folder private to this process, in memory (/dev/shm) when there is one: the loaders
/// that map files get a real file, at the cost of a write per input.
inline const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        namespace fs = std::filesystem;
        const fs::path base =
            fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        const std::string prefix = "softprompt-fuzz-";
        // libFuzzer often ends with _Exit (no atexit handlers), and a crash ends anywhere: remove
        // the folders of earlier processes that are gone, then make ours.
        std::error_code ec;
        for (const auto& entry : fs::directory_iterator(base, ec)) {
            const std::string name = entry.path().filename().string();
            if (name.rfind(prefix, 0) != 0) continue;
            const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
            if (pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH)
                fs::remove_all(entry.path(), ec);
        }
        fs::path d = base / (prefix + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

/// Writes `bytes` to `path` (replacing it). A failure here is the harness's, not the parser's:
/// it aborts with a plain runtime_error, which libFuzzer reports.
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) throw std::runtime_error("fuzz harness: cannot create " + path.string());
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    if (std::fclose(f) != 0 || !ok)
        throw std::runtime_error("fuzz harness: cannot write " + path.string());
}

/// `bytes` written to scratch_dir()/name; returns the path.
inline std::string scratch_file(const std::string& name, std::string_view bytes) {
    const std::filesystem::path path = scratch_dir() / name;
    write_file(path, bytes);
    return path.string();
}

/// Marker between the two parts of a two-file input (a NUL keeps it out of real text files).
inline constexpr std::string_view kSplit = std::string_view("\0SPLIT\0", 7);

/// The input cut at the first kSplit: (before, after). Without a marker the second part is empty.
inline std::pair<std::string_view, std::string_view> split(std::string_view input) {
    const std::size_t at = input.find(kSplit);
    if (at == std::string_view::npos) return {input, {}};
    return {input.substr(0, at), input.substr(at + kSplit.size())};
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace softprompt_fuzz
