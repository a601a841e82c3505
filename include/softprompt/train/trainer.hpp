#pragma once
// The training loop: batches of a Dataset through the frozen model and a method, gradient
// accumulation, global-norm clipping, a learning-rate schedule, periodic evaluation with early
// stopping and best-parameter keeping, progress on the terminal and metrics as CSV.
//
// Deterministic for a given seed: each epoch's order is recomputed from (seed, epoch), so the whole
// run is a function of its TrainingState (parameters, optimizer state, position in the data). A
// run stopped and resumed from its state reaches the same parameters, bit for bit, as one that was
// never stopped. A non-finite gradient (checked every step, clipping or not) stops training with a
// NumericError before the update: parameters and optimizer state stay as the last step left them.
// A non-finite loss stops it too and puts the parameters back to the last ones whose loss was
// finite (the update that diverged is undone; the optimizer's state is not).
//
// Threads: a Trainer, its method and its optimizer belong to one thread; the model and the data
// sets are only read, so several trainers may share them. Concurrent trainers need different
// metrics_csv paths (or none), and ProgressMode::kSilent unless their lines may interleave.
//
// Data parallelism: given a Collective (train/collective.hpp; over MPI: dist/mpi.hpp), every member
// of the group runs the same Trainer on the same data set, each batch is cut into
// `data_parallel_shards` contiguous pieces, each member computes the gradients of its own pieces,
// and the pieces' gradients are summed exactly (one int64 all-reduce per step, see
// collective.hpp), so every member takes the same optimizer step: the parameters after any step
// are the same bits on any number of processes, and a state saved by one group resumes on a group
// of another size. Evaluation is split by batches and reduced the same way; the progress display
// and the metrics file are rank 0's only. Without a group, data_parallel_shards > 0 trains exactly
// as such a group would (the group of one).

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "softprompt/optim/clip.hpp"
#include "softprompt/optim/optimizer.hpp"
#include "softprompt/optim/schedule.hpp"
#include "softprompt/peft/method.hpp"
#include "softprompt/train/collective.hpp"
#include "softprompt/train/dataset.hpp"
#include "softprompt/train/metrics.hpp"
#include "softprompt/train/progress.hpp"
#include "softprompt/train/training_state.hpp"

namespace softprompt::train {

struct TrainerOptions {
    std::int64_t epochs = 1;
    std::int64_t max_steps = 0;  // optimizer steps in all; 0: as many as `epochs` take
    std::size_t batch_size = 8;
    std::int64_t grad_accumulation = 1;         // micro-batches per optimizer step
    double max_grad_norm = 0;                   // 0: no clipping
    std::optional<optim::LrSchedule> schedule;  // none: the optimizer's own learning rate
    std::int64_t eval_every = 0;                // steps between evaluations; 0: only at the end
    std::int64_t patience = 0;  // evaluations without improvement before stopping; 0: never
    bool keep_best = true;      // end with the parameters of the best evaluation
    std::uint64_t seed = 0;
    bool shuffle = true;
    std::int32_t pad_id = 0;
    std::string metrics_csv;  // empty: none
    ProgressMode progress = ProgressMode::kAuto;
    // > 0: activation checkpointing, the layers in runs of this many; backward recomputes each
    // run's forward pass instead of keeping its activations (less memory, one more forward pass
    // of the layers per step, the same gradients). 0: keep them.
    std::int64_t checkpoint_every = 0;
    // > 0: cut each batch into this many contiguous shards and sum their gradients exactly (data
    // parallelism; required with a Collective). Keep it the same across group sizes: it, not the
    // number of processes, decides the arithmetic. 0: the whole batch in one pass.
    std::int64_t data_parallel_shards = 0;
};

struct TrainReport {
    std::int64_t steps = 0;
    double last_loss = 0;  // training loss of the last step
    std::optional<EvalResult> final_eval, best_eval;
    std::vector<std::pair<std::int64_t, EvalResult>> evaluations;  // (step, result)
    bool early_stopped = false;
    double seconds = 0;
    double tokens_per_second = 0;
};

template <class Arch, class T>
class Trainer {
public:
    Trainer(const nn::Model<Arch, T>& model, peft::Method<T>& method,
            optim::Optimizer<T>& optimizer, TrainerOptions options)
        : model_(model), method_(method), optimizer_(optimizer), options_(std::move(options)) {
        if (options_.data_parallel_shards < 0)
            throw ConfigError("Trainer: data_parallel_shards must be >= 0 (0: no sharding)");
        if (options_.batch_size == 0) throw ConfigError("Trainer: batch_size must be > 0");
        if (options_.grad_accumulation <= 0)
            throw ConfigError("Trainer: grad_accumulation must be > 0");
        if (options_.epochs <= 0 && options_.max_steps <= 0)
            throw ConfigError("Trainer: give epochs > 0 or max_steps > 0");
        if (options_.max_grad_norm < 0) throw ConfigError("Trainer: max_grad_norm must be >= 0");
        if (options_.checkpoint_every < 0)
            throw ConfigError("Trainer: checkpoint_every must be >= 0 (0: no checkpointing)");
        if (method_.parameters().empty())
            throw ConfigError("nothing to train: the method has no parameters");
    }

    /// A member of a data-parallel group: every member constructs its Trainer with the same
    /// options (data_parallel_shards > 0) and calls fit with the same data sets.
    Trainer(const nn::Model<Arch, T>& model, peft::Method<T>& method,
            optim::Optimizer<T>& optimizer, TrainerOptions options, Collective& group)
        : Trainer(model, method, optimizer, std::move(options)) {
        if (options_.data_parallel_shards == 0)
            throw ConfigError(
                "Trainer: a data-parallel group needs data_parallel_shards > 0 (the pieces each "
                "batch is cut into; keep it the same whatever the group's size)");
        group_ = &group;
    }

    /// Optimizer steps the whole run takes on `train`.
    std::int64_t total_steps(const Dataset& train) const {
        if (options_.max_steps > 0) return options_.max_steps;
        const std::int64_t batches =
            std::int64_t((train.size() + options_.batch_size - 1) / options_.batch_size);
        return (options_.epochs * batches + options_.grad_accumulation - 1) /
               options_.grad_accumulation;
    }

    /// Train from the current state until the run's last step, early stopping, or `stop_after`
    /// optimizer steps in all (to interrupt a run; resume by calling fit again).
    TrainReport fit(const Dataset& train, const Dataset* eval = nullptr,
                    std::int64_t stop_after = -1) {
        if (train.empty()) throw ConfigError("Trainer::fit: the training set is empty");
        const std::int64_t total = total_steps(train);
        const std::int64_t end = stop_after >= 0 ? std::min(total, stop_after) : total;
        SingleProcess alone;
        Collective& group = group_ ? *group_ : alone;
        const bool leader = group.rank() == 0;
        Progress progress(leader ? options_.progress : ProgressMode::kSilent, total);
        std::ofstream csv = leader ? open_csv() : std::ofstream();
        TrainReport report;
        Index tokens = 0;
        std::vector<std::vector<std::size_t>> batches =
            train.batches(options_.batch_size, options_.seed, epoch_, options_.shuffle);
        std::vector<Mat<T>> last_good = snapshot();

        while (step_ < end) {
            // Where this step's data starts: a step that fails is not taken, so the position goes
            // back here and a resumed run retries the same micro-batches.
            const std::int64_t step_epoch = epoch_, step_batch = next_batch_;
            double step_loss = 0;
            const auto next_micro_batch = [&]() -> const std::vector<std::size_t>& {
                if (next_batch_ >= std::int64_t(batches.size())) {
                    ++epoch_;
                    next_batch_ = 0;
                    batches =
                        train.batches(options_.batch_size, options_.seed, epoch_, options_.shuffle);
                }
                return batches[std::size_t(next_batch_++)];
            };
            if (options_.data_parallel_shards > 0) {
                try {
                    step_loss = sharded_gradients(train, group, next_micro_batch, tokens);
                } catch (
                    const NumericError&) {  // a gradient was not finite: this step is not taken
                    epoch_ = step_epoch;
                    next_batch_ = step_batch;
                    progress.finish();
                    throw;
                }
                if (!std::isfinite(step_loss)) {
                    restore(last_good);
                    progress.finish();
                    epoch_ = step_epoch;
                    next_batch_ = step_batch;
                    throw NumericError(
                        "Trainer: the loss is " + optim::detail::format_double(step_loss) +
                        " at step " + std::to_string(step_ + 1) + " (" + bad_shard_ +
                        "); training stopped and the parameters are those of the last finite step");
                }
            }
            for (std::int64_t micro = 0;
                 options_.data_parallel_shards == 0 && micro < options_.grad_accumulation;
                 ++micro) {
                const nn::TokenBatch batch = train.batch(next_micro_batch(), options_.pad_id);
                autograd::Tape<T> tape;
                const nn::ForwardOutput<T> out =
                    nn::forward(tape, model_, batch, method_.input(tape),
                                nn::LogitsRequest::kLossOnly, Index(options_.checkpoint_every));
                const double loss = double(out.loss.item());
                if (!std::isfinite(loss)) {
                    restore(last_good);
                    progress.finish();
                    const std::int64_t bad_epoch = epoch_, bad_batch = next_batch_ - 1;
                    epoch_ = step_epoch;
                    next_batch_ = step_batch;
                    throw NumericError(
                        "Trainer: the loss is " + optim::detail::format_double(loss) + " at step " +
                        std::to_string(step_ + 1) + " (epoch " + std::to_string(bad_epoch) +
                        ", batch " + std::to_string(bad_batch) +
                        "); training stopped and the parameters are those of the last finite step");
                }
                const T inv = T(1) / T(options_.grad_accumulation);
                tape.backward(options_.grad_accumulation > 1 ? autograd::scale(tape, out.loss, inv)
                                                             : out.loss);
                step_loss += loss / double(options_.grad_accumulation);
                for (std::int32_t len : batch.lengths) tokens += len;
            }
            // Every step, clipping or not, one pass over the gradients: a NaN or an infinity
            // anywhere makes the norm non-finite. Nothing has touched the parameters or the
            // optimizer since the last step, so refusing this one leaves both as that step left
            // them, bit for bit.
            const std::vector<autograd::Param<T>*> params = method_.parameters();
            const double norm = optim::grad_norm(params);
            if (!std::isfinite(norm)) {
                const auto bad = optim::find_nonfinite_grad(params);
                for (auto* p : params) p->zero_grad();
                epoch_ = step_epoch;
                next_batch_ = step_batch;
                progress.finish();
                throw NumericError(
                    "Trainer: at step " + std::to_string(step_ + 1) + " the loss is finite (" +
                    optim::detail::format_double(step_loss) + ") but " +
                    (bad ? "the gradient of " + bad->describe()
                         : "the gradients' global norm overflows although every element is "
                           "finite") +
                    "; training stopped before the update, the parameters and the optimizer "
                    "state are those after step " +
                    std::to_string(step_));
            }
            if (options_.max_grad_norm > 0)
                optim::scale_grads_to_max_norm(params, norm, options_.max_grad_norm);
            last_good = snapshot();
            if (options_.schedule) options_.schedule->apply(optimizer_);
            const double lr = optimizer_.lr();
            optimizer_.step();
            optimizer_.zero_grad();
            ++step_;
            report.last_loss = step_loss;
            const double tps = double(tokens) / std::max(progress.seconds(), 1e-9);
            progress.update(step_, step_loss, tps);

            std::optional<EvalResult> result;
            const bool at_end = step_ == total;
            if (eval != nullptr &&
                ((options_.eval_every > 0 && step_ % options_.eval_every == 0) || at_end)) {
                result = evaluate(model_, &method_, *eval, options_.batch_size, &group);
                report.evaluations.emplace_back(step_, *result);
                progress.note("eval at step " + std::to_string(step_) + ": loss " +
                              std::to_string(result->loss) + ", perplexity " +
                              std::to_string(result->perplexity) + ", token accuracy " +
                              std::to_string(result->token_accuracy));
                if (result->loss < best_eval_loss_) {
                    best_eval_loss_ = result->loss;
                    evals_without_improvement_ = 0;
                    best_params_ = named_snapshot();
                    report.best_eval = result;
                } else {
                    ++evals_without_improvement_;
                }
            }
            if (csv) {
                csv << step_ << ',' << epoch_ << ',' << lr << ',' << step_loss << ',';
                if (result)
                    csv << result->loss << ',' << result->perplexity << ','
                        << result->token_accuracy;
                else
                    csv << ",,";
                csv << ',' << tps << '\n';
            }
            if (options_.patience > 0 && evals_without_improvement_ >= options_.patience) {
                progress.note("early stopping at step " + std::to_string(step_) +
                              ": no improvement in " + std::to_string(options_.patience) +
                              " evaluations");
                report.early_stopped = true;
                break;
            }
        }
        progress.finish();
        report.steps = step_;
        report.seconds = progress.seconds();
        report.tokens_per_second = double(tokens) / std::max(report.seconds, 1e-9);
        const bool finished = step_ >= total || report.early_stopped;
        if (finished && eval != nullptr && options_.keep_best && !best_params_.empty()) {
            load_params(best_params_);
            report.final_eval = evaluate(model_, &method_, *eval, options_.batch_size, &group);
        } else if (finished && !report.evaluations.empty()) {
            report.final_eval = report.evaluations.back().second;
        }
        return report;
    }

    TrainingState<T> state() const {
        TrainingState<T> s;
        s.step = step_;
        s.epoch = epoch_;
        s.next_batch = next_batch_;
        s.params = named_snapshot();
        s.optimizer = optimizer_.state();
        s.best_eval_loss = best_eval_loss_;
        s.evals_without_improvement = evals_without_improvement_;
        s.best_params = best_params_;
        return s;
    }

    /// Continue from a saved state (the same method, optimizer kind and options are required).
    void load_state(const TrainingState<T>& s) {
        load_params(s.params);
        optimizer_.load_state(s.optimizer);
        step_ = s.step;
        epoch_ = s.epoch;
        next_batch_ = s.next_batch;
        best_eval_loss_ = s.best_eval_loss;
        evals_without_improvement_ = s.evals_without_improvement;
        best_params_ = s.best_params;
    }

private:
    /// One step's gradients in data-parallel form: each micro-batch cut into
    /// data_parallel_shards contiguous pieces (slot = micro-batch · shards + piece), the slots
    /// dealt to the group's members in contiguous runs, each member's pieces run forward and
    /// backward with their loss weighted by their share of the step's labelled tokens, and the
    /// weighted gradients summed exactly over the group (collective.hpp). Leaves the sum in the
    /// parameters' gradients, adds this member's tokens to `tokens`, and returns the step's loss
    /// (the same on every member; not finite when a piece's loss was not, naming it in bad_shard_).
    template <class NextBatch>
    double sharded_gradients(const Dataset& train, Collective& group, NextBatch& next_micro_batch,
                             Index& tokens) {
        const std::size_t shards = std::size_t(options_.data_parallel_shards);
        const std::size_t micros = std::size_t(options_.grad_accumulation);
        const std::size_t slots = shards * micros;
        const std::size_t members = std::size_t(group.size()), me = std::size_t(group.rank());
        const auto owner = [&](std::size_t slot) { return slot * members / slots; };
        const std::vector<autograd::Param<T>*> params = method_.parameters();

        std::vector<double> slot_loss(slots, 0.0), slot_weight(slots, 0.0);
        std::vector<std::vector<Mat<T>>> mine;  // the weighted gradients of this member's slots
        std::vector<std::int64_t> exponent = {kAllZeroExponent, -1};  // bound, a rank with NaN
        std::string local_bad;
        for (std::size_t micro = 0; micro < micros; ++micro) {
            const std::vector<std::size_t>& which = next_micro_batch();
            Index labelled = 0;
            for (std::size_t i : which) labelled += train[i].labelled();
            for (std::size_t piece = 0; piece < shards; ++piece) {
                const std::size_t slot = micro * shards + piece;
                const std::vector<std::size_t> part(
                    which.begin() + std::ptrdiff_t(piece * which.size() / shards),
                    which.begin() + std::ptrdiff_t((piece + 1) * which.size() / shards));
                Index n = 0;
                for (std::size_t i : part) n += train[i].labelled();
                slot_weight[slot] = double(n) / double(labelled) / double(micros);
                if (n == 0 || owner(slot) != me) continue;
                const nn::TokenBatch batch = train.batch(part, options_.pad_id);
                autograd::Tape<T> tape;
                const nn::ForwardOutput<T> out =
                    nn::forward(tape, model_, batch, method_.input(tape),
                                nn::LogitsRequest::kLossOnly, Index(options_.checkpoint_every));
                slot_loss[slot] = double(out.loss.item());
                for (std::int32_t len : batch.lengths) tokens += len;
                if (!std::isfinite(slot_loss[slot])) continue;  // reported once the group knows
                tape.backward(autograd::scale(tape, out.loss, T(slot_weight[slot])));
                std::vector<Mat<T>> grads;
                for (autograd::Param<T>* p : params) {
                    const Mat<T>& g = p->grad();
                    const std::int64_t e = max_exponent<T>(
                        std::span<const T>(g.data(), std::size_t(g.size())), exponent[0]);
                    if (e == kNotFiniteExponent && exponent[1] < 0) {
                        exponent[1] = std::int64_t(me);
                        local_bad = "the gradient of " + p->name() + " in shard " +
                                    std::to_string(piece) + " of micro-batch " +
                                    std::to_string(micro);
                    } else if (e != kNotFiniteExponent) {
                        exponent[0] = e;
                    }
                    grads.push_back(g);
                    p->zero_grad();
                }
                mine.push_back(std::move(grads));
            }
        }

        // Every member learns every slot's loss (each slot has one owner, so the sum is exact).
        group.sum(std::span<double>(slot_loss));
        double step_loss = 0;
        for (std::size_t slot = 0; slot < slots; ++slot) {
            if (!std::isfinite(slot_loss[slot])) {
                bad_shard_ = "shard " + std::to_string(slot % shards) + " of micro-batch " +
                             std::to_string(slot / shards) + ", computed by rank " +
                             std::to_string(owner(slot));
                return slot_loss[slot];
            }
            step_loss += slot_weight[slot] * slot_loss[slot];
        }

        group.max(std::span<std::int64_t>(exponent));
        if (exponent[1] >= 0) {
            for (auto* p : params) p->zero_grad();
            throw NumericError(
                "Trainer: at step " + std::to_string(step_ + 1) + " the loss is finite (" +
                optim::detail::format_double(step_loss) + ") but " +
                (local_bad.empty() ? "a gradient computed by rank " + std::to_string(exponent[1])
                                   : local_bad) +
                " is not finite; training stopped before the update, the parameters and the "
                "optimizer state are those after step " +
                std::to_string(step_));
        }
        if (exponent[0] == kAllZeroExponent) return step_loss;  // every gradient is zero

        const FixedPointGrid grid =
            FixedPointGrid::for_exponent(exponent[0], FixedPointGrid::headroom_for(slots));
        std::size_t elements = 0;
        for (auto* p : params) elements += std::size_t(p->grad().size());
        std::vector<std::int64_t> fixed(elements, 0);
        for (const std::vector<Mat<T>>& grads : mine) {
            std::size_t at = 0;
            for (const Mat<T>& g : grads)
                for (Index i = 0; i < g.size(); ++i) fixed[at++] += grid.to_fixed(g.data()[i]);
        }
        group.sum(std::span<std::int64_t>(fixed));
        std::size_t at = 0;
        for (auto* p : params)
            for (Index i = 0; i < p->grad().size(); ++i)
                p->grad().data()[i] = T(grid.value(fixed[at++]));
        return step_loss;
    }

    std::vector<Mat<T>> snapshot() const {
        std::vector<Mat<T>> out;
        for (auto* p : method_.parameters()) out.push_back(p->value());
        return out;
    }
    void restore(const std::vector<Mat<T>>& values) {
        std::size_t i = 0;
        for (auto* p : method_.parameters()) {
            p->value() = values[i++];
            p->zero_grad();
        }
    }
    std::vector<std::pair<std::string, Mat<T>>> named_snapshot() const {
        std::vector<std::pair<std::string, Mat<T>>> out;
        for (auto* p : method_.parameters()) out.emplace_back(p->name(), p->value());
        return out;
    }
    void load_params(const std::vector<std::pair<std::string, Mat<T>>>& values) {
        const auto params = method_.parameters();
        if (values.size() != params.size())
            throw ConfigError("Trainer: the state has " + std::to_string(values.size()) +
                              " parameters, the method " + std::to_string(params.size()));
        for (std::size_t i = 0; i < params.size(); ++i) {
            const auto& [name, value] = values[i];
            if (name != params[i]->name())
                throw ConfigError("Trainer: the state's parameter " + std::to_string(i) + " is '" +
                                  name + "', the method's is '" + params[i]->name() + "'");
            if (value.rows() != params[i]->value().rows() ||
                value.cols() != params[i]->value().cols())
                throw ShapeError::mismatch("Trainer::load_state", name, params[i]->value().rows(),
                                           params[i]->value().cols(), value.rows(), value.cols());
        }
        for (std::size_t i = 0; i < params.size(); ++i) {
            params[i]->value() = values[i].second;
            params[i]->zero_grad();
        }
    }
    std::ofstream open_csv() const {
        std::ofstream csv;
        if (options_.metrics_csv.empty()) return csv;
        const bool fresh = step_ == 0;
        csv.open(options_.metrics_csv, fresh ? std::ios::trunc : std::ios::app);
        if (!csv) throw IoError("Trainer: cannot write metrics to '" + options_.metrics_csv + "'");
        csv.precision(9);
        if (fresh)
            csv << "step,epoch,lr,loss,eval_loss,eval_perplexity,eval_token_accuracy,tokens_per_"
                   "second\n";
        return csv;
    }

    const nn::Model<Arch, T>& model_;
    peft::Method<T>& method_;
    optim::Optimizer<T>& optimizer_;
    TrainerOptions options_;
    Collective* group_ = nullptr;
    std::string bad_shard_;  // the piece whose loss was not finite (data-parallel steps)
    std::int64_t step_ = 0, epoch_ = 0, next_batch_ = 0;
    double best_eval_loss_ = std::numeric_limits<double>::infinity();
    std::int64_t evals_without_improvement_ = 0;
    std::vector<std::pair<std::string, Mat<T>>> best_params_;
};

}  // namespace softprompt::train
