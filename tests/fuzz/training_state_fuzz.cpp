// libFuzzer entry point of the training_state target; the target itself is
// targets/training_state.hpp, which tests/fuzz_regression_test.cpp also runs on every input in
// regressions/training_state/.

#include <cstddef>
#include <cstdint>

#include "targets/training_state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::training_state(softprompt_fuzz::as_text(data, size));
    return 0;
}
