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
//
// The training itself is one call, tune::tune (softprompt/tune/tune.hpp); this program is its
// command line.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <softprompt/softprompt.hpp>
#if defined(SOFTPROMPT_HAVE_MPI)
#include <softprompt/dist/mpi.hpp>
#endif
#include <string>
#include <vector>

using namespace softprompt;

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
    CLI::App app{"Train a PEFT adapter for a frozen model (softprompt)"};
    std::string model_path, tokenizer_path, data_path, out_dir;
    tune::Options o;
    std::vector<std::string> label_args;
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
    app.add_option("-m,--method", o.method,
                   "prompt | prefix | prefix-mlp | p-tuning | p-tuning-lstm | lora")
        ->check(CLI::IsMember(tune::method_names()));
    app.add_option("-o,--out", out_dir, "adapter folder to write")->required();
    app.add_option("--text-field", o.data.text_field, "field holding a text to model (causal LM)");
    app.add_option("--input-field", o.data.input_field, "field holding the input");
    app.add_option("--target-field", o.data.target_field, "field holding the target");
    app.add_option("--input-suffix", o.data.input_suffix,
                   "text appended to every input (e.g. \" Answer:\")");
    app.add_option("--target-prefix", o.data.target_prefix, "text put before every target")
        ->capture_default_str();
    app.add_option("--label", label_args,
                   "VALUE=WORDS: the target words for a target value (repeatable)");
    app.add_option("--eval", o.eval_data, "held-out data in the same format")
        ->check(CLI::ExistingFile);
    app.add_option("-p,--virtual-tokens", o.virtual_tokens, "virtual tokens (prompt methods)")
        ->capture_default_str();
    app.add_option("--rank", o.lora_rank, "LoRA rank")->capture_default_str();
    app.add_option("--steps", o.steps, "optimizer steps (overrides --epochs)");
    app.add_option("--epochs", o.epochs, "epochs")->capture_default_str();
    app.add_option("--lr", o.lr, "peak learning rate (AdamW, linear warm-up and decay)")
        ->capture_default_str();
    app.add_option("--batch-size", o.batch_size, "examples per batch")->capture_default_str();
    app.add_option("--max-tokens", o.data.max_tokens, "longest example, in tokens")
        ->capture_default_str();
    app.add_option("--seed", o.seed, "seed for initialisation and data order")
        ->capture_default_str();
    app.add_option("--checkpoint-every", o.checkpoint_every,
                   "recompute the layers in runs of K in backward instead of keeping their "
                   "activations (0: keep them)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--shards", o.shards,
                   "cut each batch into K pieces for data-parallel training (0: one piece alone, "
                   "as many as processes under mpirun)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--resume", o.resume, "continue from OUT/training_state.safetensors");
    CLI11_PARSE(app, argc, argv);

    try {
        for (const std::string& l : label_args) {
            const auto eq = l.find('=');
            if (eq == std::string::npos)
                throw ConfigError("--label '" + l + "': expected VALUE=WORDS");
            o.data.labels[l.substr(0, eq)] = l.substr(eq + 1);
        }
        if (tokenizer_path != "-") o.tokenizer = tokenizer_path;
        tune::tune(model_path, data_path, out_dir, o, group);
        if (group.rank() == 0) std::printf("%s\n", out_dir.c_str());
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
