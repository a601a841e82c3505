# Runs `generate --temperature 0 --ids` on the stories260K model vendored in tests/data and compares
# the ids with llama2.c's greedy reference (golden/stories260K/greedy_bos_200.ids). A missing file
# is an error that names it.
#   cmake -DGENERATE=<path to generate> -DDATA=<tests/data> -P example_generate.cmake
set(model "${DATA}/models/stories260K.bin")
set(tokenizer "${DATA}/tokenizers/tok512.bin")
set(golden "${DATA}/golden/stories260K/greedy_bos_200.ids")
foreach(file IN ITEMS "${model}" "${tokenizer}" "${golden}")
    if(NOT EXISTS "${file}")
        message(FATAL_ERROR "required test data file not found: ${file} (see tests/data/README.md)")
    endif()
endforeach()
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
