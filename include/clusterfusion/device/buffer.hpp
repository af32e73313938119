// Device (global) memory, the project's one owning buffer type, for host code of both builds (plans, backends,
// tests, benchmarks):
//
//   dev::DeviceBuffer<dev::f16> w(rows * cols, "w_qkv");   w.upload(host_halves);   ... launch ...
//   auto y = out.download();
//
// GPU build (CF_RUNTIME_CUDA, also from a backend's .cpp): cudaMalloc (256-byte aligned) / cudaFree, zero-filled;
// upload(), download() and fill_bytes() are checked and fully synchronous (they wait for the whole device before
// and after), so they are safe next to work on non-blocking streams. They are setup/test helpers: never call them
// while a stream is being captured. Failures throw cf::CudaError (cuda/check.hpp); an allocation failure names the
// buffer and the device's free memory.
// Emulator build: host memory placed so that it ends right before an inaccessible guard page (16-byte aligned
// start), so a kernel reading or writing past the end is reported as GlobalOutOfBounds with the buffer's size.
// Element type U of upload/download may differ from T if it has the same size (e.g. cf::half host data into a
// DeviceBuffer<dev::f16>, which is __half under nvcc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/launch.hpp"

#if !defined(CF_RUNTIME_CUDA)
namespace cf::dev::emu {
void* alloc_global(size_t bytes);  // zero-filled, 16-byte aligned, guard page right after the last byte
void free_global(void* p);
void declare_scratch_range(const void* p, size_t bytes);
}  // namespace cf::dev::emu
#endif

namespace cf::dev::inline CF_BUILD_NAMESPACE {

// Declares bytes [p, p + bytes) of one DeviceBuffer per-launch scratch: every launch writes them before it reads them
// (partial results handed between CTAs, for instance), so their contents never carry over from one launch to the
// next. CUDA: nothing. Emulator: each launch starts with these bytes undefined, and a kernel read of a byte that
// this launch has not written is reported (EmuErrorKind::UninitializedRead). Throws cf::InputError when the range
// is not inside one live DeviceBuffer (emulator).
inline void declare_scratch(const void* p, size_t bytes) {
#if defined(CF_RUNTIME_CUDA)
  (void)p;
  (void)bytes;
#else
  emu::declare_scratch_range(p, bytes);
#endif
}

namespace detail {
// The memory primitives of the build: allocate (zero-filled), free, copy in either direction, fill.
inline void* buffer_alloc(size_t bytes, std::string_view what) {
#if defined(CF_RUNTIME_CUDA)
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    (void)cudaGetLastError();
    cuda::throw_cuda_error(status, "cudaMalloc of " + std::string(what) + " (" + std::to_string(bytes) +
                                       " bytes; the device has " + std::to_string(free_bytes >> 20) + " MiB free of " +
                                       std::to_string(total_bytes >> 20) + " MiB)");
  }
  check_cuda(cudaMemset(p, 0, bytes), "cudaMemset of " + std::string(what));
  return p;
#else
  (void)what;
  return emu::alloc_global(bytes);
#endif
}
inline void buffer_free(void* p) noexcept {
#if defined(CF_RUNTIME_CUDA)
  (void)cudaFree(p);  // never throws from a destructor; a failed free is reported by later calls
#else
  emu::free_global(p);
#endif
}
// to_device: host -> device, else device -> host. Waits for the whole device first (work on other streams that
// touches the buffer must be done) and, for uploads, after (a pageable upload may return before its DMA landed).
inline void buffer_copy(void* dst, const void* src, size_t bytes, bool to_device) {
#if defined(CF_RUNTIME_CUDA)
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize before a DeviceBuffer copy");
  check_cuda(cudaMemcpy(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
             to_device ? "cudaMemcpy to the device" : "cudaMemcpy to the host");
  if (to_device) check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a DeviceBuffer upload");
#else
  (void)to_device;
  std::memcpy(dst, src, bytes);
#endif
}
inline void buffer_fill(void* p, uint8_t byte, size_t bytes) {
#if defined(CF_RUNTIME_CUDA)
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize before a DeviceBuffer fill");
  check_cuda(cudaMemset(p, byte, bytes), "cudaMemset");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a DeviceBuffer fill");
#else
  std::memset(p, byte, bytes);
#endif
}
}  // namespace detail

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `what` names the buffer in the error message when the allocation fails.
  explicit DeviceBuffer(size_t count, std::string_view what = "device buffer") : count_(count) {
    if (count > 0) data_ = static_cast<T*>(detail::buffer_alloc(bytes(), what));
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }

  T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  bool empty() const { return count_ == 0; }

  void reset() noexcept {
    if (data_ != nullptr) detail::buffer_free(data_);
    data_ = nullptr;
    count_ = 0;
  }

  // Copies `count` elements host -> device, to element offset `offset`.
  template <typename U>
  void upload(const U* src, size_t count, size_t offset = 0) {
    static_assert(sizeof(U) == sizeof(T) && std::is_trivially_copyable_v<U>, "upload: element sizes differ");
    CF_CHECK_INPUT(offset + count <= count_, "DeviceBuffer::upload: " + std::to_string(count) + " elements at " +
                                                 std::to_string(offset) + " exceed the buffer's " +
                                                 std::to_string(count_));
    if (count > 0) detail::buffer_copy(data_ + offset, src, count * sizeof(T), /*to_device=*/true);
  }
  template <typename U>
  void upload(std::span<const U> src, size_t offset = 0) {
    upload(src.data(), src.size(), offset);
  }
  template <typename U>
  void upload(const std::vector<U>& src, size_t offset = 0) {
    upload(src.data(), src.size(), offset);
  }

  // Copies `count` elements from element offset `offset` device -> host.
  template <typename U>
  void download(U* dst, size_t count, size_t offset = 0) const {
    static_assert(sizeof(U) == sizeof(T) && std::is_trivially_copyable_v<U>, "download: element sizes differ");
    CF_CHECK_INPUT(offset + count <= count_, "DeviceBuffer::download: " + std::to_string(count) + " elements at " +
                                                 std::to_string(offset) + " exceed the buffer's " +
                                                 std::to_string(count_));
    if (count > 0) detail::buffer_copy(dst, data_ + offset, count * sizeof(T), /*to_device=*/false);
  }
  // The whole buffer (or `count` elements from `offset`) as a host vector.
  template <typename U = T>
  std::vector<U> download(size_t offset = 0, size_t count = SIZE_MAX) const {
    if (count == SIZE_MAX) count = count_ - (offset < count_ ? offset : count_);
    std::vector<U> out(count);
    download(out.data(), count, offset);
    return out;
  }

  // Sets every byte to `value` (0xFF makes fp16/bf16/fp32 NaN: a poison that shows unwritten outputs).
  void fill_bytes(uint8_t value) {
    if (count_ > 0) detail::buffer_fill(data_, value, bytes());
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// A buffer holding a copy of `host`.
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host, std::string_view what = "device buffer") {
  DeviceBuffer<T> buffer(host.size(), what);
  buffer.upload(host);
  return buffer;
}

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE
