// link_test = link_test_1.cpp + link_test_2.cpp: the umbrella header included from two translation
// units of one program. A function or variable defined in a header without `inline` (or outside a
// template) is then defined twice, and this program fails to link.

#include <softprompt/softprompt.hpp>

// Called from link_test_2.cpp. Returns 0 when the library behaves as expected.
int softprompt_link_test_use_library() {
    const softprompt::Mat<float> value = softprompt::Mat<float>::Ones(2, 3);
    softprompt::autograd::Param<float> prompt("prompt", value);
    softprompt::autograd::Tape<float> tape;
    const softprompt::autograd::Var<float> var = tape.param(prompt);
    return (var.rows() == 2 && var.cols() == 3 && tape.recorded() == 1) ? 0 : 1;
}
