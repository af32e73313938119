// Device (global) memory for host code that drives kernels in both builds (tests, backends):
//
//   dev::DeviceBuffer<dev::f16> w(rows * cols);   w.upload(host_halves);   ... launch ...   auto y = out.download();
//
// CUDA: cudaMalloc / synchronous cudaMemcpy / cudaFree (256-byte aligned). Emulator: host memory placed so that it
// ends right before an inaccessible guard page (16-byte aligned start), so a kernel reading or writing past the end
// is reported as GlobalOutOfBounds with the buffer's size. Element type U of upload/download may differ from T if it
// has the same size (e.g. cf::half host data into a DeviceBuffer<dev::f16>, which is __half under nvcc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/launch.hpp"

namespace cf::dev {

#if !defined(CF_DEVICE_CUDA)
namespace emu {
void* alloc_global(size_t bytes);  // zero-filled, 16-byte aligned, guard page right after the last byte
void free_global(void* p);
void declare_scratch_range(const void* p, size_t bytes);
}  // namespace emu
#endif

// Declares bytes [p, p + bytes) of one DeviceBuffer per-launch scratch: every launch writes them before it reads them
// (partial results handed between CTAs, for instance), so their contents never carry over from one launch to the
// next. CUDA: nothing. Emulator: each launch starts with these bytes undefined, and a kernel read of a byte that
// this launch has not written is reported (EmuErrorKind::UninitializedRead). Throws cf::InputError when the range
// is not inside one live DeviceBuffer (emulator).
inline void declare_scratch(const void* p, size_t bytes) {
#if defined(CF_DEVICE_CUDA)
  (void)p;
  (void)bytes;
#else
  emu::declare_scratch_range(p, bytes);
#endif
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count == 0) return;
#if defined(CF_DEVICE_CUDA)
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, bytes()), "cudaMalloc(" + std::to_string(bytes()) + " bytes)");
    check_cuda(cudaMemset(p, 0, bytes()), "cudaMemset");
    data_ = static_cast<T*>(p);
#else
    data_ = static_cast<T*>(emu::alloc_global(bytes()));
#endif
  }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }

  T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  template <typename U>
  void upload(const U* src, size_t count, size_t offset = 0) {
    static_assert(sizeof(U) == sizeof(T) && std::is_trivially_copyable_v<U>, "upload: element sizes differ");
    CF_CHECK_INPUT(offset + count <= count_, "DeviceBuffer::upload: " + std::to_string(count) + " elements at " +
                                                 std::to_string(offset) + " exceed the buffer's " +
                                                 std::to_string(count_));
    if (count == 0) return;
#if defined(CF_DEVICE_CUDA)
    check_cuda(cudaMemcpy(data_ + offset, src, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
#else
    std::memcpy(static_cast<void*>(data_ + offset), src, count * sizeof(T));
#endif
  }
  template <typename U>
  void upload(const std::vector<U>& src) {
    upload(src.data(), src.size());
  }

  template <typename U>
  void download(U* dst, size_t count, size_t offset = 0) const {
    static_assert(sizeof(U) == sizeof(T) && std::is_trivially_copyable_v<U>, "download: element sizes differ");
    CF_CHECK_INPUT(offset + count <= count_, "DeviceBuffer::download: " + std::to_string(count) + " elements at " +
                                                 std::to_string(offset) + " exceed the buffer's " +
                                                 std::to_string(count_));
    if (count == 0) return;
#if defined(CF_DEVICE_CUDA)
    check_cuda(cudaMemcpy(dst, data_ + offset, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
#else
    std::memcpy(static_cast<void*>(dst), data_ + offset, count * sizeof(T));
#endif
  }
  template <typename U = T>
  std::vector<U> download() const {
    std::vector<U> out(count_);
    download(out.data(), count_);
    return out;
  }

  void fill_bytes(uint8_t value) {
    if (count_ == 0) return;
#if defined(CF_DEVICE_CUDA)
    check_cuda(cudaMemset(data_, value, bytes()), "cudaMemset");
#else
    std::memset(static_cast<void*>(data_), value, bytes());
#endif
  }

 private:
  void release() {
    if (data_ == nullptr) return;
#if defined(CF_DEVICE_CUDA)
    (void)cudaFree(data_);
#else
    emu::free_global(data_);
#endif
    data_ = nullptr;
  }

  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace cf::dev
