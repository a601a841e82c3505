// libFuzzer entry point of the hf_config target; the target itself is targets/hf_config.hpp, which
// tests/fuzz_regression_test.cpp also runs on every input in regressions/hf_config/.

#include <cstddef>
#include <cstdint>

#include "targets/hf_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::hf_config(softprompt_fuzz::as_text(data, size));
    return 0;
}
