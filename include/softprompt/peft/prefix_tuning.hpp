#pragma once
// Prefix tuning (Li & Liang): trainable keys and values prepended in every attention layer, stored
// as PEFT does: one tensor [P, L·2·Dkv] whose column ((2l + kv)·Hkv + h)·hd + j is layer l's key
// (kv 0) or value (kv 1), KV head h, element j.
//
// Trained directly, or through the MLP reparameterisation
//   prefix = tanh(E·W1ᵀ + b1)·W2ᵀ + b2,   E [P, d], W1 [h, d], W2 [L·2·Dkv, h]
// which PEFT calls prefix_projection. Either way `fold()` gives the plain prefix tensor, computed
// by the same ops as training uses, so the exported prefix equals the one the model was trained
// with.
//   E: embedding   W1, b1: first linear   W2, b2: second linear
//
// Threads: one thread per method, fold() included (see peft/method.hpp); share the folded prefix's
// PromptCache.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/peft/method.hpp"

namespace softprompt::peft {

struct PrefixTuningOptions {
    Index num_virtual_tokens = 20;
    bool projection = false;        // train through the MLP reparameterisation
    Index encoder_hidden_size = 0;  // h of the MLP (0: the model width d)
};

template <class T>
class PrefixTuning : public Method<T> {
public:
    /// Direct prefix from an initial value [P, L·2·Dkv] (e.g. zeros, or `init_prefix_from_text`).
    PrefixTuning(const nn::Config& config, Mat<T> initial)
        : config_(config), prefix_("prompt_embeddings", std::move(initial)) {
        if (prefix_.value().rows() <= 0 || prefix_.value().cols() != width())
            throw ShapeError::mismatch("PrefixTuning", "initial prefix", prefix_.value().rows(),
                                       width(), prefix_.value().rows(), prefix_.value().cols());
    }

    /// A direct prefix of zeros, or the MLP reparameterisation with PyTorch's default
    /// initialisation (embedding N(0, 1), linear layers U(±1/√fan_in)).
    PrefixTuning(const nn::Config& config, const PrefixTuningOptions& options, Rng& rng)
        : config_(config), prefix_("prompt_embeddings", Mat<T>()) {
        const Index P = options.num_virtual_tokens;
        if (P <= 0)
            throw ConfigError("PrefixTuning: num_virtual_tokens must be > 0, got " +
                              std::to_string(P));
        if (!options.projection) {
            prefix_.assign(Mat<T>::Zero(P, width()));
            return;
        }
        const Index d = config.dim,
                    h = options.encoder_hidden_size > 0 ? options.encoder_hidden_size : d;
        auto uniform = [&rng](Index rows, Index cols, Index fan_in) {
            const double bound = 1.0 / std::sqrt(double(fan_in));
            Mat<T> m(rows, cols);
            for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.uniform(-bound, bound));
            return m;
        };
        Mat<T> embedding(P, d);
        for (Index i = 0; i < embedding.size(); ++i) embedding.data()[i] = T(rng.normal());
        mlp_.emplace_back("prefix_encoder.embedding.weight", std::move(embedding));
        mlp_.emplace_back("prefix_encoder.transform.0.weight", uniform(h, d, d));
        mlp_.emplace_back("prefix_encoder.transform.0.bias", uniform(1, h, d));
        mlp_.emplace_back("prefix_encoder.transform.2.weight", uniform(width(), h, h));
        mlp_.emplace_back("prefix_encoder.transform.2.bias", uniform(1, width(), h));
    }

    MethodKind kind() const override { return MethodKind::kPrefixTuning; }
    bool reparameterised() const { return !mlp_.empty(); }

    std::vector<autograd::Param<T>*> parameters() override {
        if (!reparameterised()) return {&prefix_};
        std::vector<autograd::Param<T>*> out;
        for (auto& p : mlp_) out.push_back(&p);
        return out;
    }

    /// The prefix tensor [P, L·2·Dkv] on `tape`.
    autograd::Var<T> prefix(autograd::Tape<T>& tape) {
        using namespace autograd;
        if (!reparameterised()) return tape.param(prefix_);
        Var<T> hidden =
            tanh(tape, add_bias(tape, matmul_wt(tape, tape.param(mlp_[0]), tape.param(mlp_[1])),
                                tape.param(mlp_[2])));
        return add_bias(tape, matmul_wt(tape, hidden, tape.param(mlp_[3])), tape.param(mlp_[4]));
    }

    nn::AdapterInput<T> input(autograd::Tape<T>& tape) override {
        return nn::split_prefix(tape, config_, prefix(tape));
    }

    Index num_virtual_tokens() const override {
        return reparameterised() ? mlp_[0].value().rows() : prefix_.value().rows();
    }

    /// The plain prefix [P, L·2·Dkv] that training used: what PEFT files store.
    Mat<T> fold() {
        autograd::Tape<T> tape;
        const EvaluationOnly<T> frozen_for_now(parameters());
        return prefix(tape).value();
    }

    /// Replace the reparameterisation by its folded prefix (training continues directly).
    void fold_in_place() {
        if (!reparameterised()) return;
        prefix_.assign(fold());
        mlp_.clear();
    }

    /// The direct prefix Param (empty while reparameterised) and the MLP's Params.
    autograd::Param<T>& direct() { return prefix_; }
    std::vector<autograd::Param<T>>& reparameterisation() { return mlp_; }

    Index width() const { return config_.n_layers * 2 * config_.kv_dim(); }
    const nn::Config& config() const { return config_; }

private:
    nn::Config config_;
    autograd::Param<T> prefix_;
    std::vector<autograd::Param<T>> mlp_;  // embedding, W1, b1, W2, b2 when reparameterised
};

/// A prefix holding the frozen model's own keys/values of a text's first P tokens (the text cycled
/// when shorter): as if that text preceded every input.
template <class Arch, class T>
Mat<T> init_prefix_from_text(const nn::Model<Arch, T>& model, const std::vector<std::int32_t>& ids,
                             Index P) {
    if (P <= 0) throw ConfigError("init_prefix_from_text: num_virtual_tokens must be > 0");
    if (ids.empty()) throw ConfigError("init_prefix_from_text: the text has no tokens");
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(P));
    for (Index i = 0; i < P; ++i) tokens[std::size_t(i)] = ids[std::size_t(i) % ids.size()];
    autograd::Tape<T> tape;
    const Weight<T>& table = Arch::token_embedding(model.weights);
    // The text's embeddings enter as virtual tokens: positions 0..P-1, exactly as a prefill.
    const nn::AdapterInput<T> kv = nn::virtual_token_kv(
        tape, model, autograd::gather_rows(tape, table, std::span<const std::int32_t>(tokens)));
    const nn::Config& c = model.config;
    Mat<T> prefix(P, c.n_layers * 2 * c.kv_dim());
    for (Index l = 0; l < c.n_layers; ++l) {
        prefix.middleCols(2 * l * c.kv_dim(), c.kv_dim()) = kv.keys[std::size_t(l)].value();
        prefix.middleCols((2 * l + 1) * c.kv_dim(), c.kv_dim()) = kv.values[std::size_t(l)].value();
    }
    return prefix;
}

}  // namespace softprompt::peft
