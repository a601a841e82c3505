#pragma once
// A training run's state and its file (training_state.safetensors, softprompt's own): every
// Param of the method (also what PEFT drops: reparameterisation nets, encoders), the best Params
// so far, the optimizer's tensors, and in the metadata the step, the position in the data, the
// optimizer's scalars and the method's description — everything `Trainer::load_state` needs to
// continue bit for bit. Saved atomically (io/safetensors.hpp); a bad file is a FormatError naming
// the file and the field.

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/io/safetensors.hpp"
#include "softprompt/optim/optimizer.hpp"

namespace softprompt::train {

/// The file name a training state has beside its adapter.
inline constexpr const char* kTrainingState = "training_state.safetensors";

/// Everything a run depends on besides its data and options.
template <class T>
struct TrainingState {
    std::int64_t step = 0;        // optimizer steps taken
    std::int64_t epoch = 0;       // epoch of the next micro-batch
    std::int64_t next_batch = 0;  // index of the next micro-batch within that epoch
    std::vector<std::pair<std::string, Mat<T>>> params;  // the method's Params, by name
    optim::OptimizerState<T> optimizer;
    double best_eval_loss = std::numeric_limits<double>::infinity();
    std::int64_t evals_without_improvement = 0;
    std::vector<std::pair<std::string, Mat<T>>> best_params;  // empty until an evaluation
};

/// Write `state` (float training) to `path` atomically.
inline void save_training_state(const std::string& path, const TrainingState<float>& state,
                                const std::string& method_description = {}) {
    std::map<std::string, io::TensorSource> tensors;
    for (const auto& [name, value] : state.params)
        tensors.emplace("param/" + name, io::TensorSource(value));
    for (const auto& [name, value] : state.best_params)
        tensors.emplace("best/" + name, io::TensorSource(value));
    for (const auto& [name, value] : state.optimizer.tensors)
        tensors.emplace("optimizer/" + name, io::TensorSource(value));
    nlohmann::ordered_json meta;
    meta["format"] = "softprompt-training-state";
    meta["version"] = 1;
    meta["step"] = state.step;
    meta["epoch"] = state.epoch;
    meta["next_batch"] = state.next_batch;
    meta["best_eval_loss"] = std::isfinite(state.best_eval_loss)
                                 ? nlohmann::ordered_json(state.best_eval_loss)
                                 : nlohmann::ordered_json("inf");
    meta["evals_without_improvement"] = state.evals_without_improvement;
    meta["optimizer_kind"] = state.optimizer.kind;
    meta["optimizer_scalars"] = state.optimizer.scalars;  // doubles round-trip exactly through JSON
    std::vector<std::string> order;
    for (const auto& [name, value] : state.params) order.push_back(name);
    meta["param_order"] = order;
    std::vector<std::string> optimizer_order;
    for (const auto& [name, value] : state.optimizer.tensors) optimizer_order.push_back(name);
    meta["optimizer_order"] = optimizer_order;
    meta["method"] = method_description;
    io::write_safetensors(path, tensors, {{"format", "pt"}, {"softprompt", meta.dump()}});
}

inline TrainingState<float> load_training_state(const std::string& path) {
    const io::SafetensorsFile file(path);
    const auto it = file.metadata().find("softprompt");
    if (it == file.metadata().end())
        throw FormatError(path +
                          ": not a softprompt training-state file (no 'softprompt' metadata)");
    nlohmann::json meta;
    try {
        meta = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
        throw FormatError(path + ": the training-state metadata is not valid JSON (" + e.what() +
                          ")");
    }
    // Compared as JSON values: json::value() would throw nlohmann's type_error for a metadata
    // that is not an object or a field of another type.
    auto field = [&](const char* key) -> const nlohmann::json* {
        if (!meta.is_object()) return nullptr;
        const auto at = meta.find(key);
        return at == meta.end() ? nullptr : &*at;
    };
    const nlohmann::json* format = field("format");
    const nlohmann::json* version = field("version");
    if (!format || *format != "softprompt-training-state" || !version || *version != 1)
        throw FormatError(path + ": metadata 'softprompt' has format " +
                          (format ? io::detail::brief(*format) : std::string("(none)")) +
                          " and version " +
                          (version ? io::detail::brief(*version) : std::string("(none)")) +
                          "; expected \"softprompt-training-state\" and 1");
    TrainingState<float> s;
    try {
        // Integers only: nlohmann converts a float with a plain cast (undefined for 1e300).
        auto integer = [&](const char* key) {
            const nlohmann::json& v = meta.at(key);
            if (!v.is_number_integer())
                throw FormatError(path + ": training-state metadata '" + key + "' is " +
                                  io::detail::brief(v) + ", expected an integer");
            return v.get<std::int64_t>();
        };
        s.step = integer("step");
        s.epoch = integer("epoch");
        s.next_batch = integer("next_batch");
        s.best_eval_loss = meta.at("best_eval_loss").is_string()
                               ? std::numeric_limits<double>::infinity()
                               : meta.at("best_eval_loss").get<double>();
        s.evals_without_improvement = integer("evals_without_improvement");
        s.optimizer.kind = meta.at("optimizer_kind").get<std::string>();
        s.optimizer.scalars = meta.at("optimizer_scalars").get<std::map<std::string, double>>();
        for (const auto& name : meta.at("param_order").get<std::vector<std::string>>()) {
            s.params.emplace_back(name, file.matrix<float>("param/" + name));
            if (file.contains("best/" + name))
                s.best_params.emplace_back(name, file.matrix<float>("best/" + name));
        }
        for (const auto& name : meta.at("optimizer_order").get<std::vector<std::string>>())
            s.optimizer.tensors.emplace_back(name, file.matrix<float>("optimizer/" + name));
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(path + ": the training-state metadata is incomplete (" + e.what() + ")");
    }
    return s;
}

}  // namespace softprompt::train
