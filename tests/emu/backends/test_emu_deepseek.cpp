// The emu backend on DeepSeek-V2 models (the fused MLA block + dense FFN / MoE blocks + LM head on the CPU emulator)
// against the cpu backend: the tiny models of tests/data/deepseek in both file formats, q_lora null and set
// (docs/mla.md §3). The end-to-end rule of agreement.hpp (logits within tolerance at every step, greedy tokens equal
// except at near-ties) on lockstep decode of 1 and 2 sequences; two requests through the Scheduler; and
// `clusterfusion generate --backend emu` printing the cpu backend's greedy tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "agreement.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/scheduler.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "cli_runner.hpp"  // tests/unit/cli

namespace {

using cf::device_layout::Storage;

std::string data_path(const std::string& name) { return std::string(CF_SOURCE_DIR) + "/tests/data/deepseek/" + name; }

// The model from a file as the device backends load it, and the cpu reference on exactly the rounded weights.
struct Models {
  std::shared_ptr<const cf::ModelWeights> device, reference;
};

// f16: the matrices converted to F16 at load (the same values: the files hold BF16 values that fp16 represents), so
// the device runs the fp16 kernels, whose tighter tolerance lets the greedy rule bind on these flat random models.
Models load_models(const std::string& file, bool f16 = false) {
  cf::WeightLoadOptions options = cf::weight_load_options("emu");
  if (f16) options.convert_to = cf::DType::F16;
  auto w = std::make_shared<const cf::ModelWeights>(
      cf::ModelWeights::load(*cf::open_model_file(data_path(file)), options));
  const Storage s = cf::device_layout::choose_storage(*w);
  return {w, std::make_shared<const cf::ModelWeights>(cf::device_layout::rounded_copy(*w, s))};
}

// Small pools: the tiny models' context is 163840 positions.
constexpr int kContext = 64;

cf::Runner make_runner(const std::string& backend, std::shared_ptr<const cf::ModelWeights> w, int max_seqs,
                       int page_size) {
  cf::BackendOptions o;
  o.max_seqs = max_seqs;
  o.page_size = page_size;
  o.kv_pages = max_seqs * ((kContext + page_size - 1) / page_size);
  o.threads = 1;
  return cf::Runner(cf::create_backend(backend, std::move(w), o), max_seqs, kContext);
}

void expect_agreement(const std::string& file, bool f16, uint64_t seed, int batch, int prompt, int length,
                      int page_size) {
  const auto start = std::chrono::steady_clock::now();
  const Models m = load_models(file, f16);
  cf::Runner cpu = make_runner("cpu", m.reference, batch, page_size);
  cf::Runner emu = make_runner("emu", m.device, batch, page_size);
  const auto streams = cf::test::greedy_streams(cpu, batch, prompt, length, seed);
  const auto want = cf::test::lockstep_logits(cpu, streams);
  const auto got = cf::test::lockstep_logits(emu, streams);
  const Storage storage = cf::device_layout::choose_storage(*m.device);
  const auto r = cf::test::compare_logits(got, want, streams, cf::test::end_to_end_tolerance(storage), prompt - 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ agree ] %s (%s), batch %d, page %d: %s (%.1f s)\n", file.c_str(),
              cf::device_layout::storage_name(storage), batch, page_size, r.summary().c_str(), seconds);
  EXPECT_TRUE(r.ok) << r.first_failure << "\n" << r.summary();
  EXPECT_GE(r.steps, batch * (length - prompt + 1));
  // bf16's bound (8% of the logits' rms and of the top logit, twice) is wider than these models' top-2 margins
  if (storage == Storage::F16) {
    EXPECT_GE(r.greedy_checked, 1) << "the greedy rule never bound: " << r.summary();
  }
}

// q_lora null (DeepSeek-V2-Lite's query), split attn_k_b / attn_v_b, one sequence, pages of 4 (positions cross pages);
// fp16 kernels, then the file's bf16.
TEST(EmuDeepseek, TinyMlaGgufDecodeMatchesCpu) {
  expect_agreement("tiny_mla.gguf", /*f16=*/true, 21, /*batch=*/1, /*prompt=*/3, /*length=*/20, /*page_size=*/4);
  expect_agreement("tiny_mla.gguf", /*f16=*/false, 23, 1, 3, 12, 4);
}

// q_lora set (DeepSeek-V2's), HF folder (one kv_b_proj matrix), two sequences in lockstep.
TEST(EmuDeepseek, TinyMlaQloraFolderTwoSequencesMatchCpu) {
  expect_agreement("tiny_mla_qlora/", /*f16=*/true, 22, /*batch=*/2, /*prompt=*/2, /*length=*/14, /*page_size=*/16);
  expect_agreement("tiny_mla_qlora/", /*f16=*/false, 24, 2, 2, 8, 16);
}

// Both file forms give the device the same weights (w_uk / w_uv from the split tensors or from kv_b).
TEST(EmuDeepseek, GgufAndFolderUploadTheSameLayouts) {
  for (const char* name : {"tiny_mla", "tiny_mla_qlora"}) {
    const Models gguf = load_models(std::string(name) + ".gguf");
    const Models folder = load_models(std::string(name) + "/");
    const cf::ModelConfig& c = gguf.device->config;
    for (int layer = 0; layer < c.n_layers; ++layer) {
      const auto a = cf::device_layout::convert_mla_layer(gguf.device->layers[size_t(layer)], c, Storage::BF16);
      const auto b = cf::device_layout::convert_mla_layer(folder.device->layers[size_t(layer)],
                                                          folder.device->config, Storage::BF16);
      EXPECT_EQ(a.w_uk, b.w_uk) << name << " layer " << layer;
      EXPECT_EQ(a.w_uv, b.w_uv) << name << " layer " << layer;
      EXPECT_EQ(a.w_kv_a, b.w_kv_a) << name << " layer " << layer;
    }
  }
}

// Two greedy requests decoded together by the server's scheduler on the emu backend print what the cpu backend
// prints for each alone (the tiny models' LM head keeps greedy steps away from ties: tests/data/deepseek/README.md).
TEST(EmuDeepseek, TwoRequestsThroughTheScheduler) {
  const auto loaded = cf::load_model(data_path("tiny_mla.gguf"));
  const Models m = load_models("tiny_mla.gguf");
  cf::Runner emu = make_runner("emu", m.device, 2, 8);
  cf::Scheduler scheduler(emu, loaded.tokenizer, {});
  cf::GenerationRequest a, b;
  a.prompt = loaded.tokenizer->encode("The capital of France", true, false);
  b.prompt = loaded.tokenizer->encode("one two", true, false);
  a.max_new_tokens = 6;
  b.max_new_tokens = 8;
  a.sampling.temperature = b.sampling.temperature = 0.0f;
  auto first = scheduler.submit(a), second = scheduler.submit(b);
  for (auto [request, stream] : {std::pair{&a, first}, std::pair{&b, second}}) {
    std::string text;
    for (int waited = 0; waited < 6000; ++waited) {
      const auto u = stream->next(std::chrono::milliseconds(50));
      text += u.text;
      if (u.outcome) break;
    }
    cf::Runner cpu = make_runner("cpu", m.reference, 1, 8);
    cf::Generator alone(cpu, loaded.tokenizer);
    cf::GenerationOptions o;
    o.max_new_tokens = request->max_new_tokens;
    o.sampling = request->sampling;
    std::string want;
    alone.generate(request->prompt, o, [&](std::string_view t) {
      want += t;
      return true;
    });
    EXPECT_EQ(text, want);
  }
  EXPECT_GT(scheduler.stats().decode_rows, scheduler.stats().decode_steps) << "the two requests never shared a step";
}

// The command line: `generate --backend emu` on every tiny model file prints greedy tokens that the cpu backend,
// teacher-forced on them, would have chosen too, except at near-ties (its top-2 margin within twice the end-to-end
// bound of the storage type: agreement.hpp's rule, the emu's logits being within that bound).
TEST(EmuDeepseek, GenerateOnTheEmuBackendFollowsTheCpuGreedyTokens) {
  const std::string prompt = "Hello world";
  for (const char* file : {"tiny_mla.gguf", "tiny_mla/", "tiny_mla_qlora.gguf", "tiny_mla_qlora/"}) {
    const auto emu = cf::test::run_cli("generate --backend emu -m " + data_path(file) +
                                       " --raw --temp 0 -n 8 -c 64 -q --logprobs 0 -p '" + prompt + "'");
    ASSERT_EQ(emu.exit_code, 0) << emu.err;
    std::vector<int32_t> generated;
    size_t begin = 0;
    for (size_t end; (end = emu.out.find('\n', begin)) != std::string::npos; begin = end + 1)
      generated.push_back(int32_t(cf::json::parse(emu.out.substr(begin, end - begin)).at("id").as_int()));
    ASSERT_FALSE(generated.empty()) << emu.out;

    const auto loaded = cf::load_model(data_path(file));
    const Models m = load_models(file);
    std::vector<int32_t> tokens = loaded.tokenizer->encode(prompt, loaded.tokenizer->spec().add_bos, false);
    const size_t n_prompt = tokens.size();
    tokens.insert(tokens.end(), generated.begin(), generated.end());
    cf::Runner cpu = make_runner("cpu", m.reference, 1, 16);
    const std::vector<float> logits = cf::teacher_forced_logits(cpu, tokens);
    const size_t vocab = size_t(cpu.vocab());
    const auto tol = cf::test::end_to_end_tolerance(cf::device_layout::choose_storage(*m.device));
    int equal = 0;
    for (size_t k = 0; k < generated.size(); ++k) {
      const float* row = logits.data() + (n_prompt - 1 + k) * vocab;
      const size_t top = size_t(std::max_element(row, row + vocab) - row);
      if (int32_t(top) == generated[k]) {
        ++equal;
        continue;
      }
      double squares = 0.0;
      for (size_t i = 0; i < vocab; ++i) squares += double(row[i]) * row[i];
      const double bound = tol.atol_rms * std::sqrt(squares / double(vocab)) + tol.rtol * std::fabs(row[top]);
      EXPECT_LE(double(row[top]) - double(row[generated[k]]), 2.0 * bound)
          << file << ": token " << k << " is " << generated[k] << ", the cpu's " << top << " is no near-tie";
    }
    std::printf("[ cli   ] %s: %d of %zu greedy tokens equal to the cpu's\n", file, equal, generated.size());
    EXPECT_GE(equal, 1) << file;
  }
}

}  // namespace
