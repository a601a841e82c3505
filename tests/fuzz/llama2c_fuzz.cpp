// libFuzzer entry point of the llama2c target; the target itself is targets/llama2c.hpp, which
// tests/fuzz_regression_test.cpp also runs on every input in regressions/llama2c/.

#include <cstddef>
#include <cstdint>

#include "targets/llama2c.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::llama2c(softprompt_fuzz::as_text(data, size));
    return 0;
}
