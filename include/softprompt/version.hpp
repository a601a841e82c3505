#pragma once

// The library version, defined once here. CMake reads the three numbers below with a regular
// expression (see the top-level CMakeLists.txt), so keep each on its own `#define` line.

#include <string_view>

#define SOFTPROMPT_VERSION_MAJOR 0
#define SOFTPROMPT_VERSION_MINOR 1
#define SOFTPROMPT_VERSION_PATCH 0

// One integer for preprocessor comparisons: MAJOR * 10000 + MINOR * 100 + PATCH.
#define SOFTPROMPT_VERSION \
    (SOFTPROMPT_VERSION_MAJOR * 10000 + SOFTPROMPT_VERSION_MINOR * 100 + SOFTPROMPT_VERSION_PATCH)

#define SOFTPROMPT_DETAIL_STRINGIFY_(x) #x
#define SOFTPROMPT_DETAIL_STRINGIFY(x) SOFTPROMPT_DETAIL_STRINGIFY_(x)

// "MAJOR.MINOR.PATCH" as a string literal.
// clang-format off
#define SOFTPROMPT_VERSION_STRING                             \
    SOFTPROMPT_DETAIL_STRINGIFY(SOFTPROMPT_VERSION_MAJOR)     \
    "." SOFTPROMPT_DETAIL_STRINGIFY(SOFTPROMPT_VERSION_MINOR) \
    "." SOFTPROMPT_DETAIL_STRINGIFY(SOFTPROMPT_VERSION_PATCH)
// clang-format on

namespace softprompt {

inline constexpr int version_major = SOFTPROMPT_VERSION_MAJOR;
inline constexpr int version_minor = SOFTPROMPT_VERSION_MINOR;
inline constexpr int version_patch = SOFTPROMPT_VERSION_PATCH;

// "MAJOR.MINOR.PATCH", e.g. "0.1.0".
inline constexpr std::string_view version_string = SOFTPROMPT_VERSION_STRING;

}  // namespace softprompt
