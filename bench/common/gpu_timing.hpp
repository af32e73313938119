// GPU side of the benchmark helpers: memory bandwidth measured in the same process (device-to-device copy and a
// pure read kernel), CUDA-graph timing of many calls with rotating input sets (so repeats are not served from L2),
// device random fill, and the device description for reports.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "clusterfusion/cuda/device.hpp"
#include "common/report.hpp"

namespace cf::bench {

struct Bandwidth {
  double copy_gbps = 0;  // cudaMemcpyAsync device-to-device, bytes read + bytes written
  double read_gbps = 0;  // a kernel reading every byte once (16-byte loads)
  size_t bytes = 0;      // buffer size used
  Stats copy_ms, read_ms;
};

// Measures with `bytes`-sized buffers (default 1 GiB), `reps` timed repetitions after 2 warm-ups; median.
Bandwidth measure_bandwidth(cudaStream_t stream, size_t bytes = size_t(1) << 30, int reps = 10);

struct GraphTiming {
  Stats us_per_call;  // over the timed replays, each replay's time / calls_per_graph
  int calls_per_graph = 0;
  int replays = 0;
  int n_sets = 0;
};

// Captures `calls_per_graph` calls of enqueue(stream, set) into one CUDA graph, call i using set i % n_sets, then
// replays it `warmup` times untimed and `replays` times timed (CUDA events around each replay).
GraphTiming time_in_graph(cudaStream_t stream, int n_sets, int calls_per_graph, int warmup, int replays,
                          const std::function<void(cudaStream_t, int)>& enqueue);

// How many input sets to rotate so that one pass over all of them is >= 3x the L2 size (capped).
int sets_to_defeat_l2(size_t bytes_per_set, int l2_bytes, int max_sets = 8);

enum class FillType { F16, BF16, F32 };
// Fills n elements with uniform values in [lo, hi) from a counter-based hash of (seed, index): same data every run.
void fill_random(void* data, size_t n, FillType type, uint64_t seed, float lo, float hi, cudaStream_t stream);
// Number of NaN or Inf among n fp16/bf16 elements (copies to the host; for small checks only).
size_t count_non_finite(const void* data, size_t n, FillType type);

// Device + run metadata for the JSON report.
Json device_json(const cuda::DeviceInfo& info);
// The head of a kernel benchmark's JSON report: program, git_sha, time_utc, device, bandwidth (copy_gbps,
// read_gbps, buffer_bytes); the caller adds settings and rows.
Json report_header(const char* program, const cuda::DeviceInfo& device, const Bandwidth& bw);
void print_device(const cuda::DeviceInfo& info, std::FILE* out = stdout);
// The start of a GPU benchmark: the device printed, then the bandwidth measured with `bytes`-sized buffers.
Bandwidth print_device_and_bandwidth(const cuda::DeviceInfo& info, cudaStream_t stream, size_t bytes);

}  // namespace cf::bench
