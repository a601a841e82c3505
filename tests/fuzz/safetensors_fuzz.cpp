// libFuzzer entry point of the safetensors target; the target itself is targets/safetensors.hpp,
// which tests/fuzz_regression_test.cpp also runs on every input in regressions/safetensors/.

#include <cstddef>
#include <cstdint>

#include "targets/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::safetensors(softprompt_fuzz::as_text(data, size));
    return 0;
}
