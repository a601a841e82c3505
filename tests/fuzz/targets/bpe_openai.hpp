#pragma once
// OpenAI encoder.json + vocab.bpe: BpeTokenizer::from_openai_text, then encode and decode. The
// input is the two files joined by softprompt_fuzz::kSplit ("\0SPLIT\0").

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/tok/bpe.hpp"

namespace softprompt_fuzz {

/// One input of the bpe_openai target (see the top of this file).
inline void bpe_openai(std::string_view input) {
    using namespace softprompt;
    const auto [encoder, merges] = softprompt_fuzz::split(input);
    try {
        const tok::BpeTokenizer bpe = tok::BpeTokenizer::from_openai_text(
            encoder, merges, "fuzz/encoder.json", "fuzz/vocab.bpe");
        for (const auto special : {tok::SpecialTokens::as_text, tok::SpecialTokens::recognised}) {
            const std::vector<std::int32_t> ids =
                bpe.encode("lower newer<|endoftext|> wider 's\t\t x\xE2\x80", special);
            (void)bpe.decode(ids);
        }
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
