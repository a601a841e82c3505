// Generate text with a frozen LLaMA-family model, with or without PEFT adapters.
//
//   generate MODEL [TOKENIZER] [--adapter DIR]... [--prompt TEXT] [--steps N] [--temperature T]
//            [--top-k K] [--top-p P] [--seed S] [--ids] [--dump-logits FILE]
//
// MODEL is a llama2.c checkpoint (.bin; TOKENIZER, its tokenizer.bin, is then required) or a
// Hugging Face model folder (config.json, model.safetensors). A folder's tokenizer is, in this
// order: TOKENIZER when given (tokenizer.json or tokenizer.model), the folder's tokenizer.json,
// its tokenizer.model, or its character vocabulary vocab.json (as in examples/data/tiny_tasks).
// With a tokenizer.json the prompt is encoded as Hugging Face's encode(text) does (the file's BOS
// added, special tokens in the text recognised) and generation stops at config.json's
// eos_token_id.
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
// exactly. --dump-logits FILE writes the frozen model's logits at every prompt position, one line
// per position: the position, the input id, then the vocabulary's logits (space-separated, 9
// significant digits), so that the model can be held against another implementation.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <softprompt/softprompt.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "../common/serving.hpp"
#include "../common/tiny_tasks.hpp"

using namespace softprompt;

namespace {

// The model's tokenizer: llama2.c's tokenizer.bin, a tokenizer.json, a tokenizer.model, or the
// character vocabulary of a model folder.
struct Tokenizer {
    std::optional<tok::SpmTokenizer> spm;
    std::optional<tok::HfTokenizer> hf;
    std::optional<tiny_tasks::Vocab> chars;
    std::vector<std::int32_t> hf_stop;  // config.json's eos_token_id (one id or a list)

    std::vector<std::int32_t> encode(const std::string& text) const {  // BOS first
        if (hf) return hf->encode(text, tok::SpecialTokens::recognised);
        return spm ? spm->encode(text, /*bos=*/true, /*eos=*/false) : chars->prompt(text);
    }
    std::string decode(const std::vector<std::int32_t>& ids) const {  // BOS and EOS print nothing
        if (hf) return hf->decode(ids, /*skip_special_tokens=*/true);
        if (spm) return spm->decode(ids);
        std::vector<std::int32_t> text;
        for (std::int32_t id : ids)
            if (id != chars->bos) text.push_back(id);
        return chars->decode(text);
    }
    std::vector<std::int32_t> stop_tokens() const {  // llama2.c stops on BOS too
        if (hf) return hf_stop;
        if (spm) return {tok::SpmTokenizer::bos(), tok::SpmTokenizer::eos()};
        return {chars->eos};
    }
};

/// config.json's eos_token_id: a number, a list of numbers, or absent (no stop token).
std::vector<std::int32_t> eos_ids_of(const std::filesystem::path& folder) {
    std::ifstream in(folder / "config.json");
    const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.contains("eos_token_id")) return {};
    const nlohmann::json& eos = config["eos_token_id"];
    std::vector<std::int32_t> ids;
    for (const nlohmann::json& id : eos.is_array() ? eos : nlohmann::json::array({eos}))
        if (id.is_number_integer()) ids.push_back(id.get<std::int32_t>());
    return ids;
}

Tokenizer open_tokenizer(const std::string& model_path, const std::string& tokenizer_path,
                         const nn::Config& config) {
    namespace fs = std::filesystem;
    Tokenizer t;
    const bool folder = fs::is_directory(model_path);
    fs::path file = tokenizer_path;
    if (file.empty() && folder) {
        for (const char* name : {"tokenizer.json", "tokenizer.model"})
            if (fs::exists(fs::path(model_path) / name)) {
                file = fs::path(model_path) / name;
                break;
            }
    }
    if (file.empty()) {
        t.chars = tiny_tasks::Vocab::load(model_path);
    } else if (file.extension() == ".json") {
        t.hf = tok::HfTokenizer::from_file(file.string());
        if (folder) t.hf_stop = eos_ids_of(model_path);
    } else if (file.extension() == ".model") {
        t.spm = tok::load_sentencepiece_model(file.string());
    } else {
        t.spm = tok::SpmTokenizer::from_llama2c(file.string(), config.vocab_size);
    }
    const std::int32_t n = t.hf ? t.hf->vocab_size() : t.spm ? t.spm->vocab_size() : 0;
    if (n > config.vocab_size)
        throw ConfigError(file.string() + " has " + std::to_string(n) +
                          " tokens but the model's vocab_size is " +
                          std::to_string(config.vocab_size));
    return t;
}

/// Writes the logits of every position of `prompt` (see the top of this file) to `path`, through
/// a temporary file renamed into place, so that a failed run leaves no partial file.
void dump_logits(const serving::Model& model, const std::vector<std::int32_t>& prompt,
                 const std::string& path) {
    nn::TokenBatch batch;
    batch.batch = 1;
    batch.seq = static_cast<Index>(prompt.size());
    batch.ids = prompt;
    autograd::Tape<float> tape;
    const Mat<float> logits =
        nn::forward(tape, model, batch, {}, nn::LogitsRequest::kRealPositions).logits.value();
    const std::string tmp = path + ".tmp";
    {
        std::FILE* out = std::fopen(tmp.c_str(), "w");
        if (out == nullptr) throw IoError("--dump-logits: cannot write " + tmp);
        for (Index s = 0; s < logits.rows(); ++s) {
            std::fprintf(out, "%lld %d", static_cast<long long>(s), prompt[std::size_t(s)]);
            for (Index v = 0; v < logits.cols(); ++v)
                std::fprintf(out, " %.9g", static_cast<double>(logits(s, v)));
            std::fputc('\n', out);
        }
        const bool failed = std::ferror(out) != 0;
        if (std::fclose(out) != 0 || failed) {
            std::remove(tmp.c_str());
            throw IoError("--dump-logits: writing " + tmp + " failed");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw IoError("--dump-logits: cannot rename " + tmp + " to " + path + ": " + ec.message());
}

}  // namespace

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    CLI::App app{"Generate text with a frozen model and optional PEFT adapters (softprompt)"};
    std::string model_path, tokenizer_path, prompt;
    std::vector<std::string> adapter_dirs;
    int steps = 256;
    nn::SamplingOptions sampling{.temperature = 1.0, .top_k = 0, .top_p = 0.9, .seed = 0};
    bool print_ids = false;
    std::string logits_path;
    app.add_option("model", model_path,
                   "llama2.c checkpoint (.bin) or Hugging Face model folder (config.json, "
                   "model.safetensors; tokenizer.json, tokenizer.model or vocab.json)")
        ->required()
        ->check(CLI::ExistingPath);
    app.add_option("tokenizer", tokenizer_path,
                   "tokenizer.bin (llama2.c), tokenizer.json or tokenizer.model; default for a "
                   "model folder: its own")
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
    app.add_option("--dump-logits", logits_path,
                   "write the frozen model's logits at every prompt position to FILE");
    CLI11_PARSE(app, argc, argv);

    try {
        const bool folder = fs::is_directory(model_path);
        if (!folder && tokenizer_path.empty())
            throw ConfigError("a llama2.c checkpoint needs its tokenizer: generate " + model_path +
                              " TOKENIZER.bin");
        const serving::Model model = folder ? io::load_hf<nn::Llama, float>(model_path)
                                            : io::load_llama2c<float>(model_path);
        const Tokenizer tokenizer = open_tokenizer(model_path, tokenizer_path, model.config);
        if (!logits_path.empty()) {
            if (!adapter_dirs.empty())
                throw ConfigError("--dump-logits writes the frozen model's logits; drop --adapter");
            dump_logits(model, tokenizer.encode(prompt), logits_path);
        }

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
