// Host-side parts of cuda-unfused and include/clusterfusion/cuda that need no GPU (label unit, CUDA builds only):
// parameter validation names the bad field, error macros name location and call, GPU detection never throws.
#include <gtest/gtest.h>

#include "clusterfusion/cuda/cublas.hpp"
#include "test_util.hpp"

namespace cf::test {
namespace {

namespace cu = cuda_unfused;

TEST(CudaHost, CheckMacroNamesLocationCallAndError) {
  try {
    CF_CUDA_CHECK(cudaErrorInvalidValue);
    ADD_FAILURE() << "expected a throw";
  } catch (const CudaError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("test_host.cpp:"), std::string::npos) << what;
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

TEST(CudaHost, GpuDetectionNeverThrows) {
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

// ---- host-side validation (no GPU needed) -----------------------------------------------------------------------

cu::AttentionBlockParams plausible_params() {
  // Fake, 256-byte aligned addresses: validate() never dereferences them.
  auto fake = [](uintptr_t i) { return reinterpret_cast<void*>(uintptr_t(1) << 20 | (i << 8)); };
  cu::AttentionBlockParams p;
  p.shape.hidden = 256;
  p.shape.n_heads = 4;
  p.shape.n_kv_heads = 2;
  p.shape.head_dim = 64;
  p.shape.rot_dim = 64;
  p.batch = 2;
  p.hidden = fake(1);
  p.residual_out = fake(2);
  p.out = fake(3);
  p.norm = fake(4);
  p.w_qkv = fake(5);
  p.w_o = fake(6);
  p.positions = static_cast<const int32_t*>(fake(7));
  p.rope = {static_cast<const float*>(fake(8)), 100, 64};
  p.kv.k_pages = fake(9);
  p.kv.v_pages = fake(10);
  p.kv.n_pages = 4;
  p.kv.page_size = 16;
  p.kv.kv_indptr = static_cast<const int32_t*>(fake(11));
  p.kv.kv_indices = static_cast<const int32_t*>(fake(12));
  p.kv.kv_last_page_len = static_cast<const int32_t*>(fake(13));
  p.kv.n_seqs = 2;
  p.kv.n_indices = 4;
  return p;
}

void expect_input_error(const cu::AttentionBlockParams& p, const std::string& needle) {
  try {
    p.validate();
    ADD_FAILURE() << "expected cf::InputError mentioning '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("attention_block"), std::string::npos) << e.what();
  }
}

TEST(HostValidation, AttentionBlockParamsNameTheBadField) {
  EXPECT_NO_THROW(plausible_params().validate());
  auto p = plausible_params();
  p.shape.head_dim = 96;
  p.shape.rot_dim = 96;
  expect_input_error(p, "head_dim 96");
  p = plausible_params();
  p.shape.n_kv_heads = 3;
  expect_input_error(p, "not a multiple of n_kv_heads");
  p = plausible_params();
  p.w_qkv = nullptr;
  expect_input_error(p, "w_qkv is null");
  p = plausible_params();
  p.hidden = reinterpret_cast<const void*>(uintptr_t(0x100002));
  expect_input_error(p, "hidden is not 16-byte aligned");
  p = plausible_params();
  p.shape.hidden = 260;
  expect_input_error(p, "multiple of 8");
  p = plausible_params();
  p.shape.rot_dim = 63;
  expect_input_error(p, "rot_dim");
  p = plausible_params();
  p.kv.token_seq = p.positions;
  expect_input_error(p, "given together");
  p = plausible_params();
  p.kv.n_seqs = 1;
  expect_input_error(p, "one sequence per token");
  p = plausible_params();
  p.rope.rot_dim = 32;
  expect_input_error(p, "rope.rot_dim");
  p = plausible_params();
  p.batch = 0;
  expect_input_error(p, "token count 0");
  p = plausible_params();
  p.shape.eps = 0.0f;
  expect_input_error(p, "eps");
}

TEST(HostValidation, KernelParamsNameTheBadField) {
  cu::DecodeAttentionParams d;
  d.tokens = 1;
  d.n_heads = 4;
  d.n_kv_heads = 4;
  d.head_dim = 128;
  d.max_splits = 0;
  EXPECT_THROW(d.validate(), InputError);
  cu::ArgmaxParams a;
  a.rows = 1;
  a.n = 0;
  try {
    a.validate();
    ADD_FAILURE() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("argmax: n 0"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cu::describe_status(cu::kStatusBadPosition | cu::kStatusBadPageId),
            "a position is outside the RoPE table [0, rope.max_positions); a kv_indices entry is outside [0, kv.n_pages)");
}

}  // namespace
}  // namespace cf::test
