# Data-parallel training over MPI (tests/dist_train.cpp under mpirun, TCP on loopback):
#  1. prompt or prefix tuning for 20 steps on 1, 2 and 4 processes gives the same training state,
#     byte for byte (parameters, optimizer moments, evaluation results kept for early stopping);
#  2. 10 steps on 2 processes, then resumed on 4 (prompt) or 1 (prefix) to step 20, gives it too;
#  3. rank 1 throwing in the middle of step 12 (before a collective call, while rank 0 waits in
#     it) ends the whole job within seconds with the error printed, and the state rank 0 saved at
#     step 10 resumes, on 4 processes, to the same final state.
#   cmake -DMPIEXEC=<mpiexec> -DPROGRAM=<dist_train> -DMODEL=<stories260K.bin> -DMETHOD=prompt|prefix
#         -DWORK=<scratch folder> -P dist_train.cmake
if(NOT EXISTS "${MODEL}")
    message(FATAL_ERROR "required test data file not found: ${MODEL} (see tests/data/README.md)")
endif()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# mpirun as root needs --allow-run-as-root; 4 processes on 2 cores need --oversubscribe. The
# processes talk over TCP on the loopback interface, as processes on different nodes would over
# the network.
set(launch "${MPIEXEC}" --allow-run-as-root --oversubscribe --mca btl self,tcp
    --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)

function(run_job ranks expect_success)
    string(TIMESTAMP started "%s")
    execute_process(
        COMMAND ${launch} -n ${ranks} "${PROGRAM}" --model "${MODEL}" --method "${METHOD}" ${ARGN}
        RESULT_VARIABLE status
        OUTPUT_VARIABLE out
        ERROR_VARIABLE err
        TIMEOUT 120)
    string(TIMESTAMP ended "%s")
    math(EXPR seconds "${ended} - ${started}")
    set(job_output "${out}${err}" PARENT_SCOPE)
    set(job_seconds ${seconds} PARENT_SCOPE)
    if(expect_success AND NOT status EQUAL 0)
        message(FATAL_ERROR "${ranks} processes, ${ARGN}: failed (${status}):\n${out}${err}")
    endif()
    if(NOT expect_success AND status EQUAL 0)
        message(FATAL_ERROR "${ranks} processes, ${ARGN}: succeeded, expected a failure:\n${out}${err}")
    endif()
    if(expect_success AND NOT out MATCHES "parameters agree")
        message(FATAL_ERROR "${ranks} processes: no agreement line:\n${out}${err}")
    endif()
endfunction()

function(expect_same_file got want what)
    execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${got}" "${want}"
                    RESULT_VARIABLE differ)
    if(NOT differ EQUAL 0)
        message(FATAL_ERROR "${what}: ${got} differs from ${want}")
    endif()
endfunction()

# 1. The same 20 steps on 1, 2 and 4 processes.
foreach(ranks IN ITEMS 1 2 4)
    run_job(${ranks} TRUE --steps 20 --dir "${WORK}/n${ranks}" --out "${WORK}/final_n${ranks}.state")
    message("${ranks} processes: ${job_seconds} s")
endforeach()
expect_same_file("${WORK}/final_n2.state" "${WORK}/final_n1.state" "2 processes against 1")
expect_same_file("${WORK}/final_n4.state" "${WORK}/final_n1.state" "4 processes against 1")

# 2. Stopped at step 10 on 2 processes, resumed on another number.
if(METHOD STREQUAL "prompt")
    set(resume_ranks 4)
else()
    set(resume_ranks 1)
endif()
run_job(2 TRUE --steps 10 --dir "${WORK}/resume")
run_job(${resume_ranks} TRUE --steps 20 --dir "${WORK}/resume" --resume --out "${WORK}/final_resumed.state")
expect_same_file("${WORK}/final_resumed.state" "${WORK}/final_n1.state"
                 "10 steps on 2 processes, then 10 on ${resume_ranks}, against 20 on 1")

# 3. Rank 1 throws during step 12 (each step makes 3 collective calls, an evaluation 2 more:
#    call 40 is step 12's gradient sum); rank 0 saves every 5 steps.
run_job(2 FALSE --steps 20 --dir "${WORK}/fault" --save-every 5 --fail-rank 1 --fail-at-call 40)
if(NOT job_output MATCHES "rank 1 of 2: injected fault")
    message(FATAL_ERROR "the failed job did not print the error of rank 1:\n${job_output}")
endif()
if(job_seconds GREATER 20)
    message(FATAL_ERROR "the failed job took ${job_seconds} s to end:\n${job_output}")
endif()
message("a rank that throws ended the job in ${job_seconds} s")
run_job(4 TRUE --steps 20 --dir "${WORK}/fault" --resume --out "${WORK}/final_fault.state")
expect_same_file("${WORK}/final_fault.state" "${WORK}/final_n1.state"
                 "resumed after the fault on 4 processes, against 20 steps on 1")
message("${METHOD} tuning: the same state on 1, 2 and 4 processes, after a resume and after a fault")
