// libFuzzer entry point of the hf_tokenizer target; the target itself is targets/hf_tokenizer.hpp,
// which tests/fuzz_regression_test.cpp also runs on every input in regressions/hf_tokenizer/.

#include <cstddef>
#include <cstdint>

#include "targets/hf_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::hf_tokenizer(softprompt_fuzz::as_text(data, size));
    return 0;
}
