# softprompt_warnings: warning flags for our own tests, examples and benchmarks.
#
# Not exported and never linked into the softprompt target itself: a consumer's warning flags are
# the consumer's business. (-Wshadow and -Wconversion are left out on purpose: with Eigen they are
# mostly noise.)

add_library(softprompt_warnings INTERFACE)

target_compile_options(
    softprompt_warnings
    INTERFACE
        $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:
            -Wall -Wextra -Wpedantic -Wnon-virtual-dtor -Wold-style-cast -Woverloaded-virtual>
        $<$<CXX_COMPILER_ID:MSVC>:/W4 /permissive->)

if(SOFTPROMPT_WERROR)
    target_compile_options(
        softprompt_warnings
        INTERFACE $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-Werror> $<$<CXX_COMPILER_ID:MSVC>:/WX>)
endif()
