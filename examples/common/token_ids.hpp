#pragma once
// Token ids written as text, as the examples' --decode and --prompt-ids take them.

#include <cstdint>
#include <exception>
#include <softprompt/error.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace examples {

/// Space-separated token ids, as --decode and --prompt-ids take them; ConfigError naming `option`
/// and the word for anything that is not an id in [0, 2^31).
inline std::vector<std::int32_t> parse_ids(const std::string& text, const std::string& option) {
    std::vector<std::int32_t> ids;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
        std::size_t used = 0;
        long long v = -1;
        try {
            v = std::stoll(word, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != word.size() || v < 0 || v > INT32_MAX)
            throw softprompt::ConfigError(option + ": \"" + word + "\" is not a token id");
        ids.push_back(static_cast<std::int32_t>(v));
    }
    return ids;
}

}  // namespace examples
