// The cuda (fused kernels + CUDA graphs) and cuda-unfused (cuBLAS + graphs) backends against the cpu backend, end
// to end, under the rule of agreement.hpp: teacher-forced lockstep decode of 1 and 4 sequences, >= 32 generated
// tokens each, logits within the end-to-end tolerance at every step, equal greedy tokens wherever the cpu's top-2
// margin allows. Models: the default model (SmolLM2-135M-Instruct Q4_1) when it is in the cache, else the model
// file $CF_GPU_TEST_MODEL (bench/gpu_first.sh points it at the default model cut to its first blocks by
// scripts/truncate_gguf.py: real tokenizer and Q4_1 weights), else a random Q4_1 model of its shape; random models of the SmolLM2 shape (head_dim 64, GQA 9/3) and of a small Llama shape with
// head_dim 128. Also: graph replay bit-identical to eager launches, batched prefill (cuda-unfused blocks) followed by
// decode, and prefill through the decode graphs bit-identical to lockstep decode.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "agreement.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "cpu/cpu_backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/gpu_backend.hpp"

namespace {

using cf::CudaMode;
using cf::device_layout::Storage;

constexpr int kGenerated = 32;  // greedy tokens after the prompt

bool skip_without_gpu() {
  const std::string why = cf::cuda_backend_unavailable_reason();
  if (why.empty()) return false;
  std::printf("[ skip ] %s\n", why.c_str());
  return true;
}
#define SKIP_WITHOUT_GPU() \
  if (skip_without_gpu()) GTEST_SKIP() << cf::cuda_backend_unavailable_reason()

cf::ModelConfig llama_hd128() {
  cf::ModelConfig c = cf::test::tiny_llama(cf::RopeStyle::NeoX);
  c.name = "llama-hd128";
  c.n_layers = 4;
  c.hidden = 1024;
  c.n_heads = 16;
  c.n_kv_heads = 4;
  c.head_dim = 128;
  c.rope_dim = 128;
  c.ffn_hidden = 2816;
  c.vocab = 4096;
  c.max_context = 256;
  return c;
}

// One model with its reference run: the streams and the cpu's logits after every token of every stream.
struct Subject {
  std::string name;
  std::shared_ptr<const cf::ModelWeights> device, reference;
  std::vector<std::vector<int32_t>> streams;
  int prompt = 0;
  std::vector<std::vector<std::vector<float>>> reference_logits;
};

cf::Runner cpu_runner(std::shared_ptr<const cf::ModelWeights> w, int max_seqs, int context) {
  cf::BackendOptions o;
  o.max_seqs = max_seqs;
  return cf::Runner(cf::make_cpu_backend(std::move(w), o), max_seqs, context);
}

Subject make_subject(const std::string& name, std::shared_ptr<const cf::ModelWeights> device,
                     std::vector<std::vector<int32_t>> prompts, int n_streams) {
  prompts.resize(size_t(n_streams));
  const auto t0 = std::chrono::steady_clock::now();
  Subject s;
  s.name = name;
  s.device = device;
  s.reference = std::make_shared<cf::ModelWeights>(
      cf::device_layout::rounded_copy(*device, cf::device_layout::choose_storage(*device)));
  s.prompt = int(prompts[0].size());
  const int length = s.prompt + kGenerated;
  cf::Runner cpu = cpu_runner(s.reference, n_streams, length + 8);
  // Each stream: its prompt, then the cpu's greedy continuation.
  for (auto& p : prompts) {
    cpu.reset(0);
    std::vector<float> logits = cpu.prefill(0, p);
    while (int(p.size()) < length) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      p.push_back(next);
      const int32_t seq = 0;
      logits = cpu.decode(std::span(&seq, 1), std::span(&next, 1));
    }
  }
  cpu.reset(0);
  s.streams = std::move(prompts);
  s.reference_logits = cf::test::lockstep_logits(cpu, s.streams);
  std::printf("[ ref  ] %s: %d stream(s) x %d tokens on the cpu backend in %.1f s\n", name.c_str(), n_streams, length,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return s;
}

constexpr int kMaxStreams = 4;

std::vector<std::vector<int32_t>> random_prompts(int vocab, int length, uint64_t seed) {
  cf::Rng rng(seed);
  std::vector<std::vector<int32_t>> p(kMaxStreams);
  for (auto& s : p)
    for (int i = 0; i < length; ++i) s.push_back(int32_t(rng.below(uint32_t(vocab))));
  return p;
}

// The model file of the "default" subject: the default model, else $CF_GPU_TEST_MODEL; empty when neither exists.
std::string model_file() {
  if (std::filesystem::exists(cf::default_model_path())) return cf::default_model_path();
  const char* env = std::getenv("CF_GPU_TEST_MODEL");
  if (env && *env && std::filesystem::exists(env)) return env;
  return {};
}

// Subjects are built once per process and stream count (the cpu reference is the slow part; ctest runs every case
// in its own process, so each builds only the streams it uses).
const Subject& subject(const std::string& which, int n_streams) {
  static std::map<std::pair<std::string, int>, Subject> cache;
  auto it = cache.find({which, n_streams});
  if (it != cache.end()) return it->second;
  Subject s;
  if (which == "default") {
    const std::string path = model_file();
    if (!path.empty()) {
      const cf::LoadedModel m = cf::load_model(path);
      std::vector<std::vector<int32_t>> prompts;
      for (const char* text : {"The capital of France is", "def fibonacci(n):", "Once upon a time, there was a",
                               "The three primary colours are"})
        prompts.push_back(m.tokenizer->encode(text, m.tokenizer->spec().add_bos, false));
      // Equal prompt lengths keep the streams in lockstep: pad the shorter ones with their first token.
      size_t longest = 0;
      for (const auto& p : prompts) longest = std::max(longest, p.size());
      for (auto& p : prompts)
        while (p.size() < longest) p.insert(p.begin(), p.front());
      s = make_subject("model file " + path, m.weights, prompts, n_streams);
    } else {
      std::printf("[ note ] no model file (default model not at %s, $CF_GPU_TEST_MODEL unset): a random Q4_1 model "
                  "of its shape instead\n",
                  cf::default_model_path().c_str());
      auto w = std::make_shared<cf::ModelWeights>(
          cf::ModelWeights::random(cf::model_preset("smollm2-135m"), 21, cf::DType::Q4_1));
      s = make_subject("random Q4_1 model of the SmolLM2-135M shape", w, random_prompts(w->config.vocab, 4, 22),
                       n_streams);
    }
  } else if (which == "smollm2") {
    auto w = std::make_shared<cf::ModelWeights>(
        cf::ModelWeights::random(cf::model_preset("smollm2-135m"), 31, cf::DType::F16));
    s = make_subject("random fp16 model of the SmolLM2-135M shape", w, random_prompts(w->config.vocab, 4, 32),
                     n_streams);
  } else {
    auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(llama_hd128(), 41, cf::DType::F16));
    s = make_subject("random fp16 Llama-shaped model, head_dim 128", w, random_prompts(w->config.vocab, 4, 42),
                     n_streams);
  }
  return cache.emplace(std::make_pair(which, n_streams), std::move(s)).first->second;
}

std::unique_ptr<cf::Backend> gpu_backend(CudaMode mode, std::shared_ptr<const cf::ModelWeights> w, int max_seqs,
                                         bool use_graphs = true, bool prefill_through_decode = false,
                                         int page_size = 16) {
  cf::gpu::GpuOptions o;
  o.max_seqs = max_seqs;
  o.page_size = page_size;
  o.kv_pages = max_seqs * ((w->config.max_context + page_size - 1) / page_size);
  o.max_positions = w->config.max_context;
  o.use_graphs = use_graphs;
  o.prefill_through_decode = prefill_through_decode;
  auto model = cf::gpu::DeviceModel::upload(*w);
  auto kv = std::make_shared<cf::gpu::DeviceKvCache>(o.kv_shape(w->config), w->config.is_mla());
  return std::make_unique<cf::gpu::GpuBackend>(mode, model, kv, o);
}

// One case per model (ctest runs each case in its own process: the model and its cpu reference are built once
// per case): both backends, batch 1 (the first stream) and batch 4.
class GpuAgreement : public testing::TestWithParam<std::string> {};

TEST_P(GpuAgreement, DecodeMatchesCpuGreedyAndLogits) {
  SKIP_WITHOUT_GPU();
  const Subject& s = subject(GetParam(), kMaxStreams);
  const int length = int(s.streams[0].size());
  const Storage storage = cf::device_layout::choose_storage(*s.device);
  for (CudaMode mode : {CudaMode::Fused, CudaMode::Unfused}) {
    for (int batch : {1, kMaxStreams}) {
      SCOPED_TRACE(std::string(cf::gpu::mode_name(mode)) + " batch " + std::to_string(batch));
      const std::vector<std::vector<int32_t>> streams(s.streams.begin(), s.streams.begin() + batch);
      const std::vector<std::vector<std::vector<float>>> want(s.reference_logits.begin(),
                                                              s.reference_logits.begin() + batch);
      cf::Runner runner(gpu_backend(mode, s.device, batch), batch, length + 8);
      const auto t0 = std::chrono::steady_clock::now();
      const auto got = cf::test::lockstep_logits(runner, streams);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto r = cf::test::compare_logits(got, want, streams, cf::test::end_to_end_tolerance(storage), s.prompt - 1);
      std::printf("[ agree ] %s, %s, batch %d: %s; %d decode steps in %.2f s\n", s.name.c_str(),
                  cf::gpu::mode_name(mode), batch, r.summary().c_str(), length, seconds);
      EXPECT_TRUE(r.ok) << r.first_failure << "\n" << r.summary();
      EXPECT_EQ(r.steps, batch * (kGenerated + 1));
      EXPECT_GE(r.greedy_checked, 1) << "the greedy rule never bound: " << r.summary();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GpuAgreement, testing::Values("default", "smollm2", "hd128"),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// DeepSeek-V2 on both GPU backends (cuda: the fused MLA and MoE plans; cuda-unfused: mla_block / moe_block; both in
// the decode graphs): the tiny models of tests/data/deepseek (q_lora null from the GGUF, q_lora set from the HF
// folder), their BF16 values converted to F16 at load, against the cpu backend; batch 1 and 2, pages of 4; graphs
// bit-identical to eager launches.
TEST(GpuBackend, DeepseekTinyModelsMatchCpu) {
  SKIP_WITHOUT_GPU();
  for (const char* file : {"tiny_mla.gguf", "tiny_mla_qlora/"}) {
    SCOPED_TRACE(file);
    cf::WeightLoadOptions load;
    load.convert_to = cf::DType::F16;
    const auto w = cf::load_model(std::string(CF_SOURCE_DIR) + "/tests/data/deepseek/" + file, load).weights;
    const auto reference = std::make_shared<const cf::ModelWeights>(cf::device_layout::rounded_copy(*w, Storage::F16));
    cf::Runner cpu = cpu_runner(reference, 2, 64);
    const auto streams = cf::test::greedy_streams(cpu, 2, 3, 3 + kGenerated, 41);
    const auto want = cf::test::lockstep_logits(cpu, streams);
    for (CudaMode mode : {CudaMode::Fused, CudaMode::Unfused}) {
      for (int batch : {1, 2}) {
        SCOPED_TRACE(std::string(cf::gpu::mode_name(mode)) + " batch " + std::to_string(batch));
        const std::vector<std::vector<int32_t>> some(streams.begin(), streams.begin() + batch);
        const std::vector<std::vector<std::vector<float>>> some_want(want.begin(), want.begin() + batch);
        cf::Runner graphs(gpu_backend(mode, w, batch, true, false, 4), batch, 64);
        cf::Runner eager(gpu_backend(mode, w, batch, false, false, 4), batch, 64);
        const auto got = cf::test::lockstep_logits(graphs, some);
        const auto r = cf::test::compare_logits(got, some_want, some, cf::test::end_to_end_tolerance(Storage::F16), 2);
        std::printf("[ agree ] %s, %s, batch %d: %s\n", file, cf::gpu::mode_name(mode), batch, r.summary().c_str());
        EXPECT_TRUE(r.ok) << r.first_failure << "\n" << r.summary();
        EXPECT_GE(r.greedy_checked, 1) << r.summary();
        const auto again = cf::test::lockstep_logits(eager, some);
        for (int b = 0; b < batch; ++b)
          for (size_t step = 0; step < got[size_t(b)].size(); ++step)
            EXPECT_TRUE(bit_equal(got[size_t(b)][step], again[size_t(b)][step])) << "batch " << b << " step " << step;
      }
    }
  }
}

TEST(GpuBackend, GraphReplayIsBitIdenticalToEagerLaunches) {
  SKIP_WITHOUT_GPU();
  const Subject& s = subject("hd128", 3);
  for (CudaMode mode : {CudaMode::Fused, CudaMode::Unfused}) {
    const std::vector<std::vector<int32_t>>& streams = s.streams;
    cf::Runner graphs(gpu_backend(mode, s.device, 3, /*use_graphs=*/true), 3);
    cf::Runner eager(gpu_backend(mode, s.device, 3, /*use_graphs=*/false), 3);
    const auto a = cf::test::lockstep_logits(graphs, streams);
    const auto b = cf::test::lockstep_logits(eager, streams);
    const auto again = cf::test::lockstep_logits(graphs, streams);  // replays of the same graphs, second pass
    for (size_t q = 0; q < a.size(); ++q)
      for (size_t step = 0; step < a[q].size(); ++step) {
        EXPECT_TRUE(bit_equal(a[q][step], b[q][step])) << cf::gpu::mode_name(mode) << " stream " << q << " step " << step;
        EXPECT_TRUE(bit_equal(a[q][step], again[q][step])) << cf::gpu::mode_name(mode) << " rerun, stream " << q;
      }
    auto* backend = dynamic_cast<cf::gpu::GpuBackend*>(&graphs.backend());
    ASSERT_NE(backend, nullptr);
    const int layers = s.device->config.n_layers;
    std::printf("[ graph ] %s: %zu nodes for batch 3 (%d layers); %s\n", cf::gpu::mode_name(mode),
                backend->graph_nodes(3), layers, backend->describe(3).c_str());
    if (mode == CudaMode::Fused) {
      EXPECT_GE(backend->graph_nodes(3), size_t(2 * layers + 2));
    }
    backend->check_status();
  }
}

TEST(GpuBackend, BatchedPrefillThenDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const Subject& s = subject("smollm2", 1);
  const std::vector<int32_t>& stream = s.streams[0];
  const int split = int(stream.size()) - 8;  // prefill all but the last 8 tokens in one batch, then decode them
  for (CudaMode mode : {CudaMode::Fused, CudaMode::Unfused}) {
    cf::Runner runner(gpu_backend(mode, s.device, 1), 1, int(stream.size()) + 8);
    const std::vector<float> prefill = runner.prefill(0, std::span(stream).first(size_t(split)), /*all_logits=*/true);
    std::vector<std::vector<std::vector<float>>> got(1), want(1);
    const size_t vocab = size_t(runner.vocab());
    for (int t = 0; t < split; ++t) {
      got[0].emplace_back(prefill.begin() + long(size_t(t) * vocab), prefill.begin() + long(size_t(t + 1) * vocab));
      want[0].push_back(s.reference_logits[0][size_t(t)]);
    }
    for (int t = split; t < int(stream.size()); ++t) {
      const int32_t seq = 0;
      got[0].push_back(runner.decode(std::span(&seq, 1), std::span(&stream[size_t(t)], 1)));
      want[0].push_back(s.reference_logits[0][size_t(t)]);
    }
    const auto r = cf::test::compare_logits(got, want, {stream},
                                            cf::test::end_to_end_tolerance(cf::device_layout::choose_storage(*s.device)));
    std::printf("[ prefill ] %s: %d tokens batched, then 8 decoded: %s\n", cf::gpu::mode_name(mode), split,
                r.summary().c_str());
    EXPECT_TRUE(r.ok) << cf::gpu::mode_name(mode) << ": " << r.first_failure;
  }
}

TEST(GpuBackend, PrefillThroughDecodeGraphsEqualsLockstepDecode) {
  SKIP_WITHOUT_GPU();
  const Subject& s = subject("hd128", 2);
  cf::Runner runner(gpu_backend(CudaMode::Fused, s.device, 1, true, /*prefill_through_decode=*/true, /*page=*/8), 1);
  const std::vector<int32_t>& stream = s.streams[1];
  const std::vector<float> prefill = cf::teacher_forced_logits(runner, stream);
  const auto decoded = cf::test::lockstep_logits(runner, {stream});
  const size_t vocab = size_t(runner.vocab());
  for (size_t t = 0; t < stream.size(); ++t)
    EXPECT_TRUE(std::equal(decoded[0][t].begin(), decoded[0][t].end(), prefill.begin() + long(t * vocab))) << t;
}

TEST(GpuBackend, FactoryRejectsUnsupportedShapesBeforeUploading) {
  SKIP_WITHOUT_GPU();
  cf::ModelConfig c = cf::test::tiny_llama();
  c.head_dim = 32;
  c.rope_dim = 32;
  c.hidden = 128;
  auto w = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 1, cf::DType::F32));
  try {
    cf::make_cuda_backend(CudaMode::Fused, w, {});
    FAIL() << "head_dim 32 should be rejected";
  } catch (const cf::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 32 is not supported"), std::string::npos) << e.what();
  }
}

TEST(GpuBackend, ChatOnTheModelFile) {
  SKIP_WITHOUT_GPU();
  const std::string path = model_file();
  if (path.empty()) GTEST_SKIP() << "no model file (default model or $CF_GPU_TEST_MODEL)";
  const cf::LoadedModel m = cf::load_model(path);
  const bool full_default_model = path == cf::default_model_path();
  for (CudaMode mode : {CudaMode::Fused, CudaMode::Unfused}) {
    cf::BackendOptions o;
    o.kv_pages = 64;  // 1024 positions
    cf::Runner runner(cf::make_cuda_backend(mode, m.weights, o), 1, 1024);
    cf::Generator generator(runner, m.tokenizer);
    cf::ChatSession chat(generator, cf::ChatTemplate::detect(m.chat_template));
    cf::GenerationOptions options;
    options.max_new_tokens = 20;  // greedy by default
    std::string reply, second;
    const auto stats = chat.send("What is the capital of France?", options, {}, &reply);
    const auto stats2 = chat.send("And of Italy?", options, {}, &second);  // the second turn reuses the cache
    std::printf("[ chat ] %s on %s: \"%s\" / \"%s\" (%d + %d tokens, %.0f tok/s)\n", cf::gpu::mode_name(mode),
                path.c_str(), reply.c_str(), second.c_str(), stats.generated_tokens, stats2.generated_tokens,
                stats2.generate_tokens_per_second());
    EXPECT_GE(stats.generated_tokens, 1);
    EXPECT_GE(stats2.generated_tokens, 1);
    if (full_default_model) {
      EXPECT_NE(reply.find("Paris"), std::string::npos) << reply;
    }
  }
}

}  // namespace
