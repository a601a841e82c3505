// Optimizers, schedules and gradient clipping: every optimizer against PyTorch / Hugging Face
// trajectories (tests/data/optim_golden.json, made by tests/reference/make_optim_golden.py) in
// double and in float, the HF schedules, clip_grad_norm_, exact resume from saved state, and the
// errors a user can act on.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <softprompt/optim/adafactor.hpp>
#include <softprompt/optim/adam.hpp>
#include <softprompt/optim/clip.hpp>
#include <softprompt/optim/optimizer.hpp>
#include <softprompt/optim/schedule.hpp>
#include <softprompt/optim/sgd.hpp>
#include <string>
#include <vector>

#include "golden_model.hpp"
#include "test_paths.hpp"

namespace {

using namespace softprompt;
using namespace softprompt::optim;
using autograd::Param;
using softprompt::testing::test_data_dir;

constexpr double kDoubleTolerance = 1e-12;  // relative, per tensor, against float64 PyTorch
constexpr double kFloatTolerance = 1e-5;

// ------------------------------------------------------------------------------------------------
// Golden data.

const nlohmann::json& golden() {
    static const nlohmann::json json = [] {
        std::ifstream in(test_data_dir() / "optim_golden.json");
        if (!in) throw std::runtime_error("missing tests/data/optim_golden.json");
        nlohmann::json j = nlohmann::json::parse(in);
        if (j.at("format") != "softprompt-optim-golden" || j.at("version") != 1)
            throw std::runtime_error("optim_golden.json: unexpected format or version");
        return j;
    }();
    return json;
}

using softprompt::testing::tensor_of;

/// max |got − want| / max |want|: the error relative to the tensor's scale.
template <class T>
double rel_error(const Mat<T>& got, const Mat<double>& want) {
    if (got.rows() != want.rows() || got.cols() != want.cols()) return 1e30;
    const double scale = std::max(want.cwiseAbs().maxCoeff(), 1e-300);
    return (got.template cast<double>() - want).cwiseAbs().maxCoeff() / scale;
}

/// The golden problem: Params W [3 x 5] and b [1 x 5] and the loss
/// L = Σ A·p²/2 + C·p³/3 + B·p, whose gradient A·p + C·p·p + B is evaluated at the current values.
template <class T>
struct Problem {
    Param<T> W{"W", tensor_of<T>(golden().at("params").at("W"))};
    Param<T> b{"b", tensor_of<T>(golden().at("params").at("b"))};
    std::map<std::string, Mat<T>> A, B, C;

    Problem() {
        for (const char* name : {"W", "b"}) {
            A[name] = tensor_of<T>(golden().at("loss").at("A").at(name));
            B[name] = tensor_of<T>(golden().at("loss").at("B").at(name));
            C[name] = tensor_of<T>(golden().at("loss").at("C").at(name));
        }
    }
    std::vector<Param<T>*> params() { return {&W, &b}; }

    void set_grads() {
        for (Param<T>* p : params()) {
            const Mat<T>& v = p->value();
            const std::string& n = p->name();
            p->grad() =
                (A[n].array() * v.array() + C[n].array() * v.array() * v.array() + B[n].array())
                    .matrix();
        }
    }
};

LrSchedule schedule_of(const nlohmann::json& s) {
    const std::string kind = s.at("kind");
    const double lr = s.at("lr");
    const std::int64_t warmup = s.at("warmup"), total = s.at("total");
    if (kind == "constant") return LrSchedule::constant(lr);
    if (kind == "warmup_constant") return LrSchedule::warmup_constant(lr, warmup);
    if (kind == "warmup_linear") return LrSchedule::warmup_linear(lr, warmup, total);
    if (kind == "warmup_cosine")
        return LrSchedule::warmup_cosine(lr, warmup, total, s.at("num_cycles").get<double>());
    throw std::runtime_error("unknown schedule kind " + kind);
}

template <class T>
std::unique_ptr<Optimizer<T>> optimizer_of(const std::string& kind, const nlohmann::json& o,
                                           std::vector<Param<T>*> params) {
    if (kind == "sgd")
        return std::make_unique<Sgd<T>>(params, SgdOptions{.lr = o.at("lr"),
                                                           .momentum = o.at("momentum"),
                                                           .weight_decay = o.at("weight_decay"),
                                                           .dampening = o.at("dampening"),
                                                           .nesterov = o.at("nesterov")});
    if (kind == "adam")
        return std::make_unique<Adam<T>>(params, AdamOptions{.lr = o.at("lr"),
                                                             .beta1 = o.at("beta1"),
                                                             .beta2 = o.at("beta2"),
                                                             .eps = o.at("eps"),
                                                             .weight_decay = o.at("weight_decay"),
                                                             .amsgrad = o.at("amsgrad")});
    if (kind == "adamw")
        return std::make_unique<AdamW<T>>(params, AdamWOptions{.lr = o.at("lr"),
                                                               .beta1 = o.at("beta1"),
                                                               .beta2 = o.at("beta2"),
                                                               .eps = o.at("eps"),
                                                               .weight_decay = o.at("weight_decay"),
                                                               .amsgrad = o.at("amsgrad")});
    if (kind == "adafactor") {
        AdafactorOptions a;
        if (!o.at("lr").is_null()) a.lr = o.at("lr").get<double>();
        a.eps1 = o.at("eps").at(0);
        a.eps2 = o.at("eps").at(1);
        a.clip_threshold = o.at("clip_threshold");
        a.decay_rate = o.at("decay_rate");
        if (!o.at("beta1").is_null()) a.beta1 = o.at("beta1").get<double>();
        a.weight_decay = o.at("weight_decay");
        a.scale_parameter = o.at("scale_parameter");
        a.relative_step = o.at("relative_step");
        a.warmup_init = o.at("warmup_init");
        return std::make_unique<Adafactor<T>>(params, a);
    }
    throw std::runtime_error("unknown optimizer kind " + kind);
}

/// Runs one golden case in T; returns the largest per-tensor relative error over all steps.
template <class T>
double run_golden_case(const nlohmann::json& c) {
    Problem<T> problem;
    auto opt = optimizer_of<T>(c.at("optimizer"), c.at("options"), problem.params());
    std::optional<LrSchedule> schedule;
    if (c.contains("schedule")) schedule = schedule_of(c.at("schedule"));
    double worst = 0;
    const auto& trajectory = c.at("trajectory");
    for (std::size_t s = 0; s < trajectory.size(); ++s) {
        problem.set_grads();
        if (schedule) {
            schedule->apply(*opt);
            EXPECT_DOUBLE_EQ(opt->lr(), c.at("lrs").at(s).get<double>()) << "step " << s;
        }
        opt->step();
        for (Param<T>* p : problem.params())
            worst = std::max(worst,
                             rel_error(p->value(), tensor_of<double>(trajectory[s].at(p->name()))));
    }
    EXPECT_EQ(opt->step_count(), std::int64_t(trajectory.size()));
    return worst;
}

template <class T>
void check_all_golden_cases(double tolerance) {
    const auto& cases = golden().at("cases");
    ASSERT_GE(cases.size(), 14u);
    double worst = 0;
    for (const auto& c : cases) {
        const std::string name = c.at("name");
        const double err = run_golden_case<T>(c);
        worst = std::max(worst, err);
        EXPECT_LE(err, tolerance) << name;
        std::printf("  %-26s max rel error %.3g\n", name.c_str(), err);
    }
    std::printf("  all %zu cases: max rel error %.3g (tolerance %.0g)\n", cases.size(), worst,
                tolerance);
}

TEST(Golden, OptimizersMatchPyTorchInDouble) { check_all_golden_cases<double>(kDoubleTolerance); }

TEST(Golden, OptimizersMatchPyTorchInFloat) { check_all_golden_cases<float>(kFloatTolerance); }

TEST(Golden, SchedulesMatchHuggingFaceLambdaLR) {
    double worst = 0;
    for (const auto& s : golden().at("schedules")) {
        const LrSchedule schedule = schedule_of(s);
        const auto& lrs = s.at("lrs");
        for (std::size_t step = 0; step < lrs.size(); ++step) {
            const double want = lrs[step];
            const double got = schedule.lr(std::int64_t(step));
            const double err = std::abs(got - want) / std::max(std::abs(want), 1e-300);
            worst = std::max(worst, want == 0 ? std::abs(got) : err);
            EXPECT_NEAR(got, want, 1e-15 * std::abs(want))
                << schedule.describe() << " step " << step;
        }
    }
    std::printf("  schedules: max rel error %.3g\n", worst);
}

TEST(Golden, ClipGradNormMatchesTorch) {
    for (const auto& c : golden().at("clip")) {
        Problem<double> problem;
        for (Param<double>* p : problem.params())
            p->grad() = tensor_of<double>(c.at("grads").at(p->name()));
        const double norm = clip_grad_norm(problem.params(), c.at("max_norm").get<double>());
        EXPECT_NEAR(norm, c.at("norm").get<double>(), 1e-14 * norm);
        for (Param<double>* p : problem.params())
            EXPECT_LE(rel_error(p->grad(), tensor_of<double>(c.at("clipped").at(p->name()))), 1e-14)
                << "max_norm " << c.at("max_norm");
    }
}

// ------------------------------------------------------------------------------------------------
// Schedules.

TEST(Schedule, ShapesOfTheCurves) {
    const LrSchedule c = LrSchedule::constant(0.3);
    EXPECT_EQ(c.lr(0), 0.3);
    EXPECT_EQ(c.lr(1000000), 0.3);

    const LrSchedule wc = LrSchedule::warmup_constant(1.0, 4);
    EXPECT_EQ(wc.factor(0), 0.0);
    EXPECT_EQ(wc.factor(2), 0.5);
    EXPECT_EQ(wc.factor(4), 1.0);
    EXPECT_EQ(wc.factor(400), 1.0);

    const LrSchedule wl = LrSchedule::warmup_linear(2.0, 10, 110);
    EXPECT_EQ(wl.lr(5), 1.0);
    EXPECT_EQ(wl.lr(10), 2.0);
    EXPECT_DOUBLE_EQ(wl.lr(60), 1.0);
    EXPECT_EQ(wl.lr(110), 0.0);
    EXPECT_EQ(wl.lr(500), 0.0);  // clamped at 0 after the end

    const LrSchedule cos = LrSchedule::warmup_cosine(1.0, 0, 100);
    EXPECT_EQ(cos.factor(0), 1.0);
    EXPECT_NEAR(cos.factor(50), 0.5, 1e-15);
    EXPECT_NEAR(cos.factor(100), 0.0, 1e-15);

    // No warm-up: the first step already uses the full rate.
    EXPECT_EQ(LrSchedule::warmup_linear(1.0, 0, 10).factor(0), 1.0);
    EXPECT_EQ(wl.describe(), "warmup_linear(lr=2, warmup=10, total=110)");
}

TEST(Schedule, DrivesAnOptimizer) {
    Param<double> p("p", Mat<double>::Ones(2, 2));
    Sgd<double> sgd({&p}, {.lr = 1.0});
    const LrSchedule s = LrSchedule::warmup_linear(0.5, 2, 6);
    std::vector<double> seen;
    for (int i = 0; i < 6; ++i) {
        s.apply(sgd);
        seen.push_back(sgd.lr());
        sgd.step();
    }
    const std::vector<double> want = {0.0, 0.25, 0.5, 0.375, 0.25, 0.125};
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(seen[i], want[i]) << i;
}

template <class F>
std::string config_error_of(F&& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("wrong exception type: ") + e.what();
    }
    return "no exception";
}

#define EXPECT_CONFIG_ERROR(expr, ...)                                      \
    do {                                                                    \
        const std::string message = config_error_of([&] { (void)(expr); }); \
        for (const char* part : {__VA_ARGS__})                              \
            EXPECT_NE(message.find(part), std::string::npos)                \
                << "'" << part << "' not in: " << message;                  \
    } while (0)

TEST(Schedule, RejectsBadArguments) {
    EXPECT_CONFIG_ERROR(LrSchedule::constant(-0.1), "lr", "-0.1");
    EXPECT_CONFIG_ERROR(LrSchedule::constant(std::nan("")), "lr", "nan");
    EXPECT_CONFIG_ERROR(LrSchedule::warmup_constant(0.1, -1), "warmup_steps", "-1");
    EXPECT_CONFIG_ERROR(LrSchedule::warmup_linear(0.1, 0, 0), "total_steps", "0");
    EXPECT_CONFIG_ERROR(LrSchedule::warmup_linear(0.1, 20, 10), "warmup_steps (20)",
                        "total_steps (10)");
    EXPECT_CONFIG_ERROR(LrSchedule::warmup_cosine(0.1, 1, 10, 0.0), "num_cycles", "0");
    EXPECT_CONFIG_ERROR(LrSchedule::constant(0.1).factor(-3), "step", "-3");
}

// ------------------------------------------------------------------------------------------------
// Gradient clipping.

TEST(Clip, NormScalingAndNoOpBelowTheLimit) {
    Param<float> a("a", Mat<float>::Zero(1, 2)), b("b", Mat<float>::Zero(2, 1));
    Param<float> frozen("frozen", Mat<float>::Zero(1, 1));
    frozen.set_trainable(false);
    a.grad() << 3.0f, 0.0f;
    b.grad() << 0.0f, 4.0f;
    frozen.grad() << 1000.0f;  // not trainable: neither counted nor scaled
    const std::vector<Param<float>*> params = {&a, &b, &frozen};

    EXPECT_DOUBLE_EQ(grad_norm(params), 5.0);
    EXPECT_DOUBLE_EQ(clip_grad_norm(params, 10.0), 5.0);  // below the limit: untouched
    EXPECT_EQ(a.grad()(0, 0), 3.0f);
    EXPECT_EQ(b.grad()(1, 0), 4.0f);

    EXPECT_DOUBLE_EQ(clip_grad_norm(params, 1.0), 5.0);  // returns the norm before clipping
    const float scale = float(1.0 / (5.0 + 1e-6));
    EXPECT_EQ(a.grad()(0, 0), 3.0f * scale);
    EXPECT_EQ(b.grad()(1, 0), 4.0f * scale);
    EXPECT_NEAR(grad_norm(params), 1.0, 1e-6);
    EXPECT_EQ(frozen.grad()(0, 0), 1000.0f);
}

TEST(Clip, NonFiniteGradientNamesTheParamAndChangesNothing) {
    Param<double> a("prompt", Mat<double>::Zero(2, 2)), b("prefix", Mat<double>::Zero(2, 3));
    a.grad().setConstant(1.0);
    b.grad().setConstant(2.0);
    b.grad()(1, 2) = std::numeric_limits<double>::quiet_NaN();
    try {
        clip_grad_norm<double>({&a, &b}, 1.0);
        FAIL() << "expected NumericError";
    } catch (const NumericError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("'prefix'"), std::string::npos) << m;
        EXPECT_NE(m.find("nan"), std::string::npos) << m;
        EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
    }
    EXPECT_EQ(a.grad()(0, 0), 1.0);
    EXPECT_EQ(b.grad()(0, 0), 2.0);

    b.grad()(1, 2) = 2.0;
    a.grad()(0, 1) = -std::numeric_limits<double>::infinity();
    EXPECT_THROW(clip_grad_norm<double>({&a, &b}, 1.0), NumericError);
    EXPECT_CONFIG_ERROR(clip_grad_norm<double>({&a, &b}, 0.0), "max_norm", "0");
    EXPECT_CONFIG_ERROR(clip_grad_norm<double>({&a, &b}, -1.0), "max_norm", "-1");
}

// ------------------------------------------------------------------------------------------------
// Exact resume: N steps, save, M more steps  ==  fresh optimizer + load_state, M steps.

template <class T>
std::vector<
    std::pair<std::string, std::function<std::unique_ptr<Optimizer<T>>(std::vector<Param<T>*>)>>>
all_optimizers() {
    using P = std::vector<Param<T>*>;
    return {
        {"sgd", [](P p) { return std::make_unique<Sgd<T>>(p, SgdOptions{.lr = 0.05}); }},
        {"sgd_nesterov_wd",
         [](P p) {
             return std::make_unique<Sgd<T>>(
                 p,
                 SgdOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
         }},
        {"adam",
         [](P p) {
             return std::make_unique<Adam<T>>(p, AdamOptions{.lr = 0.05, .weight_decay = 0.1});
         }},
        {"adam_amsgrad",
         [](P p) {
             return std::make_unique<Adam<T>>(
                 p, AdamOptions{.lr = 0.05, .beta2 = 0.6, .amsgrad = true});
         }},
        {"adamw", [](P p) { return std::make_unique<AdamW<T>>(p, AdamWOptions{.lr = 0.05}); }},
        {"adafactor", [](P p) { return std::make_unique<Adafactor<T>>(p, AdafactorOptions{}); }},
        {"adafactor_beta1_fixed_lr",
         [](P p) {
             return std::make_unique<Adafactor<T>>(p, AdafactorOptions{.lr = 0.3,
                                                                       .beta1 = 0.9,
                                                                       .weight_decay = 1e-5,
                                                                       .scale_parameter = false,
                                                                       .relative_step = false});
         }},
    };
}

template <class T>
void check_exact_resume() {
    constexpr int N = 4, M = 5;
    const LrSchedule schedule = LrSchedule::warmup_cosine(0.05, 2, N + M);
    for (auto& [name, make] : all_optimizers<T>()) {
        Problem<T> run;
        auto opt = make(run.params());
        const bool scheduled = opt->state().scalars.count("lr") != 0;  // has an external lr
        auto one_step = [&](Problem<T>& prob, Optimizer<T>& o) {
            prob.set_grads();
            if (scheduled) schedule.apply(o);
            o.step();
        };
        for (int i = 0; i < N; ++i) one_step(run, *opt);
        const OptimizerState<T> saved = opt->state();
        const Mat<T> W_at_N = run.W.value(), b_at_N = run.b.value();
        for (int i = 0; i < M; ++i) one_step(run, *opt);

        Problem<T> resumed;
        resumed.W.value() = W_at_N;
        resumed.b.value() = b_at_N;
        auto fresh = make(resumed.params());
        fresh->load_state(saved);
        EXPECT_EQ(fresh->step_count(), N) << name;
        EXPECT_EQ(fresh->lr(), saved.scalars.count("lr") ? saved.scalars.at("lr") : fresh->lr())
            << name;
        for (int i = 0; i < M; ++i) one_step(resumed, *fresh);

        // Bit-identical: compare the bytes, not within a tolerance.
        EXPECT_TRUE(resumed.W.value() == run.W.value()) << name;
        EXPECT_TRUE(resumed.b.value() == run.b.value()) << name;
        EXPECT_FALSE(W_at_N == run.W.value()) << name << ": the last steps must move the params";
        const OptimizerState<T> a = opt->state(), b = fresh->state();
        ASSERT_EQ(a.tensors.size(), b.tensors.size()) << name;
        for (std::size_t k = 0; k < a.tensors.size(); ++k) {
            EXPECT_EQ(a.tensors[k].first, b.tensors[k].first);
            EXPECT_TRUE(a.tensors[k].second == b.tensors[k].second)
                << name << " " << a.tensors[k].first;
        }
        EXPECT_EQ(a.scalars, b.scalars) << name;
    }
}

TEST(State, ResumeIsBitIdenticalInDouble) { check_exact_resume<double>(); }
TEST(State, ResumeIsBitIdenticalInFloat) { check_exact_resume<float>(); }

TEST(State, NamesShapesAndScalars) {
    Problem<double> prob;
    Adam<double> adam(prob.params(), {.lr = 0.01, .amsgrad = true});
    OptimizerState<double> s = adam.state();
    EXPECT_EQ(s.kind, "adam");
    std::vector<std::string> names;
    for (const auto& [n, m] : s.tensors) names.push_back(n);
    EXPECT_EQ(names, (std::vector<std::string>{"W.exp_avg", "W.exp_avg_sq", "W.max_exp_avg_sq",
                                               "b.exp_avg", "b.exp_avg_sq", "b.max_exp_avg_sq"}));
    EXPECT_EQ(s.scalars.at("step"), 0.0);
    EXPECT_EQ(s.scalars.at("lr"), 0.01);
    EXPECT_EQ(s.scalars.at("W.step"), 0.0);
    EXPECT_EQ(s.scalars.at("option.beta2"), 0.999);
    EXPECT_EQ(s.scalars.at("option.amsgrad"), 1.0);

    // Adafactor: factored moments for the matrix, a full one for the [1 x n] vector, and a full
    // one for an [n x 1] column too.
    Param<double> column("column", Mat<double>::Ones(4, 1));
    Adafactor<double> af({&prob.W, &prob.b, &column}, {.beta1 = 0.9});
    s = af.state();
    EXPECT_EQ(s.find("W.exp_avg_sq_row")->rows(), 3);
    EXPECT_EQ(s.find("W.exp_avg_sq_row")->cols(), 1);
    EXPECT_EQ(s.find("W.exp_avg_sq_col")->rows(), 1);
    EXPECT_EQ(s.find("W.exp_avg_sq_col")->cols(), 5);
    EXPECT_EQ(s.find("W.exp_avg_sq"), nullptr);
    EXPECT_EQ(s.find("b.exp_avg_sq")->cols(), 5);
    EXPECT_EQ(s.find("column.exp_avg_sq")->rows(), 4);
    EXPECT_NE(s.find("W.exp_avg"), nullptr);
    EXPECT_EQ(s.scalars.count("lr"), 0u);  // relative_step: no external lr to save

    // Momentum-free SGD has no tensors at all.
    Sgd<double> sgd(prob.params(), {.lr = 0.1});
    EXPECT_TRUE(sgd.state().tensors.empty());
}

TEST(State, ColumnVectorUpdatesLikeTheRowVector) {
    // A [n x 1] Param is a vector for Adafactor: it must follow the [1 x n] trajectory exactly.
    Problem<double> prob;
    Param<double> column("bt", prob.b.value().transpose());
    Adafactor<double> row_opt({&prob.b}, {});
    Adafactor<double> col_opt({&column}, {.beta1 = std::nullopt});
    for (int i = 0; i < 5; ++i) {
        prob.set_grads();
        column.grad() = prob.b.grad().transpose();
        row_opt.step();
        col_opt.step();
        EXPECT_TRUE(Mat<double>(column.value().transpose()) == prob.b.value()) << i;
    }
}

TEST(State, LoadStateChecksEverythingAndChangesNothingOnError) {
    Problem<double> prob;
    Adam<double> adam(prob.params(), {.lr = 0.01});
    prob.set_grads();
    adam.step();
    const OptimizerState<double> good = adam.state();
    const std::string before = nlohmann::json(good.scalars).dump();

    Problem<double> other;
    Adam<double> target(other.params(), {.lr = 0.01});
    const OptimizerState<double> pristine = target.state();
    auto expect_unchanged = [&] {
        const OptimizerState<double> now = target.state();
        EXPECT_EQ(now.scalars, pristine.scalars);
        for (std::size_t k = 0; k < now.tensors.size(); ++k)
            EXPECT_TRUE(now.tensors[k].second == pristine.tensors[k].second);
    };

    OptimizerState<double> s = good;
    s.kind = "adamw";
    EXPECT_CONFIG_ERROR(target.load_state(s), "'adamw'", "'adam'");
    expect_unchanged();

    s = good;
    s.tensors.erase(s.tensors.begin() + 1);
    EXPECT_CONFIG_ERROR(target.load_state(s), "no tensor 'W.exp_avg_sq'");
    expect_unchanged();

    s = good;
    s.tensors.emplace_back("W.momentum_buffer", Mat<double>::Zero(3, 5));
    EXPECT_CONFIG_ERROR(target.load_state(s), "'W.momentum_buffer'");
    expect_unchanged();

    s = good;
    s.tensors[2].second = Mat<double>::Zero(5, 3);
    try {
        target.load_state(s);
        ADD_FAILURE() << "expected ShapeError";
    } catch (const ShapeError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("b.exp_avg"), std::string::npos) << m;
        EXPECT_NE(m.find("[1 x 5]"), std::string::npos) << m;
        EXPECT_NE(m.find("[5 x 3]"), std::string::npos) << m;
    }
    expect_unchanged();

    s = good;
    s.scalars["option.beta2"] = 0.99;
    EXPECT_CONFIG_ERROR(target.load_state(s), "beta2", "0.999", "0.99");
    expect_unchanged();

    s = good;
    s.scalars.erase("b.step");
    EXPECT_CONFIG_ERROR(target.load_state(s), "'b.step'");
    s = good;
    s.scalars["W.step"] = 1.5;
    EXPECT_CONFIG_ERROR(target.load_state(s), "'W.step'", "1.5");
    s = good;
    s.scalars["option.nesterov"] = 0;
    EXPECT_CONFIG_ERROR(target.load_state(s), "'option.nesterov'");
    expect_unchanged();

    // And the good state loads.
    target.load_state(good);
    EXPECT_EQ(target.step_count(), 1);
    EXPECT_EQ(nlohmann::json(target.state().scalars).dump(), before);
}

// ------------------------------------------------------------------------------------------------
// Behaviour shared by all optimizers.

TEST(Optimizer, SkipsParamsThatAreNotTrainable) {
    for (auto& [name, make] : all_optimizers<double>()) {
        Problem<double> prob;
        auto opt = make(prob.params());
        prob.b.set_trainable(false);
        const Mat<double> b0 = prob.b.value();
        prob.set_grads();
        opt->step();
        opt->step();
        EXPECT_TRUE(prob.b.value() == b0) << name;
        EXPECT_FALSE(prob.W.value() == tensor_of<double>(golden().at("params").at("W"))) << name;
        const OptimizerState<double> s = opt->state();
        EXPECT_EQ(s.scalars.at("W.step"), 2.0) << name;
        EXPECT_EQ(s.scalars.at("b.step"), 0.0) << name;
        EXPECT_EQ(opt->step_count(), 2) << name;
        for (const auto& [tname, m] : s.tensors) {
            if (tname.rfind("b.", 0) == 0) {
                EXPECT_TRUE(m.isZero()) << name << " " << tname;
            }
        }
    }
}

TEST(Optimizer, ZeroGradAndLrThroughTheBase) {
    std::vector<std::unique_ptr<Optimizer<double>>> opts;
    std::vector<std::unique_ptr<Problem<double>>> probs;
    for (auto& [name, make] : all_optimizers<double>()) {
        probs.push_back(std::make_unique<Problem<double>>());
        opts.push_back(make(probs.back()->params()));
    }
    for (std::size_t i = 0; i < opts.size(); ++i) {
        Optimizer<double>& opt = *opts[i];
        probs[i]->set_grads();
        opt.zero_grad();
        EXPECT_TRUE(probs[i]->W.grad().isZero()) << opt.kind();
        if (opt.kind() == "adafactor" && opt.state().scalars.count("lr") == 0) {
            // relative_step: lr() reports min(1e-2, 1/sqrt(t)) for the next step.
            EXPECT_EQ(opt.lr(), 1e-2);
            EXPECT_CONFIG_ERROR(opt.set_lr(0.1), "relative_step");
            continue;
        }
        opt.set_lr(0.125);
        EXPECT_EQ(opt.lr(), 0.125);
        opt.set_lr(0.0);  // warm-up starts at 0
        EXPECT_CONFIG_ERROR(opt.set_lr(-1.0), "lr", "-1");
        EXPECT_EQ(opt.lr(), 0.0);
    }
}

TEST(Optimizer, AdafactorWarmupInitReportsItsRelativeStep) {
    Problem<double> prob;
    Adafactor<double> af(prob.params(), {.warmup_init = true});
    EXPECT_DOUBLE_EQ(af.lr(), 1e-6);
    prob.set_grads();
    af.step();
    EXPECT_DOUBLE_EQ(af.lr(), 2e-6);
}

TEST(Optimizer, ExistingSgdCallersStillCompile) {
    Param<float> prompt("prompt", Mat<float>::Ones(2, 3));
    optim::Sgd<float> sgd({&prompt}, {.lr = 0.1, .momentum = 0.9});
    prompt.grad().setConstant(1.0f);
    sgd.step();
    sgd.zero_grad();
    EXPECT_FLOAT_EQ(prompt.value()(0, 0), 0.9f);
    EXPECT_TRUE(prompt.grad().isZero());
}

// ------------------------------------------------------------------------------------------------
// Errors.

TEST(Errors, NothingToTrain) {
    Param<double> p("p", Mat<double>::Ones(2, 2));
    p.set_trainable(false);
    for (auto& [name, make] : all_optimizers<double>()) {
        EXPECT_CONFIG_ERROR(make({&p}), "nothing to train", "1 Param(s)");
        EXPECT_CONFIG_ERROR(make({}), "nothing to train", "0 Param(s)");
    }
    EXPECT_THROW(optim::Sgd<double>({&p}, {}), ConfigError);
    EXPECT_THROW(optim::Sgd<double>({}, {}), ConfigError);
}

TEST(Errors, BadParamLists) {
    Param<double> a("x", Mat<double>::Ones(2, 2)), b("x", Mat<double>::Ones(1, 2));
    EXPECT_CONFIG_ERROR(Adam<double>({&a, nullptr}), "null");
    EXPECT_CONFIG_ERROR(Adam<double>({&a, &a}), "'x'", "twice");
    EXPECT_CONFIG_ERROR(Adam<double>({&a, &b}), "two Params are named 'x'");
}

TEST(Errors, OptionsOutOfRangeNameTheOptionAndValue) {
    Param<double> p("p", Mat<double>::Ones(2, 2));
    const std::vector<Param<double>*> ps = {&p};
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.lr = -0.5}), "sgd", "lr", "-0.5");
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.momentum = 1.5}), "momentum", "1.5");
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.weight_decay = -1}), "weight_decay", "-1");
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.dampening = 2}), "dampening", "2");
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.nesterov = true}), "nesterov", "momentum");
    EXPECT_CONFIG_ERROR(Sgd<double>(ps, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                        "nesterov", "dampening 0.1");

    EXPECT_CONFIG_ERROR(Adam<double>(ps, {.beta1 = 1.0}), "adam", "beta1", "1");
    EXPECT_CONFIG_ERROR(Adam<double>(ps, {.beta2 = -0.1}), "beta2", "-0.1");
    EXPECT_CONFIG_ERROR(Adam<double>(ps, {.eps = -1e-8}), "eps", "-1e-08");
    EXPECT_CONFIG_ERROR(AdamW<double>(ps, {.weight_decay = -0.01}), "adamw", "weight_decay",
                        "-0.01");
    EXPECT_CONFIG_ERROR(AdamW<double>(ps, {.lr = std::nan("")}), "lr", "nan");

    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.lr = 0.1}), "lr", "relative_step");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.relative_step = false}), "relative_step", "lr");
    EXPECT_CONFIG_ERROR(
        Adafactor<double>(ps, {.lr = 0.1, .relative_step = false, .warmup_init = true}),
        "warmup_init", "relative_step");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.decay_rate = 0.8}), "decay_rate", "0.8");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.clip_threshold = 0}), "clip_threshold", "0");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.beta1 = 1.2}), "beta1", "1.2");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.eps1 = -1}), "eps1", "-1");
    EXPECT_CONFIG_ERROR(Adafactor<double>(ps, {.weight_decay = -1}), "weight_decay", "-1");
}

}  // namespace
