#pragma once
// Training data files: read_jsonl and read_tsv, both on the same bytes (each must either read
// records or throw a softprompt::Error), then field() on what they read.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/train/dataset.hpp"

namespace softprompt_fuzz {

/// One input of the dataset target (see the top of this file).
inline void dataset(std::string_view input) {
    using namespace softprompt;
    const std::string path = softprompt_fuzz::scratch_file("data.txt", input);
    for (const auto read : {&train::read_jsonl, &train::read_tsv}) {
        try {
            const std::vector<train::Record> records = read(path);
            for (std::size_t i = 0; i < records.size(); ++i)
                (void)train::field(records[i], "text", i);
        } catch (const Error& e) {
            // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
            softprompt_fuzz::rejected(e);
        }
    }
}

}  // namespace softprompt_fuzz
