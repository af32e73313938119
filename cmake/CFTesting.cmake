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
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
endfunction()
