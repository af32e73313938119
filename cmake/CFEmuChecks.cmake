# cf_emu_checked(<target>)
# Compiles <target>'s own sources with the instrumentation the emulator's access checks need (docs/emulator.md): every
# plain load and store of kernel code then reports to the emulator (src/emu/access_hooks.cpp), which checks data
# races, uninitialised reads, async-proxy fences and exact bounds. Every target that compiles kernels for the emulator
# (instantiates kernel templates) calls it; host code in those files is instrumented too and costs a call per access
# outside kernel launches. Normal builds: ThreadSanitizer's instrumentation without its runtime (the emulator supplies
# the entry points). Sanitizer builds (CF_SANITIZE): AddressSanitizer in call mode, wrapped at link time by cf_emu.
function(cf_emu_checked target)
  if(CF_SANITIZE)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:--param=asan-instrumentation-with-call-threshold=0>)
    else()
      target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:-mllvm -asan-instrumentation-with-call-threshold=0>)
    endif()
  else()
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread --param=tsan-instrument-func-entry-exit=0>)
    else()
      target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread -mllvm -tsan-instrument-func-entry-exit=0>)
    endif()
  endif()
endfunction()
