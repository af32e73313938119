// The emu backend on DeepSeek-V2 models (the fused MLA block + dense FFN / MoE blocks + LM head on the CPU emulator)
// against the cpu backend: the tiny models of tests/data/deepseek in both file formats, q_lora null and set
// (docs/mla.md §3). The end-to-end rule of agreement.hpp (logits within tolerance at every step, greedy tokens equal
// except at near-ties) on lockstep decode of 1 and 2 sequences; two requests through the Scheduler; and
// `clusterfusion generate --backend emu` printing the cpu backend's greedy tokens.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "agreement.hpp"
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

Models load_models(const std::string& file) {
  auto w = std::make_shared<const cf::ModelWeights>(
      cf::ModelWeights::load(*cf::open_model_file(data_path(file)), cf::weight_load_options("emu")));
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

void expect_agreement(const std::string& file, uint64_t seed, int batch, int prompt, int length, int page_size) {
  const auto start = std::chrono::steady_clock::now();
  const Models m = load_models(file);
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
  EXPECT_GE(r.greedy_checked, 1) << "the greedy rule never bound: " << r.summary();
}

// q_lora null (DeepSeek-V2-Lite's query), split attn_k_b / attn_v_b, one sequence, pages of 4 (positions cross pages).
TEST(EmuDeepseek, TinyMlaGgufDecodeMatchesCpu) { expect_agreement("tiny_mla.gguf", 21, 1, 3, 12, 4); }

// q_lora set (DeepSeek-V2's), HF folder (one kv_b_proj matrix), two sequences in lockstep.
TEST(EmuDeepseek, TinyMlaQloraFolderTwoSequencesMatchCpu) {
  expect_agreement("tiny_mla_qlora/", 22, 2, 2, 9, 16);
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

// The command line: `generate --backend emu` prints the cpu backend's greedy tokens, from both formats and both models.
TEST(EmuDeepseek, GenerateOnTheEmuBackendPrintsTheCpuTokens) {
  for (const char* file : {"tiny_mla.gguf", "tiny_mla/", "tiny_mla_qlora.gguf", "tiny_mla_qlora/"}) {
    const std::string args =
        std::string(" -m ") + data_path(file) + " --raw --temp 0 -n 6 -c 64 -q -p 'Hello world'";
    const auto cpu = cf::test::run_cli("generate --backend cpu -t 1" + args);
    const auto emu = cf::test::run_cli("generate --backend emu" + args);
    ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
    ASSERT_EQ(emu.exit_code, 0) << emu.err;
    EXPECT_EQ(emu.out, cpu.out) << file;
  }
}

}  // namespace
