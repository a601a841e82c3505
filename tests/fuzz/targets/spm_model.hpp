#pragma once
// SentencePiece tokenizer.model: load_sentencepiece_model on bytes in memory (the protobuf
// reader: varints, lengths, nested messages, unknown fields), then encode and decode.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/tok/spm_model.hpp"

namespace softprompt_fuzz {

/// One input of the spm_model target (see the top of this file).
inline void spm_model(std::string_view input) {
    using namespace softprompt;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(input.data()),
                                           input.size());
    try {
        const tok::SpmTokenizer spm = tok::load_sentencepiece_model(bytes, "fuzz.model");
        for (const char* text :
             {"", "Once upon a time", "  two  spaces \t\n\xE2\x96\x81\xFF\xC3"}) {
            const std::vector<std::int32_t> ids = spm.encode(text, true, true);
            (void)spm.decode(ids);
        }
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
