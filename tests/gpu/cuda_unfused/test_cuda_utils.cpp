// include/clusterfusion/cuda: error messages, GPU detection that never throws, buffers, graph capture.
#include <gtest/gtest.h>

#include "clusterfusion/cuda/cublas.hpp"
#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "test_util.hpp"

namespace cf::test {
namespace {

TEST(CudaUtils, CheckMacroNamesLocationCallAndError) {
  try {
    CF_CUDA_CHECK(cudaErrorInvalidValue);
    ADD_FAILURE() << "expected a throw";
  } catch (const CudaError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("test_cuda_utils.cpp:"), std::string::npos) << what;
    EXPECT_NE(what.find("cudaErrorInvalidValue"), std::string::npos) << what;
    EXPECT_NE(what.find("failed"), std::string::npos) << what;
    EXPECT_EQ(e.code(), int(cudaErrorInvalidValue));
  }
  try {
    CF_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE);
    ADD_FAILURE() << "expected a throw";
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << e.what();
  }
}

TEST(CudaUtils, GpuDetectionNeverThrows) {
  bool available = false;
  EXPECT_NO_THROW(available = cuda::gpu_available());
  const std::string reason = cuda::gpu_unavailable_reason();
  EXPECT_EQ(available, reason.empty());
  std::printf("[ gpu  ] %s\n", available ? "available" : reason.c_str());
  if (available) {
    const cuda::DeviceInfo info = cuda::query_device();
    std::printf("[ gpu  ] %s, cc %s, %d SMs, L2 %d MB, driver %s\n", info.name.c_str(),
                info.compute_capability().c_str(), info.sm_count, info.l2_bytes >> 20,
                cuda::DeviceInfo::version_string(info.driver_version).c_str());
    EXPECT_GT(info.sm_count, 0);
  }
}

TEST(CudaUtils, BufferRoundTripAndMove) {
  CF_REQUIRE_GPU();
  std::vector<int> host(1000);
  for (int i = 0; i < 1000; ++i) host[size_t(i)] = i * 7 - 3;
  cuda::DeviceBuffer<int> a = cuda::to_device(host, "round trip");
  cuda::DeviceBuffer<int> b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.download(), host);
  EXPECT_EQ(b.download(10, 5), std::vector<int>(host.begin() + 10, host.begin() + 15));
  EXPECT_THROW(b.upload(host, 1), Error);
}

TEST(CudaUtils, FailedCaptureIsDiscardedAndLeavesStreamUsable) {
  CF_REQUIRE_GPU();
  cuda::Stream stream;
  cuda::DeviceBuffer<uint8_t> buffer(256);
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
