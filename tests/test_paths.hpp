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

namespace softprompt::testing {

inline std::filesystem::path test_data_dir() {
#ifdef SOFTPROMPT_TEST_DATA_DIR
    return SOFTPROMPT_TEST_DATA_DIR;
#else
    return std::filesystem::absolute(__FILE__).parent_path() / "data";
#endif
}

/// $SOFTPROMPT_ASSETS, else the folder CMake was configured with, else ../shared/assets.
inline std::filesystem::path assets_dir() {
    if (const char* env = std::getenv("SOFTPROMPT_ASSETS")) return env;
#ifdef SOFTPROMPT_ASSETS_DIR
    return SOFTPROMPT_ASSETS_DIR;
#else
    return std::filesystem::absolute(__FILE__).parent_path().parent_path().parent_path() /
           "shared" / "assets";
#endif
}

}  // namespace softprompt::testing

/// Fail the current test, naming the file, when a vendored file of tests/data is missing.
#define SOFTPROMPT_REQUIRE_DATA(path)                                                           \
    if (!std::filesystem::exists(path))                                                         \
    FAIL() << "required test data file not found: " << (path)                                   \
           << " (it is part of the repository: see tests/data/README.md; restore it with git)"

/// Skip the current test, naming the path, when an optional large shared asset is missing.
#define SOFTPROMPT_REQUIRE_ASSET(path)                                                          \
    if (!std::filesystem::exists(path))                                                         \
    GTEST_SKIP() << "optional large asset not found: " << (path)                                \
                 << " (the shared assets folder sits beside the repository as ../shared/assets;" \
                    " set SOFTPROMPT_ASSETS to point elsewhere)"
