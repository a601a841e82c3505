// libFuzzer entry point of the bpe_openai target; the target itself is targets/bpe_openai.hpp,
// which tests/fuzz_regression_test.cpp also runs on every input in regressions/bpe_openai/.

#include <cstddef>
#include <cstdint>

#include "targets/bpe_openai.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::bpe_openai(softprompt_fuzz::as_text(data, size));
    return 0;
}
