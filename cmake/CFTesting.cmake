# cf_add_gtest(<name> LABELS <label>... SOURCES <file>... LIBS <target>... [TIMEOUT <s>])
# One GoogleTest binary; its cases are discovered at test time (nothing runs during the build) and carry LABELS
# (unit, emu, gpu, slow) so presets can select them.
function(cf_add_gtest name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main cf_options)
  target_compile_definitions(${name} PRIVATE CF_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  # Several labels travel as one escaped list (unescaped, the second label would be read as a property name).
  string(REPLACE ";" "\\;" labels "${ARG_LABELS}")
  # Listing the cases starts the binary: the first start after a build can take seconds (binaries that link
  # cuBLAS map hundreds of MB of libraries from a cold disk), over gtest_discover_tests' default of 5 s.
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 120
    PROPERTIES LABELS "${labels}" TIMEOUT ${ARG_TIMEOUT}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
endfunction()
