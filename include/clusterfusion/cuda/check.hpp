// Error checks for the CUDA runtime, the project's one CUDA error path: every failing call becomes a cf::CudaError
// whose one-line message names the source location (or the caller's `what`), the call as written and the runtime's
// error name and text, e.g.
//   src/x.cu:42: cudaMalloc(&p, bytes) failed: cudaErrorMemoryAllocation (out of memory)
// Host-side only; include from .cpp or .cu files that link CUDA::cudart.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "clusterfusion/common/error.hpp"

namespace cf {

// A failed CUDA runtime or library call (an internal failure, not bad user input).
class CudaError : public Error {
 public:
  CudaError(std::string message, int code) : Error(std::move(message)), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

namespace cuda {

inline std::string location(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

// "<what> failed: <error name> (<error text>)" as a cf::CudaError: every CUDA failure of the project (these checks,
// dev::check_cuda of the device API, the DeviceBuffer) reads alike.
[[noreturn]] inline void throw_cuda_error(cudaError_t status, const std::string& what) {
  throw CudaError(what + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")",
                  int(status));
}
[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  throw_cuda_error(status, location(file, line) + ": " + call);
}

}  // namespace cuda
}  // namespace cf

// Evaluates a CUDA runtime call once; throws cf::CudaError on anything but cudaSuccess.
#define CF_CUDA_CHECK(call)                                                                \
  do {                                                                                     \
    const cudaError_t cf_cuda_status_ = (call);                                            \
    if (cf_cuda_status_ != cudaSuccess)                                                    \
      ::cf::cuda::throw_cuda_error(cf_cuda_status_, #call, __FILE__, __LINE__);            \
  } while (0)

// After a kernel launch (<<<...>>>): reports a bad launch configuration at once, naming the kernel. Does not
// synchronise, so it is allowed inside CUDA-graph capture.
#define CF_CUDA_CHECK_LAUNCH(kernel_name)                                                  \
  do {                                                                                     \
    const cudaError_t cf_cuda_status_ = cudaGetLastError();                                \
    if (cf_cuda_status_ != cudaSuccess)                                                    \
      ::cf::cuda::throw_cuda_error(cf_cuda_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)
