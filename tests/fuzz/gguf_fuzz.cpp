// libFuzzer entry point of the gguf target; the target itself is targets/gguf.hpp, which
// tests/fuzz_regression_test.cpp also runs on every input in regressions/gguf/.

#include <cstddef>
#include <cstdint>

#include "targets/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::gguf(softprompt_fuzz::as_text(data, size));
    return 0;
}
