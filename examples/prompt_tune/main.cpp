// Train a soft prompt, prefix, P-tuning encoder or LoRA adapter for a frozen model on a data file
// and write it as a Hugging Face PEFT adapter folder (plus a training-state file to resume from).
//
//   prompt_tune MODEL TOKENIZER DATA.{jsonl,tsv} --method prompt --out ADAPTER_DIR
//       [--text-field text | --input-field text --target-field label]
//       [--input-suffix " Answer:"] [--target-prefix " "] [--label "1=spam" --label "0=ham"]
//       [--virtual-tokens 20] [--steps N | --epochs N] [--lr 0.03] [--batch-size 8] [--eval FILE]
//       [--seed 0] [--checkpoint-every K] [--shards K] [--resume]
//
// Data-parallel under MPI (when built with it): `mpirun -n N prompt_tune ...` trains one adapter
// with N processes, each running its share of every batch (cut into --shards pieces; the default,
// N, is fine for one run, and giving the same --shards makes runs on any number of processes
// reach the same bits). Rank 0 writes the files; an error on any rank ends every process.
//
// MODEL is whatever io::open_model reads (a Hugging Face model folder of any supported family, a
// GGUF file, a llama2.c checkpoint); TOKENIZER is a tokenizer.json, tokenizer.model, .gguf,
// llama2.c tokenizer.bin, or a folder holding one ("-" for the model folder's own).
//
// Causal-LM data (--text-field) learns every next token of each text; input/target data learns
// only the target tokens after the input (classification by label words when --label maps values
// to words). Progress goes to stderr; the adapter, training_state.safetensors and metrics.csv go to
// --out.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <softprompt/softprompt.hpp>
#if defined(SOFTPROMPT_HAVE_MPI)
#include <softprompt/dist/mpi.hpp>
#endif
#include <string>
#include <variant>
#include <vector>

#include "../common/tokenizer_file.hpp"

using namespace softprompt;

namespace {

struct DataOptions {
    std::string text_field, input_field, target_field, input_suffix, target_prefix = " ";
    std::map<std::string, std::string> labels;  // target value -> words
};

train::Dataset load_data(const std::string& path, const DataOptions& o,
                         const examples::TokenizerFile& tokenizer, std::size_t max_tokens) {
    const bool tsv = path.size() > 4 && path.substr(path.size() - 4) == ".tsv";
    const std::vector<train::Record> records =
        tsv ? train::read_tsv(path) : train::read_jsonl(path);
    train::Dataset data;
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (!o.text_field.empty()) {
            std::vector<std::int32_t> ids =
                tokenizer.encode(train::field(records[i], o.text_field, i));
            if (ids.size() > max_tokens) ids.resize(max_tokens);
            if (ids.size() >= 2) data.add(train::causal_lm_example(std::move(ids)));
            continue;
        }
        std::string target = train::field(records[i], o.target_field, i);
        if (!o.labels.empty()) {
            const auto it = o.labels.find(target);
            if (it == o.labels.end())
                throw ConfigError("record " + std::to_string(i) + ": no --label for value '" +
                                  target + "'");
            target = it->second;
        }
        std::vector<std::int32_t> input =
            tokenizer.encode(train::field(records[i], o.input_field, i) + o.input_suffix);
        // The target continues the input: encode it with no BOS, and without SentencePiece's
        // dummy-prefix space.
        std::vector<std::int32_t> answer =
            tokenizer.encode(o.target_prefix + target, {.add_special = false});
        if (!answer.empty() && answer.front() == tokenizer.find(" ").value_or(-1))
            answer.erase(answer.begin());
        if (input.size() + answer.size() > max_tokens) {
            // Keep the end of the input (where the question is) and the whole target.
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

}  // namespace

int main(int argc, char** argv) {
    train::SingleProcess alone;
    train::Collective* group_ptr = &alone;
#if defined(SOFTPROMPT_HAVE_MPI)
    // MPI only when mpirun started us: alone, the program never touches MPI.
    std::optional<dist::MpiSession> mpi;
    std::optional<dist::MpiGroup> world;
    if (dist::started_by_mpi_launcher()) {
        mpi.emplace(argc, argv);
        group_ptr = &world.emplace();
    }
#endif
    train::Collective& group = *group_ptr;
    const bool leader = group.rank() == 0;
    CLI::App app{"Train a PEFT adapter for a frozen model (softprompt)"};
    std::string model_path, tokenizer_path, data_path, eval_path, out_dir, method_name = "prompt";
    DataOptions data_options;
    std::vector<std::string> label_args;
    Index virtual_tokens = 20, lora_rank = 8;
    std::int64_t steps = 0, epochs = 3, checkpoint_every = 0, shards = 0;
    double lr = 0.03;
    std::size_t batch_size = 8, max_tokens = 256;
    std::uint64_t seed = 0;
    bool resume = false;
    app.add_option("model", model_path,
                   "Hugging Face model folder, GGUF file or llama2.c checkpoint")
        ->required()
        ->check(CLI::ExistingPath);
    app.add_option("tokenizer", tokenizer_path,
                   "tokenizer.json, tokenizer.model, .gguf, tokenizer.bin, or - for the model "
                   "folder's own")
        ->required();
    app.add_option("data", data_path, "training data (.jsonl or .tsv with a header row)")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("-m,--method", method_name,
                   "prompt | prefix | prefix-mlp | p-tuning | p-tuning-lstm | lora")
        ->check(
            CLI::IsMember({"prompt", "prefix", "prefix-mlp", "p-tuning", "p-tuning-lstm", "lora"}));
    app.add_option("-o,--out", out_dir, "adapter folder to write")->required();
    app.add_option("--text-field", data_options.text_field,
                   "field holding a text to model (causal LM)");
    app.add_option("--input-field", data_options.input_field, "field holding the input");
    app.add_option("--target-field", data_options.target_field, "field holding the target");
    app.add_option("--input-suffix", data_options.input_suffix,
                   "text appended to every input (e.g. \" Answer:\")");
    app.add_option("--target-prefix", data_options.target_prefix, "text put before every target")
        ->capture_default_str();
    app.add_option("--label", label_args,
                   "VALUE=WORDS: the target words for a target value (repeatable)");
    app.add_option("--eval", eval_path, "held-out data in the same format")
        ->check(CLI::ExistingFile);
    app.add_option("-p,--virtual-tokens", virtual_tokens, "virtual tokens (prompt methods)")
        ->capture_default_str();
    app.add_option("--rank", lora_rank, "LoRA rank")->capture_default_str();
    app.add_option("--steps", steps, "optimizer steps (overrides --epochs)");
    app.add_option("--epochs", epochs, "epochs")->capture_default_str();
    app.add_option("--lr", lr, "peak learning rate (AdamW, linear warm-up and decay)")
        ->capture_default_str();
    app.add_option("--batch-size", batch_size, "examples per batch")->capture_default_str();
    app.add_option("--max-tokens", max_tokens, "longest example, in tokens")->capture_default_str();
    app.add_option("--seed", seed, "seed for initialisation and data order")->capture_default_str();
    app.add_option("--checkpoint-every", checkpoint_every,
                   "recompute the layers in runs of K in backward instead of keeping their "
                   "activations (0: keep them)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--shards", shards,
                   "cut each batch into K pieces for data-parallel training (0: one piece alone, "
                   "as many as processes under mpirun)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--resume", resume, "continue from OUT/training_state.safetensors");
    CLI11_PARSE(app, argc, argv);

    try {
        if (data_options.text_field.empty() ==
            (data_options.input_field.empty() || data_options.target_field.empty()))
            throw ConfigError("give either --text-field, or both --input-field and --target-field");
        for (const std::string& l : label_args) {
            const auto eq = l.find('=');
            if (eq == std::string::npos)
                throw ConfigError("--label '" + l + "': expected VALUE=WORDS");
            data_options.labels[l.substr(0, eq)] = l.substr(eq + 1);
        }
        const nn::AnyModel<float> any = io::open_model<float>(model_path);
        const auto tokenizer = examples::TokenizerFile::for_model(
            tokenizer_path == "-" ? model_path : tokenizer_path, nn::config_of(any).vocab_size);
        const train::Dataset data = load_data(data_path, data_options, tokenizer, max_tokens);
        const train::Dataset eval = eval_path.empty()
                                        ? train::Dataset()
                                        : load_data(eval_path, data_options, tokenizer, max_tokens);

        std::visit(
            [&](const auto& model) {
                using Arch = typename std::decay_t<decltype(model)>::Architecture;
                Rng rng(seed);
                std::unique_ptr<peft::Method<float>> method;
                if (method_name == "prompt") {
                    method = std::make_unique<peft::PromptTuning<float>>(
                        model.config, peft::init_from_vocab(model, virtual_tokens, rng, 5000),
                        peft::PromptInit{.kind = peft::PromptInit::Kind::kSampleVocab});
                } else if (method_name == "prefix") {
                    method = std::make_unique<peft::PrefixTuning<float>>(
                        model.config,
                        peft::init_prefix_from_text(model, tokenizer.encode("Once upon a time"),
                                                    virtual_tokens));
                } else if (method_name == "prefix-mlp") {
                    method = std::make_unique<peft::PrefixTuning<float>>(
                        model.config,
                        peft::PrefixTuningOptions{.num_virtual_tokens = virtual_tokens,
                                                  .projection = true,
                                                  .encoder_hidden_size = 0},
                        rng);
                } else if (method_name == "lora") {
                    method = std::make_unique<peft::Lora<Arch, float>>(
                        model.config,
                        peft::LoraOptions{.rank = lora_rank, .alpha = 2.0 * double(lora_rank)},
                        rng);
                } else {
                    method = std::make_unique<peft::PTuning<float>>(
                        model.config,
                        peft::PTuningOptions{.num_virtual_tokens = virtual_tokens,
                                             .encoder = method_name == "p-tuning"
                                                            ? peft::PromptEncoderType::kMlp
                                                            : peft::PromptEncoderType::kLstm,
                                             .encoder_hidden_size = 0,
                                             .encoder_num_layers = 2},
                        rng);
                }
                if (leader)
                    std::fprintf(stderr, "%s: %s\n", method_name.c_str(),
                                 peft::summarize(*method, model).to_string().c_str());

                optim::AdamW<float> optimizer(method->parameters(),
                                              {.lr = lr, .weight_decay = 0.0});
                train::TrainerOptions options;
                options.epochs = epochs;
                options.max_steps = steps;
                options.batch_size = batch_size;
                options.seed = seed;
                options.max_grad_norm = 1.0;
                options.checkpoint_every = checkpoint_every;
                options.data_parallel_shards =
                    shards > 0 ? shards : (group.size() > 1 ? group.size() : 0);
                if (leader && group.size() > 1)
                    std::fprintf(stderr, "data-parallel: %d processes, each batch in %lld pieces\n",
                                 group.size(),
                                 static_cast<long long>(options.data_parallel_shards));
                options.metrics_csv = (std::filesystem::path(out_dir) / "metrics.csv").string();
                if (leader) std::filesystem::create_directories(out_dir);
                train::Trainer<Arch, float> probe(model, *method, optimizer, options);
                const std::int64_t total = probe.total_steps(data);
                options.schedule = optim::LrSchedule::warmup_linear(
                    lr, std::max<std::int64_t>(1, total / 10), total);
                options.eval_every = eval.empty() ? 0 : std::max<std::int64_t>(1, total / 5);
                train::Trainer<Arch, float> trainer =
                    options.data_parallel_shards > 0
                        ? train::Trainer<Arch, float>(model, *method, optimizer, options, group)
                        : train::Trainer<Arch, float>(model, *method, optimizer, options);
                const std::string state_path =
                    (std::filesystem::path(out_dir) / train::kTrainingState).string();
                if (resume) trainer.load_state(train::load_training_state(state_path));

                if (!eval.empty() && leader) {
                    const auto base = train::evaluate<Arch, float>(model, nullptr, eval);
                    std::fprintf(stderr, "base model on --eval: loss %.4f, perplexity %.2f\n",
                                 base.loss, base.perplexity);
                }
                const train::TrainReport report = trainer.fit(data, eval.empty() ? nullptr : &eval);
                if (!leader) return;  // rank 0 writes the files and reports
                peft::save_adapter(out_dir, *method, model, model_path);
                train::save_training_state(state_path, trainer.state(), method_name);
                std::fprintf(stderr,
                             "trained %lld steps in %.1f s (%.0f tokens/s), last loss %.4f\n",
                             static_cast<long long>(report.steps), report.seconds,
                             report.tokens_per_second, report.last_loss);
                if (report.final_eval)
                    std::fprintf(stderr,
                                 "held-out: loss %.4f, perplexity %.2f, token accuracy %.1f%%\n",
                                 report.final_eval->loss, report.final_eval->perplexity,
                                 100.0 * report.final_eval->token_accuracy);
            },
            any);
        if (leader) std::printf("%s\n", out_dir.c_str());
    } catch (const Error& e) {
        if (group.size() == 1) {
            std::fprintf(stderr, "prompt_tune: %s\n", e.what());
            return 1;
        }
        std::fprintf(stderr, "prompt_tune: rank %d of %d: %s\n", group.rank(), group.size(),
                     e.what());
        std::fflush(stderr);
#if defined(SOFTPROMPT_HAVE_MPI)
        world->abort(1);  // the others may be waiting in a collective for this process
#endif
        return 1;
    }
    return 0;
}
