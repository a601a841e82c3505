# Install rules: headers, the exported target softprompt::softprompt and a CMake package config.
#
#   <prefix>/include/softprompt/...                      the headers (FILE_SET HEADERS)
#   <prefix>/share/cmake/softprompt/                     softprompt-config.cmake, -config-version.cmake,
#                                                        softprompt-targets.cmake
#   <prefix>/share/doc/softprompt/                       LICENSE, NOTICE
#
# The library is header-only and architecture-independent, so the package files go under the data
# directory (find_package searches <prefix>/share/cmake/<name>*/ as well as lib/cmake).

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SOFTPROMPT_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/softprompt"
    CACHE STRING "Where to install the softprompt CMake package files (relative to the prefix)")
mark_as_advanced(SOFTPROMPT_INSTALL_CMAKEDIR)

install(
    TARGETS softprompt
    EXPORT softprompt-targets
    FILE_SET HEADERS COMPONENT softprompt_Development
    FILE_SET dist_headers COMPONENT softprompt_Development)

install(
    EXPORT softprompt-targets
    NAMESPACE softprompt::
    DESTINATION "${SOFTPROMPT_INSTALL_CMAKEDIR}"
    COMPONENT softprompt_Development)

configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/softprompt-config.cmake.in"
    "${PROJECT_BINARY_DIR}/softprompt-config.cmake"
    INSTALL_DESTINATION "${SOFTPROMPT_INSTALL_CMAKEDIR}")

write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/softprompt-config-version.cmake"
    COMPATIBILITY SameMajorVersion
    ARCH_INDEPENDENT)

install(
    FILES "${PROJECT_BINARY_DIR}/softprompt-config.cmake"
          "${PROJECT_BINARY_DIR}/softprompt-config-version.cmake"
    DESTINATION "${SOFTPROMPT_INSTALL_CMAKEDIR}"
    COMPONENT softprompt_Development)

install(
    FILES "${PROJECT_SOURCE_DIR}/LICENSE" "${PROJECT_SOURCE_DIR}/NOTICE"
    DESTINATION "${CMAKE_INSTALL_DOCDIR}"
    COMPONENT softprompt_Development)
