// Generate text with a frozen model of any supported family, with or without PEFT adapters.
//
//   generate MODEL [TOKENIZER] [--adapter DIR]... [--prompt TEXT | --prompt-ids "ID ..."]
//            [--steps N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--ids]
//            [--dump-logits FILE]
//
// MODEL is whatever io::open_model reads, the family decided by the file: a Hugging Face model
// folder (config.json, model.safetensors; GPT-2, Llama 2/3, Mistral, Qwen2, Qwen3, ...), a GGUF
// file, or a llama2.c checkpoint. The tokenizer is, in this order: TOKENIZER when given
// (tokenizer.json, tokenizer.model, a .gguf, or llama2.c's tokenizer.bin), the model folder's
// tokenizer.json, its tokenizer.model, a GGUF model's own vocabulary, or a folder's character
// vocabulary vocab.json (as in examples/data/tiny_tasks). With a tokenizer.json the prompt is
// encoded as Hugging Face's encode(text) does (the file's BOS added, special tokens in the text
// recognised) and generation stops at config.json's eos_token_id. --prompt-ids gives the prompt
// as token ids instead; a model with no tokenizer then prints ids (--ids).
//
// --adapter DIR loads a PEFT adapter folder (peft::save_adapter writes them; so do prompt_tune
// --out and serve_many --save): prompt tuning and P-tuning are served as a cached soft prompt,
// prefix tuning as a cached prefix, LoRA as low-rank updates beside the shared frozen weights
// (peft::Registry). Given several times, the prompt is continued once per adapter, all in one
// batch, and each output line starts with the adapter's folder name.
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
#include <iostream>
#include <optional>
#include <softprompt/softprompt.hpp>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include "../common/tiny_tasks.hpp"
#include "../common/token_ids.hpp"

using namespace softprompt;

namespace {

// The model's tokenizer: a tokenizer file, or the character vocabulary of a model folder, or none
// (prompts given as ids, output printed as ids).
struct Tokenizer {
    std::optional<tok::AnyTokenizer> file;
    std::optional<tiny_tasks::Vocab> chars;

    bool present() const { return file || chars; }
    std::vector<std::int32_t> encode(const std::string& text) const {  // BOS first
        return file ? file->encode(text) : chars->prompt(text);
    }
    std::string decode(const std::vector<std::int32_t>& ids) const {  // BOS and EOS print nothing
        if (file) return file->decode(ids, /*skip_special=*/true);
        std::vector<std::int32_t> text;
        for (std::int32_t id : ids)
            if (id != chars->bos) text.push_back(id);
        return chars->decode(text);
    }
    std::vector<std::int32_t> stop_tokens() const {
        if (file) return file->stop_tokens();
        return chars ? std::vector<std::int32_t>{chars->eos} : std::vector<std::int32_t>{};
    }
};

Tokenizer open_tokenizer(const std::string& model_path, const std::string& tokenizer_path,
                         const nn::Config& config) {
    namespace fs = std::filesystem;
    Tokenizer t;
    const bool folder = fs::is_directory(model_path);
    std::string file = tokenizer_path;
    if (file.empty() && folder) {
        if (const auto found = tok::AnyTokenizer::in_folder(model_path)) file = found->string();
    }
    // A GGUF that embeds a vocabulary is its own tokenizer.
    if (file.empty() && io::model_file_kind(model_path) == io::ModelFileKind::kGguf &&
        io::GgufFile(model_path).contains("tokenizer.ggml.model"))
        file = model_path;
    if (!file.empty()) {
        t.file = tok::AnyTokenizer::for_model(file, config.vocab_size);
    } else if (folder && fs::exists(fs::path(model_path) / "vocab.json")) {
        t.chars = tiny_tasks::Vocab::load(model_path);
    }
    return t;
}

/// Writes the logits of every position of `prompt` (see the top of this file) to `path`, through
/// a temporary file renamed into place, so that a failed run leaves no partial file.
template <class Arch>
void dump_logits(const nn::Model<Arch, float>& model, const std::vector<std::int32_t>& prompt,
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
    if (ec)
        throw IoError("--dump-logits: cannot rename " + tmp + " to " + path + ": " + ec.message());
}

struct Options {
    std::string model_path, tokenizer_path, prompt, prompt_ids, logits_path;
    std::vector<std::string> adapter_dirs;
    int steps = 256;
    nn::SamplingOptions sampling{.temperature = 1.0, .top_k = 0, .top_p = 0.9, .seed = 0};
    bool print_ids = false;
};

/// Everything after loading, for a model of any family.
template <class Arch>
void run(const nn::Model<Arch, float>& model, const Options& o) {
    const Tokenizer tokenizer = open_tokenizer(o.model_path, o.tokenizer_path, model.config);
    if (!o.prompt_ids.empty() && !o.prompt.empty())
        throw ConfigError("give --prompt or --prompt-ids, not both");
    if (o.prompt_ids.empty() && !tokenizer.present())
        throw ConfigError(o.model_path +
                          " has no tokenizer (tokenizer.json, tokenizer.model, vocab.json): give "
                          "TOKENIZER, or the prompt as --prompt-ids");
    const bool print_ids = o.print_ids || !tokenizer.present();
    const std::vector<std::int32_t> prompt =
        o.prompt_ids.empty() ? tokenizer.encode(o.prompt)
                             : examples::parse_ids(o.prompt_ids, "--prompt-ids");
    if (prompt.empty())
        throw ConfigError("the prompt has no tokens (this tokenizer adds no BOS): give --prompt");
    if (!o.logits_path.empty()) {
        if (!o.adapter_dirs.empty())
            throw ConfigError("--dump-logits writes the frozen model's logits; drop --adapter");
        dump_logits(model, prompt, o.logits_path);
    }

    // Every adapter registered against the one frozen model (under the folder as given, which
    // is unique), all of them served in one batch.
    peft::Registry<Arch> registry(model);
    for (const std::string& dir : o.adapter_dirs) {
        if (registry.contains(dir)) throw ConfigError("--adapter " + dir + " is given twice");
        std::fprintf(stderr, "adapter %s: %s\n", dir.c_str(),
                     registry.add_folder(dir, dir).about.c_str());
    }

    typename peft::Registry<Arch>::Request request;
    request.generation.prompt = prompt;
    request.generation.sampling = o.sampling;
    request.generation.max_new_tokens = o.steps;
    request.generation.stop_tokens = tokenizer.stop_tokens();
    std::vector<typename peft::Registry<Arch>::Request> requests;
    for (std::size_t a = 0; a < std::max<std::size_t>(registry.size(), 1); ++a) {
        request.adapter = registry.size() == 0 ? "" : registry[a].name;
        requests.push_back(request);
    }
    nn::GenerationStats stats;
    const auto results = registry.generate(requests, &stats);

    for (std::size_t i = 0; i < results.size(); ++i) {
        const std::string label =
            registry.size() > 1 ? peft::folder_name(registry[i].name) + ": " : "";
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
        stderr,
        "%s model; prefill: %lld tokens, %.1f tokens/s; decode: %lld tokens, %.1f tokens/s\n",
        Arch::kName, static_cast<long long>(stats.prefill_tokens),
        stats.prefill_seconds > 0 ? double(stats.prefill_tokens) / stats.prefill_seconds : 0.0,
        static_cast<long long>(stats.decode_tokens),
        stats.decode_seconds > 0 ? double(stats.decode_tokens) / stats.decode_seconds : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Generate text with a frozen model and optional PEFT adapters (softprompt)"};
    Options o;
    app.add_option("model", o.model_path,
                   "Hugging Face model folder (config.json, model.safetensors), GGUF file or "
                   "llama2.c checkpoint")
        ->required()
        ->check(CLI::ExistingPath);
    app.add_option("tokenizer", o.tokenizer_path,
                   "tokenizer.json, tokenizer.model, .gguf or llama2.c tokenizer.bin; default: "
                   "the model's own")
        ->check(CLI::ExistingFile);
    app.add_option("-a,--adapter", o.adapter_dirs,
                   "PEFT adapter folder; repeat to continue the prompt once per adapter")
        ->check(CLI::ExistingDirectory);
    app.add_option("-p,--prompt", o.prompt, "text to continue (default: start from BOS alone)");
    app.add_option("--prompt-ids", o.prompt_ids, "the prompt as space-separated token ids");
    app.add_option("-n,--steps", o.steps, "maximum number of tokens to generate")
        ->check(CLI::PositiveNumber);
    app.add_option("-t,--temperature", o.sampling.temperature, "0 = greedy")
        ->check(CLI::NonNegativeNumber);
    app.add_option("-k,--top-k", o.sampling.top_k,
                   "sample among the k most likely tokens (0 = all)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-p", o.sampling.top_p, "nucleus sampling threshold in (0, 1]")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("-s,--seed", o.sampling.seed, "random seed for sampling");
    app.add_flag("--ids", o.print_ids, "print token ids instead of text");
    app.add_option("--dump-logits", o.logits_path,
                   "write the frozen model's logits at every prompt position to FILE");
    CLI11_PARSE(app, argc, argv);

    try {
        if (io::model_file_kind(o.model_path) == io::ModelFileKind::kLlama2c &&
            o.tokenizer_path.empty() && o.prompt_ids.empty())
            throw ConfigError("a llama2.c checkpoint needs its tokenizer: generate " +
                              o.model_path + " TOKENIZER.bin");
        const nn::AnyModel<float> model = io::open_model<float>(o.model_path);
        std::visit([&](const auto& m) { run(m, o); }, model);
    } catch (const Error& e) {
        std::fprintf(stderr, "generate: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {  // a malformed file the library's checks do not name
        std::fprintf(stderr, "generate: %s\n", e.what());
        return 1;
    }
    return 0;
}
