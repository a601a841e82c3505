#pragma once
// Hugging Face tokenizer.json: BpeTokenizer::from_hf_json_text, then encode (special tokens as
// text and recognised) and decode.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/tok/bpe.hpp"

namespace softprompt_fuzz {

/// One input of the bpe_hf_json target (see the top of this file).
inline void bpe_hf_json(std::string_view input) {
    using namespace softprompt;
    try {
        const tok::BpeTokenizer bpe = tok::BpeTokenizer::from_hf_json_text(input, "fuzz.json");
        for (const auto special : {tok::SpecialTokens::as_text, tok::SpecialTokens::recognised}) {
            const std::vector<std::int32_t> ids =
                bpe.encode("Hello world<|endoftext|> it's 42\n\n \xC3\xA9\xFF", special);
            (void)bpe.decode(ids);
        }
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
