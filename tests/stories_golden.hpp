#pragma once
// llama2.c's reference outputs for the stories260K model (tests/data/golden/stories260K/): the
// logits of a 16-token sequence and the greedy continuation of BOS.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <softprompt/core/tensor.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace softprompt::testing {

struct GoldenLogits {
    std::vector<std::int32_t> tokens;  // the input ids (the "# tokens:" header line)
    Mat<float> logits;                 // [positions, vocab]
};

/// `logits_once_upon_a_time.txt`: '#' header lines, then "pos token_in argmax logit_0 ...".
inline GoldenLogits read_golden_logits(const std::filesystem::path& path) {
    std::ifstream in(path);
    GoldenLogits g;
    std::vector<std::vector<float>> rows;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("# tokens:", 0) == 0) {
            std::istringstream s(line.substr(9));
            for (std::int32_t id; s >> id;) g.tokens.push_back(id);
        }
        if (line.empty() || line[0] == '#') continue;
        std::istringstream s(line);
        int pos = 0, token_in = 0, argmax = 0;
        s >> pos >> token_in >> argmax;
        std::vector<float> row;
        for (float v; s >> v;) row.push_back(v);
        rows.push_back(row);
    }
    g.logits.resize(Index(rows.size()), rows.empty() ? 0 : Index(rows[0].size()));
    for (std::size_t r = 0; r < rows.size(); ++r)
        for (std::size_t c = 0; c < rows[r].size(); ++c) g.logits(Index(r), Index(c)) = rows[r][c];
    return g;
}

/// Whitespace-separated token ids (`greedy_bos_200.ids`).
inline std::vector<std::int32_t> read_ids(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::vector<std::int32_t> ids;
    for (std::int32_t id; in >> id;) ids.push_back(id);
    return ids;
}

}  // namespace softprompt::testing
