#pragma once
// The one place every large matrix product goes through, so that a faster backend can replace
// Eigen's without touching the ops. Operands are Eigen expressions of row-major matrices, blocks or
// maps, optionally `.transpose()`d.

#include <Eigen/Core>

namespace softprompt::kernels {

/// out = a · b
template <class Out, class A, class B>
void gemm(Out&& out, const A& a, const B& b) {
    out.noalias() = a * b;
}

/// out += a · b
template <class Out, class A, class B>
void gemm_accumulate(Out&& out, const A& a, const B& b) {
    out.noalias() += a * b;
}

}  // namespace softprompt::kernels
