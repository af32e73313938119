// include/clusterfusion/cuda: error messages, GPU detection that never throws, buffers, graph capture.
#include <gtest/gtest.h>

#include "clusterfusion/cuda/cublas.hpp"
#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "test_util.hpp"

namespace cf::test {
namespace {

TEST(CudaUtils, BufferRoundTripAndMove) {
  CF_REQUIRE_GPU();
  std::vector<int> host(1000);
  for (int i = 0; i < 1000; ++i) host[size_t(i)] = i * 7 - 3;
  dev::DeviceBuffer<int> a = dev::to_device(host, "round trip");
  dev::DeviceBuffer<int> b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.download(), host);
  EXPECT_EQ(b.download(10, 5), std::vector<int>(host.begin() + 10, host.begin() + 15));
  EXPECT_THROW(b.upload(host, 1), Error);
}

TEST(CudaUtils, FailedCaptureIsDiscardedAndLeavesStreamUsable) {
  CF_REQUIRE_GPU();
  cuda::Stream stream;
  dev::DeviceBuffer<uint8_t> buffer(256);
  // A synchronisation is illegal while capturing: the check throws inside the capture.
  EXPECT_THROW(cuda::Graph::capture(stream, [&](cudaStream_t st) { CF_CUDA_CHECK(cudaStreamSynchronize(st)); }),
               CudaError);
  // Any exception from the captured work ends the capture.
  EXPECT_THROW(cuda::Graph::capture(stream, [&](cudaStream_t st) {
                 CF_CUDA_CHECK(cudaMemsetAsync(buffer.data(), 1, 256, st));
                 throw Error("planted failure");
               }),
               Error);
  CF_CUDA_CHECK(cudaMemsetAsync(buffer.data(), 7, 256, stream));
  stream.synchronize();
  EXPECT_EQ(buffer.download()[255], 7);

  cuda::Graph g = cuda::Graph::capture(stream, [&](cudaStream_t st) {
    CF_CUDA_CHECK(cudaMemsetAsync(buffer.data(), 9, 256, st));
  });
  EXPECT_GE(g.node_count(), 1u);
  g.replay(stream);
  stream.synchronize();
  EXPECT_EQ(buffer.download()[0], 9);
}

}  // namespace
}  // namespace cf::test
