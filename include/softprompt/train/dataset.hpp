#pragma once
// Training data: examples of token ids with aligned targets, seeded shuffling, right-padded
// batches, and readers for JSONL and TSV files.
//
// An Example's targets are aligned with its ids: targets[s] is the token position s must predict
// (negative = no loss there), so the library never shifts labels itself.
//   causal LM:      ids = the text;          targets[s] = ids[s+1], the last one ignored
//   input → target: ids = input ++ target;   only the target tokens are predicted (classification
//                                            by label tokens is a one-token target)

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/error.hpp"
#include "softprompt/nn/forward.hpp"

namespace softprompt::train {

struct Example {
    std::vector<std::int32_t> ids;
    std::vector<std::int32_t> targets;  // same length as ids; < 0 ignored

    Index labelled() const {
        return Index(
            std::count_if(targets.begin(), targets.end(), [](std::int32_t t) { return t >= 0; }));
    }
};

/// Predict every next token of `ids`.
inline Example causal_lm_example(std::vector<std::int32_t> ids) {
    if (ids.size() < 2)
        throw ConfigError("causal_lm_example: a text needs at least 2 tokens to predict one");
    Example e;
    e.targets.assign(ids.size(), -100);
    for (std::size_t s = 0; s + 1 < ids.size(); ++s) e.targets[s] = ids[s + 1];
    e.ids = std::move(ids);
    return e;
}

/// Read `input`, predict `target` (the loss covers the target tokens only). The last target token
/// is not fed: nothing after it is predicted (append an EOS to the target to learn to stop).
inline Example input_target_example(const std::vector<std::int32_t>& input,
                                    const std::vector<std::int32_t>& target) {
    if (input.empty()) throw ConfigError("input_target_example: the input has no tokens");
    if (target.empty()) throw ConfigError("input_target_example: the target has no tokens");
    Example e;
    e.ids = input;
    e.ids.insert(e.ids.end(), target.begin(), target.end() - 1);
    e.targets.assign(e.ids.size(), -100);
    for (std::size_t j = 0; j < target.size(); ++j) e.targets[input.size() - 1 + j] = target[j];
    return e;
}

class Dataset {
public:
    Dataset() = default;
    explicit Dataset(std::vector<Example> examples) : examples_(std::move(examples)) {
        for (std::size_t i = 0; i < examples_.size(); ++i) check(examples_[i], i);
    }

    void add(Example e) {
        check(e, examples_.size());
        examples_.push_back(std::move(e));
    }
    std::size_t size() const { return examples_.size(); }
    bool empty() const { return examples_.empty(); }
    const Example& operator[](std::size_t i) const { return examples_[i]; }
    const std::vector<Example>& examples() const { return examples_; }

    /// The order of one epoch: a Fisher–Yates shuffle seeded by (seed, epoch), so any epoch's order
    /// can be recomputed when training resumes.
    std::vector<std::size_t> order(std::uint64_t seed, std::int64_t epoch,
                                   bool shuffle = true) const {
        std::vector<std::size_t> idx(examples_.size());
        std::iota(idx.begin(), idx.end(), std::size_t(0));
        if (!shuffle) return idx;
        Rng rng(seed * 0x9E3779B97F4A7C15ull + std::uint64_t(epoch) + 1);
        for (std::size_t i = idx.size(); i > 1; --i)
            std::swap(idx[i - 1], idx[std::size_t(rng.below(i))]);
        return idx;
    }

    /// Right-padded batch of the given examples (`pad_id` in padding, targets ignored there).
    nn::TokenBatch batch(const std::vector<std::size_t>& which, std::int32_t pad_id = 0) const {
        nn::TokenBatch b;
        b.batch = Index(which.size());
        for (std::size_t i : which)
            b.seq = std::max<Index>(b.seq, Index(examples_.at(i).ids.size()));
        b.ids.assign(std::size_t(b.batch * b.seq), pad_id);
        b.targets.assign(b.ids.size(), -100);
        for (std::size_t r = 0; r < which.size(); ++r) {
            const Example& e = examples_[which[r]];
            std::copy(e.ids.begin(), e.ids.end(),
                      b.ids.begin() + std::ptrdiff_t(r * std::size_t(b.seq)));
            std::copy(e.targets.begin(), e.targets.end(),
                      b.targets.begin() + std::ptrdiff_t(r * std::size_t(b.seq)));
            b.lengths.push_back(std::int32_t(e.ids.size()));
        }
        return b;
    }

    /// The batches of one epoch, `batch_size` examples each (the last may be smaller).
    std::vector<std::vector<std::size_t>> batches(std::size_t batch_size, std::uint64_t seed,
                                                  std::int64_t epoch, bool shuffle = true) const {
        if (batch_size == 0) throw ConfigError("Dataset::batches: batch_size must be > 0");
        const std::vector<std::size_t> idx = order(seed, epoch, shuffle);
        std::vector<std::vector<std::size_t>> out;
        for (std::size_t at = 0; at < idx.size(); at += batch_size)
            out.emplace_back(idx.begin() + std::ptrdiff_t(at),
                             idx.begin() + std::ptrdiff_t(std::min(idx.size(), at + batch_size)));
        return out;
    }

private:
    static void check(const Example& e, std::size_t index) {
        if (e.ids.empty())
            throw ConfigError("Dataset: example " + std::to_string(index) + " has no tokens");
        if (e.targets.size() != e.ids.size())
            throw ShapeError("Dataset: example " + std::to_string(index) + " has " +
                             std::to_string(e.ids.size()) + " ids but " +
                             std::to_string(e.targets.size()) + " targets");
        if (e.labelled() == 0)
            throw ConfigError("Dataset: example " + std::to_string(index) +
                              " has no target to learn from");
    }

    std::vector<Example> examples_;
};

/// One record of a text data file: named string fields.
using Record = std::map<std::string, std::string>;

namespace detail {
inline std::ifstream open_text(const std::string& path, const char* who) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(std::string(who) + ": cannot open '" + path + "'");
    return in;
}
}  // namespace detail

/// JSON Lines: one object per line (blank lines skipped); string fields kept, numbers and booleans
/// converted to text. Errors name the file and line.
inline std::vector<Record> read_jsonl(const std::string& path) {
    std::ifstream in = detail::open_text(path, "read_jsonl");
    std::vector<Record> out;
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
            throw FormatError(path + " line " + std::to_string(number) + ": not valid JSON (" +
                              e.what() + ")");
        }
        if (!j.is_object())
            throw FormatError(path + " line " + std::to_string(number) +
                              ": expected a JSON object");
        Record r;
        for (const auto& [key, value] : j.items()) {
            if (value.is_string())
                r[key] = value.get<std::string>();
            else if (value.is_number() || value.is_boolean())
                r[key] = value.dump();
        }
        out.push_back(std::move(r));
    }
    return out;
}

/// Tab-separated values with a header row; "\n", "\t" and "\\" escapes in fields are decoded.
/// Rows with a different number of fields are errors naming the file and line.
inline std::vector<Record> read_tsv(const std::string& path) {
    std::ifstream in = detail::open_text(path, "read_tsv");
    auto split = [](const std::string& line) {
        std::vector<std::string> fields(1);
        for (std::size_t i = 0; i < line.size(); ++i) {
            const char c = line[i];
            if (c == '\t') {
                fields.emplace_back();
            } else if (c == '\\' && i + 1 < line.size()) {
                const char n = line[++i];
                fields.back() += n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n;
            } else if (c != '\r' || i + 1 != line.size()) {
                fields.back() += c;
            }
        }
        return fields;
    };
    std::string line;
    if (!std::getline(in, line))
        throw FormatError(path + ": empty file (a header row is required)");
    const std::vector<std::string> header = split(line);
    std::vector<Record> out;
    for (std::size_t number = 2; std::getline(in, line); ++number) {
        if (line.empty() || line == "\r") continue;
        const std::vector<std::string> fields = split(line);
        if (fields.size() != header.size())
            throw FormatError(path + " line " + std::to_string(number) + ": " +
                              std::to_string(fields.size()) + " fields, the header has " +
                              std::to_string(header.size()));
        Record r;
        for (std::size_t i = 0; i < header.size(); ++i) r[header[i]] = fields[i];
        out.push_back(std::move(r));
    }
    return out;
}

/// The value of `field` in record `index`, or a ConfigError naming the field and what exists.
inline const std::string& field(const Record& r, const std::string& name, std::size_t index) {
    const auto it = r.find(name);
    if (it != r.end()) return it->second;
    std::string have;
    for (const auto& [k, v] : r) have += (have.empty() ? "" : ", ") + k;
    throw ConfigError("record " + std::to_string(index) + " has no field '" + name +
                      "' (it has: " + have + ")");
}

}  // namespace softprompt::train
