// What every kernel's Plan does alike (host code, compiled into each plan_impl of both builds): the device status
// words and their check, the phase-trace buffer, the launch configuration, preparing the kernels once.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/primitives/wait_status.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE {

// Waits for `stream` (the GPU build; nothing to wait for on the emulator).
inline void sync_stream(void* stream, const std::string& who) {
#if defined(CF_DEVICE_CUDA)
  dev::check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), who + ": cudaStreamSynchronize");
#else
  (void)stream;
  (void)who;
#endif
}

// The launch of a plan's kernel: grid x cluster CTAs of `threads`, `smem_bytes` of dynamic shared memory.
inline dev::LaunchConfig launch_config(const char* name, int grid, int cluster, int threads, size_t smem_bytes,
                                       void* stream, uint64_t emu_seed) {
  dev::LaunchConfig cfg;
  cfg.grid = {uint32_t(grid)};
  cfg.cluster = {uint32_t(cluster)};
  cfg.block = {uint32_t(threads)};
  cfg.smem_bytes = smem_bytes;
  cfg.allow_nonportable_cluster = cluster > int(dev::kMaxPortableClusterSize);
  cfg.name = name;
  cfg.emu_seed = emu_seed;
#if defined(CF_DEVICE_CUDA)
  cfg.stream = static_cast<cudaStream_t>(stream);
#else
  (void)stream;
#endif
  return cfg;
}

// At plan time: raises the kernels' shared-memory limit (and allows big clusters), so that run() makes no CUDA
// attribute call (e.g. inside a graph capture).
template <typename KernelFn, size_t kCount>
void prepare_kernels(const KernelFn (&kernels)[kCount], const dev::LaunchConfig& cfg) {
#if defined(CF_DEVICE_CUDA)
  for (KernelFn fn : kernels) dev::detail::prepare_kernel(reinterpret_cast<const void*>(fn), cfg);
#else
  (void)kernels;
  (void)cfg;
#endif
}

// The device status words of a plan: the kernel records device-side input problems and expired waits there.
class PlanStatus {
 public:
  // words: kStatusWords; timeout_at / drain_at: where the kernel's timeout and drain words are.
  PlanStatus(const char* kernel, int words, int timeout_at, int drain_at)
      : kernel_(kernel), words_(size_t(words), "status words"), timeout_at_(timeout_at), drain_at_(drain_at) {}

  uint32_t* data() const { return words_.data(); }

  // run(): an earlier launch timed out (a hang): the plan refuses.
  void refuse_if_failed() const {
    if (!failed_.empty()) throw Error(std::string(kernel_) + ": the plan's earlier launch failed; " + failed_);
  }

  // Synchronises `stream`, reads and clears the words. A timeout throws cf::Error (and the plan refuses further
  // launches); else input problems (describe_inputs(words), non-empty) throw cf::InputError.
  void check(void* stream, int64_t budget_us, std::string (*site_name)(uint32_t),
             std::string (*describe_inputs)(const uint32_t*) = nullptr) {
    sync_stream(stream, kernel_);
    std::vector<uint32_t> words = words_.download();
    bool any = false;
    for (uint32_t w : words) any = any || w != 0;
    if (!any) return;
    words_.fill_bytes(0);
    const std::string timeout =
        prim::timeout_error(kernel_, words.data(), timeout_at_, drain_at_, budget_us, site_name);
    if (!timeout.empty() || describe_inputs == nullptr) {  // a hang (a bug): fatal for this plan
      failed_ = timeout;
      throw Error(timeout);
    }
    throw InputError(std::string(kernel_) + ": device-side input check failed: " + describe_inputs(words.data()));
  }

 private:
  const char* kernel_;
  dev::DeviceBuffer<uint32_t> words_;
  int timeout_at_, drain_at_;
  std::string failed_;
};

// The phase-trace buffer of a plan made with `trace` ([CTA][points] SM clock cycles; pipeline/trace.hpp).
class PlanTrace {
 public:
  PlanTrace(const char* kernel, bool enabled, int ctas, int points) : kernel_(kernel) {
    if (!enabled) return;
    buffer_ = dev::DeviceBuffer<uint64_t>(size_t(ctas) * size_t(points), "phase trace");
    buffer_.fill_bytes(0);
  }
  uint64_t* data() const { return buffer_.empty() ? nullptr : buffer_.data(); }
  std::vector<uint64_t> read(void* stream) const {
    if (buffer_.empty()) throw InputError(std::string(kernel_) + ": read_trace() needs PlanConfig::trace");
    sync_stream(stream, kernel_);
    return buffer_.download();
  }

 private:
  const char* kernel_;
  dev::DeviceBuffer<uint64_t> buffer_;
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE
