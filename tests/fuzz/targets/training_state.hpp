#pragma once
// Training-state files: load_training_state (a safetensors file whose metadata holds a JSON
// description of the step, the data position, the optimizer and the tensors' names).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../fuzz_util.hpp"
#include "softprompt/train/training_state.hpp"

namespace softprompt_fuzz {

/// One input of the training_state target (see the top of this file).
inline void training_state(std::string_view input) {
    using namespace softprompt;
    const std::string path = softprompt_fuzz::scratch_file(train::kTrainingState, input);
    try {
        (void)train::load_training_state(path);
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
