# Runs `generate --temperature 0 --ids` on the shared stories260K model and compares the ids with
# llama2.c's greedy reference (golden/stories260K/greedy_bos_200.ids). Exits with code 77 (ctest:
# skipped) when the shared assets folder is absent.
#   cmake -DGENERATE=<path to generate> -DASSETS=<assets dir> -P example_generate.cmake
set(model "${ASSETS}/models/stories260K.bin")
set(tokenizer "${ASSETS}/tokenizers/tok512.bin")
set(golden "${ASSETS}/golden/stories260K/greedy_bos_200.ids")
if(NOT EXISTS "${model}" OR NOT EXISTS "${tokenizer}" OR NOT EXISTS "${golden}")
    message("shared assets not found under ${ASSETS}: skipping")
    cmake_language(EXIT 77)
endif()
execute_process(
    COMMAND "${GENERATE}" "${model}" "${tokenizer}" --temperature 0 --steps 200 --ids
    OUTPUT_VARIABLE ids
    ERROR_VARIABLE stats
    RESULT_VARIABLE status)
if(NOT status EQUAL 0)
    message(FATAL_ERROR "generate failed (${status}): ${stats}")
endif()
file(READ "${golden}" expected)
string(REGEX REPLACE "[ \t\r\n]+" " " ids "${ids}")
string(REGEX REPLACE "[ \t\r\n]+" " " expected "${expected}")
string(STRIP "${ids}" ids)
string(STRIP "${expected}" expected)
if(NOT ids STREQUAL expected)
    message(FATAL_ERROR "generate --ids differs from llama2.c's greedy output:\n got: ${ids}\nwant: ${expected}")
endif()
message("generate reproduces llama2.c's 200 greedy tokens (${stats})")
