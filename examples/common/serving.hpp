#pragma once
// Serving saved PEFT adapters with one frozen model of any family, as examples/generate and
// examples/serve_many do. An adapter folder becomes either a prompt cache — the keys/values of a
// soft prompt (prompt tuning, P-tuning) or of a prefix (prefix tuning), computed once and shared
// by every request that uses it — or, for LoRA, which changes weights, a copy of the model with the
// update merged in. Requests with a prompt-based adapter or none run together in one batch on the
// frozen model, each row attending to its own adapter's cache; a LoRA adapter's requests run in a
// batch on its merged model.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

namespace serving {

using namespace softprompt;

template <class Arch>
struct Adapter {
    std::string name;              // the folder's name
    std::string about;             // "prompt tuning, 8 virtual tokens", "LoRA, rank 8, ..."
    nn::PromptCache<float> cache;  // prompt-based: the virtual tokens' keys/values
    std::optional<nn::Model<Arch, float>> merged;  // LoRA: the model with the update added
};

/// Load the PEFT adapter folder `dir` for `model`. An adapter made for a model of another shape
/// fails here with the library's error, which names the file, the field or tensor, and both shapes;
/// it reaches the caller prefixed with the folder, so that among several the culprit is plain.
template <class Arch>
Adapter<Arch> load_adapter(const nn::Model<Arch, float>& model, const std::string& dir) {
    const nn::Config& c = model.config;
    peft::LoadedAdapter loaded;
    std::unique_ptr<peft::Lora<Arch, float>> lora;
    try {
        loaded = peft::load_adapter(dir, c);
        if (loaded.kind == peft::MethodKind::kLora) lora = peft::lora_method<Arch>(loaded, c);
    } catch (const Error& e) {
        throw Error("adapter '" + dir + "': " + e.what());
    }
    const std::filesystem::path path = std::filesystem::path(dir).lexically_normal();
    Adapter<Arch> a;
    a.name = (path.has_filename() ? path.filename() : path.parent_path().filename()).string();
    const std::string P = std::to_string(loaded.prompt_embeddings.rows());
    switch (loaded.kind) {
        case peft::MethodKind::kPromptTuning:
        case peft::MethodKind::kPTuning:
            // P-tuning's file holds its prompt encoder's output: served like prompt tuning.
            a.about = std::string(loaded.kind == peft::MethodKind::kPTuning ? "P-tuning"
                                                                            : "prompt tuning") +
                      ", " + P + " virtual tokens (a cached soft prompt)";
            a.cache = nn::cache_prompt(model, loaded.prompt_embeddings);
            break;
        case peft::MethodKind::kPrefixTuning:
            a.about = "prefix tuning, " + P + " virtual tokens (a cached prefix)";
            a.cache = nn::cache_prefix(c, loaded.prompt_embeddings);
            break;
        case peft::MethodKind::kLora: {
            a.merged = lora->merge(model);
            std::string targets;
            for (const auto& t : loaded.config.at("target_modules"))
                targets += (targets.empty() ? "" : ",") + t.get<std::string>();
            a.about = "LoRA, rank " + loaded.config.at("r").dump() + ", alpha " +
                      loaded.config.at("lora_alpha").dump() + ", " + targets +
                      " (merged into a copy of the weights)";
            break;
        }
    }
    return a;
}

/// A request and the adapter it asks for: an index into the adapters, or -1 for none.
struct Request {
    nn::GenerationRequest<float> generation;  // `generation.adapter` is set by `serve`
    int adapter = -1;
};

/// Generate for every request at once: one batch on the frozen model for the requests with a
/// prompt-based adapter or none, one on each LoRA adapter's merged model for its requests. The
/// results are in the order of the requests; `stats`, when given, receives the sum over batches.
template <class Arch>
std::vector<nn::GenerationResult> serve(const nn::Model<Arch, float>& model,
                                        const std::vector<Adapter<Arch>>& adapters,
                                        const std::vector<Request>& requests,
                                        nn::GenerationStats* stats = nullptr) {
    std::map<int, std::vector<std::size_t>> batches;  // -1: the frozen model; i: LoRA adapter i
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const int a = requests[i].adapter;
        if (a < -1 || a >= int(adapters.size()))
            throw ConfigError("serve: request " + std::to_string(i) + " asks for adapter " +
                              std::to_string(a) + " of " + std::to_string(adapters.size()));
        batches[a >= 0 && adapters[std::size_t(a)].merged ? a : -1].push_back(i);
    }
    std::vector<nn::GenerationResult> results(requests.size());
    nn::GenerationStats total;
    for (const auto& [on, rows] : batches) {
        std::vector<nn::GenerationRequest<float>> batch;
        for (std::size_t i : rows) {
            batch.push_back(requests[i].generation);
            const int a = requests[i].adapter;
            batch.back().adapter = a >= 0 && on < 0 ? &adapters[std::size_t(a)].cache : nullptr;
        }
        nn::GenerationStats s;
        const auto out =
            nn::generate(on < 0 ? model : *adapters[std::size_t(on)].merged, batch, &s);
        for (std::size_t k = 0; k < rows.size(); ++k) results[rows[k]] = out[k];
        total.prefill_tokens += s.prefill_tokens;
        total.decode_tokens += s.decode_tokens;
        total.prefill_seconds += s.prefill_seconds;
        total.decode_seconds += s.decode_seconds;
    }
    if (stats != nullptr) *stats = total;
    return results;
}

}  // namespace serving
