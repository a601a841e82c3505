#pragma once
// Finite-difference gradient checker: compares the tape's gradients of a scalar loss with respect
// to some Params against numerical derivatives, element by element.
//
// The numerical derivative is a Richardson-extrapolated central difference,
//   D(h) = (f(x+h) − f(x−h)) / 2h,   D = (4·D(h/2) − D(h)) / 3,
// whose truncation error is O(h⁴), so a step of 1e-3 in double leaves both truncation and round-off
// near 1e-12 for well-scaled losses. Run it in double.

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"

namespace softprompt::autograd {

struct GradcheckOptions {
    double step = 1e-3;
    /// Relative error is |analytic − numeric| / max(|analytic|, |numeric|, floor): the floor keeps
    /// gradients that are zero up to round-off from reading as large relative errors.
    double floor = 1e-3;
};

struct GradcheckReport {
    double max_abs_error = 0;
    double max_rel_error = 0;
    std::string worst_param;  // the Param holding the element with the largest relative error
    Index worst_index = -1;   // its row-major index
    double worst_analytic = 0;
    double worst_numeric = 0;
    std::size_t checked = 0;  // elements compared

    std::string describe() const {
        return "max rel error " + std::to_string(max_rel_error) + " (abs " +
               std::to_string(max_abs_error) + ") at " + worst_param + "[" +
               std::to_string(worst_index) + "]: analytic " + std::to_string(worst_analytic) +
               ", numeric " + std::to_string(worst_numeric) + " over " + std::to_string(checked) +
               " elements";
    }
};

/// `loss` builds the forward pass on the tape it is given (using tape.param(p) for each checked
/// Param) and returns a [1 x 1] Var. It is called once with a recording tape, then four times per
/// checked element.
template <class T>
GradcheckReport gradcheck(const std::vector<Param<T>*>& params,
                          const std::function<Var<T>(Tape<T>&)>& loss,
                          const GradcheckOptions& options = {}) {
    if (params.empty()) throw ConfigError("gradcheck: no Params to check");
    for (Param<T>* p : params) p->zero_grad();
    {
        Tape<T> tape;
        tape.backward(loss(tape));
    }
    auto evaluate = [&loss]() {
        Tape<T> tape;
        return double(loss(tape).item());
    };
    GradcheckReport report;
    for (Param<T>* p : params) {
        Mat<T>& value = p->value();
        for (Index i = 0; i < value.size(); ++i) {
            T& x = value.data()[i];
            const T saved = x;
            auto central = [&](double h) {
                x = T(double(saved) + h);
                const double up = evaluate();
                x = T(double(saved) - h);
                const double down = evaluate();
                x = saved;
                return (up - down) / (2 * h);
            };
            const double coarse = central(options.step);
            const double fine = central(options.step / 2);
            const double numeric = (4 * fine - coarse) / 3;
            const double analytic = double(p->grad().data()[i]);
            const double abs_error = std::abs(analytic - numeric);
            const double rel_error =
                abs_error / std::max({std::abs(analytic), std::abs(numeric), options.floor});
            report.max_abs_error = std::max(report.max_abs_error, abs_error);
            if (rel_error > report.max_rel_error || report.worst_index < 0) {
                report.max_rel_error = std::max(report.max_rel_error, rel_error);
                report.worst_param = p->name();
                report.worst_index = i;
                report.worst_analytic = analytic;
                report.worst_numeric = numeric;
            }
            ++report.checked;
        }
    }
    return report;
}

}  // namespace softprompt::autograd
