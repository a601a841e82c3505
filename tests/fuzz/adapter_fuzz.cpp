// libFuzzer entry point of the adapter target; the target itself is targets/adapter.hpp, which
// tests/fuzz_regression_test.cpp also runs on every input in regressions/adapter/.

#include <cstddef>
#include <cstdint>

#include "targets/adapter.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::adapter(softprompt_fuzz::as_text(data, size));
    return 0;
}
