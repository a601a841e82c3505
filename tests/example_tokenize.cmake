# Runs `tokenize tok512.model --no-add-special` on every line of the tokenizer corpus and compares
# the ids with SentencePiece's own (hf_tokenizers/tok512_spm.json, by make_spm_fixture.py), line by
# line. A missing file is an error that names it.
#   cmake -DTOKENIZE=<path to tokenize> -DDATA=<tests/data> -P example_tokenize.cmake
cmake_policy(VERSION 3.25)  # a list keeps its empty elements (CMP0007): the corpus has empty lines
set(model "${DATA}/tokenizers/tok512.model")
set(corpus "${DATA}/hf_tokenizers/corpus.txt")
set(golden "${DATA}/hf_tokenizers/tok512_spm.json")
foreach(file IN ITEMS "${model}" "${corpus}" "${golden}")
    if(NOT EXISTS "${file}")
        message(FATAL_ERROR "required test data file not found: ${file} (see tests/data/README.md)")
    endif()
endforeach()
execute_process(
    COMMAND "${TOKENIZE}" "${model}" --no-add-special
    INPUT_FILE "${corpus}"
    OUTPUT_VARIABLE got
    ERROR_VARIABLE errors
    RESULT_VARIABLE status)
if(NOT status EQUAL 0)
    message(FATAL_ERROR "tokenize failed (${status}): ${errors}")
endif()
file(READ "${golden}" json)
string(JSON expected_lines LENGTH "${json}" lines)
string(REGEX REPLACE "\n$" "" got "${got}")
string(REPLACE "\n" ";" got "${got}")
list(LENGTH got got_lines)
if(NOT got_lines EQUAL expected_lines)
    message(FATAL_ERROR "tokenize printed ${got_lines} lines for ${expected_lines} corpus lines")
endif()
math(EXPR last "${expected_lines} - 1")
foreach(i RANGE ${last})
    string(JSON want GET "${json}" lines ${i})
    string(REGEX REPLACE "[^0-9,]" "" want "${want}")  # GET gives the array as indented JSON
    string(REPLACE "," " " want "${want}")
    list(GET got ${i} line)
    if(NOT line STREQUAL want)
        message(FATAL_ERROR "corpus line ${i}: tokenize gave\n  ${line}\nSentencePiece gave\n  ${want}")
    endif()
endforeach()
message("tokenize matches SentencePiece on all ${expected_lines} corpus lines")
