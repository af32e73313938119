// The cpu backend against the reference forward pass on tiny random models, and its guarantees, for every
// arithmetic (fp32, int8) and KV cache type (F32, F16): bit-identical logits for any thread count, for prefill vs
// token-by-token decoding, for lockstep batches vs single sequences, for any KV page size, and on every kernel
// level (portable, AVX2, AVX-512) this CPU has.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/reference/tolerance.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/rng.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "kernels.hpp"
#include "test_models.hpp"

namespace {

using cf::DType;

std::vector<int32_t> some_tokens(int n, int vocab, uint64_t seed) {
  cf::Rng rng(seed);
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t(rng.below(uint32_t(vocab))));
  return t;
}

// The backend options under test besides the batch shape.
struct Variant {
  cf::CpuArithmetic arithmetic = cf::CpuArithmetic::F32;
  DType kv = DType::F32;
  std::string isa;
  std::string name() const {
    return std::string(cf::cpu_arithmetic_name(arithmetic)) + "_kv" + std::string(cf::dtype_name(kv)) +
           (isa.empty() ? "" : "_" + isa);
  }
};
const Variant kVariants[] = {{cf::CpuArithmetic::F32, DType::F32, ""},
                             {cf::CpuArithmetic::F32, DType::F16, ""},
                             {cf::CpuArithmetic::Int16, DType::F32, ""},
                             {cf::CpuArithmetic::Int16, DType::F16, ""},
                             {cf::CpuArithmetic::Int8, DType::F32, ""},
                             {cf::CpuArithmetic::Int8, DType::F16, ""}};

cf::Runner make_runner(std::shared_ptr<const cf::ModelWeights> w, int threads, int max_seqs = 1, int page_size = 16,
                       int max_batch_tokens = 256, const Variant& variant = {}) {
  cf::BackendOptions o;
  o.threads = threads;
  o.max_seqs = max_seqs;
  o.page_size = page_size;
  o.max_batch_tokens = max_batch_tokens;
  o.cpu_arithmetic = variant.arithmetic;
  o.cpu_kv_type = variant.kv;
  o.cpu_isa = variant.isa;
  return cf::Runner(cf::create_backend("cpu", std::move(w), o), max_seqs);
}

using cf::test::bit_equal;

// ---- full forward ---------------------------------------------------------------------------------------------

struct ModelCase {
  cf::RopeStyle style;
  bool tied;
  bool bias;
  DType dtype;
};

class CpuForward : public ::testing::TestWithParam<ModelCase> {};

TEST_P(CpuForward, LogitsMatchReferenceForward) {
  const ModelCase mc = GetParam();
  auto w = std::make_shared<cf::ModelWeights>(
      cf::ModelWeights::random(cf::test::tiny_config(mc.style, mc.tied, mc.bias), 11, mc.dtype));
  const auto tokens = some_tokens(20, w->config.vocab, 5);
  auto runner = make_runner(w, 2, 1, 4);
  const std::vector<float> got = cf::teacher_forced_logits(runner, tokens);
  const std::vector<float> want = cf::test::reference_logits(*w, tokens);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const size_t v = size_t(w->config.vocab);
    const auto report = cf::ref::check_tolerance<float>(std::span(got).subspan(t * v, v), std::span(want).subspan(t * v, v));
    EXPECT_TRUE(report.ok) << "token " << t << ": " << report.message;
  }
  // The logits are not degenerate (random models can collapse to constants if the scales are off).
  EXPECT_GT(cf::ref::rms(want), 0.1);
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuForward,
                         ::testing::Values(ModelCase{cf::RopeStyle::GPTJ, true, false, DType::F32},
                                           ModelCase{cf::RopeStyle::NeoX, false, true, DType::F32},
                                           ModelCase{cf::RopeStyle::GPTJ, true, false, DType::Q4_1},
                                           ModelCase{cf::RopeStyle::NeoX, true, true, DType::Q8_0},
                                           ModelCase{cf::RopeStyle::GPTJ, false, false, DType::F16}),
                         [](const auto& info) {
                           const ModelCase& m = info.param;
                           return std::string(m.style == cf::RopeStyle::NeoX ? "NeoX" : "GPTJ") +
                                  (m.tied ? "_tied" : "_untied") + (m.bias ? "_bias" : "") + "_" +
                                  std::string(cf::dtype_name(m.dtype));
                         });

class CpuDeterminism : public ::testing::TestWithParam<Variant> {};

TEST_P(CpuDeterminism, BitIdenticalAcrossThreadCounts) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 12, DType::Q4_1));
  const auto tokens = some_tokens(24, w->config.vocab, 6);
  auto one = make_runner(w, 1, 1, 16, 256, GetParam());
  const auto logits_1 = cf::teacher_forced_logits(one, tokens);
  for (int threads : {2, 3, 5}) {
    auto many = make_runner(w, threads, 1, 16, 256, GetParam());
    EXPECT_TRUE(bit_equal(logits_1, cf::teacher_forced_logits(many, tokens))) << threads << " threads";
  }
}

TEST_P(CpuDeterminism, PrefillEqualsTokenByTokenDecodeAndAnyChunking) {
  cf::ModelConfig c = cf::test::tiny_config();
  c.max_context = 96;  // a prompt longer than the kernels' 64-token blocks
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 13, DType::Q4_1));
  const auto tokens = some_tokens(70, w->config.vocab, 7);
  const size_t v = size_t(w->config.vocab);
  auto prefill_runner = make_runner(w, 2, 1, 16, 256, GetParam());
  const auto prefilled = cf::teacher_forced_logits(prefill_runner, tokens);
  auto step_runner = make_runner(w, 2, 1, 16, 256, GetParam());
  EXPECT_TRUE(bit_equal(prefilled, cf::test::token_by_token_logits(step_runner, tokens)));
  // Prefill chunked into batches of 4 tokens (the runner splits at the backend's limit).
  auto chunked_runner = make_runner(w, 2, 1, 16, /*max_batch_tokens=*/4, GetParam());
  EXPECT_TRUE(bit_equal(prefilled, cf::teacher_forced_logits(chunked_runner, tokens)));
  // The last-token-only prefill returns the last row.
  auto last_runner = make_runner(w, 1, 1, 16, 256, GetParam());
  const auto& last = last_runner.prefill(0, tokens);
  EXPECT_TRUE(bit_equal(last, std::vector<float>(prefilled.end() - long(v), prefilled.end())));
}

TEST_P(CpuDeterminism, AnyPageSizeGivesTheSameLogits) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 14, DType::Q8_0));
  const auto tokens = some_tokens(21, w->config.vocab, 8);
  auto page16 = make_runner(w, 2, 1, 16, 256, GetParam());
  const auto logits_16 = cf::teacher_forced_logits(page16, tokens);
  for (int page_size : {1, 3, 64}) {
    auto other = make_runner(w, 2, 1, page_size, 256, GetParam());
    EXPECT_TRUE(bit_equal(logits_16, cf::teacher_forced_logits(other, tokens))) << "page size " << page_size;
  }
}

TEST_P(CpuDeterminism, LockstepDecodeOfThreeSequencesEqualsEachAlone) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 15, DType::Q8_0));
  const size_t v = size_t(w->config.vocab);
  const std::vector<std::vector<int32_t>> prompts = {some_tokens(5, int(v), 1), some_tokens(9, int(v), 2),
                                                     some_tokens(2, int(v), 3)};
  const std::vector<int32_t> next = {7, 100, 299};
  auto batched = make_runner(w, 2, 3, 4, 256, GetParam());
  for (int s = 0; s < 3; ++s) batched.prefill(s, prompts[size_t(s)]);
  const std::vector<int32_t> seqs = {2, 0, 1};  // in any order
  const std::vector<int32_t> tokens = {next[2], next[0], next[1]};
  const std::vector<float> together = batched.decode(seqs, tokens);
  for (int i = 0; i < 3; ++i) {
    const int s = seqs[size_t(i)];
    auto alone = make_runner(w, 1, 1, 4, 256, GetParam());
    std::vector<int32_t> all = prompts[size_t(s)];
    all.push_back(next[size_t(s)]);
    const auto& l = alone.prefill(0, all);
    EXPECT_TRUE(bit_equal(l, std::vector<float>(together.begin() + long(i * v), together.begin() + long((i + 1) * v))))
        << "sequence " << s;
  }
  EXPECT_EQ(batched.length(0), 6);
  EXPECT_EQ(batched.length(1), 10);
  EXPECT_EQ(batched.length(2), 3);
}

// Every kernel level this CPU has gives the same logits (the forced levels are what other CPUs pick on their own).
TEST_P(CpuDeterminism, EveryKernelLevelGivesTheSameLogits) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 16, DType::Q4_1));
  const auto tokens = some_tokens(9, w->config.vocab, 9);
  Variant variant = GetParam();
  variant.isa = "portable";
  auto portable = make_runner(w, 2, 1, 16, 256, variant);
  const auto reference = cf::teacher_forced_logits(portable, tokens);
  for (const cf::cpu::Isa isa : {cf::cpu::Isa::Avx2, cf::cpu::Isa::Avx512}) {
    if (!cf::cpu::isa_supported(isa)) continue;
    variant.isa = cf::cpu::isa_name(isa);
    auto runner = make_runner(w, 2, 1, 16, 256, variant);
    EXPECT_TRUE(bit_equal(reference, cf::teacher_forced_logits(runner, tokens))) << variant.isa;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuDeterminism, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return info.param.name(); });

// The int16 / int8 arithmetics and the F16 cache change the logits by their rounding only: against the fp32 reference
// forward, within a bound a few times the observed error (a wrong scale, offset or sub-block would be off by far
// more: the logits' rms is ~1).
TEST(CpuForwardVariants, RoundingVariantsStayCloseToTheReference) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 21, DType::Q4_1));
  const auto tokens = some_tokens(20, w->config.vocab, 11);
  const std::vector<float> want = cf::test::reference_logits(*w, tokens);
  const double scale = cf::ref::rms(want);
  for (const Variant& variant : kVariants) {
    auto runner = make_runner(w, 2, 1, 16, 256, variant);
    const std::vector<float> got = cf::teacher_forced_logits(runner, tokens);
    double max_err = 0;
    for (size_t i = 0; i < want.size(); ++i) max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
    const double bound = variant.arithmetic == cf::CpuArithmetic::Int8 ? 0.1
                         : variant.kv == DType::F16                    ? 2e-3
                         : variant.arithmetic == cf::CpuArithmetic::Int16 ? 1e-3
                                                                          : 1e-5;
    EXPECT_LE(max_err, bound * scale) << variant.name();
    std::printf("%s: max |logit error| / rms = %.2e\n", variant.name().c_str(), max_err / scale);
  }
}

// A head size that is not a multiple of 16 (the attention kernel's unit): the backend pads it.
TEST(CpuForwardVariants, OddHeadSizeMatchesReference) {
  cf::ModelConfig c = cf::test::tiny_config();
  c.head_dim = 24;
  c.rope_dim = 24;
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 22, DType::F32));
  const auto tokens = some_tokens(12, w->config.vocab, 12);
  for (const Variant& variant : kVariants) {
    auto runner = make_runner(w, 2, 1, 16, 256, variant);
    const auto got = cf::teacher_forced_logits(runner, tokens);
    const auto want = cf::test::reference_logits(*w, tokens);
    if (variant.kv == DType::F32) {
      const auto report = cf::ref::check_tolerance<float>(got, want);
      EXPECT_TRUE(report.ok) << variant.name() << ": " << report.message;
    }
  }
}

TEST(CpuForwardVariants, BadOptionsAreClearErrors) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 23, DType::F32));
  cf::BackendOptions o;
  o.cpu_kv_type = DType::Q4_1;
  EXPECT_THROW(cf::create_backend("cpu", w, o), cf::InputError);
  o = {};
  o.cpu_isa = "sse9";
  EXPECT_THROW(cf::create_backend("cpu", w, o), cf::InputError);
}

TEST(CpuForwardContext, FullContextThrowsAndLeavesTheSequenceUsable) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 16, DType::F32));
  auto runner = make_runner(w, 1);
  const auto tokens = some_tokens(64, w->config.vocab, 9);
  runner.prefill(0, std::span(tokens).first(60));
  EXPECT_THROW(runner.prefill(0, std::span(tokens).subspan(60, 5)), cf::ContextFullError);
  EXPECT_EQ(runner.length(0), 60);
  runner.prefill(0, std::span(tokens).subspan(60, 4));
  EXPECT_EQ(runner.length(0), 64);
  const int32_t seq = 0, token = 1;
  EXPECT_THROW(runner.decode(std::span(&seq, 1), std::span(&token, 1)), cf::ContextFullError);
}

TEST(CpuForwardBackends, UnknownAndUnbuiltBackendsAreClearErrors) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 17, DType::F32));
  // Without CUDA in the build (or without a GPU) the cuda backend is an InputError saying why.
  if (const std::string why = cf::backend_unavailable_reason("cuda"); !why.empty()) {
    try {
      cf::create_backend("cuda", w, {});
      FAIL() << "cuda should not be creatable here";
    } catch (const cf::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(cf::create_backend("tpu", w, {}), cf::InputError);
}

TEST(CpuForwardBatch, InvalidBatchIsRejected) {
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(cf::test::tiny_config(), 18, DType::F32));
  auto backend = cf::create_backend("cpu", w, {});
  cf::Batch b;
  b.tokens = {5};
  b.positions = {0};
  b.token_seq = {0};
  b.kv_slot = {0};
  b.kv_len = {1};
  b.kv_indptr = {0, 1};
  b.kv_indices = {0};
  b.kv_last_page_len = {1};
  b.logit_tokens = {0};
  std::vector<float> logits(size_t(w->config.vocab));
  backend->forward(b, logits.data());
  b.tokens = {w->config.vocab};  // out of vocabulary
  EXPECT_THROW(backend->forward(b, logits.data()), cf::Error);
  b.tokens = {5};
  b.kv_len = {2};  // attends past the cached entries
  EXPECT_THROW(backend->forward(b, logits.data()), cf::Error);
}

}  // namespace
