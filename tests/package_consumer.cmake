# Test package_consumer (run by ctest as `cmake -D... -P package_consumer.cmake`):
#   1. install the configured softprompt build tree into WORK_DIR/prefix,
#   2. configure tests/package/ against that prefix with find_package(softprompt CONFIG),
#      using the same generator, compiler, compiler launcher and flags as the main build,
#   3. build it and 4. run the program it makes.
#
# Inputs (-D): SOFTPROMPT_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR EXPECTED_VERSION GENERATOR
# CXX_COMPILER, and optionally CONFIG MAKE_PROGRAM CXX_COMPILER_LAUNCHER CXX_FLAGS EXE_LINKER_FLAGS
# PREFIX_PATH EIGEN3_DIR NLOHMANN_JSON_DIR. Lists arrive with '|' in place of ';'.

cmake_minimum_required(VERSION 3.25)

foreach(_var IN ITEMS SOFTPROMPT_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR EXPECTED_VERSION GENERATOR
                      CXX_COMPILER)
    if("${${_var}}" STREQUAL "")
        message(FATAL_ERROR "package_consumer.cmake: -D${_var}=... is required")
    endif()
endforeach()

set(_prefix "${WORK_DIR}/prefix")
set(_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(_run step)
    string(REPLACE ";" " " _shown "${ARGN}")
    message(STATUS "package_consumer: ${step}: ${_shown}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
    if(NOT _rc STREQUAL "0")
        message(FATAL_ERROR "package_consumer: ${step} failed (${_rc})")
    endif()
endfunction()

# 1. Install.
set(_config_args "")
if(NOT "${CONFIG}" STREQUAL "")
    set(_config_args --config "${CONFIG}")
endif()
_run(install "${CMAKE_COMMAND}" --install "${SOFTPROMPT_BINARY_DIR}" --prefix "${_prefix}"
     ${_config_args})

# 2. Configure. Settings go through an initial-cache file so that lists and spaces survive.
string(REPLACE "|" ";" CXX_COMPILER_LAUNCHER "${CXX_COMPILER_LAUNCHER}")
string(REPLACE "|" ";" PREFIX_PATH "${PREFIX_PATH}")
set(_cache "${WORK_DIR}/initial-cache.cmake")
file(WRITE "${_cache}" "# Written by package_consumer.cmake\n")
function(_cache_set name type value)
    file(APPEND "${_cache}" "set(${name} [==[${value}]==] CACHE ${type} \"\")\n")
endfunction()
_cache_set(CMAKE_CXX_COMPILER FILEPATH "${CXX_COMPILER}")
_cache_set(CMAKE_CXX_COMPILER_LAUNCHER STRING "${CXX_COMPILER_LAUNCHER}")
_cache_set(CMAKE_CXX_FLAGS STRING "${CXX_FLAGS}")
_cache_set(CMAKE_EXE_LINKER_FLAGS STRING "${EXE_LINKER_FLAGS}")
_cache_set(CMAKE_BUILD_TYPE STRING "${CONFIG}")
set(_prefix_path "${_prefix}")
if(NOT "${PREFIX_PATH}" STREQUAL "")
    list(APPEND _prefix_path ${PREFIX_PATH})
endif()
_cache_set(CMAKE_PREFIX_PATH STRING "${_prefix_path}")
if(NOT "${MAKE_PROGRAM}" STREQUAL "")
    _cache_set(CMAKE_MAKE_PROGRAM FILEPATH "${MAKE_PROGRAM}")
endif()
if(NOT "${EIGEN3_DIR}" STREQUAL "")
    _cache_set(Eigen3_DIR PATH "${EIGEN3_DIR}")
endif()
if(NOT "${NLOHMANN_JSON_DIR}" STREQUAL "")
    _cache_set(nlohmann_json_DIR PATH "${NLOHMANN_JSON_DIR}")
endif()
_cache_set(SOFTPROMPT_EXPECTED_VERSION STRING "${EXPECTED_VERSION}")

_run(configure "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${_build}" -G "${GENERATOR}"
     -C "${_cache}")

# The package must have come from the fresh install, not from anywhere else on the machine.
file(STRINGS "${_build}/CMakeCache.txt" _found REGEX "^softprompt_DIR:")
string(REGEX REPLACE "^softprompt_DIR:[A-Z]+=" "" _found "${_found}")
file(REAL_PATH "${_prefix}" _prefix_real)
file(REAL_PATH "${_found}" _found_real)
string(FIND "${_found_real}/" "${_prefix_real}/" _at)
if(NOT _at EQUAL 0)
    message(FATAL_ERROR "package_consumer: softprompt was found in '${_found}', "
                        "expected somewhere under '${_prefix}'")
endif()

# 3. Build.
_run(build "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})

# 4. Run.
set(_exe "")
foreach(_candidate IN ITEMS "${_build}/softprompt_consumer" "${_build}/softprompt_consumer.exe"
                            "${_build}/${CONFIG}/softprompt_consumer"
                            "${_build}/${CONFIG}/softprompt_consumer.exe")
    if(EXISTS "${_candidate}" AND NOT IS_DIRECTORY "${_candidate}")
        set(_exe "${_candidate}")
        break()
    endif()
endforeach()
if(_exe STREQUAL "")
    message(FATAL_ERROR "package_consumer: built softprompt_consumer not found under ${_build}")
endif()
_run(run "${_exe}")
message(STATUS "package_consumer: passed")
