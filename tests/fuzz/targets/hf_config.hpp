#pragma once
// Hugging Face config.json: read_hf_config (JSON parsing, then parse_hf_config's field checks).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../fuzz_util.hpp"
#include "softprompt/io/hf_config.hpp"

namespace softprompt_fuzz {

/// One input of the hf_config target (see the top of this file).
inline void hf_config(std::string_view input) {
    using namespace softprompt;
    const std::string path = softprompt_fuzz::scratch_file("config.json", input);
    try {
        const io::HfConfig c = io::read_hf_config(path);
        // What is accepted must describe a model the library can write back.
        (void)io::hf_config_json(c.family, c.config);
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
