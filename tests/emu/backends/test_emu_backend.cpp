// The emu backend (fused decoder attention + FFN + LM head kernels on the CPU emulator) against the cpu backend on
// tiny random Llama-shaped models: lockstep decode steps of 1 and 3 sequences, teacher-forced prefill (token by
// token inside the backend), page sizes, RoPE styles, tied embeddings and q/k/v biases; the end-to-end rule of
// agreement.hpp. Also the registry's errors for backends this build cannot run.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "agreement.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/runner.hpp"

namespace {

using cf::device_layout::Storage;

struct Models {
  std::shared_ptr<const cf::ModelWeights> device, reference;
};

// Random weights in `dtype`; the reference gets the same values rounded to fp16 (what the device computes from).
Models make_models(const cf::ModelConfig& c, uint64_t seed, cf::DType dtype = cf::DType::F32) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, seed, dtype));
  const Storage s = cf::device_layout::choose_storage(*w);
  return {w, std::make_shared<cf::ModelWeights>(cf::device_layout::rounded_copy(*w, s))};
}

cf::Runner make_runner(const std::string& backend, std::shared_ptr<const cf::ModelWeights> w, int max_seqs,
                       int page_size = 16) {
  cf::BackendOptions o;
  o.max_seqs = max_seqs;
  o.page_size = page_size;
  o.threads = 1;
  return cf::Runner(cf::create_backend(backend, std::move(w), o), max_seqs);
}

void expect_agreement(const cf::ModelConfig& config, uint64_t seed, int batch, int prompt, int length,
                      int page_size, cf::DType dtype = cf::DType::F32, int min_binding = 1) {
  const auto start = std::chrono::steady_clock::now();
  const Models m = make_models(config, seed, dtype);
  cf::Runner cpu = make_runner("cpu", m.reference, batch, page_size);
  cf::Runner emu = make_runner("emu", m.device, batch, page_size);
  const auto streams = cf::test::greedy_streams(cpu, batch, prompt, length, seed + 1);
  const auto want = cf::test::lockstep_logits(cpu, streams);
  const auto got = cf::test::lockstep_logits(emu, streams);
  const auto r = cf::test::compare_logits(got, want, streams,
                                          cf::test::end_to_end_tolerance(cf::device_layout::choose_storage(*m.device)),
                                          prompt - 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ agree ] batch %d, page %d: %s (%.1f s)\n", batch, page_size, r.summary().c_str(), seconds);
  EXPECT_TRUE(r.ok) << r.first_failure << "\n" << r.summary();
  EXPECT_GE(r.steps, batch * (length - prompt + 1));
  // Random models are flat, but not everywhere: the greedy rule must have bound somewhere, else it tested nothing.
  EXPECT_GE(r.greedy_checked, min_binding) << r.summary();
}

TEST(EmuBackend, DecodeMatchesCpuGreedyAndLogits) {
  // 4 prompt tokens + 16 generated: every generated token is a checked step.
  expect_agreement(cf::test::tiny_llama(), 11, /*batch=*/1, /*prompt=*/4, /*length=*/21, /*page_size=*/16);
}

TEST(EmuBackend, LockstepBatchNeoxTiedBiasSmallPages) {
  expect_agreement(cf::test::tiny_llama(cf::RopeStyle::NeoX, /*tied=*/true, /*bias=*/true), 12, /*batch=*/3,
                   /*prompt=*/2, /*length=*/18, /*page_size=*/4);
}

TEST(EmuBackend, QuantisedWeightsDequantisedAtLoad) {
  // Q4_1 weights (the default model's type) are dequantised to fp16 when the backend is built.
  expect_agreement(cf::test::tiny_llama(), 13, /*batch=*/1, /*prompt=*/3, /*length=*/19, /*page_size=*/8,
                   cf::DType::Q4_1);
}

TEST(EmuBackend, Bf16ModelRunsTheBf16Kernels) {
  // An all-bf16 model (e.g. a bf16 safetensors checkpoint) keeps bf16 on the device; the bf16 tolerance applies.
  expect_agreement(cf::test::tiny_llama(), 15, /*batch=*/2, /*prompt=*/2, /*length=*/18, /*page_size=*/16,
                   cf::DType::BF16);
}

TEST(EmuBackend, PrefillRunsTokenByTokenAndMatchesDecode) {
  // Runner::prefill hands the backend a multi-token batch of one sequence; the emu backend runs it token by token,
  // so its logits are bit-identical to lockstep decode of the same tokens.
  const Models m = make_models(cf::test::tiny_llama(), 14);
  cf::Runner emu = make_runner("emu", m.device, 1, 8);
  cf::Runner cpu = make_runner("cpu", m.reference, 1, 8);
  const std::vector<std::vector<int32_t>> streams = {{5, 77, 300, 12, 9, 401, 33, 250, 7, 8}};
  const std::vector<float> prefill = cf::teacher_forced_logits(emu, streams[0]);
  const auto decoded = cf::test::lockstep_logits(emu, streams);
  const size_t vocab = size_t(emu.vocab());
  for (size_t step = 0; step < streams[0].size(); ++step)
    EXPECT_TRUE(std::equal(decoded[0][step].begin(), decoded[0][step].end(), prefill.begin() + long(step * vocab)))
        << "step " << step;
  const auto want = cf::test::lockstep_logits(cpu, streams);
  const auto r = cf::test::compare_logits(decoded, want, streams, cf::test::end_to_end_tolerance(Storage::F16));
  EXPECT_TRUE(r.ok) << r.first_failure;
  // Continuing after the prefill appends to the same cache.
  const int32_t seq = 0, token = 42;
  emu.reset(0);
  emu.prefill(0, streams[0]);
  const std::vector<float> next = emu.decode(std::span(&seq, 1), std::span(&token, 1));
  cpu.reset(0);
  cpu.prefill(0, streams[0]);
  const std::vector<float> next_ref = cpu.decode(std::span(&seq, 1), std::span(&token, 1));
  const auto t = cf::ref::check_tolerance(next, next_ref, {}, cf::ref::Tolerance{cf::test::end_to_end_tolerance(Storage::F16).rtol, cf::test::end_to_end_tolerance(Storage::F16).atol_rms});
  EXPECT_TRUE(t.ok) << t.message;
}

TEST(EmuBackend, ShapesTheKernelsCannotRunAreClearErrors) {
  cf::ModelConfig c = cf::test::tiny_llama();
  c.head_dim = 32;
  c.rope_dim = 32;
  c.hidden = 128;
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 1, cf::DType::F32));
  try {
    cf::create_backend("emu", w, {});
    FAIL() << "head_dim 32 should be rejected";
  } catch (const cf::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 32"), std::string::npos) << e.what();
  }
  cf::BackendOptions o;
  o.max_seqs = 17;
  auto ok = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_llama(), 1, cf::DType::F32));
  EXPECT_THROW(cf::create_backend("emu", ok, o), cf::InputError);
}

TEST(Registry, GpuBackendsSayWhyTheyCannotRun) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_llama(), 1, cf::DType::F32));
  for (const char* name : {"cuda", "cuda-unfused"}) {
    const std::string why = cf::backend_unavailable_reason(name);
    if (why.empty()) continue;  // a GPU build on a GPU machine
    try {
      cf::create_backend(name, w, {});
      FAIL() << name << " should not be creatable: " << why;
    } catch (const cf::InputError& e) {
      EXPECT_EQ(std::string(e.what()), "--backend " + std::string(name) + ": " + why);
    }
  }
  EXPECT_TRUE(cf::backend_unavailable_reason("cpu").empty());
  EXPECT_TRUE(cf::backend_unavailable_reason("emu").empty());
  const std::string d = cf::default_backend_name();
  EXPECT_TRUE(d == "cpu" || d == "cuda") << d;
  EXPECT_EQ(d == "cuda", cf::backend_unavailable_reason("cuda").empty());
}

}  // namespace
