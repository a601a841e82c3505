// One frozen model, many adapters, mixed batches.
//
// Serves a stream of requests to the tiny model of examples/data/tiny_tasks, each request with one
// of several PEFT adapters or with none, in batches of up to --batch consecutive requests; then
// serves every request again alone and checks that its row of the mixed batch gave the same tokens.
//
// The adapters are the folders given with --adapter. With none given, four small ones are trained
// first, the model frozen, about a second each: prompt tuning and LoRA for "reverse", prefix tuning
// and P-tuning for "reverse then upper" (examples/quickstart compares the methods properly).
// They are saved in PEFT's format, in --save or a temporary folder, and served from those files as
// a server would serve them.
//
// Every row of a batch shares one pass over the frozen model (peft::Registry): rows with a soft
// prompt or a prefix attend to their adapter's cached keys/values, LoRA rows add their adapter's
// low-rank updates beside the shared weights, so ten LoRA adapters cost no copy of the model.
//
//   serve_many [--adapter DIR]... [--save DIR] [--steps N] [--requests N] [--batch B] [--seed S]
//              [--data DIR]

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <set>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "../common/tiny_tasks.hpp"

using namespace softprompt;
using namespace tiny_tasks;
namespace fs = std::filesystem;

namespace {

using Answer = std::string (*)(const std::string&);  // a task: string -> expected answer

std::string unchanged(const std::string& s) { return s; }  // the frozen model copies, unprompted

// Trains the four methods, two on each task, and saves them under `dir`; returns the folders, and
// in `answers` the task each adapter learned.
std::vector<std::string> train_adapters(const Model& model, const Vocab& vocab,
                                        const std::vector<std::string>& strings, std::int64_t steps,
                                        std::uint64_t seed, const fs::path& dir,
                                        std::vector<Answer>& answers) {
    const std::vector<Task> tasks = {make_task(vocab, "reverse", reverse, strings, {}),
                                     make_task(vocab, "reverse+upper", reverse_upper, strings, {})};
    const std::vector<Answer> task_answers = {reverse, reverse_upper};
    const std::vector<MethodSpec> specs = method_specs();
    std::printf("Training %zu adapters, %ld steps of 16 each, the model frozen:\n", specs.size(),
                long(steps));
    std::vector<std::string> dirs;
    const std::size_t task_of[] = {0, 1, 1, 0};  // prompt, prefix, P-tuning, LoRA
    for (std::size_t m = 0; m < specs.size(); ++m) {
        const std::size_t t = task_of[m % std::size(task_of)];
        const Task& task = tasks[t];
        Rng rng(seed + m);
        const auto method = specs[m].make(model, rng);
        const double seconds = fit(model, *method, specs[m], task.train, steps, seed);
        dirs.push_back((dir / adapter_folder(specs[m].name, task.name)).string());
        peft::save_adapter(dirs.back(), *method, model, "tiny_tasks");
        answers.push_back(task_answers[t]);
        std::printf("    %-14s %-14s %5.1f s\n", specs[m].name.c_str(), task.name.c_str(), seconds);
        std::fflush(stdout);
    }
    return dirs;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app("softprompt serve_many: one frozen model, many adapters, mixed batches");
    std::string data_dir = default_data_dir(), save_dir;
    std::vector<std::string> adapter_dirs;
    std::int64_t steps = 200;  // as examples/quickstart: enough for most answers to be right
    std::size_t n_requests = 64, batch = 8;
    std::uint64_t seed = 1;
    app.add_option("-a,--adapter", adapter_dirs,
                   "PEFT adapter folder to serve (repeat); none: train four small ones")
        ->check(CLI::ExistingDirectory);
    app.add_option("--save", save_dir,
                   "where to save the trained adapters (default: a temporary "
                   "folder, removed at the end)");
    app.add_option("--steps", steps, "training steps per adapter (16 examples each)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("-n,--requests", n_requests, "requests to serve")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("-b,--batch", batch, "rows per batch at most")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--seed", seed, "seed of the strings, the adapters' choice and the training")
        ->capture_default_str();
    app.add_option("--data", data_dir, "model folder (config.json, model.safetensors, vocab.json)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    use_one_thread();
    try {
        if (!fs::exists(fs::path(data_dir) / "config.json"))
            throw IoError("no model in '" + data_dir +
                          "'; pass --data <repository>/examples/data/tiny_tasks");
        const Model model = io::load_hf<nn::Llama, float>(data_dir);  // read-only memory map
        const Vocab vocab = Vocab::load(data_dir);
        std::printf("Frozen model %s: %ld layers, d %ld, %ld parameters.\n\n", data_dir.c_str(),
                    long(model.config.n_layers), long(model.config.dim),
                    long(peft::frozen_parameter_count(model)));

        Rng rng(seed);
        std::set<std::string> seen;
        const std::vector<std::string> prompts = distinct_strings(rng, n_requests, seen);
        std::vector<Answer> answers;  // per adapter: its task, when this program trained it
        // Trained adapters go to --save, or to a temporary folder removed at the end.
        const RemoveOnExit temporary{fs::temp_directory_path() /
                                     ("softprompt_serve_many_" + std::to_string(::getpid()))};
        if (adapter_dirs.empty()) {
            const fs::path out = save_dir.empty() ? temporary.path : fs::path(save_dir);
            adapter_dirs = train_adapters(model, vocab, distinct_strings(rng, 1024, seen), steps,
                                          seed, out, answers);
            std::printf("\n");
        }
        answers.resize(adapter_dirs.size(), nullptr);

        peft::Registry<nn::Llama> adapters(model);
        std::printf("Adapters, loaded from their PEFT folders:\n");
        for (const std::string& dir : adapter_dirs) {
            // Named by folder; a second folder of the same name goes by its path.
            const auto& a = adapters.add_folder(
                dir, adapters.contains(peft::folder_name(dir)) ? dir : std::string());
            std::printf("    %-28s %s\n", a.name.c_str(), a.about.c_str());
        }
        using Request = peft::Registry<nn::Llama>::Request;

        // The stream: each request a fresh string and one of the adapters, or none, at random.
        std::vector<Request> stream;
        std::vector<int> adapter_of;  // per request: an index into the adapters, or -1 for none
        for (const std::string& s : prompts) {
            Request r;
            r.generation.prompt = vocab.prompt(s + " = ");
            r.generation.max_new_tokens = 12;
            r.generation.stop_tokens = {vocab.eos};
            adapter_of.push_back(int(rng.below(adapters.size() + 1)) - 1);
            r.adapter = adapter_of.back() < 0 ? "" : adapters[std::size_t(adapter_of.back())].name;
            stream.push_back(std::move(r));
        }
        std::printf(
            "\nServing %zu requests (greedy), each with no adapter or one of the %zu, in "
            "batches of up to %zu:\n",
            stream.size(), adapters.size(), batch);
        adapters.generate({stream[0]});  // warm-up: the weights paged in
        auto start = std::chrono::steady_clock::now();
        std::vector<nn::GenerationResult> mixed;
        std::size_t batches = 0;
        for (std::size_t first = 0; first < stream.size(); first += batch, ++batches) {
            const std::vector<Request> rows(
                stream.begin() + std::ptrdiff_t(first),
                stream.begin() + std::ptrdiff_t(std::min(first + batch, stream.size())));
            for (auto& result : adapters.generate(rows)) mixed.push_back(std::move(result));
        }
        const double mixed_seconds = seconds_since(start);

        start = std::chrono::steady_clock::now();
        std::vector<nn::GenerationResult> alone;
        std::size_t alone_tokens = 0;
        for (const Request& r : stream) {
            alone.push_back(adapters.generate({r})[0]);
            alone_tokens += alone.back().tokens.size();
        }
        const double alone_seconds = seconds_since(start);

        // Per adapter (none first): requests, and right answers where the task is known.
        std::vector<std::size_t> count(adapters.size() + 1, 0), right(adapters.size() + 1, 0);
        std::size_t tokens = 0, pass = 0;
        for (std::size_t i = 0; i < stream.size(); ++i) {
            const int a = adapter_of[i];
            const Answer answer = a < 0 ? unchanged : answers[std::size_t(a)];
            const std::string text = vocab.decode(mixed[i].tokens);
            ++count[std::size_t(a + 1)];
            right[std::size_t(a + 1)] += answer != nullptr && text == answer(prompts[i]) ? 1 : 0;
            tokens += mixed[i].tokens.size();
            pass += mixed[i].tokens == alone[i].tokens ? 1 : 0;
            if (i < 6)
                std::printf("    #%-3zu %-28s %-14s -> %s\n", i,
                            a < 0 ? "(none)" : adapters[std::size_t(a)].name.c_str(),
                            quoted(prompts[i] + " = ").c_str(), quoted(text).c_str());
        }
        std::printf("    ...\n\n    %-28s %8s %8s\n", "adapter", "requests", "right*");
        for (std::size_t k = 0; k < count.size(); ++k) {
            const bool known = k == 0 || answers[k - 1] != nullptr;
            std::printf("    %-28s %8zu %8s\n",
                        k == 0 ? "(none: the model copies)" : adapters[k - 1].name.c_str(),
                        count[k], known ? std::to_string(right[k]).c_str() : "-");
        }
        std::printf("    * answers that are the adapter's task%s\n",
                    answers.front() != nullptr ? " (with few --steps, few are)"
                                               : " (not known for a given folder: \"-\").");
        std::printf(
            "\n    mixed batches: %zu requests in %zu batches, %zu tokens in %.3f s: %.0f "
            "tokens/s\n",
            stream.size(), batches, tokens, mixed_seconds, double(tokens) / mixed_seconds);
        std::printf("    one at a time: %zu requests, %zu tokens in %.3f s: %.0f tokens/s\n",
                    stream.size(), alone_tokens, alone_seconds,
                    double(alone_tokens) / alone_seconds);
        std::printf(
            "    each row of a mixed batch equals its request served alone: PASS %zu, "
            "FAIL %zu\n",
            pass, stream.size() - pass);
        return pass == stream.size() ? 0 : 1;
    } catch (const Error& e) {
        std::fprintf(stderr, "serve_many: %s\n", e.what());
        return 1;
    }
}
