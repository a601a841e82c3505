#pragma once
// Where tests find their data. Everything the suite needs is in the repository, under tests/data/
// (golden files made by tests/reference/, and small real models, tokenizers, reference outputs and
// texts copied from their sources; tests/data/README.md gives each one's origin, licence and
// sha256). A missing file there is a broken checkout: the test fails, naming the file.
//
// Only assets too large to vendor (the Hugging Face tokenizer.json files of several MB) are read
// from the shared assets folder beside the repository (../shared/assets); a test that needs one
// reports itself skipped, naming the missing path, when the folder is absent.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>

namespace softprompt::testing {

namespace detail {

/// The value of the line `key=value` in softprompt_test_paths.txt, which CMake writes beside the
/// test programs (tests/CMakeLists.txt). The folders are read at run time, not compiled in, so that
/// no object file depends on where the checkout is: ccache then serves a clone in another folder.
inline std::optional<std::filesystem::path> configured_path(const std::string& key) {
    std::error_code ec;
    const std::filesystem::path program = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return std::nullopt;
    std::ifstream in(program.parent_path() / "softprompt_test_paths.txt");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key + "=", 0) == 0)
            return std::filesystem::path(line.substr(key.size() + 1));
    return std::nullopt;
}

}  // namespace detail

/// $SOFTPROMPT_TEST_DATA, else the folder CMake was configured with, else tests/data beside this
/// header (a test compiled by hand).
inline std::filesystem::path test_data_dir() {
    if (const char* env = std::getenv("SOFTPROMPT_TEST_DATA")) return env;
    static const std::optional<std::filesystem::path> configured =
        detail::configured_path("test_data");
    if (configured) return *configured;
    return std::filesystem::absolute(__FILE__).parent_path() / "data";
}

/// $SOFTPROMPT_ASSETS, else the folder CMake was configured with, else ../shared/assets.
inline std::filesystem::path assets_dir() {
    if (const char* env = std::getenv("SOFTPROMPT_ASSETS")) return env;
    static const std::optional<std::filesystem::path> configured =
        detail::configured_path("assets");
    if (configured) return *configured;
    return std::filesystem::absolute(__FILE__).parent_path().parent_path().parent_path() /
           "shared" / "assets";
}

}  // namespace softprompt::testing

/// Fail the current test, naming the file, when a vendored file of tests/data is missing.
#define SOFTPROMPT_REQUIRE_DATA(path)                         \
    if (!std::filesystem::exists(path))                       \
    FAIL() << "required test data file not found: " << (path) \
           << " (it is part of the repository: see tests/data/README.md; restore it with git)"

/// Skip the current test, naming the path, when an optional large shared asset is missing.
#define SOFTPROMPT_REQUIRE_ASSET(path)                                                           \
    if (!std::filesystem::exists(path))                                                          \
    GTEST_SKIP() << "optional large asset not found: " << (path)                                 \
                 << " (the shared assets folder sits beside the repository as ../shared/assets;" \
                    " set SOFTPROMPT_ASSETS to point elsewhere)"
