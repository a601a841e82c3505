// libFuzzer entry point of the spm_model target; the target itself is targets/spm_model.hpp,
// which tests/fuzz_regression_test.cpp also runs on every input in regressions/spm_model/.

#include <cstddef>
#include <cstdint>

#include "targets/spm_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::spm_model(softprompt_fuzz::as_text(data, size));
    return 0;
}
