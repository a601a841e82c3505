// libFuzzer entry point of the bpe_hf_json target; the target itself is targets/bpe_hf_json.hpp,
// which tests/fuzz_regression_test.cpp also runs on every input in regressions/bpe_hf_json/.

#include <cstddef>
#include <cstdint>

#include "targets/bpe_hf_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    softprompt_fuzz::bpe_hf_json(softprompt_fuzz::as_text(data, size));
    return 0;
}
