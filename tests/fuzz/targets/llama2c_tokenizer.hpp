#pragma once
// llama2.c tokenizer.bin: SpmTokenizer::from_llama2c on bytes in memory, then encode and decode.
// The vocabulary size is not stored in the file (it comes from the model's header), so the input
// carries it: bytes 0-1 are a little-endian u16 v, vocab_size = 259 + v % 1024; the rest is the
// tokenizer.bin. (tok512.bin is the seed prefixed with FD 00: 259 + 253 = 512.)

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/tok/spm.hpp"

namespace softprompt_fuzz {

/// One input of the llama2c_tokenizer target (see the top of this file).
inline void llama2c_tokenizer(std::string_view input) {
    using namespace softprompt;
    if (input.size() < 2) return;
    const auto* data = reinterpret_cast<const std::uint8_t*>(input.data());
    const std::int32_t vocab_size = 259 + ((data[0] | (data[1] << 8)) % 1024);
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 2,
                                           input.size() - 2);
    try {
        const tok::SpmTokenizer spm =
            tok::SpmTokenizer::from_llama2c(bytes, vocab_size, "fuzz.bin");
        for (const char* text : {"", "Once upon a time", " hi\n\xE2\x96\x81\xFF\xC3"}) {
            const std::vector<std::int32_t> ids = spm.encode(text, true, true);
            (void)spm.decode(ids);
        }
        (void)spm.max_token_length();
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
