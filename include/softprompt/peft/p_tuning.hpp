#pragma once
// P-tuning (Liu et al.): the virtual-token embeddings [P, d] come from a trainable prompt encoder
// applied to a trainable embedding E [P, d], as in PEFT's PromptEncoder:
//   MLP:  E → Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, d)
//   LSTM: E → bidirectional LSTM (num_layers, hidden h, outputs [P, 2h]) →
//         Linear(2h, 2h) → ReLU → Linear(2h, d)
// PEFT files store the encoder's output (the virtual-token embeddings), like prompt tuning.
// LSTM gate order is PyTorch's (input, forget, cell, output), with both bias vectors.
//
// Threads: one thread per method, virtual_tokens() included (see peft/method.hpp); share the
// PromptCache of its output.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/peft/method.hpp"

namespace softprompt::peft {

enum class PromptEncoderType { kMlp, kLstm };

struct PTuningOptions {
    Index num_virtual_tokens = 20;
    PromptEncoderType encoder = PromptEncoderType::kMlp;
    Index encoder_hidden_size = 0;  // h (0: the model width d)
    Index encoder_num_layers = 2;   // LSTM layers
};

template <class T>
class PTuning : public Method<T> {
public:
    PTuning(const nn::Config& config, const PTuningOptions& options, Rng& rng) : options_(options) {
        const Index P = options.num_virtual_tokens, d = config.dim;
        const Index h = options.encoder_hidden_size > 0 ? options.encoder_hidden_size : d;
        if (P <= 0)
            throw ConfigError("PTuning: num_virtual_tokens must be > 0, got " + std::to_string(P));
        if (options.encoder == PromptEncoderType::kLstm && options.encoder_num_layers <= 0)
            throw ConfigError("PTuning: encoder_num_layers must be > 0");
        hidden_ = h;
        Mat<T> embedding(P, d);
        for (Index i = 0; i < embedding.size(); ++i) embedding.data()[i] = T(rng.normal());
        add_param("prompt_encoder.embedding.weight", std::move(embedding));
        auto linear = [&](const std::string& name, Index out, Index in) {
            const double bound = 1.0 / std::sqrt(double(in));
            add_param(name + ".weight", uniform(out, in, bound, rng));
            add_param(name + ".bias", uniform(1, out, bound, rng));
        };
        if (options.encoder == PromptEncoderType::kMlp) {
            linear("prompt_encoder.mlp_head.0", h, d);
            linear("prompt_encoder.mlp_head.2", h, h);
            linear("prompt_encoder.mlp_head.4", d, h);
            return;
        }
        const double bound = 1.0 / std::sqrt(double(h));
        for (Index layer = 0; layer < options.encoder_num_layers; ++layer) {
            const Index in = layer == 0 ? d : 2 * h;
            for (const char* dir : {"", "_reverse"}) {
                const std::string s = "_l" + std::to_string(layer) + dir;
                add_param("prompt_encoder.lstm_head.weight_ih" + s, uniform(4 * h, in, bound, rng));
                add_param("prompt_encoder.lstm_head.weight_hh" + s, uniform(4 * h, h, bound, rng));
                add_param("prompt_encoder.lstm_head.bias_ih" + s, uniform(1, 4 * h, bound, rng));
                add_param("prompt_encoder.lstm_head.bias_hh" + s, uniform(1, 4 * h, bound, rng));
            }
        }
        linear("prompt_encoder.mlp_head.0", 2 * h, 2 * h);
        linear("prompt_encoder.mlp_head.2", d, 2 * h);
    }

    PTuning(const PTuning&) = delete;
    PTuning& operator=(const PTuning&) = delete;

    MethodKind kind() const override { return MethodKind::kPTuning; }
    std::vector<autograd::Param<T>*> parameters() override {
        std::vector<autograd::Param<T>*> out;
        for (auto& p : params_) out.push_back(&p);
        return out;
    }
    Index num_virtual_tokens() const override { return params_.front().value().rows(); }

    /// The virtual-token embeddings [P, d] on `tape`.
    autograd::Var<T> prompt(autograd::Tape<T>& tape) {
        using namespace autograd;
        std::size_t next = 1;
        auto take = [&]() { return tape.param(params_[next++]); };
        auto linear = [&](const Var<T>& x) {
            Var<T> w = take();
            return add_bias(tape, matmul_wt(tape, x, w), take());
        };
        Var<T> x = tape.param(params_[0]);
        if (options_.encoder == PromptEncoderType::kMlp) {
            x = relu(tape, linear(x));
            x = relu(tape, linear(x));
            return linear(x);
        }
        for (Index layer = 0; layer < options_.encoder_num_layers; ++layer) {
            // Sequenced one by one: the order of evaluation of function arguments is unspecified.
            Var<T> dirs[2];
            for (int reverse = 0; reverse < 2; ++reverse) {
                Var<T> w_ih = take(), w_hh = take(), b_ih = take(), b_hh = take();
                dirs[reverse] = lstm_direction(tape, x, w_ih, w_hh, b_ih, b_hh, reverse == 1);
            }
            Var<T>& forward_dir = dirs[0];
            Var<T>& backward_dir = dirs[1];
            x = concat_cols(tape, {forward_dir, backward_dir});
        }
        x = relu(tape, linear(x));
        return linear(x);
    }

    nn::AdapterInput<T> input(autograd::Tape<T>& tape) override {
        nn::AdapterInput<T> in;
        in.prompt = prompt(tape);
        return in;
    }

    /// The encoder's output without recording: what a PEFT file stores.
    Mat<T> virtual_tokens() {
        autograd::Tape<T> tape;
        const EvaluationOnly<T> frozen_for_now(parameters());
        return prompt(tape).value();
    }

    std::vector<autograd::Param<T>>& params() { return params_; }
    const PTuningOptions& options() const { return options_; }
    Index hidden_size() const { return hidden_; }

private:
    static Mat<T> uniform(Index rows, Index cols, double bound, Rng& rng) {
        Mat<T> m(rows, cols);
        for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.uniform(-bound, bound));
        return m;
    }
    void add_param(const std::string& name, Mat<T> value) {
        params_.emplace_back(name, std::move(value));
    }

    // One direction of one LSTM layer over the P rows of x (a single sequence), returning [P, h].
    autograd::Var<T> lstm_direction(autograd::Tape<T>& tape, const autograd::Var<T>& x,
                                    const autograd::Var<T>& w_ih, const autograd::Var<T>& w_hh,
                                    const autograd::Var<T>& b_ih, const autograd::Var<T>& b_hh,
                                    bool reverse) const {
        using namespace autograd;
        const Index P = x.rows(), h = hidden_;
        // Input contributions of every step at once: [P, 4h].
        Var<T> gates_in = add_bias(tape, add_bias(tape, matmul_wt(tape, x, w_ih), b_ih), b_hh);
        Var<T> hidden = tape.constant(Mat<T>::Zero(1, h));
        Var<T> cell = tape.constant(Mat<T>::Zero(1, h));
        std::vector<Var<T>> outputs(static_cast<std::size_t>(P));
        for (Index step = 0; step < P; ++step) {
            const Index t = reverse ? P - 1 - step : step;
            Var<T> g = add(tape, slice_rows(tape, gates_in, t, 1), matmul_wt(tape, hidden, w_hh));
            Var<T> input_gate = sigmoid(tape, slice_cols(tape, g, 0, h));
            Var<T> forget_gate = sigmoid(tape, slice_cols(tape, g, h, h));
            Var<T> candidate = tanh(tape, slice_cols(tape, g, 2 * h, h));
            Var<T> output_gate = sigmoid(tape, slice_cols(tape, g, 3 * h, h));
            cell = add(tape, mul(tape, forget_gate, cell), mul(tape, input_gate, candidate));
            hidden = mul(tape, output_gate, tanh(tape, cell));
            outputs[std::size_t(t)] = hidden;
        }
        return concat_rows(tape, outputs);
    }

    PTuningOptions options_;
    Index hidden_ = 0;
    std::vector<autograd::Param<T>> params_;
};

}  // namespace softprompt::peft
