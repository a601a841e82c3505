#pragma once
// Any tokenizer file the library reads, behind one encode/decode: a Hugging Face tokenizer.json,
// a SentencePiece tokenizer.model, a GGUF file's vocabulary (SentencePiece or byte-level BPE),
// llama2.c's tokenizer.bin, or a model folder holding tokenizer.json (preferred),
// tokenizer.model, or GPT-2's vocab.json + merges.txt.
//
//   const auto tokenizer = tok::AnyTokenizer::for_model(folder, nn::config_of(model).vocab_size);
//   std::vector<std::int32_t> ids = tokenizer.encode("Once upon a time");
//
// Threads: an AnyTokenizer is read-only once opened; share it between threads freely.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/gguf.hpp"
#include "softprompt/tok/bpe.hpp"
#include "softprompt/tok/gguf_vocab.hpp"
#include "softprompt/tok/hf_tokenizer.hpp"
#include "softprompt/tok/spm_model.hpp"

namespace softprompt::tok {

struct EncodeOptions {
    bool add_special = true;        // the post-processor's tokens (BOS), as add_special_tokens
    bool specials_as_text = false;  // added tokens written in the text stay text
};

class AnyTokenizer {
public:
    /// The tokenizer file of a model folder, or nothing when it has none.
    static std::optional<std::filesystem::path> in_folder(const std::filesystem::path& folder) {
        for (const char* name : {"tokenizer.json", "tokenizer.model", "merges.txt"})
            if (std::filesystem::exists(folder / name)) return folder / name;
        return std::nullopt;
    }

    /// Opens `path` as the tokenizer of a model of `model_vocab_size` tokens: a llama2.c
    /// tokenizer.bin is read with that size, and a tokenizer with more tokens than the model's
    /// embedding has rows is refused (its ids would index past the embedding).
    static AnyTokenizer for_model(const std::string& path, std::int64_t model_vocab_size) {
        AnyTokenizer t = open(path, std::int32_t(model_vocab_size));
        if (t.vocab_size() > model_vocab_size)
            throw ConfigError(path + " has " + std::to_string(t.vocab_size()) +
                              " tokens but the model's vocab_size is " +
                              std::to_string(model_vocab_size));
        return t;
    }

    /// Opens `path` (see the top of this file). A llama2.c tokenizer.bin does not store its size:
    /// `llama2c_vocab_size` gives it (0: refuse such a file).
    static AnyTokenizer open(const std::string& path, std::int32_t llama2c_vocab_size = 0) {
        namespace fs = std::filesystem;
        fs::path file = path;
        if (fs::is_directory(file)) {
            const auto found = in_folder(file);
            if (!found)
                throw IoError(path +
                              ": the folder has no tokenizer.json, tokenizer.model or "
                              "merges.txt");
            file = *found;
        }
        AnyTokenizer t;
        const std::string ext = file.extension().string();
        if (ext == ".json") {
            t.hf_ = HfTokenizer::from_file(file.string());
            if (file.has_parent_path()) t.hf_stop_ = eos_ids_of(file.parent_path() / "config.json");
        } else if (file.filename() == "merges.txt") {  // GPT-2's files, vocab.json beside it
            t.bpe_ = BpeTokenizer::from_openai((file.parent_path() / "vocab.json").string(),
                                               file.string());
        } else if (ext == ".model") {
            t.spm_ = load_sentencepiece_model(file.string());
        } else if (ext == ".gguf") {
            // The vocabulary the file embeds: SentencePiece ("llama") or byte-level BPE ("gpt2").
            const io::GgufFile gguf(file.string());
            if (gguf.get_string_or("tokenizer.ggml.model", "") == "gpt2") {
                t.bpe_ = gguf_bpe_tokenizer(gguf);
            } else {
                t.spm_ = gguf_spm_tokenizer(gguf);
            }
        } else if (ext == ".bin" && llama2c_vocab_size > 0) {
            t.spm_ = SpmTokenizer::from_llama2c(file.string(), llama2c_vocab_size);
        } else {
            throw ConfigError(file.string() +
                              ": not a tokenizer file read here (tokenizer.json, tokenizer.model, "
                              "merges.txt, .gguf" +
                              (llama2c_vocab_size > 0 ? ", llama2.c's tokenizer.bin" : "") +
                              ", or a folder holding one)");
        }
        return t;
    }

    [[nodiscard]] std::vector<std::int32_t> encode(const std::string& text,
                                                   const EncodeOptions& o = {}) const {
        if (hf_) {
            return hf_->encode(
                text, o.specials_as_text ? SpecialTokens::as_text : SpecialTokens::recognised,
                o.add_special);
        }
        if (bpe_) {  // GPT-2 adds no BOS
            return bpe_->encode(
                text, o.specials_as_text ? SpecialTokens::as_text : SpecialTokens::recognised);
        }
        return spm_->encode(text, o.add_special, /*add_eos=*/false);
    }

    /// The text of `ids`; SentencePiece's BOS and EOS print nothing either way.
    [[nodiscard]] std::string decode(const std::vector<std::int32_t>& ids,
                                     bool skip_special = false) const {
        if (hf_) return hf_->decode(ids, skip_special);
        if (!bpe_) return spm_->decode(ids);
        std::vector<std::int32_t> kept;
        for (const std::int32_t id : ids)
            if (!skip_special || !bpe_->is_special(id)) kept.push_back(id);
        return bpe_->decode(kept);
    }

    /// A token's text as the file stores it.
    [[nodiscard]] std::string piece(std::int32_t id) const {
        if (hf_) return hf_->id_to_token(id);
        return std::string(bpe_ ? bpe_->piece(id) : spm_->piece(id));
    }

    /// The id of a token by its stored text (SentencePiece stores `▁` as ' ').
    [[nodiscard]] std::optional<std::int32_t> find(std::string_view piece) const {
        if (hf_) return hf_->token_to_id(piece);
        return bpe_ ? bpe_->find(piece) : spm_->find(piece);
    }

    [[nodiscard]] std::int32_t vocab_size() const {
        return hf_ ? hf_->vocab_size() : bpe_ ? bpe_->vocab_size() : spm_->vocab_size();
    }

    /// Where generation stops: the model folder's config.json eos_token_id for a tokenizer.json
    /// (none when it has none), GPT-2's <|endoftext|>, BOS and EOS for SentencePiece (llama2.c
    /// stops on BOS too).
    [[nodiscard]] std::vector<std::int32_t> stop_tokens() const {
        if (hf_) return hf_stop_;
        if (bpe_) return bpe_->eos() ? std::vector<std::int32_t>{*bpe_->eos()} : hf_stop_;
        return {SpmTokenizer::bos(), SpmTokenizer::eos()};
    }

private:
    /// config.json's eos_token_id: a number, a list of numbers, or absent.
    static std::vector<std::int32_t> eos_ids_of(const std::filesystem::path& config_path) {
        std::ifstream in(config_path);
        if (!in) return {};
        const nlohmann::json config =
            nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
        if (config.is_discarded() || !config.is_object() || !config.contains("eos_token_id"))
            return {};
        const nlohmann::json& eos = config["eos_token_id"];
        std::vector<std::int32_t> ids;
        for (const nlohmann::json& id : eos.is_array() ? eos : nlohmann::json::array({eos}))
            if (id.is_number_integer()) ids.push_back(id.get<std::int32_t>());
        return ids;
    }

    std::optional<HfTokenizer> hf_;
    std::optional<SpmTokenizer> spm_;
    std::optional<BpeTokenizer> bpe_;
    std::vector<std::int32_t> hf_stop_;
};

}  // namespace softprompt::tok
