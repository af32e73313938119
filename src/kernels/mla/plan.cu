// The MLA block's plan (host code) for CUDA (library cf_kernels).
#include "plan_impl.hpp"
