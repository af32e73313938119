// RAII device memory. DeviceBuffer<T> owns `size()` elements of T allocated with cudaMalloc (256-byte aligned),
// is move-only, and frees on destruction. upload(), download() and fill_bytes() are checked and fully synchronous
// (they wait for the whole device before and after), so they are safe next to work on non-blocking streams, which
// do not order themselves after the legacy default stream. They are setup/test helpers: never call them while a
// stream is being captured.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clusterfusion/cuda/check.hpp"

namespace cf::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `what` names the buffer in the error message when the allocation fails.
  explicit DeviceBuffer(size_t count, std::string_view what = "device buffer") : size_(count) {
    if (count == 0) return;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T));
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      (void)cudaGetLastError();
      data_ = nullptr;
      size_ = 0;
      throw CudaError("cudaMalloc of " + std::string(what) + " (" + std::to_string(count * sizeof(T)) +
                          " bytes) failed: " + cudaGetErrorName(status) + "; device has " +
                          std::to_string(free_bytes >> 20) + " MiB free of " + std::to_string(total_bytes >> 20) +
                          " MiB",
                      int(status));
    }
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  void reset() noexcept {
    if (data_) (void)cudaFree(data_);  // never throws from a destructor; a failed free is reported by later calls
    data_ = nullptr;
    size_ = 0;
  }

  // Copies host -> device at element offset `offset`.
  void upload(std::span<const T> host, size_t offset = 0) {
    CF_CHECK(offset + host.size() <= size_, "DeviceBuffer::upload: " + std::to_string(host.size()) +
                                                " elements at offset " + std::to_string(offset) +
                                                " do not fit in a buffer of " + std::to_string(size_));
    if (host.empty()) return;
    CF_CUDA_CHECK(cudaDeviceSynchronize());
    CF_CUDA_CHECK(cudaMemcpy(data_ + offset, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    CF_CUDA_CHECK(cudaDeviceSynchronize());  // a pageable upload may return before its DMA has landed
  }
  void upload(const std::vector<T>& host, size_t offset = 0) { upload(std::span<const T>(host), offset); }

  // Copies the whole buffer (or `count` elements from `offset`) device -> host.
  std::vector<T> download(size_t offset = 0, size_t count = SIZE_MAX) const {
    if (count == SIZE_MAX) count = size_ - std::min(offset, size_);
    CF_CHECK(offset + count <= size_, "DeviceBuffer::download: range past the end of the buffer");
    std::vector<T> host(count);
    if (count == 0) return host;
    CF_CUDA_CHECK(cudaDeviceSynchronize());  // work on other streams that writes this buffer must be done
    CF_CUDA_CHECK(cudaMemcpy(host.data(), data_ + offset, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

  // Sets every byte to `byte` (0xFF makes fp16/bf16/fp32 NaN: a poison that shows unwritten outputs).
  void fill_bytes(uint8_t byte) {
    if (size_ == 0) return;
    CF_CUDA_CHECK(cudaDeviceSynchronize());
    CF_CUDA_CHECK(cudaMemset(data_, byte, bytes()));
    CF_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Creates a buffer holding a copy of `host`.
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host, std::string_view what = "device buffer") {
  DeviceBuffer<T> buffer(host.size(), what);
  buffer.upload(host);
  return buffer;
}

}  // namespace cf::cuda
