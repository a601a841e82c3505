# Runs the examples a user runs on one model folder of a family (tests/data/models/tiny-<family>,
# by tests/reference/make_family_models.py), with no compile-time choice of family:
#   1. tokenize: the folder's tokenizer.json encodes a text and --decode --skip-special gives it back;
#   2. prompt_tune: 3 steps of prompt tuning and of prefix tuning (12 tokens and 4 virtual ones:
#      within the tiny Mistral's sliding window of 16) write PEFT adapter folders of that
#      method and size;
#   3. generate: both adapters load on the same model and are served in one run, and stderr names
#      each one's method and virtual tokens.
#   cmake -DTOKENIZE=<tokenize> -DPROMPT_TUNE=<prompt_tune> -DGENERATE=<generate> -DMODEL=<folder>
#         -DDATA=<tests/data> -DOUT=<scratch folder> -P example_family.cmake
cmake_policy(VERSION 3.25)
set(train "${DATA}/spamassassin/sa_small_train.tsv")
foreach(file IN ITEMS "${MODEL}/config.json" "${MODEL}/tokenizer.json" "${train}")
    if(NOT EXISTS "${file}")
        message(FATAL_ERROR "required test data file not found: ${file} (see tests/data/README.md)")
    endif()
endforeach()

function(run what)
    execute_process(COMMAND ${ARGN} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
        message(FATAL_ERROR "${what} failed (${status}):\n${err}")
    endif()
    set(out "${out}" PARENT_SCOPE)
    set(err "${err}" PARENT_SCOPE)
endfunction()

set(text "the cat sat on the mat")
run(tokenize "${TOKENIZE}" "${MODEL}" --text "${text}")
string(STRIP "${out}" ids)
if(NOT ids MATCHES "^1( [0-9]+)+$")
    message(FATAL_ERROR "tokenize gave '${ids}'; want BOS (1) and then the text's ids")
endif()
run(tokenize "${TOKENIZE}" "${MODEL}" --decode --skip-special --text "${ids}")
string(STRIP "${out}" decoded)
if(NOT decoded STREQUAL text)
    message(FATAL_ERROR "tokenize --decode gave '${decoded}' for '${text}'")
endif()

file(REMOVE_RECURSE "${OUT}")
foreach(method IN ITEMS prompt prefix)
    run("prompt_tune --method ${method}" "${PROMPT_TUNE}" "${MODEL}" - "${train}" --method ${method}
        --input-field text --target-field label --label 1=spam --label 0=ham --max-tokens 12
        --batch-size 4 --steps 3 --virtual-tokens 4 --out "${OUT}/${method}")
    if(NOT err MATCHES "trained 3 steps")
        message(FATAL_ERROR "prompt_tune --method ${method} did not train 3 steps:\n${err}")
    endif()
    file(READ "${OUT}/${method}/adapter_config.json" config)
    string(JSON type GET "${config}" peft_type)
    string(JSON tokens GET "${config}" num_virtual_tokens)
    string(TOUPPER "${method}_TUNING" want)
    if(NOT type STREQUAL want OR NOT tokens EQUAL 4)
        message(FATAL_ERROR "${OUT}/${method}/adapter_config.json: peft_type ${type}, "
                            "num_virtual_tokens ${tokens}; want ${want}, 4")
    endif()
endforeach()

run(generate "${GENERATE}" "${MODEL}" --adapter "${OUT}/prompt" --adapter "${OUT}/prefix"
    --prompt "the" --steps 4 --temperature 0)
foreach(want IN ITEMS "prompt tuning, 4 virtual tokens" "prefix tuning, 4 virtual tokens")
    string(FIND "${err}" "${want}" at)
    if(at LESS 0)
        message(FATAL_ERROR "generate did not serve the '${want}' adapter:\n${err}")
    endif()
endforeach()
message("tokenize, prompt_tune and generate ran on ${MODEL}:\n${err}")
