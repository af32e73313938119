// CUDA-graph capture and replay. Graph::capture runs `work(stream)` under stream capture (thread-local mode, so a
// cudaMalloc, a synchronisation or any other call that is illegal in a graph fails the capture with a clear error)
// and instantiates the result; replay() launches it. If `work` throws, the capture is ended and discarded first,
// so the stream is usable again.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "clusterfusion/cuda/check.hpp"

namespace cf::cuda {

class Graph {
 public:
  Graph() = default;
  ~Graph() { reset(); }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&& other) noexcept
      : graph_(std::exchange(other.graph_, nullptr)), exec_(std::exchange(other.exec_, nullptr)) {}
  Graph& operator=(Graph&& other) noexcept {
    std::swap(graph_, other.graph_);
    std::swap(exec_, other.exec_);
    return *this;
  }

  template <typename Work>
  static Graph capture(cudaStream_t stream, Work&& work) {
    CF_CHECK(stream != nullptr, "Graph::capture: needs a created stream (the legacy default stream cannot be captured)");
    Graph g;
    CF_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      work(stream);
    } catch (...) {
      cudaGraph_t partial = nullptr;
      (void)cudaStreamEndCapture(stream, &partial);
      if (partial) (void)cudaGraphDestroy(partial);
      (void)cudaGetLastError();
      throw;
    }
    const cudaError_t end_status = cudaStreamEndCapture(stream, &g.graph_);
    if (end_status != cudaSuccess) {
      (void)cudaGetLastError();
      throw CudaError(std::string("Graph::capture: cudaStreamEndCapture failed: ") + cudaGetErrorName(end_status) +
                          " (" + cudaGetErrorString(end_status) +
                          "); the captured work made a call that is not allowed in a graph (allocation, sync, ...)",
                      int(end_status));
    }
    CF_CUDA_CHECK(cudaGraphInstantiate(&g.exec_, g.graph_, 0));
    return g;
  }

  bool valid() const { return exec_ != nullptr; }
  void replay(cudaStream_t stream) const {
    CF_CHECK(exec_ != nullptr, "Graph::replay: graph was not captured");
    CF_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
  }
  // Number of nodes (kernels, memsets, ...) in the captured graph.
  size_t node_count() const {
    size_t n = 0;
    if (graph_) CF_CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &n));
    return n;
  }

  void reset() noexcept {
    if (exec_) (void)cudaGraphExecDestroy(exec_);
    if (graph_) (void)cudaGraphDestroy(graph_);
    exec_ = nullptr;
    graph_ = nullptr;
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace cf::cuda
