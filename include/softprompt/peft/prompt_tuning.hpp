#pragma once
// Prompt tuning (Lester et al.): P trainable virtual-token embeddings [P, d] placed before the
// input. Initialisations: random normal or uniform, rows of the vocabulary embedding (sampled from
// the whole vocabulary or its first K ids — BPE and SentencePiece vocabularies order ids roughly by
// frequency, so the first K are the most frequent), the embeddings of a text tiled or cut to P
// tokens, and the embeddings of class-label words (the rest sampled from the vocabulary).
//
// Threads: one thread per method (see peft/method.hpp); share its embeddings' PromptCache.

#include <cstdint>
#include <string>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/peft/method.hpp"

namespace softprompt::peft {

/// How the embeddings were initialised, as adapter_config.json records it (PEFT's
/// prompt_tuning_init). PEFT runs the initialisation again when it loads an adapter, before it
/// reads the stored embeddings over it: TEXT tokenizes the text with tokenizer_name_or_path,
/// SAMPLE_VOCAB samples the model's embeddings, RANDOM needs nothing. It never changes what a
/// trained adapter computes.
struct PromptInit {
    enum class Kind { kRandom, kSampleVocab, kText };
    Kind kind = Kind::kRandom;
    std::string text{};       // kText: the text whose embeddings began the prompt (init_from_text)
    std::string tokenizer{};  // kText: tokenizer_name_or_path (empty: the base model's name)
};

/// PEFT's name of an initialisation: RANDOM, SAMPLE_VOCAB, TEXT.
inline const char* prompt_init_name(PromptInit::Kind kind) {
    switch (kind) {
        case PromptInit::Kind::kSampleVocab:
            return "SAMPLE_VOCAB";
        case PromptInit::Kind::kText:
            return "TEXT";
        case PromptInit::Kind::kRandom:
            break;
    }
    return "RANDOM";
}

template <class T>
class PromptTuning : public Method<T> {
public:
    /// Takes the initial embeddings [P, d] (see the init_* functions) and, for the adapter's
    /// config, how they were made.
    PromptTuning(const nn::Config& config, Mat<T> initial, PromptInit init = {})
        : embeddings_("prompt_embeddings", std::move(initial)), init_(std::move(init)) {
        if (embeddings_.value().rows() <= 0 || embeddings_.value().cols() != config.dim)
            throw ShapeError::mismatch("PromptTuning", "initial embeddings",
                                       embeddings_.value().rows(), config.dim,
                                       embeddings_.value().rows(), embeddings_.value().cols());
    }

    MethodKind kind() const override { return MethodKind::kPromptTuning; }
    std::vector<autograd::Param<T>*> parameters() override { return {&embeddings_}; }
    nn::AdapterInput<T> input(autograd::Tape<T>& tape) override {
        nn::AdapterInput<T> in;
        in.prompt = tape.param(embeddings_);
        return in;
    }
    Index num_virtual_tokens() const override { return embeddings_.value().rows(); }

    autograd::Param<T>& embeddings() { return embeddings_; }
    const autograd::Param<T>& embeddings() const { return embeddings_; }
    const PromptInit& init() const { return init_; }

private:
    autograd::Param<T> embeddings_;
    PromptInit init_;
};

namespace detail {
inline void require_tokens(const char* what, Index P) {
    if (P <= 0)
        throw ConfigError(std::string(what) + ": num_virtual_tokens must be > 0, got " +
                          std::to_string(P));
}
}  // namespace detail

/// N(0, stddev²) entries.
template <class T>
Mat<T> init_normal(Index P, Index d, double stddev, Rng& rng) {
    detail::require_tokens("init_normal", P);
    Mat<T> m(P, d);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal(0.0, stddev));
    return m;
}

/// U(−scale, scale) entries (PEFT's RANDOM init of nn.Embedding is N(0,1); prompt-tuning papers
/// also use U(−0.5, 0.5)).
template <class T>
Mat<T> init_uniform(Index P, Index d, double scale, Rng& rng) {
    detail::require_tokens("init_uniform", P);
    Mat<T> m(P, d);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.uniform(-scale, scale));
    return m;
}

/// Rows of the token embedding for ids drawn from [0, first_k) (first_k 0: the whole vocabulary).
template <class Arch, class T>
Mat<T> init_from_vocab(const nn::Model<Arch, T>& model, Index P, Rng& rng, Index first_k = 0) {
    detail::require_tokens("init_from_vocab", P);
    const Weight<T>& table = Arch::token_embedding(model.weights);
    const Index range = first_k > 0 ? std::min(first_k, table.rows) : table.rows;
    Mat<T> m(P, table.cols);
    for (Index r = 0; r < P; ++r)
        m.row(r) = table.view().row(Index(rng.below(std::uint64_t(range))));
    return m;
}

/// Embeddings of a tokenised text, repeated to fill P rows or cut to P (PEFT's TEXT init).
template <class Arch, class T>
Mat<T> init_from_text(const nn::Model<Arch, T>& model, const std::vector<std::int32_t>& ids,
                      Index P) {
    detail::require_tokens("init_from_text", P);
    if (ids.empty()) throw ConfigError("init_from_text: the text has no tokens");
    const Weight<T>& table = Arch::token_embedding(model.weights);
    Mat<T> m(P, table.cols);
    for (Index r = 0; r < P; ++r) {
        const std::int32_t id = ids[std::size_t(r) % ids.size()];
        if (id < 0 || id >= table.rows)
            throw ShapeError("init_from_text: id " + std::to_string(id) +
                             " is outside the vocabulary of " + std::to_string(table.rows));
        m.row(r) = table.view().row(id);
    }
    return m;
}

/// The first rows are the class labels' embeddings (each label's tokens averaged), the rest are
/// sampled from the first_k ids of the vocabulary (Lester et al.'s class-label init).
template <class Arch, class T>
Mat<T> init_from_labels(const nn::Model<Arch, T>& model,
                        const std::vector<std::vector<std::int32_t>>& labels, Index P, Rng& rng,
                        Index first_k = 5000) {
    detail::require_tokens("init_from_labels", P);
    if (Index(labels.size()) > P)
        throw ConfigError("init_from_labels: " + std::to_string(labels.size()) +
                          " labels need at least as many "
                          "virtual tokens, got " +
                          std::to_string(P));
    Mat<T> m = init_from_vocab(model, P, rng, first_k);
    const Weight<T>& table = Arch::token_embedding(model.weights);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i].empty())
            throw ConfigError("init_from_labels: label " + std::to_string(i) + " has no tokens");
        m.row(Index(i)).setZero();
        for (std::int32_t id : labels[i]) {
            if (id < 0 || id >= table.rows)
                throw ShapeError("init_from_labels: id " + std::to_string(id) +
                                 " is outside the vocabulary");
            m.row(Index(i)) += table.view().row(id);
        }
        m.row(Index(i)) /= T(labels[i].size());
    }
    return m;
}

}  // namespace softprompt::peft
