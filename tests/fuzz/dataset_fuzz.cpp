// libFuzzer entry point of the dataset target; the target itself is targets/dataset.hpp, which
// tests/fuzz_regression_test.cpp also runs on every input in regressions/dataset/.

#include <cstddef>
#include <cstdint>

#include "targets/dataset.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::dataset(softprompt_fuzz::as_text(data, size));
    return 0;
}
