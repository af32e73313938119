# Warnings on for our own code; ptxas resource usage (registers, spills) shown for CUDA.
function(cf_apply_warnings target)
  target_compile_options(${target} INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter -Xptxas=-v,-warn-spills,-warn-lmem-usage --expt-relaxed-constexpr>)
endfunction()
