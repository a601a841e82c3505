#pragma once
// Where tests find their data: golden files made by tests/reference/ (in the repository) and the
// real models and tokenizer vectors of the shared assets folder (beside the repository, absent
// from a user's fresh clone: tests that need it skip).

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

/// Skip the current test, saying why, when a shared asset is missing.
#define SOFTPROMPT_REQUIRE_ASSET(path)                                                         \
    if (!std::filesystem::exists(path))                                                        \
    GTEST_SKIP() << "shared test asset not found: " << (path)                                  \
                 << " (the assets folder sits beside the repository as ../shared/assets; set " \
                    "SOFTPROMPT_ASSETS to point elsewhere)"
