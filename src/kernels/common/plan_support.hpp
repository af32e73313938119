// What every kernel's Plan does alike (host code, compiled into each plan_impl of both builds): the device status
// words and their check, the phase-trace buffer, the launch configuration, preparing the kernels once, and the
// PlanCore that holds them with the config, the launch facts and the argument block.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/pipeline/mma.hpp"
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

// A kernel's numbers that its plan needs (params.hpp): its name in errors, the status words and where its timeout
// and drain words are, the trace points per CTA.
struct KernelFacts {
  const char* name;
  int status_words, timeout_at, drain_at, trace_slots;
};

// What every kernel's Plan::Impl holds (it derives from this and adds its workspace): the config, the launch facts,
// the argument block with the plan's fields (run() copies it and adds the step's), the kernels of one and two batch
// tiles, the status words and the phase trace.
template <typename PlanConfig, typename LaunchInfo, typename KernelParams>
struct PlanCore {
  using KernelFn = void (*)(KernelParams);
  static constexpr int kTokensPerBatchTile = pipeline::kMmaN;  // kernels[0] runs batches up to this, kernels[1] 16

  const char* name;
  PlanConfig config;
  LaunchInfo info;
  KernelParams base{};
  KernelFn kernels[2] = {nullptr, nullptr};
  PlanStatus status;
  PlanTrace trace;

  // ctas: the grid (the trace's rows).
  PlanCore(const KernelFacts& k, const PlanConfig& c, int ctas)
      : name(k.name),
        config(c),
        status(k.name, k.status_words, k.timeout_at, k.drain_at),
        trace(k.name, c.trace, ctas, k.trace_slots) {}

  // The argument block's fields of the pipeline layer: status words, wait budget, trace, ring stages, the carve.
  template <typename Layout>
  void set_pipeline_params(int stages, const Layout& layout) {
    base.status = status.data();
    base.wait_budget_ns = uint64_t(config.wait_budget_us) * 1000u;
    base.trace = trace.data();
    base.stages = stages;
    base.layout = layout;
  }

  // At plan time, once info.threads and info.smem_bytes are known: prepare_kernels for grid x cluster CTAs.
  void prepare(int grid, int cluster) {
    prepare_kernels(kernels, launch_config(name, grid, cluster, info.threads, info.smem_bytes, nullptr, 0));
  }

  // One launch of the step's argument block (a copy of base with the step's fields).
  void launch(const KernelParams& p, int grid, int cluster, void* stream, uint64_t emu_seed) const {
    dev::launch(launch_config(name, grid, cluster, info.threads, info.smem_bytes, stream, emu_seed),
                kernels[p.batch <= kTokensPerBatchTile ? 0 : 1], p);
  }

  void check_status(void* stream, std::string (*site_name)(uint32_t),
                    std::string (*describe_inputs)(const uint32_t*) = nullptr) {
    status.check(stream, config.wait_budget_us, site_name, describe_inputs);
  }
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE
