#pragma once
// Training progress on stderr: a bar redrawn in place on a terminal (step, loss, tokens/s, ETA),
// plain lines at intervals when stderr is a file or pipe, or nothing.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace softprompt::train {

enum class ProgressMode { kAuto, kBar, kLines, kSilent };

class Progress {
public:
    Progress(ProgressMode mode, std::int64_t total_steps, std::FILE* out = stderr)
        : out_(out), total_(total_steps), start_(std::chrono::steady_clock::now()) {
        mode_ = mode == ProgressMode::kAuto
                    ? (isatty(fileno(out)) ? ProgressMode::kBar : ProgressMode::kLines)
                    : mode;
    }

    /// Report the state after `step` optimizer steps.
    void update(std::int64_t step, double loss, double tokens_per_second) {
        if (mode_ == ProgressMode::kSilent) return;
        const double elapsed = seconds();
        const double eta =
            step > 0 && total_ > step ? elapsed / double(step) * double(total_ - step) : 0.0;
        if (mode_ == ProgressMode::kBar) {
            const int width = 24;
            const int filled = total_ > 0 ? int(double(width) * double(step) / double(total_)) : 0;
            std::string bar(std::size_t(filled), '#');
            bar.resize(std::size_t(width), '.');
            std::fprintf(out_, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s ", bar.c_str(),
                         static_cast<long long>(step), static_cast<long long>(total_), loss,
                         tokens_per_second, clock(eta).c_str());
            std::fflush(out_);
            drawn_ = true;
            return;
        }
        // Lines: about 20 per run, plus the last step.
        const std::int64_t every = total_ >= 20 ? total_ / 20 : 1;
        if (step % every != 0 && step != total_) return;
        std::fprintf(out_, "step %lld/%lld  loss %.4f  %.0f tok/s  elapsed %s  ETA %s\n",
                     static_cast<long long>(step), static_cast<long long>(total_), loss,
                     tokens_per_second, clock(elapsed).c_str(), clock(eta).c_str());
    }

    /// A message on its own line (evaluation results, early stopping).
    void note(const std::string& text) {
        if (mode_ == ProgressMode::kSilent) return;
        if (drawn_) std::fputc('\n', out_);
        drawn_ = false;
        std::fprintf(out_, "%s\n", text.c_str());
    }

    void finish() {
        if (drawn_) std::fputc('\n', out_);
        drawn_ = false;
    }

    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

private:
    static std::string clock(double seconds) {
        const long long s = static_cast<long long>(std::llround(seconds));
        char buf[32];
        std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
        return buf;
    }

    std::FILE* out_;
    ProgressMode mode_;
    std::int64_t total_;
    std::chrono::steady_clock::time_point start_;
    bool drawn_ = false;
};

}  // namespace softprompt::train
