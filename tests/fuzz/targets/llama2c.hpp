#pragma once
// llama2.c checkpoints: load_llama2c (header checks, size arithmetic, weight views) on any bytes,
// in float (views into the mapping) and double (converted copies).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../fuzz_util.hpp"
#include "softprompt/io/llama2c.hpp"

namespace softprompt_fuzz {

/// One input of the llama2c target (see the top of this file).
inline void llama2c(std::string_view input) {
    using namespace softprompt;
    const std::string path = softprompt_fuzz::scratch_file("model.bin", input);
    try {
        const auto model = io::load_llama2c<float>(path);
        // Touch the last weight: a view past the mapping would be an ASan report here.
        const auto& head = model.weights.head;
        if (head.rows > 0 && head.cols > 0) {
            volatile float last = head.data[head.rows * head.cols - 1];
            (void)last;
        }
        (void)io::load_llama2c<double>(path);
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
