// Built against an installed softprompt by the ctest test `package_consumer`.

#include <softprompt/softprompt.hpp>

#include <iostream>

int main() {
    std::cout << "softprompt " << softprompt::version_string << '\n';

    // A trainable [2 x 3] prompt on a tape: one recorded leaf, nothing else.
    softprompt::autograd::Param<float> prompt("prompt", softprompt::Mat<float>::Ones(2, 3));
    softprompt::autograd::Tape<float> tape;
    const softprompt::autograd::Var<float> var = tape.param(prompt);
    const bool ok = var.requires_grad() && var.value().sum() == 6.0F && tape.recorded() == 1;

    std::cout << "prompt " << softprompt::shape_string(var.rows(), var.cols()) << ", sum "
              << var.value().sum() << (ok ? ": ok" : ": WRONG") << '\n';
    return ok ? 0 : 1;
}
