#pragma once
// What the examples on the tiny model of examples/data/tiny_tasks share: where the model is, its
// character vocabulary (vocab.json), the string tasks and their training examples, and the four
// methods with settings that suit them, trained the same way everywhere.
//
// The model does string tasks when an instruction says which one, "reverse: kfqx = xqfk", and
// copies the string when there is none; the adapters learn to stand in for the missing instruction.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <softprompt/softprompt.hpp>
#include <string>
#include <system_error>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tiny_tasks {

using namespace softprompt;
using Model = nn::Model<nn::Llama, float>;

/// examples/data/tiny_tasks beside this header's folder (CMake compiles with an absolute __FILE__;
/// a plain g++ from the repository root gives a relative one, which works from there).
inline std::string default_data_dir() {
    const std::filesystem::path examples = std::filesystem::path(__FILE__).parent_path() / "..";
    return (examples / "data" / "tiny_tasks").lexically_normal().string();
}

/// The model is tiny and its matrix products small: one thread, for Eigen's products and for the
/// library's OpenMP loops. (CMake links OpenMP into the examples; with Eigen's threads the
/// quickstart took 239 s instead of 35 s on a busy 2-core machine.)
inline void use_one_thread() {
    Eigen::setNbThreads(1);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
}

// ------------------------------------------------------------------------------------------------
// The character vocabulary of vocab.json.

struct Vocab {
    std::vector<std::string> tokens;
    std::map<char, std::int32_t> ids;
    std::int32_t bos = 0, eos = 0, sep = 0;

    static Vocab load(const std::string& dir) {
        const std::string path = (std::filesystem::path(dir) / "vocab.json").string();
        std::ifstream in(path);
        if (!in) throw IoError("cannot open '" + path + "'");
        try {
            const nlohmann::json j = nlohmann::json::parse(in);
            Vocab v;
            v.tokens = j.at("tokens").get<std::vector<std::string>>();
            v.bos = j.at("bos_id").get<std::int32_t>();
            v.eos = j.at("eos_id").get<std::int32_t>();
            v.sep = j.at("sep_id").get<std::int32_t>();
            for (std::size_t i = 0; i < v.tokens.size(); ++i)
                if (v.tokens[i].size() == 1) v.ids[v.tokens[i][0]] = std::int32_t(i);
            return v;
        } catch (const nlohmann::json::exception& e) {
            throw FormatError(path + ": " + e.what());
        }
    }

    std::vector<std::int32_t> encode(const std::string& text) const {
        std::vector<std::int32_t> out;
        for (char c : text) {
            const auto it = ids.find(c);
            if (it == ids.end()) {
                const int byte = static_cast<unsigned char>(c);
                throw ConfigError("vocab.json has no token for " +
                                  (byte >= 32 && byte < 127 ? "'" + std::string(1, c) + "'"
                                                            : "the byte " + std::to_string(byte)));
            }
            out.push_back(it->second);
        }
        return out;
    }
    std::string decode(const std::vector<std::int32_t>& ids_) const {
        std::string out;
        for (std::int32_t id : ids_)
            if (id != eos) out += tokens.at(std::size_t(id));
        return out;
    }
    // "<s>" + text [+ the neutral token first]
    std::vector<std::int32_t> prompt(const std::string& text, bool neutral = false) const {
        std::vector<std::int32_t> out = {bos};
        if (neutral) out.push_back(sep);
        for (std::int32_t id : encode(text)) out.push_back(id);
        return out;
    }
};

// ------------------------------------------------------------------------------------------------
// Tasks: one the model knows ("reverse") and one it never saw ("reverse then upper").

inline std::string reverse(const std::string& s) { return std::string(s.rbegin(), s.rend()); }
inline std::string reverse_upper(const std::string& s) {
    std::string out = reverse(s);
    for (char& c : out) c = char(c - 'a' + 'A');
    return out;
}

/// 3 to 8 distinct lowercase letters, like the pretraining strings.
inline std::string random_string(Rng& rng) {
    const std::size_t n = 3 + std::size_t(rng.below(6));
    std::string letters = "abcdefghijklmnopqrstuvwxyz";
    for (std::size_t i = 0; i < n; ++i)
        std::swap(letters[i], letters[i + std::size_t(rng.below(26 - i))]);
    return letters.substr(0, n);
}

/// `n` random strings not in `seen` (which gains them), so that sets drawn in turn are disjoint.
inline std::vector<std::string> distinct_strings(Rng& rng, std::size_t n,
                                                 std::set<std::string>& seen) {
    std::vector<std::string> out;
    while (out.size() < n) {
        const std::string s = random_string(rng);
        if (seen.insert(s).second) out.push_back(s);
    }
    return out;
}

/// "<s>[<sep>][instruction: ]string = " -> answer</s>: the loss covers the answer and </s>.
inline train::Example make_example(const Vocab& v, const std::string& instruction,
                                   const std::string& s, const std::string& answer,
                                   bool neutral = false) {
    const std::string head = instruction.empty() && !neutral ? "" : instruction + ": ";
    std::vector<std::int32_t> target = v.encode(answer);
    target.push_back(v.eos);
    return train::input_target_example(v.prompt(head + s + " = ", neutral), target);
}

struct Task {
    std::string name;
    train::Dataset train, heldout;  // without the instruction
};

inline Task make_task(const Vocab& v, const std::string& name,
                      std::string (*fn)(const std::string&),
                      const std::vector<std::string>& train_strings,
                      const std::vector<std::string>& heldout_strings) {
    Task t{name, {}, {}};
    for (const auto& s : train_strings) t.train.add(make_example(v, "", s, fn(s)));
    for (const auto& s : heldout_strings) t.heldout.add(make_example(v, "", s, fn(s)));
    return t;
}

// ------------------------------------------------------------------------------------------------
// The four methods, each with settings that suit it (8 virtual tokens for the prompt-based ones).

struct MethodSpec {
    std::string name;
    double lr;
    std::function<std::unique_ptr<peft::Method<float>>(const Model&, Rng&)> make;
};

inline std::vector<MethodSpec> method_specs() {
    const Index P = 8;
    return {
        {"prompt tuning", 0.1,
         [P](const Model& m, Rng& rng) {
             return std::make_unique<peft::PromptTuning<float>>(
                 m.config, peft::init_from_vocab(m, P, rng),
                 peft::PromptInit{.kind = peft::PromptInit::Kind::kSampleVocab});
         }},
        // Li & Liang's MLP reparameterisation trains far more reliably than a direct prefix; the
        // adapter file holds the folded prefix [P, L·2·Dkv].
        {"prefix tuning", 0.005,
         [P](const Model& m, Rng& rng) {
             return std::make_unique<peft::PrefixTuning<float>>(
                 m.config,
                 peft::PrefixTuningOptions{
                     .num_virtual_tokens = P, .projection = true, .encoder_hidden_size = 64},
                 rng);
         }},
        {"P-tuning", 0.01,
         [P](const Model& m, Rng& rng) {
             return std::make_unique<peft::PTuning<float>>(
                 m.config,
                 peft::PTuningOptions{.num_virtual_tokens = P,
                                      .encoder = peft::PromptEncoderType::kMlp,
                                      .encoder_hidden_size = 64,
                                      .encoder_num_layers = 2},
                 rng);
         }},
        {"LoRA", 0.005,
         [](const Model& m, Rng& rng) {
             return std::make_unique<peft::Lora<nn::Llama, float>>(
                 m.config,
                 peft::LoraOptions{.rank = 8,
                                   .alpha = 16,
                                   .query = true,
                                   .key = true,
                                   .value = true,
                                   .output = true},
                 rng);
         }},
    };
}

/// Train `method` on `data`, the model frozen: `steps` AdamW steps of 16 examples at `spec`'s
/// learning rate (warm-up then cosine), silently. Returns the seconds it took.
inline double fit(const Model& model, peft::Method<float>& method, const MethodSpec& spec,
                  const train::Dataset& data, std::int64_t steps, std::uint64_t seed) {
    optim::AdamW<float> adamw(method.parameters(), {.lr = spec.lr, .weight_decay = 0});
    train::Trainer<nn::Llama, float> trainer(
        model, method, adamw,
        {.epochs = 0,
         .max_steps = steps,
         .batch_size = 16,
         .grad_accumulation = 1,
         .max_grad_norm = 1.0,
         .schedule = optim::LrSchedule::warmup_cosine(spec.lr, steps / 10, steps),
         .eval_every = 0,
         .patience = 0,
         .keep_best = false,
         .seed = seed,
         .shuffle = true,
         .pad_id = 0,
         .metrics_csv = {},
         .progress = train::ProgressMode::kSilent});
    const auto start = std::chrono::steady_clock::now();
    trainer.fit(data);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The folder name of a method's adapter for a task: "prompt tuning", "reverse" ->
/// "prompt_tuning_reverse".
inline std::string adapter_folder(const std::string& method, const std::string& task) {
    std::string name = method + "_" + task;
    std::replace(name.begin(), name.end(), ' ', '_');
    return name;
}

/// Removes a temporary folder however the program ends.
struct RemoveOnExit {
    std::filesystem::path path;
    ~RemoveOnExit() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

}  // namespace tiny_tasks
