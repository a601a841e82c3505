// Pretrains the tiny LLaMA-family model that `quickstart` adapts, from data this program generates,
// and saves it as a Hugging Face checkpoint folder (config.json + model.safetensors + vocab.json).
//
// The model reads characters. Each training text is a string task introduced by an instruction,
//
//   <s>reverse: kfqx = xqfk</s>     <s>sort: kfqx = fkqx</s>      <s>upper: kfqx = KFQX</s>
//   <s>rotate: kfqx = fqxk</s>      <s>double: kfq = kkffqq</s>
//   <s>sort+upper: kfqx = FKQX</s>  (also rotate+upper and double+upper; never reverse+upper)
//
// or has no instruction at all (the bare string, or the neutral token <sep> in the instruction's
// place), and then the answer is the string itself:
//
//   <s>kfqx = kfqx</s>              <s><sep>: kfqx = kfqx</s>
//
// Strings are 3 to 8 distinct lowercase letters; each of the 8 instructions and "none" is 1/9 of
// the texts. The loss covers only the answer after '=' (and the end-of-text token). So the model
// can do every task, but only when it is told which: without the instruction it copies. That gap is
// what a soft prompt fills in `quickstart`, which also teaches it reverse+upper, a combination it
// was never shown (given the instruction "reverse+upper:", it is right on fewer than 1 string in
// 10). At the end the saved checkpoint is loaded back and its held-out exact match printed per
// task.
//
// Model: LLaMA layout (RMSNorm, SwiGLU, RoPE, grouped-query attention), d 64, 4 layers, 4 heads,
// 2 key/value heads, feed-forward 176, untied head, 99 tokens. The library's architectures run
// frozen weights, so this example writes its own forward pass from the autograd ops with every
// weight a Param (RMSNorm gains are frozen at 1 and saved as ones). RoPE is half-split, the layout
// of Hugging Face checkpoints, in training and in the saved config alike.
//
// The run is deterministic: fixed seed, data drawn from softprompt::Rng, single-threaded Eigen.
// The committed examples/data/tiny_tasks was made, from the repository root, by
//
//   g++ -std=c++20 -O2 -Iinclude -I/usr/include/eigen3 examples/pretrain/main.cpp -o /tmp/pretrain
//   /tmp/pretrain --out examples/data/tiny_tasks
//
// (defaults: --seed 1 --steps 2400 --batch 48 --lr 0.003): about 6.5 minutes of one core of the
// project's machines. Without -fopenmp Eigen uses one thread.
// Bit-identical weights need the same compiler and flags (no -march=native) on the same kind of
// CPU; anywhere else the run reaches a model of the same quality.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <softprompt/softprompt.hpp>
#include <string>
#include <vector>

#include "../common/tiny_tasks.hpp"

using namespace softprompt;
using autograd::Param;
using autograd::Tape;
using autograd::Var;

namespace {

// ------------------------------------------------------------------------------------------------
// Characters and tasks

// ids 0..3 are special; printable ASCII ' '..'~' (32..126) follow from id 4.
constexpr std::int32_t kPad = 0, kBos = 1, kEos = 2, kSep = 3, kFirstChar = 4;
constexpr Index kVocab = kFirstChar + 95;

std::int32_t char_id(char c) {
    if (c < ' ' || c > '~')
        throw ConfigError(std::string("pretrain: character outside printable ASCII: ") + c);
    return kFirstChar + std::int32_t(c - ' ');
}

std::vector<std::int32_t> encode(const std::string& text) {
    std::vector<std::int32_t> ids;
    for (char c : text) ids.push_back(char_id(c));
    return ids;
}

// The instructions trained on. "a+b" means task a, then task b; "reverse+upper" is left out on
// purpose: it is the new task that `quickstart` teaches the frozen model.
const std::vector<std::string> kTasks = {"reverse", "sort",       "upper",        "rotate",
                                         "double",  "sort+upper", "rotate+upper", "double+upper"};

std::string apply_task(const std::string& task, const std::string& s) {
    if (const auto plus = task.find('+'); plus != std::string::npos)
        return apply_task(task.substr(plus + 1), apply_task(task.substr(0, plus), s));
    std::string out = s;
    if (task == "reverse")
        std::reverse(out.begin(), out.end());
    else if (task == "sort")
        std::sort(out.begin(), out.end());
    else if (task == "upper")
        std::transform(out.begin(), out.end(), out.begin(),
                       [](char c) { return char(c - 'a' + 'A'); });
    else if (task == "rotate")
        std::rotate(out.begin(), out.begin() + 1, out.end());
    else if (task == "double") {
        out.clear();
        for (char c : s) out += std::string(2, c);
    } else if (task != "copy")
        throw ConfigError("pretrain: unknown task '" + task + "'");
    return out;
}

// 3 to 8 distinct lowercase letters: the strings the examples draw too.
using tiny_tasks::random_string;

enum class Instruction { kWord, kMissing, kNeutral };

// <s>[instruction: ]string = answer</s>, loss on the answer and </s>. `task` "copy" has no word.
train::Example make_example(const std::string& task, const std::string& s, Instruction how) {
    std::vector<std::int32_t> input = {kBos};
    if (how == Instruction::kNeutral) input.push_back(kSep);
    const std::string head = (how == Instruction::kWord ? task : std::string()) +
                             (how == Instruction::kMissing ? "" : ": ");
    for (std::int32_t id : encode(head + s + " = ")) input.push_back(id);
    std::vector<std::int32_t> answer = encode(apply_task(task, s));
    answer.push_back(kEos);
    return train::input_target_example(input, answer);
}

// ------------------------------------------------------------------------------------------------
// The trainable model: every weight a Param, in Hugging Face LLaMA names.

struct Net {
    nn::Config config;
    std::vector<Param<float>> params;  // reserved up front: tapes hold pointers to the values
    std::map<std::string, Param<float>*> by_name;
    Mat<float> ones;  // every RMSNorm gain (frozen at 1)

    Param<float>& p(const std::string& name) { return *by_name.at(name); }

    Net(const nn::Config& c, Rng& rng) : config(c), ones(Mat<float>::Ones(1, c.dim)) {
        params.reserve(std::size_t(2 + 7 * c.n_layers));
        // GPT-2's initialisation: N(0, 0.02²), residual projections scaled by 1/√(2L).
        auto add = [&](const std::string& name, Index rows, Index cols, double stddev) {
            Mat<float> m(rows, cols);
            for (Index i = 0; i < m.size(); ++i) m.data()[i] = float(rng.normal(0.0, stddev));
            params.emplace_back(name, std::move(m));
            by_name[name] = &params.back();
        };
        const double base = 0.02, residual = 0.02 / std::sqrt(2.0 * double(c.n_layers));
        const Index d = c.dim, q = c.n_heads * c.head_dim(), kv = c.kv_dim(), h = c.hidden_dim;
        add("model.embed_tokens.weight", c.vocab_size, d, base);
        for (Index l = 0; l < c.n_layers; ++l) {
            const std::string pre = "model.layers." + std::to_string(l) + ".";
            add(pre + "self_attn.q_proj.weight", q, d, base);
            add(pre + "self_attn.k_proj.weight", kv, d, base);
            add(pre + "self_attn.v_proj.weight", kv, d, base);
            add(pre + "self_attn.o_proj.weight", d, q, residual);
            add(pre + "mlp.gate_proj.weight", h, d, base);
            add(pre + "mlp.up_proj.weight", h, d, base);
            add(pre + "mlp.down_proj.weight", d, h, residual);
        }
        add("lm_head.weight", c.vocab_size, d, base);
    }

    std::vector<Param<float>*> parameter_list() {
        std::vector<Param<float>*> out;
        for (auto& param : params) out.push_back(&param);
        return out;
    }

    // The loss of a right-padded batch: the model of nn::Llama written over Params.
    Var<float> loss(Tape<float>& tape, const nn::TokenBatch& b) {
        using namespace autograd;
        const nn::Config& c = config;
        const float eps = float(c.norm_eps);
        const RopeSpec rope_spec{.head_dim = c.head_dim(),
                                 .rotary_dim = 0,
                                 .theta = c.rope_theta,
                                 .layout = c.rope_layout,
                                 .scaling = c.rope_scaling};
        const AttentionSpec spec{.batch = b.batch,
                                 .seq = b.seq,
                                 .n_heads = c.n_heads,
                                 .n_kv_heads = c.n_kv_heads,
                                 .head_dim = c.head_dim()};
        const std::vector<std::int32_t> positions = batch_positions(b.batch, b.seq, 0);
        auto linear = [&](const Var<float>& x, const std::string& name) {
            return matmul_wt(tape, x, tape.param(p(name)));
        };

        Var<float> x = gather_rows(tape, tape.param(p("model.embed_tokens.weight")),
                                   std::span<const std::int32_t>(b.ids));
        for (Index l = 0; l < c.n_layers; ++l) {
            const std::string pre = "model.layers." + std::to_string(l) + ".";
            Var<float> h = rms_norm(tape, x, frozen(ones), eps);
            Var<float> q =
                rope(tape, linear(h, pre + "self_attn.q_proj.weight"), rope_spec, positions);
            Var<float> k =
                rope(tape, linear(h, pre + "self_attn.k_proj.weight"), rope_spec, positions);
            Var<float> v = linear(h, pre + "self_attn.v_proj.weight");
            Var<float> a = attention(tape, q, k, v, spec, b.lengths);
            x = add(tape, x, linear(a, pre + "self_attn.o_proj.weight"));
            h = rms_norm(tape, x, frozen(ones), eps);
            Var<float> ff = swiglu(tape, linear(h, pre + "mlp.gate_proj.weight"),
                                   linear(h, pre + "mlp.up_proj.weight"));
            x = add(tape, x, linear(ff, pre + "mlp.down_proj.weight"));
        }
        // Only the answer positions reach the head.
        std::vector<std::int32_t> rows, targets;
        for (std::size_t i = 0; i < b.targets.size(); ++i)
            if (b.targets[i] >= 0) {
                rows.push_back(std::int32_t(i));
                targets.push_back(b.targets[i]);
            }
        Var<float> last = rms_norm(tape, gather_rows(tape, x, std::span<const std::int32_t>(rows)),
                                   frozen(ones), eps);
        return cross_entropy(tape, linear(last, "lm_head.weight"), targets);
    }

    // A frozen nn::Model viewing these Params (valid while the Net lives): what save_hf writes.
    nn::Model<nn::Llama, float> frozen_model() const {
        nn::Model<nn::Llama, float> model;
        model.config = config;
        const nn::WeightLookup<float> get = [this](const std::string& name, Index rows,
                                                   Index cols) {
            const bool gain = name.ends_with("layernorm.weight") || name == "model.norm.weight";
            const Mat<float>& m = gain ? ones : by_name.at(name)->value();
            if (m.rows() != rows || m.cols() != cols)
                throw ShapeError::mismatch("pretrain", name, rows, cols, m.rows(), m.cols());
            return Weight<float>{m.data(), rows, cols};
        };
        model.weights = nn::Llama::bind_hf<float>(config, get);
        return model;
    }
};

// ------------------------------------------------------------------------------------------------

struct HeldOut {
    std::vector<std::string> strings;
    std::set<std::string> set;
};

HeldOut held_out_strings(std::uint64_t seed, std::size_t n) {
    Rng rng(seed ^ 0x5EED5EEDull);
    HeldOut h;
    while (h.strings.size() < n) {
        const std::string s = random_string(rng);
        if (h.set.insert(s).second) h.strings.push_back(s);
    }
    return h;
}

void write_vocab(const std::string& dir) {
    nlohmann::ordered_json j;
    j["type"] = "characters";
    j["about"] = "token id -> text; ids 4..98 are printable ASCII 32..126 in order";
    std::vector<std::string> tokens = {"<pad>", "<s>", "</s>", "<sep>"};
    for (char c = ' '; c <= '~'; ++c) tokens.emplace_back(1, c);
    j["tokens"] = tokens;
    j["pad_id"] = kPad;
    j["bos_id"] = kBos;
    j["eos_id"] = kEos;
    j["sep_id"] = kSep;
    j["format"] =
        "<s>{instruction}: {string} = {answer}</s>; without an instruction, <s>{string} = "
        "{string}</s> "
        "or <s><sep>: {string} = {string}</s>";
    j["tasks"] = kTasks;
    j["strings"] = "3 to 8 distinct lowercase letters";
    std::ofstream out(std::filesystem::path(dir) / "vocab.json");
    out << j.dump(2) << "\n";
    if (!out) throw IoError("pretrain: cannot write vocab.json in '" + dir + "'");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app("Pretrain the tiny character-level LLaMA model of the quickstart");
    std::string out_dir = "examples/data/tiny_tasks";
    std::uint64_t seed = 1;
    std::int64_t steps = 2400;
    std::size_t batch_size = 48;
    double lr = 3e-3;
    app.add_option("--out", out_dir, "checkpoint folder to write")->capture_default_str();
    app.add_option("--seed", seed, "seed of the initialisation and the data")
        ->capture_default_str();
    app.add_option("--steps", steps, "optimizer steps")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--batch", batch_size, "examples per step")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--lr", lr, "peak learning rate (AdamW, warm-up then cosine)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    // One thread whatever the build (CMake links OpenMP into the examples): the products are small,
    // and the run stays bit-identical to the single-threaded build that made the committed model.
    Eigen::setNbThreads(1);
    try {
        nn::Config c;
        c.dim = 64;
        c.hidden_dim = 176;
        c.n_layers = 4;
        c.n_heads = 4;
        c.n_kv_heads = 2;
        c.vocab_size = kVocab;
        c.max_seq_len = 64;
        c.norm_eps = 1e-5;
        c.rope_theta = 10000.0;
        c.rope_layout =
            kernels::RopeLayout::kHalfSplit;  // Hugging Face's layout: what config.json means
        c.tied_head = false;
        c.validate();

        Rng rng(seed);
        Net net(c, rng);
        Index n_params = 0;
        for (const auto& param : net.params) n_params += param.size();
        std::printf(
            "model: d %ld, %ld layers, %ld heads (%ld key/value), feed-forward %ld, vocab %ld: %ld "
            "parameters\n",
            long(c.dim), long(c.n_layers), long(c.n_heads), long(c.n_kv_heads), long(c.hidden_dim),
            long(c.vocab_size), long(n_params));

        const HeldOut held = held_out_strings(seed, 200);
        optim::AdamW<float> adamw(net.parameter_list(), {.lr = lr, .weight_decay = 0.01});
        const optim::LrSchedule schedule =
            optim::LrSchedule::warmup_cosine(lr, std::min<std::int64_t>(100, steps / 10), steps);

        const auto start = std::chrono::steady_clock::now();
        double smoothed = 0;
        for (std::int64_t step = 0; step < steps; ++step) {
            // A fresh batch: one of the five tasks or no instruction (copy), each 1/6 of the time.
            train::Dataset data;
            while (data.size() < batch_size) {
                const std::string s = random_string(rng);
                if (held.set.count(s)) continue;  // held-out strings are never trained on
                const std::size_t pick = std::size_t(rng.below(kTasks.size() + 1));
                if (pick < kTasks.size())
                    data.add(make_example(kTasks[pick], s, Instruction::kWord));
                else
                    data.add(make_example(
                        "copy", s,
                        rng.below(2) == 0 ? Instruction::kMissing : Instruction::kNeutral));
            }
            std::vector<std::size_t> all(data.size());
            for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
            const nn::TokenBatch batch = data.batch(all, kPad);

            Tape<float> tape;
            const Var<float> loss = net.loss(tape, batch);
            const double value = double(loss.item());
            tape.backward(loss);
            optim::clip_grad_norm(net.parameter_list(), 1.0);
            schedule.apply(adamw);
            adamw.step();
            adamw.zero_grad();
            smoothed = step == 0 ? value : 0.95 * smoothed + 0.05 * value;
            if ((step + 1) % 100 == 0 || step + 1 == steps) {
                const double seconds =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                std::printf("step %5ld/%ld  loss %.4f  lr %.2e  %.0f s\n", long(step + 1),
                            long(steps), smoothed, adamw.lr(), seconds);
                std::fflush(stdout);
            }
        }
        const double train_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

        io::save_hf(out_dir, net.frozen_model(), io::Dtype::kF32);
        write_vocab(out_dir);
        std::printf("saved %s (%.0f s of training)\n", out_dir.c_str(), train_seconds);

        // Held-out exact match, through the saved checkpoint and the library's inference path.
        const auto model = io::load_hf<nn::Llama, float>(out_dir);
        std::printf(
            "\nheld-out exact match (%zu strings never trained on), greedy decoding of the saved "
            "model:\n",
            held.strings.size());
        std::printf("  %-14s %14s %14s %14s\n", "task", "instruction", "no instruction",
                    "<sep> instead");
        std::vector<std::string> eval_tasks = kTasks;
        eval_tasks.push_back("reverse+upper");  // never trained: the quickstart's new task
        for (const std::string& task : eval_tasks) {
            double acc[3];
            const Instruction modes[3] = {Instruction::kWord, Instruction::kMissing,
                                          Instruction::kNeutral};
            for (int m = 0; m < 3; ++m) {
                train::Dataset eval;
                for (const std::string& s : held.strings) {
                    train::Example e = make_example(task, s, modes[m]);
                    eval.add(std::move(e));
                }
                acc[m] = train::exact_match<nn::Llama, float>(model, nullptr, eval);
            }
            std::printf("  %-14s %13.1f%% %13.1f%% %13.1f%%%s\n", task.c_str(), 100 * acc[0],
                        100 * acc[1], 100 * acc[2],
                        task == "reverse+upper" ? "   (never trained)" : "");
        }
        train::Dataset copies;
        for (const std::string& s : held.strings)
            copies.add(make_example("copy", s, Instruction::kMissing));
        std::printf("  %-14s %14s %13.1f%%\n", "copy", "-",
                    100 * train::exact_match<nn::Llama, float>(model, nullptr, copies));
    } catch (const Error& e) {
        std::fprintf(stderr, "pretrain: %s\n", e.what());
        return 1;
    }
    return 0;
}
