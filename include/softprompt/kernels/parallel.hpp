#pragma once
// When a kernel's loop is worth splitting across OpenMP threads. Waking a team costs microseconds
// on a quiet machine and far more on a loaded one, so loops split only above a size where the
// work dwarfs that: a training batch of a real model, not a tiny model's step or a decode token.
// Without OpenMP the pragmas are ignored and every loop runs serially.
//
// Threads: kernels keep no state between calls. Called from several user threads, each call that
// splits starts its own OpenMP team (each user thread has its own pool), so N user threads may
// run N × OMP_NUM_THREADS threads: when many user threads compute at once, lower OMP_NUM_THREADS
// (1 when they already fill the cores) rather than oversubscribe.

#include <algorithm>

#include "softprompt/core/tensor.hpp"

namespace softprompt::kernels {

/// Elementwise or row-wise work (elements touched) from which a loop is split.
inline constexpr Index kParallelMinElements = Index(1) << 16;

/// Multiply-adds from which a loop of small products (attention heads) is split.
inline constexpr Index kParallelMinFlops = Index(1) << 22;

/// Run f(first_row, rows) over blocks of rows, split across threads for large matrices.
template <class F>
void for_row_blocks(Index rows, [[maybe_unused]] Index cols, F&& f) {
    constexpr Index kBlock = 16;
    const Index blocks = (rows + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinElements)
    for (Index b = 0; b < blocks; ++b) f(b * kBlock, std::min(kBlock, rows - b * kBlock));
}

}  // namespace softprompt::kernels
