// Tokenize text, or decode ids, with a model's own tokenizer file.
//
//   tokenize TOKENIZER [--text TEXT]... [--no-add-special] [--specials-as-text] [--pieces]
//   tokenize TOKENIZER --decode [--skip-special] [--text "ID ID ..."]...
//
// TOKENIZER is a Hugging Face tokenizer.json, a SentencePiece tokenizer.model, a GGUF file with a
// SentencePiece vocabulary, or a model folder holding tokenizer.json (preferred) or
// tokenizer.model. Each --text, or else each line of stdin, gives one line of output: the ids
// separated by spaces (with --pieces, each token's stored text in brackets after its id).
//
// As the Hugging Face tokenizers do by default, the tokens of the post-processor (BOS, for
// Llama 2 and SentencePiece files) are added and added tokens written in the text (`<|im_start|>`)
// are recognised; --no-add-special and --specials-as-text turn that off. --decode reads lines of
// ids and prints their text (--skip-special leaves out special tokens, tokenizer.json only).

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <softprompt/tok/any_tokenizer.hpp>
#include <string>
#include <vector>

#include "../common/token_ids.hpp"

using namespace softprompt;

int main(int argc, char** argv) {
    CLI::App app{"Tokenize text, or decode ids, with a model's tokenizer file"};
    std::string path;
    std::vector<std::string> texts;
    tok::EncodeOptions o;
    bool decode = false, pieces = false, no_add_special = false, skip_special = false;
    app.add_option("tokenizer", path,
                   "tokenizer.json, tokenizer.model, a .gguf, or a folder holding one")
        ->required();
    app.add_option("--text", texts, "text to encode (or ids to decode); else each line of stdin");
    app.add_flag("--no-add-special", no_add_special,
                 "do not add the post-processor's tokens (BOS)");
    app.add_flag("--specials-as-text", o.specials_as_text,
                 "encode added tokens written in the text as plain text");
    app.add_flag("--pieces", pieces, "print each id's stored token text after it");
    app.add_flag("--decode", decode, "read token ids, print their text");
    app.add_flag("--skip-special", skip_special, "with --decode: leave out special tokens");
    CLI11_PARSE(app, argc, argv);
    o.add_special = !no_add_special;

    try {
        const auto t = tok::AnyTokenizer::open(path);
        auto one = [&](const std::string& line) {
            if (decode) {
                std::cout << t.decode(examples::parse_ids(line, "--decode"), skip_special) << '\n';
                return;
            }
            const std::vector<std::int32_t> ids = t.encode(line, o);
            for (std::size_t k = 0; k < ids.size(); ++k) {
                if (k) std::cout << ' ';
                std::cout << ids[k];
                if (pieces) std::cout << '[' << t.piece(ids[k]) << ']';
            }
            std::cout << '\n';
        };
        if (!texts.empty()) {
            for (const std::string& text : texts) one(text);
        } else {
            std::string line;
            while (std::getline(std::cin, line)) one(line);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tokenize: %s\n", e.what());
        return 1;
    }
    return 0;
}
