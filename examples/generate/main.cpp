// Generate text with a llama2.c checkpoint and its tokenizer.bin.
//
//   generate MODEL.bin TOKENIZER.bin [--prompt TEXT] [--steps N] [--temperature T] [--top-k K]
//            [--top-p P] [--seed S] [--ids]
//
// The generated text goes to stdout; statistics (prefill and decode tokens/s) go to stderr.
// --temperature 0 is greedy decoding. --ids prints the token ids (the prompt's, BOS included, then
// the generated ones) instead of text, so runs can be compared exactly.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    using namespace softprompt;
    CLI::App app{"Generate text with a llama2.c model (softprompt)"};
    std::string model_path, tokenizer_path, prompt;
    int steps = 256;
    nn::SamplingOptions sampling{.temperature = 1.0, .top_k = 0, .top_p = 0.9, .seed = 0};
    bool print_ids = false;
    app.add_option("model", model_path, "llama2.c checkpoint (.bin)")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("tokenizer", tokenizer_path, "llama2.c tokenizer (tokenizer.bin)")
        ->required()
        ->check(CLI::ExistingFile);
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
        const auto model = io::load_llama2c<float>(model_path);
        const auto tokenizer =
            tok::SpmTokenizer::from_llama2c(tokenizer_path, model.config.vocab_size);
        nn::GenerationRequest<float> request;
        request.prompt = tokenizer.encode(prompt, /*bos=*/true, /*eos=*/false);
        request.sampling = sampling;
        request.max_new_tokens = steps;
        request.stop_tokens = {tokenizer.bos(), tokenizer.eos()};  // llama2.c stops on BOS too
        nn::GenerationStats stats;
        const auto result = nn::generate(model, std::vector{request}, &stats);

        if (print_ids) {
            std::string line;
            for (std::int32_t id : request.prompt) line += std::to_string(id) + " ";
            for (std::int32_t id : result[0].tokens) line += std::to_string(id) + " ";
            line.pop_back();
            std::cout << line << "\n";
        } else {
            std::vector<std::int32_t> all = request.prompt;
            all.insert(all.end(), result[0].tokens.begin(), result[0].tokens.end());
            if (result[0].stopped) all.pop_back();  // the stop token itself prints nothing useful
            std::cout << tokenizer.decode(all) << "\n";
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
    }
    return 0;
}
