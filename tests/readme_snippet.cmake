# Runs README.md's one-call tuning snippet (built as readme_snippet) on the tiny LLaMA folder of
# tests/data with the small SpamAssassin split, then checks what a user would: it exits 0, writes a
# PEFT prompt-tuning adapter of 20 virtual tokens with its training state and metrics, and the
# held-out loss it prints is below the frozen model's.
#   cmake -DPROGRAM=<readme_snippet> -DDATA=<tests/data> -DOUT=<scratch folder> -P readme_snippet.cmake
cmake_policy(VERSION 3.25)
set(model "${DATA}/models/tiny-llama")
set(train "${DATA}/spamassassin/sa_small_train.tsv")
set(test "${DATA}/spamassassin/sa_small_test.tsv")
foreach(file IN ITEMS "${model}/config.json" "${model}/tokenizer.json" "${train}" "${test}")
    if(NOT EXISTS "${file}")
        message(FATAL_ERROR "required test data file not found: ${file} (see tests/data/README.md)")
    endif()
endforeach()

file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${PROGRAM}" "${model}" "${train}" "${test}" "${OUT}"
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE status)
if(NOT status EQUAL 0)
    message(FATAL_ERROR "the README snippet failed (${status}):\n${out}\n${err}")
endif()

foreach(name IN ITEMS adapter_config.json adapter_model.safetensors training_state.safetensors
                      metrics.csv)
    if(NOT EXISTS "${OUT}/${name}")
        message(FATAL_ERROR "the README snippet did not write ${OUT}/${name}:\n${err}")
    endif()
endforeach()
file(READ "${OUT}/adapter_config.json" config)
string(JSON type GET "${config}" peft_type)
string(JSON tokens GET "${config}" num_virtual_tokens)
if(NOT type STREQUAL "PROMPT_TUNING" OR NOT tokens EQUAL 20)
    message(FATAL_ERROR "${OUT}/adapter_config.json: peft_type ${type}, num_virtual_tokens "
                        "${tokens}; want PROMPT_TUNING, 20")
endif()

if(NOT out MATCHES "held-out loss ([0-9.]+), the model alone ([0-9.]+)")
    message(FATAL_ERROR "the README snippet printed no losses:\n${out}\n${err}")
endif()
set(tuned "${CMAKE_MATCH_1}")
set(alone "${CMAKE_MATCH_2}")
# CMake compares decimals as version strings would not; scale both to integers in 1e-4.
string(REPLACE "." "" tuned_scaled "${tuned}")
string(REPLACE "." "" alone_scaled "${alone}")
math(EXPR tuned_scaled "${tuned_scaled}")
math(EXPR alone_scaled "${alone_scaled}")
if(NOT tuned_scaled LESS alone_scaled)
    message(FATAL_ERROR "prompt tuning did not lower the held-out loss: ${tuned} against the model "
                        "alone's ${alone}:\n${err}")
endif()
message("README snippet: held-out loss ${tuned}, the model alone ${alone}\n${err}")
