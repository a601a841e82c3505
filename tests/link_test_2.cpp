// See link_test_1.cpp.

#include <softprompt/softprompt.hpp>

#include <iostream>

int softprompt_link_test_use_library();

int main() {
    softprompt::autograd::Tape<double> tape;  // instantiated here too, not only in the other unit
    if (tape.recorded() != 0) return 1;
    const int result = softprompt_link_test_use_library();
    std::cout << "softprompt " << softprompt::version_string << " link_test "
              << (result == 0 ? "passed" : "FAILED") << '\n';
    return result;
}
