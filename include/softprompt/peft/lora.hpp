#pragma once
// LoRA (Hu et al.) on the attention projections, the baseline users compare prompt methods with:
// a frozen projection y = x·Wᵀ gains a trainable low-rank update s·(x·Aᵀ)·Bᵀ, s = α/r (α/√r for
// rank-stabilised LoRA), A [r, in] and
// B [out, r]. A starts as PEFT's kaiming-uniform (U(±1/√in)), B as zeros, so training starts from
// the base model exactly. GPT-2 has a fused QKV projection (c_attn) and an output projection
// (c_proj); LLaMA has q/k/v/o_proj. `weights` exports the updates as values that a batch applies
// per row on the shared frozen weights (many adapters, one copy of the model); `merge` adds them
// into a copy of the weights instead, a plain model that serves one adapter at the base's speed.
//
// Threads: one thread per method (see peft/method.hpp). merge() only reads the method and the base
// model: the merged copy may then be shared like any loaded model.

#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/nn/gpt2.hpp"
#include "softprompt/nn/llama.hpp"
#include "softprompt/peft/method.hpp"
#include "softprompt/peft/module_regex.hpp"

namespace softprompt::peft {

struct LoraOptions {
    Index rank = 8;
    double alpha = 16;
    // Which projections get an update. GPT-2: `query` selects the fused c_attn, `output` c_proj;
    // `key` and `value` apply to LLaMA only. PEFT's defaults: LLaMA q and v, GPT-2 c_attn.
    bool query = true, key = false, value = true, output = false;
    // Rank-stabilised LoRA (PEFT's use_rslora): the update is scaled by α/√r instead of α/r.
    bool rslora = false;
    // PEFT's target_modules as one regular expression: the attention projections whose full module
    // name it matches whole ("transformer.h.0.attn.c_attn" in GPT2LMHeadModel,
    // "model.layers.0.self_attn.q_proj" in LlamaForCausalLM) get an update, and the four switches
    // above are ignored. Empty: the switches choose.
    std::string target_regex{};
    // Per-module ranks and alphas (PEFT's rank_pattern and alpha_pattern): a module takes the value
    // of the first pattern p, in order, for which its full name matches "(.*\.)?(p)" whole; the
    // others take `rank` and `alpha`.
    std::vector<std::pair<std::string, Index>> rank_pattern{};
    std::vector<std::pair<std::string, double>> alpha_pattern{};
};

template <class Arch, class T>
class Lora : public Method<T> {
public:
    Lora(const nn::Config& config, const LoraOptions& options, Rng& rng)
        : config_(config), options_(options) {
        for (const Planned& p : plan(config, options)) {
            const double bound = 1.0 / std::sqrt(double(p.in));
            Mat<T> a(p.rank, p.in);
            for (Index i = 0; i < a.size(); ++i) a.data()[i] = T(rng.uniform(-bound, bound));
            updates_.push_back(
                {p.layer, p.slot, p.module,
                 std::make_unique<autograd::Param<T>>(p.module + ".lora_A.weight", std::move(a)),
                 std::make_unique<autograd::Param<T>>(p.module + ".lora_B.weight",
                                                      Mat<T>::Zero(p.out, p.rank)),
                 T(p.scale)});
        }
    }

    /// One update a Lora with these options has: where it goes, its shapes and its scale.
    struct Planned {
        Index layer;
        int slot;            // 0 q (GPT-2: c_attn), 1 k, 2 v, 3 o (GPT-2: c_proj)
        std::string module;  // the weight table's module name, e.g. h.0.attn.c_attn
        std::string full;    // the model class's module name, e.g. transformer.h.0.attn.c_attn
        Index in, out, rank;
        double alpha, scale;
    };

    /// The updates of a Lora with these options, in the order the constructor makes them; throws
    /// ConfigError for options that select nothing or hold a bad rank, alpha or pattern.
    static std::vector<Planned> plan(const nn::Config& config, const LoraOptions& options) {
        auto positive = [](double v, const std::string& what) {
            if (v > 0) return;
            std::ostringstream text;
            text << v;
            throw ConfigError("Lora: " + what + " must be > 0, got " + text.str());
        };
        positive(double(options.rank), "rank");
        positive(options.alpha, "alpha");
        for (const auto& [p, r] : options.rank_pattern)
            positive(double(r), "rank_pattern '" + p + "'");
        for (const auto& [p, a] : options.alpha_pattern) positive(a, "alpha_pattern '" + p + "'");
        auto unique_keys = [](const auto& patterns, const char* what) {
            for (std::size_t i = 0; i < patterns.size(); ++i)
                for (std::size_t j = 0; j < i; ++j)
                    if (patterns[i].first == patterns[j].first)
                        throw ConfigError(std::string("Lora: ") + what + " names '" +
                                          patterns[i].first + "' twice");
        };
        unique_keys(options.rank_pattern, "rank_pattern");
        unique_keys(options.alpha_pattern, "alpha_pattern");
        const bool gpt2 = Arch::kFusedQkv;  // the GPT-2 family: one c_attn for q, k and v
        const bool by_regex = !options.target_regex.empty();
        if (!by_regex && gpt2 && (options.key || options.value) && !options.query)
            throw ConfigError(
                "Lora: GPT-2's key and value share the fused c_attn projection; select `query`");
        const ModuleRegex targets =
            compile(by_regex ? options.target_regex : ".*", "target_modules");
        std::vector<std::pair<ModuleRegex, Index>> ranks;
        for (const auto& [p, r] : options.rank_pattern)
            ranks.emplace_back(compile("(.*\\.)?(" + p + ")", "rank_pattern '" + p + "'"), r);
        std::vector<std::pair<ModuleRegex, double>> alphas;
        for (const auto& [p, a] : options.alpha_pattern)
            alphas.emplace_back(compile("(.*\\.)?(" + p + ")", "alpha_pattern '" + p + "'"), a);
        // One budget of matching steps for the whole plan, however many patterns a config holds.
        std::size_t budget = ModuleRegex::kStepBudget;
        auto first_match = [&budget](const auto& patterns, const std::string& name, auto fallback) {
            for (const auto& [re, value] : patterns)
                if (re.full_match(name, budget)) return value;
            return fallback;
        };
        const bool chosen[4] = {options.query, options.key && !gpt2, options.value && !gpt2,
                                options.output};
        const Index d = config.dim, q = config.n_heads * config.head_dim(), kv = config.kv_dim();
        const Index ins[4] = {d, d, d, q};
        const Index outs[4] = {gpt2 ? 3 * d : q, kv, kv, d};
        const std::vector<std::array<std::string, 4>> modules = module_names(config);
        std::vector<Planned> out;
        for (Index l = 0; l < config.n_layers; ++l)
            for (int slot = 0; slot < 4; ++slot) {
                const std::string& m = modules[std::size_t(l)][std::size_t(slot)];
                if (m.empty()) continue;  // GPT-2's k and v: inside c_attn
                const std::string full = Arch::kHfModelPrefix + m;
                if (by_regex ? !targets.full_match(full, budget) : !chosen[slot]) continue;
                const Index r = first_match(ranks, full, options.rank);
                const double alpha = first_match(alphas, full, options.alpha);
                const double scale = alpha / (options.rslora ? std::sqrt(double(r)) : double(r));
                out.push_back({l, slot, m, full, ins[slot], outs[slot], r, alpha, scale});
            }
        if (out.empty())
            throw ConfigError(by_regex ? "Lora: target_modules '" + options.target_regex +
                                             "' matches no attention projection of this model"
                                       : std::string("Lora: no projection selected"));
        return out;
    }

    Lora(const Lora&) = delete;
    Lora& operator=(const Lora&) = delete;

    MethodKind kind() const override { return MethodKind::kLora; }
    std::vector<autograd::Param<T>*> parameters() override {
        std::vector<autograd::Param<T>*> out;
        for (auto& u : updates_) {
            out.push_back(u.a.get());
            out.push_back(u.b.get());
        }
        return out;
    }

    nn::AdapterInput<T> input(autograd::Tape<T>& tape) override {
        nn::AdapterInput<T> in;
        in.lora.resize(std::size_t(config_.n_layers));
        for (auto& u : updates_) {
            nn::LayerLora<T>& layer = in.lora[std::size_t(u.layer)];
            nn::LoraDeltas<T>& slot = u.slot == 0   ? layer.q
                                      : u.slot == 1 ? layer.k
                                      : u.slot == 2 ? layer.v
                                                    : layer.o;
            slot = {nn::LoraDelta<T>{tape.param(*u.a), tape.param(*u.b), u.scale}};
        }
        return in;
    }

    /// α/r, or α/√r for rank-stabilised LoRA: the scale of the modules no pattern names (each
    /// update holds its own).
    T scale() const {
        const double r = double(options_.rank);
        return T(options_.alpha / (options_.rslora ? std::sqrt(r) : r));
    }
    const LoraOptions& options() const { return options_; }

    /// The updates' current values, to serve on the frozen model's own weights (nn::generate with
    /// GenerationRequest::lora, peft::Registry): no copy of the model.
    nn::LoraWeights<T> weights() const {
        nn::LoraWeights<T> out;
        out.layers.resize(std::size_t(config_.n_layers));
        for (const auto& u : updates_)
            out.layers[std::size_t(u.layer)][std::size_t(u.slot)] = {u.a->value(), u.b->value(),
                                                                     u.scale};
        return out;
    }

    /// A copy of the model whose updated projections hold W + scale()·B·A in new memory; the other
    /// weights stay views of the original.
    nn::Model<Arch, T> merge(const nn::Model<Arch, T>& base) const {
        nn::Model<Arch, T> merged = base;
        auto owned = std::make_shared<std::vector<Mat<T>>>();
        owned->reserve(updates_.size());
        for (const auto& u : updates_) {
            auto& layer = merged.weights.layers[std::size_t(u.layer)];
            Weight<T>& w = slot_weight(layer, u.slot);
            const Mat<T> delta = u.scale * (u.b->value() * u.a->value());  // [out, in]
            Mat<T> updated = w.view();
            // GPT-2's Conv1D stores [in, out]; LLaMA's Linear stores [out, in].
            if (Arch::kConv1dWeights) {
                updated += delta.transpose();
            } else {
                updated += delta;
            }
            owned->push_back(std::move(updated));
            w = Weight<T>{owned->back().data(), w.rows, w.cols};
        }
        merged.storage = std::make_shared<
            std::pair<std::shared_ptr<const void>, std::shared_ptr<std::vector<Mat<T>>>>>(
            base.storage, owned);
        return merged;
    }

    struct Update {
        Index layer;
        int slot;            // 0 q (GPT-2: c_attn), 1 k, 2 v, 3 o (GPT-2: c_proj)
        std::string module;  // Hugging Face module name, e.g. model.layers.0.self_attn.q_proj
        std::unique_ptr<autograd::Param<T>> a, b;
        T scale;  // α/r of this module (its own rank and alpha under rank/alpha patterns)
    };
    const std::vector<Update>& updates() const { return updates_; }
    std::vector<Update>& updates() { return updates_; }

private:
    /// The Hugging Face module of each slot of each layer: its weight's name in the family's weight
    /// table without ".weight" ("model.layers.0.self_attn.q_proj", "h.0.attn.c_attn"); empty for
    /// a slot the family does not have.
    static std::vector<std::array<std::string, 4>> module_names(const nn::Config& c) {
        typename Arch::template Weights<T> w;
        w.layers.resize(std::size_t(c.n_layers));
        std::map<const Weight<T>*, std::string> hf;
        Arch::for_each_weight(
            w, c, [&](const nn::WeightSpec& spec, Weight<T>& slot) { hf[&slot] = spec.hf; });
        std::vector<std::array<std::string, 4>> out(w.layers.size());
        for (std::size_t l = 0; l < w.layers.size(); ++l)
            for (int slot = 0; slot < 4; ++slot) {
                const Weight<T>* target = Arch::lora_target(w.layers[l], slot);
                if (target == nullptr) continue;  // GPT-2's k and v: inside c_attn
                std::string name = hf.at(target);
                const std::string suffix = ".weight";
                if (name.ends_with(suffix)) name.resize(name.size() - suffix.size());
                out[l][std::size_t(slot)] = std::move(name);
            }
        return out;
    }

    static ModuleRegex compile(const std::string& pattern, const std::string& what) {
        try {
            return ModuleRegex(pattern);
        } catch (const ConfigError& e) {
            throw ConfigError("Lora: " + what + ": " + e.what());
        }
    }

    static Weight<T>& slot_weight(typename Arch::template Layer<T>& layer, int slot) {
        return *Arch::lora_target(layer, slot);
    }

    nn::Config config_;
    LoraOptions options_;
    std::vector<Update> updates_;
};

}  // namespace softprompt::peft
