#pragma once
// The benchmarks' model: a GPT-2-family model of any shape with uniform(±0.02) weights and unit
// norm gains, owning its tensors (bench/model_bench.cpp, bench/dist/dist_bench.cpp). gpt2_shape
// gives GPT-2's proportions: hidden width 4·dim, as many KV heads as heads, 1024 positions.

#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

namespace softprompt::bench {

struct RandomGpt2 {
    nn::Config config;
    std::vector<Mat<float>> tensors;
    nn::Model<nn::Gpt2, float> model;

    explicit RandomGpt2(const nn::Config& shape) : config(shape) {
        Rng rng(1);
        tensors.reserve(256);  // the weights view these matrices: they must never move
        model.config = config;
        model.weights =
            nn::Gpt2::bind_hf<float>(config, [&](const std::string&, Index rows, Index cols) {
                Mat<float> m(rows, cols);
                const bool gain = rows == 1 && cols == config.dim;
                for (Index i = 0; i < m.size(); ++i)
                    m.data()[i] = gain ? 1.0f : float(rng.uniform(-0.02, 0.02));
                tensors.push_back(std::move(m));
                return Weight<float>{tensors.back().data(), rows, cols};
            });
    }
};

inline nn::Config gpt2_shape(Index dim, Index layers, Index heads, Index vocab) {
    nn::Config c;
    c.dim = dim;
    c.hidden_dim = 4 * dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = heads;
    c.vocab_size = vocab;
    c.max_seq_len = 1024;
    c.norm_eps = 1e-5;
    return c;
}

}  // namespace softprompt::bench
