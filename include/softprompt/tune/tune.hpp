#pragma once
// One-call tuning: a model (folder or file of any supported family), a data file, a method and its
// options in; a trained PEFT adapter folder out, with progress and held-out evaluation on the way.
//
//   tune::Options options;
//   options.method = "prompt";
//   options.data = {.input_field = "text", .target_field = "label",
//                   .labels = {{"1", "spam"}, {"0", "ham"}}};
//   const tune::Result result = tune::tune("SmolLM-135M/", "train.tsv", "spam-prompt/", options);
//
// Everything here is a composition of the lower layers (io::open_model, tok::AnyTokenizer,
// train::read_jsonl/read_tsv, the peft methods, train::Trainer, peft::save_adapter); a program that
// needs another schedule, optimizer or loss writes those few lines itself (examples/prompt_tune is
// this header behind a command line).
//
// Threads: tune() shares nothing between calls; two calls may run at once on different folders.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "softprompt/core/rng.hpp"
#include "softprompt/error.hpp"
#include "softprompt/io/open_model.hpp"
#include "softprompt/optim/adam.hpp"
#include "softprompt/optim/schedule.hpp"
#include "softprompt/peft/adapter_io.hpp"
#include "softprompt/peft/lora.hpp"
#include "softprompt/peft/method.hpp"
#include "softprompt/peft/p_tuning.hpp"
#include "softprompt/peft/prefix_tuning.hpp"
#include "softprompt/peft/prompt_tuning.hpp"
#include "softprompt/tok/any_tokenizer.hpp"
#include "softprompt/train/collective.hpp"
#include "softprompt/train/dataset.hpp"
#include "softprompt/train/metrics.hpp"
#include "softprompt/train/trainer.hpp"
#include "softprompt/train/training_state.hpp"

namespace softprompt::tune {

/// How the records of a data file become examples. Give `text_field` (causal LM: learn every next
/// token of the text), or `input_field` and `target_field` (learn only the target's tokens after
/// the input; `labels` maps target values to the words to learn, e.g. "1" -> "spam").
struct DataFormat {
    // (Every member has a default, so that designated initializers may leave any out.)
    std::string text_field{};
    std::string input_field{};
    std::string target_field{};
    std::map<std::string, std::string> labels{};  // empty: the target value is the text to learn
    std::string input_suffix{};                   // appended to every input, e.g. " Answer:"
    std::string target_prefix = " ";              // put before every target
    std::size_t max_tokens = 256;  // longest example (and at most the model's positions after the
                                   // virtual tokens); inputs lose their start first
};

/// The methods tune() trains, by the names examples/prompt_tune takes on its command line.
inline const std::vector<std::string>& method_names() {
    static const std::vector<std::string> names = {"prompt",   "prefix",        "prefix-mlp",
                                                   "p-tuning", "p-tuning-lstm", "lora"};
    return names;
}

struct Options {
    std::string method = "prompt";  // one of method_names()
    Index virtual_tokens = 20;      // prompt, prefix and P-tuning methods
    Index lora_rank = 8;            // lora (alpha = 2 * rank)
    DataFormat data{};
    std::string eval_data{};  // held-out file in the same format; empty: no evaluation
    std::string tokenizer{};  // a tokenizer file or folder; empty: the model's own (folder or GGUF)
    std::int64_t epochs = 3;
    std::int64_t steps = 0;  // optimizer steps in all; > 0 overrides epochs
    double lr = 0.03;        // peak of AdamW's learning rate (warm-up over a tenth, linear decay)
    std::size_t batch_size = 8;
    std::uint64_t seed = 0;  // initialisation and data order
    double max_grad_norm = 1.0;
    std::int64_t checkpoint_every = 0;  // TrainerOptions::checkpoint_every
    std::int64_t shards = 0;            // TrainerOptions::data_parallel_shards (0: as the group)
    bool resume = false;                // continue from out_dir/training_state.safetensors
    std::string prefix_init_text = "Once upon a time";  // "prefix": keys/values of this text
    train::ProgressMode progress = train::ProgressMode::kAuto;
    bool log = true;  // a line each on stderr: the method, the base model's held-out loss, the end
};

struct Result {
    train::TrainReport report;
    std::optional<train::EvalResult> base_eval;  // the frozen model alone, on eval_data
    peft::ParameterSummary parameters;           // trainable and frozen counts
    std::string adapter_dir;                     // where the adapter was written
};

/// Reads a .jsonl file (one JSON object a line) or a .tsv file (a header row) into examples, as
/// `format` says; ConfigError naming the file when no record gives an example.
inline train::Dataset load_dataset(const std::string& path, const DataFormat& format,
                                   const tok::AnyTokenizer& tokenizer) {
    const bool causal = !format.text_field.empty();
    const bool paired = !format.input_field.empty() || !format.target_field.empty();
    if (causal == paired || (paired && (format.input_field.empty() || format.target_field.empty())))
        throw ConfigError(
            "tune::DataFormat: give either text_field, or both input_field and target_field");
    if (format.max_tokens < 2)
        throw ConfigError("tune::DataFormat: max_tokens must be >= 2, not " +
                          std::to_string(format.max_tokens));
    const bool tsv = std::filesystem::path(path).extension() == ".tsv";
    const std::vector<train::Record> records =
        tsv ? train::read_tsv(path) : train::read_jsonl(path);
    const std::size_t max_tokens = format.max_tokens;
    train::Dataset data;
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (causal) {
            std::vector<std::int32_t> ids =
                tokenizer.encode(train::field(records[i], format.text_field, i));
            if (ids.size() > max_tokens) ids.resize(max_tokens);
            if (ids.size() >= 2) data.add(train::causal_lm_example(std::move(ids)));
            continue;
        }
        std::string target = train::field(records[i], format.target_field, i);
        if (!format.labels.empty()) {
            const auto it = format.labels.find(target);
            if (it == format.labels.end())
                throw ConfigError(path + ": record " + std::to_string(i) + ": field '" +
                                  format.target_field + "' is '" + target +
                                  "', which no label maps to words");
            target = it->second;
        }
        std::vector<std::int32_t> input =
            tokenizer.encode(train::field(records[i], format.input_field, i) + format.input_suffix);
        // The target continues the input: encode it with no BOS, and without SentencePiece's
        // dummy-prefix space.
        std::vector<std::int32_t> answer =
            tokenizer.encode(format.target_prefix + target, {.add_special = false});
        if (!answer.empty() && answer.front() == tokenizer.find(" ").value_or(-1))
            answer.erase(answer.begin());
        if (answer.empty())
            throw ConfigError(path + ": record " + std::to_string(i) + ": the target '" + target +
                              "' has no tokens");
        if (input.size() + answer.size() > max_tokens) {
            // Keep the first token (BOS) and the end of the input, where the question is, and the
            // whole target.
            const std::size_t keep =
                max_tokens > answer.size() + 1 ? max_tokens - answer.size() : 1;
            input.erase(input.begin() + 1,
                        input.end() - std::ptrdiff_t(std::min(keep - 1, input.size() - 1)));
        }
        data.add(train::input_target_example(input, answer));
    }
    if (data.empty()) throw ConfigError(path + ": no usable examples");
    return data;
}

/// A new, untrained method of `options.method` for `model`.
template <class Arch>
std::unique_ptr<peft::Method<float>> make_method(const nn::Model<Arch, float>& model,
                                                 const Options& options,
                                                 const tok::AnyTokenizer& tokenizer) {
    const std::string& name = options.method;
    if (options.virtual_tokens <= 0)
        throw ConfigError("tune::Options: virtual_tokens must be > 0, not " +
                          std::to_string(options.virtual_tokens));
    Rng rng(options.seed);
    if (name == "prompt") {
        // Rows of the embedding of frequent tokens (the first 5000 ids of a BPE vocabulary are
        // its most frequent merges): Lester et al. found vocabulary init beats random.
        return std::make_unique<peft::PromptTuning<float>>(
            model.config, peft::init_from_vocab(model, options.virtual_tokens, rng, 5000),
            peft::PromptInit{.kind = peft::PromptInit::Kind::kSampleVocab});
    }
    if (name == "prefix") {
        return std::make_unique<peft::PrefixTuning<float>>(
            model.config,
            peft::init_prefix_from_text(model, tokenizer.encode(options.prefix_init_text),
                                        options.virtual_tokens));
    }
    if (name == "prefix-mlp") {
        return std::make_unique<peft::PrefixTuning<float>>(
            model.config,
            peft::PrefixTuningOptions{.num_virtual_tokens = options.virtual_tokens,
                                      .projection = true,
                                      .encoder_hidden_size = 0},
            rng);
    }
    if (name == "p-tuning" || name == "p-tuning-lstm") {
        return std::make_unique<peft::PTuning<float>>(
            model.config,
            peft::PTuningOptions{.num_virtual_tokens = options.virtual_tokens,
                                 .encoder = name == "p-tuning" ? peft::PromptEncoderType::kMlp
                                                               : peft::PromptEncoderType::kLstm,
                                 .encoder_hidden_size = 0,
                                 .encoder_num_layers = 2},
            rng);
    }
    if (name == "lora") {
        if (options.lora_rank <= 0)
            throw ConfigError("tune::Options: lora_rank must be > 0, not " +
                              std::to_string(options.lora_rank));
        return std::make_unique<peft::Lora<Arch, float>>(
            model.config,
            peft::LoraOptions{.rank = options.lora_rank, .alpha = 2.0 * double(options.lora_rank)},
            rng);
    }
    std::string known;
    for (const std::string& n : method_names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("tune::Options: method '" + name + "' is not one of " + known);
}

/// Trains `options.method` on `model_path` (io::open_model: a model folder of any supported
/// family, a GGUF file or a llama2.c checkpoint) with the records of `data_path`, and writes the
/// PEFT adapter, training_state.safetensors and metrics.csv to `out_dir`. With a data-parallel
/// `group`, every member calls tune() with the same arguments; member 0 writes the files and logs.
inline Result tune(const std::string& model_path, const std::string& data_path,
                   const std::string& out_dir, const Options& options, train::Collective& group) {
    namespace fs = std::filesystem;
    if (out_dir.empty()) throw ConfigError("tune: the output folder is empty");
    const bool leader = group.rank() == 0;
    const bool log = options.log && leader;
    const nn::AnyModel<float> any = io::open_model<float>(model_path);
    std::string tokenizer_path = options.tokenizer;
    if (tokenizer_path.empty()) {
        if (io::model_file_kind(model_path) == io::ModelFileKind::kLlama2c)
            throw ConfigError("tune: " + model_path +
                              " is a single file with no vocabulary; give Options::tokenizer");
        tokenizer_path = model_path;
    }
    const nn::Config& config = nn::config_of(any);
    const auto tokenizer = tok::AnyTokenizer::for_model(tokenizer_path, config.vocab_size);
    // Examples fit the model's positions after the virtual tokens: beyond them a learned position
    // table has no rows, and rotary positions were never trained.
    DataFormat format = options.data;
    const Index virtual_positions = options.method == "lora" ? 0 : options.virtual_tokens;
    const Index room = config.max_seq_len - virtual_positions;
    if (room < 2)
        throw ConfigError("tune: " + std::to_string(virtual_positions) + " virtual tokens leave " +
                          std::to_string(std::max<Index>(room, 0)) + " of the model's " +
                          std::to_string(config.max_seq_len) +
                          " positions (max_seq_len) for the text; at least 2 are needed");
    if (format.max_tokens > std::size_t(room)) {
        format.max_tokens = std::size_t(room);
        if (log)
            std::fprintf(stderr,
                         "examples cut to %lld tokens: max_seq_len %lld less %lld virtual tokens\n",
                         static_cast<long long>(room), static_cast<long long>(config.max_seq_len),
                         static_cast<long long>(virtual_positions));
    }
    const train::Dataset data = load_dataset(data_path, format, tokenizer);
    const train::Dataset eval = options.eval_data.empty()
                                    ? train::Dataset()
                                    : load_dataset(options.eval_data, format, tokenizer);

    return std::visit(
        [&](const auto& model) {
            using Arch = typename std::decay_t<decltype(model)>::Architecture;
            Result result;
            result.adapter_dir = out_dir;
            const std::unique_ptr<peft::Method<float>> method =
                make_method(model, options, tokenizer);
            result.parameters = peft::summarize(*method, model);
            if (log)
                std::fprintf(stderr, "%s: %s\n", options.method.c_str(),
                             result.parameters.to_string().c_str());

            optim::AdamW<float> optimizer(method->parameters(),
                                          {.lr = options.lr, .weight_decay = 0.0});
            train::TrainerOptions trainer_options;
            trainer_options.epochs = options.epochs;
            trainer_options.max_steps = options.steps;
            trainer_options.batch_size = options.batch_size;
            trainer_options.seed = options.seed;
            trainer_options.max_grad_norm = options.max_grad_norm;
            trainer_options.checkpoint_every = options.checkpoint_every;
            trainer_options.progress = leader ? options.progress : train::ProgressMode::kSilent;
            trainer_options.data_parallel_shards =
                options.shards > 0 ? options.shards : (group.size() > 1 ? group.size() : 0);
            if (log && group.size() > 1)
                std::fprintf(stderr, "data-parallel: %d processes, each batch in %lld pieces\n",
                             group.size(),
                             static_cast<long long>(trainer_options.data_parallel_shards));
            trainer_options.metrics_csv = (fs::path(out_dir) / "metrics.csv").string();
            if (leader) fs::create_directories(out_dir);
            const std::int64_t total =
                train::Trainer<Arch, float>(model, *method, optimizer, trainer_options)
                    .total_steps(data);
            trainer_options.schedule = optim::LrSchedule::warmup_linear(
                options.lr, std::max<std::int64_t>(1, total / 10), total);
            trainer_options.eval_every = eval.empty() ? 0 : std::max<std::int64_t>(1, total / 5);
            train::Trainer<Arch, float> trainer =
                trainer_options.data_parallel_shards > 0
                    ? train::Trainer<Arch, float>(model, *method, optimizer, trainer_options, group)
                    : train::Trainer<Arch, float>(model, *method, optimizer, trainer_options);
            const std::string state_path = (fs::path(out_dir) / train::kTrainingState).string();
            if (options.resume) trainer.load_state(train::load_training_state(state_path));

            if (!eval.empty()) {
                result.base_eval =
                    train::evaluate<Arch, float>(model, nullptr, eval, options.batch_size, &group);
                if (log)
                    std::fprintf(stderr,
                                 "base model on the held-out data: loss %.4f, perplexity %.2f\n",
                                 result.base_eval->loss, result.base_eval->perplexity);
            }
            result.report = trainer.fit(data, eval.empty() ? nullptr : &eval);
            if (leader) {
                peft::save_adapter(out_dir, *method, model, model_path);
                train::save_training_state(state_path, trainer.state(), options.method);
            }
            if (log) {
                const train::TrainReport& r = result.report;
                std::fprintf(
                    stderr, "trained %lld steps in %.1f s (%.0f tokens/s), last loss %.4f\n",
                    static_cast<long long>(r.steps), r.seconds, r.tokens_per_second, r.last_loss);
                if (r.final_eval)
                    std::fprintf(stderr,
                                 "held-out: loss %.4f, perplexity %.2f, token accuracy %.1f%%\n",
                                 r.final_eval->loss, r.final_eval->perplexity,
                                 100.0 * r.final_eval->token_accuracy);
            }
            return result;
        },
        any);
}

/// tune() in one process.
inline Result tune(const std::string& model_path, const std::string& data_path,
                   const std::string& out_dir, const Options& options = {}) {
    train::SingleProcess alone;
    return tune(model_path, data_path, out_dir, options, alone);
}

}  // namespace softprompt::tune
