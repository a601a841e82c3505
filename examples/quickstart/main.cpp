// The whole idea in one run, in well under two minutes on two cores.
//
// examples/data/tiny_tasks is a tiny character-level LLaMA model (made by examples/pretrain) that
// does string tasks when an instruction says which one, "reverse: kfqx = xqfk", and copies the
// string when there is no instruction. This program
//   (a) shows the frozen model failing "reverse" when the instruction is missing;
//   (b) trains prompt tuning, prefix tuning, P-tuning and LoRA to stand in for the missing
//       instruction, the model frozen: for "reverse", which the model knows, and for "reverse then
//       upper", which it was never shown; then prints one table of the results;
//   (c) saves the adapters in Hugging Face PEFT's format, loads them back, and serves the
//       prompt-based ones together, one request per adapter plus one without, in a single mixed
//       batch (LoRA, which changes weights, from its merged model).
//
// Build and run, from the repository root:
//   cmake --preset release && cmake --build --preset release --target quickstart &&
//   build/release/examples/quickstart
// or without CMake:
//   g++ -std=c++20 -O2 -Iinclude -I/usr/include/eigen3 examples/quickstart/main.cpp
//       -o quickstart && ./quickstart
//
// Options: --steps (training steps per adapter, 200), --seed (1), --data (the model folder; by
// default examples/data/tiny_tasks of the source tree this file is in).

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "../common/tiny_tasks.hpp"

using namespace softprompt;
using namespace tiny_tasks;
namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------------------------------------
// Greedy answers to a data set's inputs, all in one batch: exact match and tokens per second.

struct Score {
    double accuracy = 0;
    double tokens_per_second = 0;
};

Score score(const Model& model, const nn::PromptCache<float>* cache, const train::Dataset& data,
            std::int32_t eos) {
    std::vector<nn::GenerationRequest<float>> requests;
    std::vector<std::vector<std::int32_t>> expected;
    for (const train::Example& e : data.examples()) {
        std::size_t first = 0;
        while (e.targets[first] < 0) ++first;
        nn::GenerationRequest<float> r;
        r.prompt.assign(e.ids.begin(), e.ids.begin() + std::ptrdiff_t(first) + 1);
        r.adapter = cache;
        std::vector<std::int32_t> want;
        for (std::size_t s = first; s < e.targets.size() && e.targets[s] >= 0; ++s)
            want.push_back(e.targets[s]);
        r.max_new_tokens = int(want.size());
        r.stop_tokens = {eos};
        requests.push_back(std::move(r));
        expected.push_back(std::move(want));
    }
    nn::GenerationStats stats;
    const auto results = nn::generate(model, requests, &stats);
    Index right = 0, tokens = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        right += results[i].tokens == expected[i] ? 1 : 0;
        tokens += Index(results[i].tokens.size());
    }
    const double seconds = stats.prefill_seconds + stats.decode_seconds;
    return {double(right) / double(data.size()), double(tokens) / std::max(seconds, 1e-9)};
}

Score score(const Model& model, peft::Method<float>& method, const train::Dataset& data,
            std::int32_t eos) {
    const train::Served<nn::Llama, float> served = train::serve(model, method);  // LoRA: merged
    return score(served.model, served.cache.length() > 0 ? &served.cache : nullptr, data, eos);
}

struct Trained {
    std::unique_ptr<peft::Method<float>> method;
    Index trainable = 0;
    double seconds = 0;
    Score before, after;
    std::string dir;           // the saved PEFT adapter
    std::uintmax_t bytes = 0;  // size of its adapter_model.safetensors
};

Trained train_one(const Model& model, const MethodSpec& spec, const Task& task, std::int64_t steps,
                  std::uint64_t seed, std::int32_t eos, const fs::path& adapters) {
    Rng rng(seed);
    Trained t;
    t.method = spec.make(model, rng);
    t.trainable = t.method->trainable_count();
    t.before = score(model, *t.method, task.heldout, eos);
    t.seconds = fit(model, *t.method, spec, task.train, steps, seed);
    t.after = score(model, *t.method, task.heldout, eos);
    t.dir = (adapters / adapter_folder(spec.name, task.name)).string();
    peft::save_adapter(t.dir, *t.method, model, "tiny_tasks");
    t.bytes = fs::file_size(fs::path(t.dir) / peft::kAdapterWeights);
    return t;
}

std::string grouped(std::uintmax_t v) {
    std::string digits = std::to_string(v), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app(
        "softprompt quickstart: adapters stand in for the missing instruction of a frozen model");
    std::string data_dir = default_data_dir();
    std::int64_t steps = 200;
    std::uint64_t seed = 1;
    app.add_option("--data", data_dir, "model folder (config.json, model.safetensors, vocab.json)")
        ->capture_default_str();
    app.add_option("--steps", steps, "training steps per adapter (16 examples each)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--seed", seed, "seed of the data, the initialisations and the training order")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    use_one_thread();
    const auto t0 = std::chrono::steady_clock::now();
    try {
        if (!fs::exists(fs::path(data_dir) / "config.json")) {
            std::fprintf(
                stderr,
                "quickstart: no model in '%s'; pass --data <repository>/examples/data/tiny_tasks\n",
                data_dir.c_str());
            return 2;
        }
        const Model model = io::load_hf<nn::Llama, float>(data_dir);  // read-only memory map
        const Vocab vocab = Vocab::load(data_dir);
        const nn::Config& c = model.config;
        std::printf(
            "Frozen model %s: LLaMA layout, d %ld, %ld layers, %ld heads (%ld key/value), "
            "%ld-character "
            "vocabulary, %s parameters.\n\n",
            data_dir.c_str(), long(c.dim), long(c.n_layers), long(c.n_heads), long(c.n_kv_heads),
            long(c.vocab_size),
            grouped(std::uintmax_t(peft::frozen_parameter_count(model))).c_str());

        // 100 held-out strings (and "softmax", for show) that no adapter trains on; 1024 to train
        // on.
        Rng rng(seed);
        std::set<std::string> seen = {"softmax"};
        const std::vector<std::string> heldout_strings = distinct_strings(rng, 100, seen);
        const std::vector<std::string> train_strings = distinct_strings(rng, 1024, seen);
        const std::vector<Task> tasks = {
            make_task(vocab, "reverse", reverse, train_strings, heldout_strings),
            make_task(vocab, "reverse+upper", reverse_upper, train_strings, heldout_strings)};

        // (a) The frozen model needs its instruction.
        auto answer = [&](const std::vector<std::int32_t>& prompt) {
            const nn::GenerationRequest<float> r{.prompt = prompt,
                                                 .adapter = nullptr,
                                                 .sampling = {},
                                                 .max_new_tokens = 12,
                                                 .stop_tokens = {vocab.eos}};
            return quoted(vocab.decode(nn::generate(model, std::vector{r})[0].tokens));
        };
        train::Dataset with_word, neutral, composed_word;
        for (const auto& s : heldout_strings) {
            with_word.add(make_example(vocab, "reverse", s, reverse(s)));
            neutral.add(make_example(vocab, "", s, reverse(s), /*neutral=*/true));
            composed_word.add(make_example(vocab, "reverse+upper", s, reverse_upper(s)));
        }
        const double acc_word = score(model, nullptr, with_word, vocab.eos).accuracy;
        // Pretraining showed sort+upper, rotate+upper and double+upper, never reverse+upper.
        const double acc_composed_word = score(model, nullptr, composed_word, vocab.eos).accuracy;
        std::printf(
            "(a) The frozen model (greedy) and the task \"reverse\", on %zu held-out strings:\n",
            heldout_strings.size());
        std::printf("    %-22s -> %-10s accuracy %5.1f%%  (instruction given)\n",
                    "\"reverse: softmax = \"", answer(vocab.prompt("reverse: softmax = ")).c_str(),
                    100 * acc_word);
        std::printf("    %-22s -> %-10s accuracy %5.1f%%  (instruction missing: it copies)\n",
                    "\"softmax = \"", answer(vocab.prompt("softmax = ")).c_str(),
                    100 * score(model, nullptr, tasks[0].heldout, vocab.eos).accuracy);
        std::printf("    %-22s -> %-10s accuracy %5.1f%%  (a neutral token instead)\n\n",
                    "\"<sep>: softmax = \"", answer(vocab.prompt(": softmax = ", true)).c_str(),
                    100 * score(model, nullptr, neutral, vocab.eos).accuracy);

        // (b) Each method learns to stand in for the missing instruction; the model stays frozen.
        std::printf(
            "(b) Each method trained on %zu strings without the instruction (%ld steps of 16), "
            "held-out exact match before -> after:\n",
            train_strings.size(), long(steps));
        const RemoveOnExit cleanup{fs::temp_directory_path() /
                                   ("softprompt_quickstart_" + std::to_string(::getpid()))};
        const std::vector<MethodSpec> specs = method_specs();
        std::vector<std::vector<Trained>> trained(specs.size());
        for (std::size_t m = 0; m < specs.size(); ++m)
            for (const Task& task : tasks) {
                trained[m].push_back(
                    train_one(model, specs[m], task, steps, seed, vocab.eos, cleanup.path));
                const Trained& t = trained[m].back();
                std::printf("    %-14s %-14s %5.1f%% -> %5.1f%%   (%.1f s)\n",
                            specs[m].name.c_str(), task.name.c_str(), 100 * t.before.accuracy,
                            100 * t.after.accuracy, t.seconds);
                std::fflush(stdout);
            }

        const Score base_known = score(model, nullptr, tasks[0].heldout, vocab.eos);
        const Score base_new = score(model, nullptr, tasks[1].heldout, vocab.eos);
        std::printf("\n    %-26s %10s %8s %12s %9s %14s %10s\n", "method", "trainable", "adapter",
                    "train time", "reverse", "reverse+upper", "gen tok/s");
        std::printf("    %-26s %10s %8s %12s %8.1f%% %13.1f%% %10.0f\n", "frozen, no instruction",
                    "0", "-", "-", 100 * base_known.accuracy, 100 * base_new.accuracy,
                    base_known.tokens_per_second);
        std::printf("    %-26s %10s %8s %12s %8.1f%% %12.1f%%* %10s\n", "frozen, with instruction",
                    "0", "-", "-", 100 * acc_word, 100 * acc_composed_word, "");
        for (std::size_t m = 0; m < specs.size(); ++m) {
            const Trained& known = trained[m][0];
            const Trained& composed = trained[m][1];
            char time[32];
            std::snprintf(time, sizeof time, "%.1f+%.1f s", known.seconds, composed.seconds);
            std::printf("    %-26s %10s %8s %12s %8.1f%% %13.1f%% %10.0f\n", specs[m].name.c_str(),
                        grouped(std::uintmax_t(known.trainable)).c_str(),
                        grouped(known.bytes).c_str(), time, 100 * known.after.accuracy,
                        100 * composed.after.accuracy, known.after.tokens_per_second);
        }
        std::printf(
            "    * the instruction \"reverse+upper:\", which pretraining never showed.\n"
            "    adapter: bytes of adapter_model.safetensors (PEFT format; prefix tuning's MLP is "
            "folded into\n"
            "    a plain prefix). train time: reverse + reverse+upper. gen tok/s: greedy, %zu "
            "requests in one\n"
            "    batch, on the reverse task.\n\n",
            heldout_strings.size());

        // (c) Saved adapters, loaded back, served together.
        std::printf(
            "(c) The adapters, loaded back from their PEFT files and served on \"softmax = \" in "
            "one batch:\n");
        const std::vector<std::int32_t> prompt = vocab.prompt("softmax = ");
        std::vector<std::string> labels;
        std::vector<nn::PromptCache<float>> caches,
            originals;  // loaded, and as trained (before saving)
        for (std::size_t m = 0; m < specs.size(); ++m)
            for (std::size_t k = 0; k < tasks.size(); ++k) {
                const peft::LoadedAdapter loaded = peft::load_adapter(trained[m][k].dir, c);
                if (loaded.kind == peft::MethodKind::kLora) continue;
                caches.push_back(
                    train::serve(model, *peft::prompt_method<nn::Llama>(loaded, c)).cache);
                originals.push_back(train::serve(model, *trained[m][k].method).cache);
                labels.push_back(specs[m].name + ", " + tasks[k].name);
            }
        std::vector<nn::GenerationRequest<float>> requests;
        for (const auto& cache : caches)
            requests.push_back({.prompt = prompt,
                                .adapter = &cache,
                                .sampling = {},
                                .max_new_tokens = 12,
                                .stop_tokens = {vocab.eos}});
        requests.push_back({.prompt = prompt,
                            .adapter = nullptr,
                            .sampling = {},
                            .max_new_tokens = 12,
                            .stop_tokens = {vocab.eos}});
        labels.push_back("no adapter");
        const auto mixed = nn::generate(model, requests);
        bool all_same = true;
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const auto alone = nn::generate(model, std::vector{requests[i]})[0].tokens;
            bool same = alone == mixed[i].tokens;
            const bool adapted = i < originals.size();
            if (adapted) {
                nn::GenerationRequest<float> unsaved = requests[i];
                unsaved.adapter = &originals[i];
                same = same && nn::generate(model, std::vector{unsaved})[0].tokens == alone;
            }
            all_same = all_same && same;
            std::printf("    %-30s -> %-10s %s\n", labels[i].c_str(),
                        quoted(vocab.decode(mixed[i].tokens)).c_str(),
                        !same     ? "DIFFERS from alone or from before saving"
                        : adapted ? "(same alone, and before saving)"
                                  : "(same alone)");
        }
        // LoRA changes the frozen weights: it is served from its merged model, not in the mixed
        // batch.
        const std::size_t lora = specs.size() - 1;
        for (std::size_t k = 0; k < tasks.size(); ++k) {
            const auto method =
                peft::lora_method<nn::Llama>(peft::load_adapter(trained[lora][k].dir, c), c);
            const nn::GenerationRequest<float> r{.prompt = prompt,
                                                 .adapter = nullptr,
                                                 .sampling = {},
                                                 .max_new_tokens = 12,
                                                 .stop_tokens = {vocab.eos}};
            const auto tokens = nn::generate(method->merge(model), std::vector{r})[0].tokens;
            const auto unsaved =
                nn::generate(train::serve(model, *trained[lora][k].method).model, std::vector{r})[0]
                    .tokens;
            all_same = all_same && tokens == unsaved;
            const std::string label = "LoRA, " + tasks[k].name + " (merged)";
            std::printf("    %-30s -> %-10s %s\n", label.c_str(),
                        quoted(vocab.decode(tokens)).c_str(),
                        tokens == unsaved ? "(same before saving)" : "DIFFERS from before saving");
        }
        std::printf(
            "    The prompt-based adapters share one frozen model, each request with its own "
            "adapter's\n"
            "    key/value cache; LoRA changes the weights, so it is served from its merged "
            "model.\n");
        const double total =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("\nDone in %.0f s.\n", total);
        return all_same ? 0 : 1;
    } catch (const Error& e) {
        std::fprintf(stderr, "quickstart: %s\n", e.what());
        return 1;
    }
}
