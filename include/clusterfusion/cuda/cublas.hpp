// cuBLAS with the project's conventions: checked calls (CF_CUBLAS_CHECK), and a handle that owns its workspace so
// that GEMMs can be captured in a CUDA graph (cuBLAS must not allocate during capture), with fp32 accumulation and
// reduced-precision reductions disallowed.
#pragma once
#include <cublas_v2.h>

#include <string>
#include <utility>

#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/check.hpp"

namespace cf::cuda {

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw CudaError(location(file, line) + ": " + call + " failed: " + cublasGetStatusName(status) + " (" +
                      cublasGetStatusString(status) + ")",
                  int(status));
}

}  // namespace cf::cuda

#define CF_CUBLAS_CHECK(call)                                                              \
  do {                                                                                     \
    const cublasStatus_t cf_cublas_status_ = (call);                                       \
    if (cf_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                        \
      ::cf::cuda::throw_cublas_error(cf_cublas_status_, #call, __FILE__, __LINE__);        \
  } while (0)

namespace cf::cuda {

class CublasHandle {
 public:
  // 32 MiB covers every algorithm cuBLAS picks on Hopper (its docs recommend 32 MiB for sm_90).
  static constexpr size_t kDefaultWorkspaceBytes = size_t(32) << 20;

  explicit CublasHandle(size_t workspace_bytes = kDefaultWorkspaceBytes)
      : workspace_(workspace_bytes, "cuBLAS workspace") {
    CF_CUBLAS_CHECK(cublasCreate(&handle_));
    try {
      CF_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
      CF_CUBLAS_CHECK(cublasSetMathMode(
          handle_, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
      CF_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
    } catch (...) {
      cublasDestroy(handle_);
      throw;
    }
  }
  ~CublasHandle() {
    if (handle_) (void)cublasDestroy(handle_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;

  cublasHandle_t get() const { return handle_; }
  // Binds the handle to `stream`; cheap, host-only, allowed during capture. cublasSetStream resets the workspace
  // to cuBLAS's own pool, so ours is set again right after.
  // Skipped when the stream is already bound, so a capture that follows an eager call makes no cuBLAS setup calls.
  void set_stream(cudaStream_t stream) {
    if (stream_bound_ && stream == stream_) return;
    CF_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    CF_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
    stream_ = stream;
    stream_bound_ = true;
  }

 private:
  dev::DeviceBuffer<uint8_t> workspace_;
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool stream_bound_ = false;
};

}  // namespace cf::cuda
