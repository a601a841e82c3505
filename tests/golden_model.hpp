#pragma once
// The tiny models of the PyTorch golden files (tests/data/golden_*.json, made by
// tests/reference/make_golden.py): GPT-2, LLaMA, and the newer families (Llama 3, Qwen2, Qwen3,
// Mistral) whose configuration comes from the config.json in the file; weights bound by Hugging
// Face names, the batch, and the expected outputs of each case (base, prompt, prefix).

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <softprompt/softprompt.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_paths.hpp"

namespace softprompt::testing {

using namespace softprompt::nn;

template <class T>
Mat<T> tensor_of(const nlohmann::json& t) {
    const auto& shape = t.at("shape");
    const Index rows = shape.size() == 1 ? 1 : Index(shape[0]);
    const Index cols = shape.size() == 1 ? Index(shape[0]) : Index(shape[1]);
    Mat<T> m(rows, cols);
    const auto& data = t.at("data");
    EXPECT_EQ(Index(data.size()), m.size());
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(data[std::size_t(i)].get<double>());
    return m;
}

template <class T>
struct Golden {
    nlohmann::json json;
    std::string family;  // "gpt2", "llama", or the config.json's model_type
    std::map<std::string, Mat<T>> tensors;
    Config config;
    TokenBatch batch;

    explicit Golden(const std::string& name) {
        std::ifstream in(test_data_dir() / name);
        if (!in) throw std::runtime_error("missing golden file " + name);
        json = nlohmann::json::parse(in);
        // The newer families carry the config.json transformers would read: parse that, so the
        // tests hold the config reader to the same reference.
        if (json.contains("hf_config")) {
            const io::HfConfig hf = io::parse_hf_config(json.at("hf_config"), name);
            family = hf.model_type;
            config = hf.config;
        } else {
            read_config(json.at("config"));
        }
        for (const auto& [key, value] : json.at("tensors").items())
            tensors[key] = tensor_of<T>(value);
        const auto& b = json.at("batch");
        batch.batch = b.at("batch");
        batch.seq = b.at("seq");
        batch.ids = b.at("ids").get<std::vector<std::int32_t>>();
        batch.lengths = b.at("lengths").get<std::vector<std::int32_t>>();
        batch.targets = b.at("targets").get<std::vector<std::int32_t>>();
    }

    void read_config(const nlohmann::json& c) {
        family = json.at("family");
        config.dim = c.at("dim");
        config.hidden_dim = c.at("hidden_dim");
        config.n_layers = c.at("n_layers");
        config.n_heads = c.at("n_heads");
        config.n_kv_heads = c.at("n_kv_heads");
        config.vocab_size = c.at("vocab_size");
        config.max_seq_len = c.at("max_seq_len");
        config.norm_eps = c.at("norm_eps");
        config.rope_theta = c.at("rope_theta");
        config.tied_head = c.at("tied_head");
        config.rope_layout = c.at("rope_layout") == "half_split"
                                 ? kernels::RopeLayout::kHalfSplit
                                 : kernels::RopeLayout::kInterleaved;
    }

    template <class Arch>
    Model<Arch, T> model() const {
        Model<Arch, T> m;
        m.config = config;
        m.weights =
            Arch::template bind_hf<T>(config, [this](const std::string& name, Index r, Index c) {
                const auto it = tensors.find(name);
                if (it == tensors.end()) throw FormatError("golden: no tensor " + name);
                if (it->second.rows() != r || it->second.cols() != c)
                    throw ShapeError::mismatch("golden", name, r, c, it->second.rows(),
                                               it->second.cols());
                return Weight<T>{it->second.data(), r, c};
            });
        return m;
    }

    Mat<T> expected(const char* case_name, const char* field) const {
        return tensor_of<T>(json.at("cases").at(case_name).at(field));
    }
    double loss(const char* case_name) const { return json.at("cases").at(case_name).at("loss"); }
};

}  // namespace softprompt::testing
