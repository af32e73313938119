#include "common/gpu_timing.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"

namespace cf::bench {
namespace {

inline constexpr int kReadThreads = 512;
inline constexpr int kReadUnroll = 4;
inline constexpr int kFillThreads = 256;

// Reads every 16-byte word once (kReadUnroll independent loads in flight per thread) and folds them into one word
// per block so the loads cannot be optimised away.
__global__ void __launch_bounds__(kReadThreads) read_kernel(const uint4* data, size_t n_words, uint32_t* sink) {
  uint32_t fold = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + (kReadUnroll - 1) * stride < n_words; i += kReadUnroll * stride) {
    uint4 w[kReadUnroll];
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) w[u] = __ldcs(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) fold ^= w[u].x ^ w[u].y ^ w[u].z ^ w[u].w;
  }
  for (; i < n_words; i += stride) {
    const uint4 w = __ldcs(data + i);
    fold ^= w.x ^ w.y ^ w.z ^ w.w;
  }
  if (fold == 0x9E3779B9u) sink[blockIdx.x] = fold;  // practically never taken; keeps the loads alive
}

__device__ __forceinline__ float hash_uniform(uint64_t seed, size_t index, float lo, float hi) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * float(z >> 40) * (1.0f / 16777216.0f);
}

template <typename T>
__global__ void fill_kernel(T* data, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = hash_uniform(seed, i, lo, hi);
    if constexpr (std::is_same_v<T, __half>)
      data[i] = __float2half_rn(v);
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
      data[i] = __float2bfloat16_rn(v);
    else
      data[i] = v;
  }
}

int sm_count_of_current_device() {
  int device = 0, sms = 0;
  CF_CUDA_CHECK(cudaGetDevice(&device));
  CF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

}  // namespace

Bandwidth measure_bandwidth(cudaStream_t stream, size_t bytes, int reps) {
  Bandwidth bw;
  bytes = bytes / 16 * 16;
  bw.bytes = bytes;
  dev::DeviceBuffer<uint8_t> src(bytes, "bandwidth source"), dst(bytes, "bandwidth destination");
  fill_random(src.data(), bytes / 4, FillType::F32, 1, -1.0f, 1.0f, stream);
  const int sms = sm_count_of_current_device();
  const int read_blocks = sms * 4;
  dev::DeviceBuffer<uint32_t> sink(size_t(read_blocks), "bandwidth sink");
  cuda::Event start, stop;
  std::vector<double> copy_ms, read_ms;
  for (int r = 0; r < reps + 2; ++r) {
    start.record(stream);
    CF_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream));
    stop.record(stream);
    stop.synchronize();
    if (r >= 2) copy_ms.push_back(stop.elapsed_ms_since(start));
    start.record(stream);
    read_kernel<<<read_blocks, kReadThreads, 0, stream>>>(reinterpret_cast<const uint4*>(src.data()), bytes / 16,
                                                          sink.data());
    CF_CUDA_CHECK_LAUNCH("read_kernel");
    stop.record(stream);
    stop.synchronize();
    if (r >= 2) read_ms.push_back(stop.elapsed_ms_since(start));
  }
  bw.copy_ms = summarize(copy_ms);
  bw.read_ms = summarize(read_ms);
  bw.copy_gbps = 2.0 * double(bytes) / (bw.copy_ms.median * 1e-3) / 1e9;
  bw.read_gbps = double(bytes) / (bw.read_ms.median * 1e-3) / 1e9;
  return bw;
}

GraphTiming time_in_graph(cudaStream_t stream, int n_sets, int calls_per_graph, int warmup, int replays,
                          const std::function<void(cudaStream_t, int)>& enqueue) {
  CF_CHECK(n_sets >= 1 && calls_per_graph >= 1 && replays >= 1, "time_in_graph: bad arguments");
  cuda::Graph graph = cuda::Graph::capture(stream, [&](cudaStream_t st) {
    for (int call = 0; call < calls_per_graph; ++call) enqueue(st, call % n_sets);
  });
  for (int w = 0; w < warmup; ++w) graph.replay(stream);
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  cuda::Event start, stop;
  std::vector<double> us;
  for (int r = 0; r < replays; ++r) {
    start.record(stream);
    graph.replay(stream);
    stop.record(stream);
    stop.synchronize();
    us.push_back(double(stop.elapsed_ms_since(start)) * 1000.0 / calls_per_graph);
  }
  GraphTiming t;
  t.us_per_call = summarize(us);
  t.calls_per_graph = calls_per_graph;
  t.replays = replays;
  t.n_sets = n_sets;
  return t;
}

int sets_to_defeat_l2(size_t bytes_per_set, int l2_bytes, int max_sets) {
  if (bytes_per_set == 0) return max_sets;
  const size_t target = size_t(3) * size_t(std::max(l2_bytes, 1));
  const size_t sets = (target + bytes_per_set - 1) / bytes_per_set;
  return int(std::clamp<size_t>(sets, 1, size_t(std::max(max_sets, 1))));
}

void fill_random(void* data, size_t n, FillType type, uint64_t seed, float lo, float hi, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = int(std::min<size_t>((n + kFillThreads - 1) / kFillThreads, size_t(65535)));
  switch (type) {
    case FillType::F16:
      fill_kernel<<<blocks, kFillThreads, 0, stream>>>(static_cast<__half*>(data), n, seed, lo, hi);
      break;
    case FillType::BF16:
      fill_kernel<<<blocks, kFillThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(data), n, seed, lo, hi);
      break;
    case FillType::F32:
      fill_kernel<<<blocks, kFillThreads, 0, stream>>>(static_cast<float*>(data), n, seed, lo, hi);
      break;
  }
  CF_CUDA_CHECK_LAUNCH("fill_kernel");
}

size_t count_non_finite(const void* data, size_t n, FillType type) {
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  if (type == FillType::F32) {
    std::vector<float> host(n);
    CF_CUDA_CHECK(cudaMemcpy(host.data(), data, n * sizeof(float), cudaMemcpyDeviceToHost));
    return size_t(std::count_if(host.begin(), host.end(), [](float v) { return !std::isfinite(v); }));
  }
  std::vector<uint16_t> host(n);
  CF_CUDA_CHECK(cudaMemcpy(host.data(), data, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (uint16_t bits : host) {
    const float v = type == FillType::F16 ? f16_bits_to_float(bits) : bf16_bits_to_float(bits);
    bad += !std::isfinite(v);
  }
  return bad;
}

Json device_json(const cuda::DeviceInfo& info) {
  Json j = Json::object();
  j.set("name", info.name);
  j.set("compute_capability", info.compute_capability());
  j.set("sm_count", info.sm_count);
  j.set("memory_gib", double(info.total_memory_bytes) / double(1u << 30));
  j.set("l2_mib", double(info.l2_bytes) / double(1u << 20));
  j.set("peak_sm_clock_mhz", info.sm_clock_khz / 1000);
  j.set("peak_memory_clock_mhz", info.memory_clock_khz / 1000);
  j.set("memory_bus_bits", info.memory_bus_bits);
  j.set("driver", cuda::DeviceInfo::version_string(info.driver_version));
  j.set("runtime", cuda::DeviceInfo::version_string(info.runtime_version));
  return j;
}

Json report_header(const char* program, const cuda::DeviceInfo& device, const Bandwidth& bw) {
  Json root = Json::object();
  root.set("program", program);
  root.set("git_sha", git_sha());
  root.set("time_utc", utc_now());
  root.set("device", device_json(device));
  Json bandwidth = Json::object();
  bandwidth.set("copy_gbps", bw.copy_gbps);
  bandwidth.set("read_gbps", bw.read_gbps);
  bandwidth.set("buffer_bytes", bw.bytes);
  root.set("bandwidth", bandwidth);
  return root;
}

void print_device(const cuda::DeviceInfo& info, std::FILE* out) {
  std::fprintf(out, "device: %s (cc %s, %d SMs, %.1f GiB, L2 %d MiB), peak clocks SM %d MHz / memory %d MHz, bus %d bit\n",
               info.name.c_str(), info.compute_capability().c_str(), info.sm_count,
               double(info.total_memory_bytes) / double(1u << 30), info.l2_bytes >> 20, info.sm_clock_khz / 1000,
               info.memory_clock_khz / 1000, info.memory_bus_bits);
  std::fprintf(out, "driver (CUDA) %s, runtime %s, git %s, %s\n",
               cuda::DeviceInfo::version_string(info.driver_version).c_str(),
               cuda::DeviceInfo::version_string(info.runtime_version).c_str(), git_sha().c_str(), utc_now().c_str());
  std::fflush(out);
}

Bandwidth print_device_and_bandwidth(const cuda::DeviceInfo& info, cudaStream_t stream, size_t bytes) {
  print_device(info);
  const Bandwidth bw = measure_bandwidth(stream, bytes);
  std::printf("bandwidth (%zu MiB buffers, median of %d): copy %.0f GB/s (read+write), read %.0f GB/s\n\n",
              bw.bytes >> 20, bw.read_ms.count, bw.copy_gbps, bw.read_gbps);
  return bw;
}

}  // namespace cf::bench
