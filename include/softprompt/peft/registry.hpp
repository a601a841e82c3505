#pragma once
// Serving many adapters with one frozen model: a registry of named adapters, each held in the form
// a batch uses, and one generate call whose rows may each use a different adapter or none.
//   prompt tuning, P-tuning  the soft prompt's per-layer keys/values, computed once (PromptCache)
//   prefix tuning            the prefix's per-layer keys/values as stored (PromptCache)
//   LoRA                     its A and B matrices (LoraWeights), applied to its own requests' rows
//                            as low-rank products beside the shared frozen weights: never merged
//                            into a copy, so an adapter costs only its own size in memory
// Every row of a batch, whatever its adapter, goes through one pass over the frozen weights; each
// row gets the tokens it would get served alone.
//
// Threads: add() and add_folder() change the registry: never while another thread uses it.
// generate() only reads the registry and the model, so any number of threads may call it at once
// on one registry (each call keeps its sequences to itself). The model must outlive the registry.

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "softprompt/nn/generate.hpp"
#include "softprompt/nn/kv_cache.hpp"
#include "softprompt/peft/adapter_io.hpp"

namespace softprompt::peft {

/// An adapter folder's own name, the last component of its path ("runs/lora/" -> "lora").
inline std::string folder_name(const std::string& dir) {
    const std::filesystem::path path = std::filesystem::path(dir).lexically_normal();
    return (path.has_filename() ? path.filename() : path.parent_path().filename()).string();
}

template <class Arch>
class Registry {
public:
    /// A registered adapter, ready to serve.
    struct Entry {
        std::string name;
        MethodKind kind = MethodKind::kPromptTuning;
        std::string about;             // "prefix tuning, 8 virtual tokens", "LoRA, rank 8, ..."
        nn::PromptCache<float> cache;  // prompt tuning, P-tuning, prefix tuning
        nn::LoraWeights<float> lora;   // LoRA
    };

    /// A generation request and the name of the adapter it asks for ("" for none).
    struct Request {
        nn::GenerationRequest<float> generation;  // its adapter and lora are set by generate()
        std::string adapter;
    };

    explicit Registry(const nn::Model<Arch, float>& model) : model_(&model) {}
    Registry(const Registry&) = delete;  // requests being served point into the entries
    Registry& operator=(const Registry&) = delete;

    /// Register a loaded adapter under `name` (not empty, not taken). An adapter that does not fit
    /// the model fails here with the library's error.
    const Entry& add(const std::string& name, const Adapter& adapter) {
        if (name.empty()) throw ConfigError("Registry: an adapter needs a name");
        if (by_name_.count(name) != 0)
            throw ConfigError("Registry: an adapter named '" + name + "' is already registered");
        const nn::Config& c = model_->config;
        auto entry = std::make_unique<Entry>();
        entry->name = name;
        entry->kind = adapter.kind;
        const std::string P = std::to_string(adapter.prompt_embeddings.rows());
        switch (adapter.kind) {
            case MethodKind::kPromptTuning:
            case MethodKind::kPTuning:
                // P-tuning's file holds its prompt encoder's output: served like prompt tuning.
                entry->about = std::string(adapter.kind == MethodKind::kPTuning ? "P-tuning"
                                                                                : "prompt tuning") +
                               ", " + P + " virtual tokens (a cached soft prompt)";
                entry->cache = nn::cache_prompt(*model_, adapter.prompt_embeddings);
                break;
            case MethodKind::kPrefixTuning:
                entry->about = "prefix tuning, " + P + " virtual tokens (a cached prefix)";
                entry->cache = nn::cache_prefix(c, prefix_for_model<Arch>(adapter, c));
                break;
            case MethodKind::kLora: {
                entry->lora = lora_method<Arch>(adapter, c)->weights();
                const auto& listed = adapter.config.at("target_modules");
                std::string targets;  // a list of names, or one regular expression
                if (listed.is_string()) targets = "/" + listed.get<std::string>() + "/";
                for (const auto& t : listed.is_array() ? listed : nlohmann::ordered_json::array())
                    targets += (targets.empty() ? "" : ",") + t.get<std::string>();
                entry->about = "LoRA, rank " + adapter.config.at("r").dump() + ", alpha " +
                               adapter.config.at("lora_alpha").dump() + ", " + targets +
                               " (low-rank updates on the shared weights)";
                break;
            }
        }
        entries_.push_back(std::move(entry));
        try {
            by_name_.emplace(name, entries_.size() - 1);
        } catch (...) {
            entries_.pop_back();
            throw;
        }
        return *entries_.back();
    }

    /// Register a trained method's current values under `name`, as export_adapter makes them (the
    /// method may then go on training; the registry keeps what it had).
    const Entry& add(const std::string& name, Method<float>& method) {
        return add(name, export_adapter(method, *model_));
    }

    /// Load the PEFT adapter folder `dir` and register it under `name`, by default the folder's
    /// own name. Errors reach the caller prefixed with the folder, so that among several the
    /// culprit is plain.
    const Entry& add_folder(const std::string& dir, std::string name = {}) {
        Adapter loaded;
        try {
            loaded = load_adapter(dir, model_->config);
            return add(name.empty() ? folder_name(dir) : name, loaded);
        } catch (const Error& e) {
            rethrow_with_prefix(e, "adapter '" + dir + "': ");
        }
    }

    std::size_t size() const { return entries_.size(); }
    /// The i-th registered adapter, in the order of registration.
    const Entry& operator[](std::size_t i) const { return *entries_.at(i); }
    bool contains(const std::string& name) const { return by_name_.count(name) != 0; }
    const Entry& at(const std::string& name) const {
        const auto it = by_name_.find(name);
        if (it == by_name_.end())
            throw ConfigError("Registry: no adapter named '" + name + "' (" +
                              std::to_string(entries_.size()) + " registered)");
        return *entries_[it->second];
    }

    /// Generate for every request in one batch on the frozen model, each row with its own adapter
    /// (or none). Results are in the order of the requests.
    std::vector<nn::GenerationResult> generate(const std::vector<Request>& requests,
                                               nn::GenerationStats* stats = nullptr) const {
        std::vector<nn::GenerationRequest<float>> batch;
        batch.reserve(requests.size());
        for (std::size_t i = 0; i < requests.size(); ++i) {
            batch.push_back(requests[i].generation);
            batch.back().adapter = nullptr;
            batch.back().lora = nullptr;
            if (requests[i].adapter.empty()) continue;
            const auto it = by_name_.find(requests[i].adapter);
            if (it == by_name_.end())
                throw ConfigError("Registry::generate: request " + std::to_string(i) +
                                  " asks for adapter '" + requests[i].adapter +
                                  "', which is not registered");
            const Entry& e = *entries_[it->second];
            if (e.kind == MethodKind::kLora)
                batch.back().lora = &e.lora;
            else
                batch.back().adapter = &e.cache;
        }
        return nn::generate(*model_, batch, stats);
    }

private:
    // The same kind of error, its message prefixed.
    [[noreturn]] static void rethrow_with_prefix(const Error& e, const std::string& prefix) {
        const std::string what = prefix + e.what();
        if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(what);
        if (dynamic_cast<const FormatError*>(&e)) throw FormatError(what);
        if (dynamic_cast<const IoError*>(&e)) throw IoError(what);
        if (dynamic_cast<const ConfigError*>(&e)) throw ConfigError(what);
        if (dynamic_cast<const NumericError*>(&e)) throw NumericError(what);
        throw Error(what);
    }

    const nn::Model<Arch, float>* model_;
    std::vector<std::unique_ptr<Entry>> entries_;  // stable addresses: batches point into them
    std::map<std::string, std::size_t> by_name_;
};

}  // namespace softprompt::peft
