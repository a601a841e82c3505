// libFuzzer entry point of the llama2c_tokenizer target; the target itself is
// targets/llama2c_tokenizer.hpp, which tests/fuzz_regression_test.cpp also runs on every input in
// regressions/llama2c_tokenizer/.

#include <cstddef>
#include <cstdint>

#include "targets/llama2c_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::llama2c_tokenizer(softprompt_fuzz::as_text(data, size));
    return 0;
}
