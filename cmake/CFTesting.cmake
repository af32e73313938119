# cf_add_gtest(<name> LABELS <label>... SOURCES <file>... LIBS <target>... [TIMEOUT <s>])
# One GoogleTest binary; its cases are discovered at test time (nothing runs during the build) and carry LABELS
# (unit, emu, gpu, slow) so presets can select them. Every case of a `gpu` binary gets CF_GPU_TEST_TIMEOUT: one
# number for a GPU session whose minutes are counted (a hang must not eat them; the kernels' own waits give up
# after PlanConfig::wait_budget_us), raised on the command line for slow runs (-DCF_GPU_TEST_TIMEOUT=600).
set(CF_GPU_TEST_TIMEOUT 60 CACHE STRING "Seconds each GPU test case may run (ctest TIMEOUT of label gpu)")

function(cf_add_gtest name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;SOURCES;LIBS" ${ARGN})
  if("gpu" IN_LIST ARG_LABELS)
    if(ARG_TIMEOUT)
      message(FATAL_ERROR "cf_add_gtest(${name}): GPU tests take CF_GPU_TEST_TIMEOUT, not a TIMEOUT of their own")
    endif()
    set(ARG_TIMEOUT ${CF_GPU_TEST_TIMEOUT})
  elseif(NOT ARG_TIMEOUT)
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
