// Generate text with a frozen LLaMA-family model, with or without PEFT adapters.
//
//   generate MODEL [TOKENIZER] [--adapter DIR]... [--prompt TEXT] [--steps N] [--temperature T]
//            [--top-k K] [--top-p P] [--seed S] [--ids]
//
// MODEL is a llama2.c checkpoint (.bin; TOKENIZER, its tokenizer.bin, is then required) or a
// Hugging Face model folder (config.json, model.safetensors; without TOKENIZER the folder's
// character vocabulary vocab.json is used, as in examples/data/tiny_tasks).
//
// --adapter DIR loads a PEFT adapter folder (peft::save_adapter writes them; so do prompt_tune
// --out and serve_many --save): prompt tuning and P-tuning are served as a cached soft prompt,
// prefix tuning as a cached prefix, LoRA from a copy of the weights with the update merged in.
// Given several times, the prompt is continued once per adapter (the prompt-based ones together in
// one batch) and each output line starts with the adapter's folder name.
//
// The generated text goes to stdout; the adapters loaded and statistics (prefill and decode
// tokens/s) go to stderr. --temperature 0 is greedy decoding. --ids prints the token ids (the
// prompt's, BOS included, then the generated ones) instead of text, so runs can be compared
// exactly.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "../common/serving.hpp"
#include "../common/tiny_tasks.hpp"

using namespace softprompt;

namespace {

// The model's tokenizer: llama2.c's tokenizer.bin, or the character vocabulary of a model folder.
struct Tokenizer {
    std::optional<tok::SpmTokenizer> spm;
    std::optional<tiny_tasks::Vocab> chars;

    std::vector<std::int32_t> encode(const std::string& text) const {  // BOS first
        return spm ? spm->encode(text, /*bos=*/true, /*eos=*/false) : chars->prompt(text);
    }
    std::string decode(const std::vector<std::int32_t>& ids) const {  // BOS and EOS print nothing
        if (spm) return spm->decode(ids);
        std::vector<std::int32_t> text;
        for (std::int32_t id : ids)
            if (id != chars->bos) text.push_back(id);
        return chars->decode(text);
    }
    std::vector<std::int32_t> stop_tokens() const {  // llama2.c stops on BOS too
        if (spm) return {tok::SpmTokenizer::bos(), tok::SpmTokenizer::eos()};
        return {chars->eos};
    }
};

}  // namespace

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    CLI::App app{"Generate text with a frozen model and optional PEFT adapters (softprompt)"};
    std::string model_path, tokenizer_path, prompt;
    std::vector<std::string> adapter_dirs;
    int steps = 256;
    nn::SamplingOptions sampling{.temperature = 1.0, .top_k = 0, .top_p = 0.9, .seed = 0};
    bool print_ids = false;
    app.add_option("model", model_path,
                   "llama2.c checkpoint (.bin) or Hugging Face model folder (config.json, "
                   "model.safetensors, vocab.json)")
        ->required()
        ->check(CLI::ExistingPath);
    app.add_option("tokenizer", tokenizer_path,
                   "llama2.c tokenizer (tokenizer.bin); default for a model folder: its vocab.json")
        ->check(CLI::ExistingFile);
    app.add_option("-a,--adapter", adapter_dirs,
                   "PEFT adapter folder; repeat to continue the prompt once per adapter")
        ->check(CLI::ExistingDirectory);
    app.add_option("-p,--prompt", prompt, "text to continue (default: start from BOS alone)");
    app.add_option("-n,--steps", steps, "maximum number of tokens to generate")
        ->check(CLI::PositiveNumber);
    app.add_option("-t,--temperature", sampling.temperature, "0 = greedy")
        ->check(CLI::NonNegativeNumber);
    app.add_option("-k,--top-k", sampling.top_k, "sample among the k most likely tokens (0 = all)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-p", sampling.top_p, "nucleus sampling threshold in (0, 1]")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("-s,--seed", sampling.seed, "random seed for sampling");
    app.add_flag("--ids", print_ids, "print token ids instead of text");
    CLI11_PARSE(app, argc, argv);

    try {
        const bool folder = fs::is_directory(model_path);
        if (!folder && tokenizer_path.empty())
            throw ConfigError("a llama2.c checkpoint needs its tokenizer: generate " + model_path +
                              " TOKENIZER.bin");
        const serving::Model model = folder ? io::load_hf<nn::Llama, float>(model_path)
                                            : io::load_llama2c<float>(model_path);
        Tokenizer tokenizer;
        if (!tokenizer_path.empty())
            tokenizer.spm =
                tok::SpmTokenizer::from_llama2c(tokenizer_path, model.config.vocab_size);
        else
            tokenizer.chars = tiny_tasks::Vocab::load(model_path);

        std::vector<serving::Adapter> adapters;
        for (const std::string& dir : adapter_dirs) {
            adapters.push_back(serving::load_adapter(model, dir));
            std::fprintf(stderr, "adapter %s: %s\n", dir.c_str(), adapters.back().about.c_str());
        }

        serving::Request request;
        request.generation.prompt = tokenizer.encode(prompt);
        request.generation.sampling = sampling;
        request.generation.max_new_tokens = steps;
        request.generation.stop_tokens = tokenizer.stop_tokens();
        std::vector<serving::Request> requests;
        for (std::size_t a = 0; a < std::max<std::size_t>(adapters.size(), 1); ++a) {
            request.adapter = adapters.empty() ? -1 : int(a);
            requests.push_back(request);
        }
        nn::GenerationStats stats;
        const auto results = serving::serve(model, adapters, requests, &stats);

        for (std::size_t i = 0; i < results.size(); ++i) {
            const std::string label = adapters.size() > 1 ? adapters[i].name + ": " : "";
            const auto& prompt_ids = requests[i].generation.prompt;
            if (print_ids) {
                std::string line;
                for (std::int32_t id : prompt_ids) line += std::to_string(id) + " ";
                for (std::int32_t id : results[i].tokens) line += std::to_string(id) + " ";
                line.pop_back();
                std::cout << label << line << "\n";
            } else {
                std::vector<std::int32_t> all = prompt_ids;
                all.insert(all.end(), results[i].tokens.begin(), results[i].tokens.end());
                if (results[i].stopped) all.pop_back();  // the stop token prints nothing useful
                std::cout << label << tokenizer.decode(all) << "\n";
            }
        }
        std::fprintf(
            stderr, "prefill: %lld tokens, %.1f tokens/s; decode: %lld tokens, %.1f tokens/s\n",
            static_cast<long long>(stats.prefill_tokens),
            stats.prefill_seconds > 0 ? double(stats.prefill_tokens) / stats.prefill_seconds : 0.0,
            static_cast<long long>(stats.decode_tokens),
            stats.decode_seconds > 0 ? double(stats.decode_tokens) / stats.decode_seconds : 0.0);
    } catch (const Error& e) {
        std::fprintf(stderr, "generate: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {  // a malformed file the library's checks do not name
        std::fprintf(stderr, "generate: %s\n", e.what());
        return 1;
    }
    return 0;
}
