#pragma once
// Hugging Face tokenizer.json through HfTokenizer (every normalizer, pre-tokenizer, model,
// post-processor and decoder it reads): from_json_text, then encode (special tokens as text and
// recognised, with and without the post-processor's tokens), decode of what came out, and decode
// of the first ids of the vocabulary one by one and all together (malformed byte-fallback tokens,
// added tokens between byte-level ones).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/tok/hf_tokenizer.hpp"

namespace softprompt_fuzz {

/// One input of the hf_tokenizer target (see the top of this file).
inline void hf_tokenizer(std::string_view input) {
    using namespace softprompt;
    try {
        const tok::HfTokenizer t = tok::HfTokenizer::from_json_text(input, "fuzz.json");
        for (const auto special : {tok::SpecialTokens::as_text, tok::SpecialTokens::recognised}) {
            for (const bool add_special : {false, true}) {
                const std::vector<std::int32_t> ids = t.encode(
                    "Hello  world<s></s><|endoftext|> it's 42\n\n \xC3\xA9\xFF\xE2\x96\x81"
                    "x\xEF\xAC\x81\xE3\x81\x8B\xE3\x82\x99 123456",
                    special, add_special);
                (void)t.decode(ids, add_special);
            }
        }
        std::vector<std::int32_t> first;
        for (std::int32_t id = 0; id < std::min<std::int32_t>(t.vocab_size(), 64); ++id) {
            try {
                (void)t.token_to_id(t.id_to_token(id));
                (void)t.decode(std::vector<std::int32_t>{id});
                first.push_back(id);
            } catch (const Error& e) {  // an id with no token: a hole in the vocabulary
                softprompt_fuzz::rejected(e);
            }
        }
        (void)t.decode(first);
        (void)t.template_ids();
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
