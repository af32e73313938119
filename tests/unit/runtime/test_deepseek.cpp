// DeepSeek-V2 models (MLA + MoE, docs/mla.md) from file to logits: config parsing (GGUF deepseek2, HF deepseek_v2)
// and its refusals, loading of every file form through the weight table, and the cpu backend against the goldens of
// tests/data/golden/deepseek/ (the float64 oracle and llama.cpp's F32 greedy runs, recorded by
// scripts/record_deepseek_golden.py) under the comparison rule of its README.md.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/model/deepseek.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/reference/tolerance.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "gguf_writer.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

namespace {

using cf::test::expect_input_error;

std::string data_path(const std::string& rel) { return std::string(CF_SOURCE_DIR) + "/tests/data/" + rel; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

cf::json::Value read_json(const std::string& path) { return cf::json::parse(read_text(path)); }

// The three files of tiny_mla and the two of tiny_mla_qlora.
std::vector<std::string> model_files(const std::string& name) {
  std::vector<std::string> files = {data_path("deepseek/" + name + ".gguf"), data_path("deepseek/" + name)};
  if (name == "tiny_mla") files.push_back(data_path("deepseek/tiny_mla_legacy_kv_b.gguf"));
  return files;
}

// ---- config ------------------------------------------------------------------------------------------------------

TEST(DeepseekConfig, EveryFileOfTinyMla) {
  for (const std::string& path : model_files("tiny_mla")) {
    SCOPED_TRACE(path);
    const auto file = cf::open_model_file(path);
    const cf::ModelConfig& c = file->config();
    EXPECT_EQ(c.arch, "deepseek2");
    EXPECT_TRUE(c.is_mla());
    EXPECT_EQ(c.n_layers, 3);
    EXPECT_EQ(c.hidden, 64);
    EXPECT_EQ(c.n_heads, 4);
    EXPECT_EQ(c.head_dim, 40);
    EXPECT_EQ(c.rope_dim, 16);
    EXPECT_EQ(c.rope_style, cf::RopeStyle::GPTJ);
    EXPECT_EQ(c.mla.q_lora_rank, 0);
    EXPECT_EQ(c.mla.kv_lora_rank, 32);
    EXPECT_EQ(c.mla.qk_nope, 24);
    EXPECT_EQ(c.mla.v_head, 12);
    EXPECT_EQ(c.mla.split_kv_b, path.ends_with("tiny_mla.gguf"));
    EXPECT_EQ(c.cache_values_per_token(), 48);
    EXPECT_EQ(c.ffn_hidden, 96);
    EXPECT_EQ(c.vocab, 600);
    EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
    EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
    EXPECT_FLOAT_EQ(c.yarn.factor, 40.0f);
    EXPECT_EQ(c.yarn.original_context, 4096);
    EXPECT_FLOAT_EQ(c.yarn.beta_fast, 32.0f);
    EXPECT_FLOAT_EQ(c.yarn.beta_slow, 1.0f);
    EXPECT_NEAR(c.yarn.mscale, 0.707f, 1e-6);
    EXPECT_NEAR(c.yarn.mscale_all_dim, 0.707f, 1e-6);
    EXPECT_EQ(c.moe.n_experts, 6);
    EXPECT_EQ(c.moe.top_k, 2);
    EXPECT_EQ(c.moe.n_shared, 2);
    EXPECT_EQ(c.moe.first_dense, 1);
    EXPECT_EQ(c.moe.expert_ffn, 16);
    EXPECT_TRUE(c.moe.norm_topk_prob);
    EXPECT_FLOAT_EQ(c.moe.routed_scaling, 1.0f);
    EXPECT_EQ(c.moe.method, cf::TopkMethod::Greedy);
    EXPECT_EQ(c.layer_spec(0).ffn, cf::FfnKind::SwiGlu);
    EXPECT_EQ(c.layer_spec(1).ffn, cf::FfnKind::Moe);
    EXPECT_EQ(c.layer_spec(2).attention, cf::AttentionKind::Mla);
    const std::string summary = c.summary();
    for (const char* want : {"MLA attention, SwiGLU / MoE FFN", "kv_lora_rank 32", "48 values per token",
                             "6 routed experts (top 2, greedy", "factor 40"})
      EXPECT_NE(summary.find(want), std::string::npos) << want << " not in:\n" << summary;
  }
}

TEST(DeepseekConfig, QLoraModelScalesWithoutRenormalising) {
  for (const std::string& path : model_files("tiny_mla_qlora")) {
    SCOPED_TRACE(path);
    const auto file = cf::open_model_file(path);
    const cf::ModelConfig& c = file->config();
    EXPECT_EQ(c.mla.q_lora_rank, 56);
    EXPECT_FALSE(c.moe.norm_topk_prob);
    EXPECT_FLOAT_EQ(c.moe.routed_scaling, 2.5f);
  }
}

// One field of tiny_mla's config.json replaced: a one-line error naming it (or, for the valid ones, a config).
cf::ModelConfig hf_config_with(const std::string& from, const std::string& to) {
  std::string text = read_text(data_path("deepseek/tiny_mla/config.json"));
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return cf::config_from_hf_json(cf::json::parse(text), "config.json");
}

TEST(DeepseekConfig, BadHuggingFaceValuesAreOneLineErrors) {
  const struct {
    const char* from;
    const char* to;
    const char* error;
  } cases[] = {
      {"\"kv_lora_rank\": 32", "\"kv_lora_rank\": 0", "kv_lora_rank = 0"},
      {"\"qk_rope_head_dim\": 16", "\"qk_rope_head_dim\": 15", "rope_dim = 15: must be even"},
      {"\"v_head_dim\": 12", "\"v_head_dim\": -1", "v_head_dim = -1 is out of range"},
      {"\"q_lora_rank\": null", "\"q_lora_rank\": 0", "q_lora_rank = 0"},
      {"\"q_lora_rank\": null", "\"q_lora_rank\": \"big\"", "q_lora_rank must be an integer"},
      {"\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 7", "num_experts_per_tok = 7: expected 1..6"},
      {"\"first_k_dense_replace\": 1", "\"first_k_dense_replace\": 4", "first_k_dense_replace = 4"},
      {"\"moe_intermediate_size\": 16", "\"moe_intermediate_size\": 0", "moe_intermediate_size = 0"},
      {"\"topk_method\": \"greedy\"", "\"topk_method\": \"noaux_tc\"", "topk_method 'noaux_tc' is not supported"},
      {"\"topk_method\": \"greedy\"", "\"topk_method\": \"group_limited_greedy\", \"n_group\": 4",
       "n_group = 4: must divide n_routed_experts = 6"},
      {"\"scoring_func\": \"softmax\"", "\"scoring_func\": \"sigmoid\"", "scoring_func 'sigmoid' is not supported"},
      {"\"moe_layer_freq\": 1", "\"moe_layer_freq\": 2", "moe_layer_freq must be 1"},
      {"\"attention_bias\": false", "\"attention_bias\": true", "attention_bias is not supported"},
      {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act must be \"silu\""},
      {"\"type\": \"yarn\"", "\"type\": \"linear\"", "rope_scaling type 'linear' is not supported"},
      {"\"factor\": 40", "\"factor\": 0.5", "rope_scaling.factor = 0.5"},
      {"\"beta_fast\": 32", "\"beta_fast\": -32", "beta_fast = -32"},
      {"\"original_max_position_embeddings\": 4096", "\"original_max_position_embeddings\": 0",
       "original_max_position_embeddings = 0"},
      {"\"routed_scaling_factor\": 1.0", "\"routed_scaling_factor\": \"x\"", "routed_scaling_factor must be a number"},
  };
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.to);
    expect_input_error([&] { hf_config_with(bad.from, bad.to); }, {"config.json", bad.error});
  }
  // with norm_topk_prob the authors' code does not scale: a factor is ignored, not an error
  EXPECT_FLOAT_EQ(hf_config_with("\"routed_scaling_factor\": 1.0", "\"routed_scaling_factor\": 16.0").moe.routed_scaling, 1.0f);
}

TEST(DeepseekConfig, GroupLimitedGreedy) {
  const cf::ModelConfig c = hf_config_with("\"n_group\": 1", "\"n_group\": 3");
  EXPECT_EQ(c.moe.method, cf::TopkMethod::Greedy);  // n_group alone changes nothing
  const cf::ModelConfig g = hf_config_with(
      "\"topk_method\": \"greedy\"", "\"topk_method\": \"group_limited_greedy\", \"n_group\": 3, \"topk_group\": 2");
  EXPECT_EQ(g.moe.method, cf::TopkMethod::GroupLimitedGreedy);
  EXPECT_EQ(g.moe.n_group, 3);
  EXPECT_EQ(g.moe.topk_group, 2);
  expect_input_error([&] {
    hf_config_with("\"topk_method\": \"greedy\"",
                   "\"topk_method\": \"group_limited_greedy\", \"n_group\": 3, \"topk_group\": 4");
  }, {"topk_group = 4: expected 1..3"});
}

// A deepseek2 GGUF's metadata (tiny_mla's, as the pinned converter writes it) with some keys replaced or removed,
// and a placeholder for the given tensors: enough for config_from_gguf.
using MetaValue = std::variant<std::monostate, int64_t, double, bool, std::string>;  // monostate: remove the key

cf::ModelConfig gguf_config_with(const std::vector<std::pair<std::string, MetaValue>>& changes,
                                 const std::vector<std::string>& tensors = {"blk.0.attn_k_b.weight", "output.weight"}) {
  std::vector<std::pair<std::string, MetaValue>> meta = {
      {"block_count", int64_t(3)}, {"context_length", int64_t(4096)}, {"embedding_length", int64_t(64)},
      {"feed_forward_length", int64_t(96)}, {"attention.head_count", int64_t(4)},
      {"attention.head_count_kv", int64_t(1)}, {"rope.freq_base", 10000.0},
      {"attention.layer_norm_rms_epsilon", 1e-6}, {"expert_used_count", int64_t(2)},
      {"leading_dense_block_count", int64_t(1)}, {"vocab_size", int64_t(600)},
      {"attention.kv_lora_rank", int64_t(32)}, {"attention.key_length", int64_t(48)},
      {"attention.value_length", int64_t(32)}, {"attention.key_length_mla", int64_t(40)},
      {"attention.value_length_mla", int64_t(12)}, {"expert_feed_forward_length", int64_t(16)},
      {"expert_count", int64_t(6)}, {"expert_shared_count", int64_t(2)}, {"expert_weights_scale", 1.0},
      {"expert_weights_norm", true}, {"expert_gating_func", int64_t(1)}, {"rope.dimension_count", int64_t(16)},
      {"rope.scaling.type", std::string("yarn")}, {"rope.scaling.factor", 40.0},
      {"rope.scaling.original_context_length", int64_t(4096)}, {"rope.scaling.yarn_log_multiplier", 0.0707}};
  for (const auto& [key, value] : changes) {
    bool found = false;
    for (auto& [k, v] : meta)
      if (k == key) v = value, found = true;
    if (!found) meta.emplace_back(key, value);
  }
  cf::test::GgufWriter w;
  w.add_string("general.architecture", "deepseek2");
  for (const auto& [key, value] : meta) {
    const std::string k = "deepseek2." + key;
    if (const auto* i = std::get_if<int64_t>(&value)) w.add_u32(k, uint32_t(*i));
    else if (const auto* d = std::get_if<double>(&value)) w.add_f32(k, float(*d));
    else if (const auto* b = std::get_if<bool>(&value)) w.add_bool(k, *b);
    else if (const auto* str = std::get_if<std::string>(&value)) w.add_string(k, *str);
  }
  for (const std::string& name : tensors) w.add_f32_tensor(name, {1}, {0.0f});
  static std::vector<uint8_t> bytes;  // alive while the GgufFile is read
  bytes = w.build();
  const cf::GgufFile f = cf::GgufFile::from_memory("test.gguf", bytes.data(), bytes.size());
  return cf::config_from_gguf(f);
}

TEST(DeepseekConfig, BadGgufValuesAreOneLineErrors) {
  const cf::ModelConfig ok = gguf_config_with({});
  EXPECT_EQ(ok.mla.qk_nope, 24);
  EXPECT_TRUE(ok.mla.split_kv_b);
  EXPECT_NEAR(ok.yarn.mscale_all_dim, 0.707f, 1e-5);
  EXPECT_FALSE(gguf_config_with({}, {"blk.0.attn_kv_b.weight"}).mla.split_kv_b);
  EXPECT_EQ(gguf_config_with({{"attention.q_lora_rank", int64_t(48)}}).mla.q_lora_rank, 48);
  const struct {
    std::vector<std::pair<std::string, MetaValue>> changes;
    std::vector<std::string> tensors;
    const char* error;
  } cases[] = {
      {{{"expert_gating_func", int64_t(2)}}, {"blk.0.attn_k_b.weight"}, "expert_gating_func 2 is not supported"},
      {{{"expert_group_count", int64_t(8)}, {"expert_group_used_count", int64_t(3)}}, {"blk.0.attn_k_b.weight"},
       "expert groups"},
      {{{"rope.scaling.type", std::string("linear")}}, {"blk.0.attn_k_b.weight"}, "RoPE scaling 'linear'"},
      {{{"attention.key_length_mla", int64_t(16)}}, {"blk.0.attn_k_b.weight"}, "must exceed rope.dimension_count"},
      {{{"attention.key_length_mla", {}}, {"attention.value_length_mla", {}}}, {"blk.0.attn_k_b.weight"},
       "re-convert"},
      {{{"attention.kv_lora_rank", {}}}, {"blk.0.attn_k_b.weight"}, "missing metadata 'deepseek2.attention.kv_lora_rank'"},
      {{{"attention.kv_lora_rank", int64_t(0)}}, {"blk.0.attn_k_b.weight"}, "kv_lora_rank = 0"},
      {{{"expert_used_count", int64_t(7)}}, {"blk.0.attn_k_b.weight"}, "num_experts_per_tok = 7"},
      {{{"leading_dense_block_count", int64_t(9)}}, {"blk.0.attn_k_b.weight"}, "first_k_dense_replace = 9"},
      {{{"rope.scaling.factor", {}}}, {"blk.0.attn_k_b.weight"}, "rope.scaling.factor"},
      {{}, {"output.weight"}, "missing tensor 'blk.0.attn_kv_b.weight'"},
      {{}, {"blk.0.attn_k_b.weight", "blk.1.exp_probs_b.bias"}, "exp_probs_b"},
  };
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.error);
    expect_input_error([&] { gguf_config_with(bad.changes, bad.tensors); }, {"test.gguf", bad.error});
  }
}

// ---- loading ----------------------------------------------------------------------------------------------------

// Every file of a model loads; the matrices are those of the HF folder (kv_b_proj as the split k_b / v_b of the
// current GGUF: W_UK transposed per head, W_UV as it is).
TEST(DeepseekLoad, EveryFileHoldsTheSameWeights) {
  for (const std::string name : {"tiny_mla", "tiny_mla_qlora"}) {
    const auto hf = cf::ModelWeights::load(*cf::open_model_file(data_path("deepseek/" + name)));
    const cf::ModelConfig& c = hf.config;
    for (const std::string& path : model_files(name)) {
      SCOPED_TRACE(path);
      const auto w = cf::ModelWeights::load(*cf::open_model_file(path));
      ASSERT_EQ(w.layers.size(), 3u);
      int compared = 0;
      for (const cf::WeightEntry& e : cf::weight_table(w.config)) {
        if (e.form == cf::WeightForm::Vector) {
          EXPECT_EQ(w.vector(e), hf.vector(e)) << e.name;
          continue;
        }
        if (e.slot == cf::WeightSlot::AttnKB || e.slot == cf::WeightSlot::AttnVB) continue;  // below
        const cf::WeightMatrix& m = w.matrix(e);
        ASSERT_EQ(m.rows * m.cols, hf.matrix(e).rows * hf.matrix(e).cols) << e.name;
        EXPECT_EQ(m.dequantized(), hf.matrix(e).dequantized()) << e.name;
        ++compared;
      }
      EXPECT_GT(compared, 20);
      if (!w.config.mla.split_kv_b) continue;
      const int heads = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope, v = c.mla.v_head;
      for (int l = 0; l < c.n_layers; ++l) {
        const auto kv_b = hf.layers[size_t(l)].attn_kv_b.dequantized();
        const auto k_b = w.layers[size_t(l)].attn_k_b.dequantized(), v_b = w.layers[size_t(l)].attn_v_b.dequantized();
        for (int h = 0; h < heads; ++h)
          for (int col = 0; col < r; ++col) {
            for (int n = 0; n < nope; ++n)
              ASSERT_EQ(k_b[(size_t(h) * r + col) * nope + n], kv_b[(size_t(h) * (nope + v) + n) * r + col]);
            for (int j = 0; j < v; ++j)
              ASSERT_EQ(v_b[(size_t(h) * v + j) * r + col], kv_b[(size_t(h) * (nope + v) + nope + j) * r + col]);
          }
      }
    }
  }
}

TEST(DeepseekLoad, RouterKeepsItsTypeWhenConverting) {
  cf::WeightLoadOptions o;
  o.convert_to = cf::DType::F16;
  const auto w = cf::ModelWeights::load(*cf::open_model_file(data_path("deepseek/tiny_mla.gguf")), o);
  EXPECT_EQ(w.layers[1].ffn_router.dtype, cf::DType::F32);
  EXPECT_EQ(w.layers[1].ffn_gate_exps.dtype, cf::DType::F16);
  EXPECT_EQ(w.layers[1].ffn_gate_exps.rows, 6 * 16);
  EXPECT_EQ(w.layers[1].ffn_down_exps.rows, 6 * 64);
  EXPECT_TRUE(w.layers[0].ffn_router.empty());  // the dense layer
}

TEST(DeepseekLoad, GpuBackendsWithoutAGpuRefuseClearly) {
  auto w = std::make_shared<const cf::ModelWeights>(
      cf::ModelWeights::load(*cf::open_model_file(data_path("deepseek/tiny_mla.gguf"))));
  // Every device backend runs DeepSeek-V2 models (emu: tests/emu/backends/test_emu_deepseek.cpp; cuda and
  // cuda-unfused: tests/gpu/backends/test_backends_gpu.cpp); without a usable GPU the GPU ones say why.
  for (const char* gpu : {"cuda", "cuda-unfused"}) {
    const std::string unavailable = cf::backend_unavailable_reason(gpu);
    if (unavailable.empty()) {
      EXPECT_NE(cf::create_backend(gpu, w, {}), nullptr) << gpu;
      continue;
    }
    expect_input_error([&] { cf::create_backend(gpu, w, {}); }, {std::string("--backend ") + gpu, unavailable});
  }
}

// ---- cpu backend against the goldens ------------------------------------------------------------------------------

std::shared_ptr<const cf::ModelWeights> load_for_cpu(const std::string& path) {
  const auto file = cf::open_model_file(path);
  return std::make_shared<const cf::ModelWeights>(cf::ModelWeights::load(*file, cf::weight_load_options("cpu")));
}

cf::Runner cpu_runner(std::shared_ptr<const cf::ModelWeights> w, int threads, int max_batch_tokens = 256,
                      cf::DType kv = cf::DType::F32,
                      cf::CpuArithmetic arithmetic = cf::BackendOptions{}.cpu_arithmetic) {
  cf::BackendOptions o;
  o.cpu_arithmetic = arithmetic;
  o.threads = threads;
  o.page_size = 16;
  o.kv_pages = 16;
  o.max_batch_tokens = max_batch_tokens;
  o.cpu_kv_type = kv;
  return cf::Runner(cf::create_backend("cpu", std::move(w), o), 1, 256);
}

using cf::test::bit_equal;

class DeepseekCpu : public ::testing::TestWithParam<std::string> {};

// Teacher-forced on every golden prompt + continuation: within 1e-3 of the float64 oracle at the top-10 ids and the
// log-sum-exp, the oracle's argmax wherever its top-2 margin exceeds 2e-3 (rule 1); every file gives the same bits.
TEST_P(DeepseekCpu, TeacherForcedLogitsMatchTheOracle) {
  const std::string name = GetParam();
  const auto golden = read_json(data_path("golden/deepseek/" + name + ".json"));
  std::vector<std::shared_ptr<const cf::ModelWeights>> models;
  for (const std::string& path : model_files(name)) models.push_back(load_for_cpu(path));
  const int vocab = models[0]->config.vocab;
  int rows = 0, argmax_checked = 0;
  double worst_logit = 0.0, worst_lse = 0.0;
  for (const auto& p : golden.at("prompts").as_array()) {
    std::vector<int32_t> tokens;
    for (const auto& t : p.at("prompt_tokens").as_array()) tokens.push_back(int32_t(t.as_int()));
    for (const auto& t : p.at("generated_tokens").as_array()) tokens.push_back(int32_t(t.as_int()));
    tokens.pop_back();  // row r predicts token r + 1
    const std::string prompt = p.at("name").as_string();
    auto runner = cpu_runner(models[0], 2);
    const std::vector<float> logits = cf::teacher_forced_logits(runner, tokens);
    for (size_t m = 1; m < models.size(); ++m) {
      auto other = cpu_runner(models[m], 2);
      EXPECT_TRUE(bit_equal(logits, cf::teacher_forced_logits(other, tokens))) << prompt << ": file " << m << " differs";
    }
    const auto& top_ids = p.at("llama_cpp_bf16").at("top_ids").as_array();
    const auto& oracle = p.at("numpy_fp64");
    ASSERT_EQ(top_ids.size(), tokens.size()) << prompt;
    for (size_t r = 0; r < tokens.size(); ++r, ++rows) {
      const float* row = logits.data() + r * size_t(vocab);
      const auto& want = oracle.at("logits_at_top_ids").as_array()[r].as_array();
      for (size_t k = 0; k < want.size(); ++k) {
        const int id = int(top_ids[r].as_array()[k].as_int());
        EXPECT_NEAR(row[id], want[k].as_number(), 1e-3) << prompt << " row " << r << " id " << id;
        worst_logit = std::fmax(worst_logit, std::fabs(row[id] - want[k].as_number()));
      }
      double max_logit = -1e30, sum = 0.0;
      for (int i = 0; i < vocab; ++i) max_logit = std::fmax(max_logit, double(row[i]));
      for (int i = 0; i < vocab; ++i) sum += std::exp(double(row[i]) - max_logit);
      const double lse = max_logit + std::log(sum);
      EXPECT_NEAR(lse, oracle.at("lse").as_array()[r].as_number(), 1e-3) << prompt << " row " << r;
      worst_lse = std::fmax(worst_lse, std::fabs(lse - oracle.at("lse").as_array()[r].as_number()));
      if (oracle.at("top2_margin").as_array()[r].as_number() > 2e-3) {
        EXPECT_EQ(cf::ref::argmax(row, vocab), oracle.at("argmax").as_array()[r].as_int()) << prompt << " row " << r;
        ++argmax_checked;
      }
    }
  }
  EXPECT_GT(rows, 200);
  EXPECT_GT(argmax_checked, rows * 9 / 10);
  std::printf("%s: %d rows, max |cpu - fp64 oracle| %.2e at the top-10 ids, %.2e on the lse; argmax checked on %d\n",
              name.c_str(), rows, worst_logit, worst_lse, argmax_checked);
}

// Free-running greedy decoding from each prompt equals llama.cpp F32's own continuation up to the first step whose
// fp64 top-2 margin is below 2e-3 (rule 3; none is, in these goldens).
TEST_P(DeepseekCpu, GreedyContinuationMatchesLlamaCppF32) {
  const std::string name = GetParam();
  const auto golden = read_json(data_path("golden/deepseek/" + name + ".json"));
  auto w = load_for_cpu(data_path("deepseek/" + name + ".gguf"));
  int compared = 0;
  for (const auto& p : golden.at("prompts").as_array()) {
    const auto& want = p.at("f32_greedy").at("generated_tokens").as_array();
    const auto& margins = p.at("f32_greedy").at("top2_margin_fp64").as_array();
    std::vector<int32_t> prompt;
    for (const auto& t : p.at("prompt_tokens").as_array()) prompt.push_back(int32_t(t.as_int()));
    auto runner = cpu_runner(w, 2);
    std::vector<float> logits = runner.prefill(0, prompt);
    for (size_t step = 0; step < want.size(); ++step) {
      if (margins[step].as_number() < 2e-3) break;
      int32_t token = int32_t(cf::ref::argmax(logits.data(), int(logits.size())));
      ASSERT_EQ(token, want[step].as_int()) << p.at("name").as_string() << " step " << step;
      ++compared;
      const int32_t seq = 0;
      logits = runner.decode(std::span(&seq, 1), std::span(&token, 1));
    }
  }
  EXPECT_GT(compared, 150);
}

// Prefill = token-by-token decode = any chunking, bit for bit; the same bits for any thread count; an F16 latent
// cache stays close.
TEST_P(DeepseekCpu, DeterministicAcrossBatchingAndThreads) {
  const std::string name = GetParam();
  auto w = load_for_cpu(data_path("deepseek/" + name + ".gguf"));
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(int32_t((i * 37 + 11) % w->config.vocab));
  auto prefill_runner = cpu_runner(w, 2);
  const auto prefilled = cf::teacher_forced_logits(prefill_runner, tokens);
  auto step_runner = cpu_runner(w, 2);
  EXPECT_TRUE(bit_equal(prefilled, cf::test::token_by_token_logits(step_runner, tokens)));
  auto chunked = cpu_runner(w, 2, 3);
  EXPECT_TRUE(bit_equal(prefilled, cf::teacher_forced_logits(chunked, tokens)));
  for (int threads : {1, 3}) {
    auto other = cpu_runner(w, threads);
    EXPECT_TRUE(bit_equal(prefilled, cf::teacher_forced_logits(other, tokens))) << threads << " threads";
  }
  auto half = cpu_runner(w, 2, 256, cf::DType::F16);
  const auto f16 = cf::teacher_forced_logits(half, tokens);
  double worst = 0.0;
  for (size_t i = 0; i < f16.size(); ++i) worst = std::fmax(worst, std::fabs(double(f16[i]) - prefilled[i]));
  EXPECT_LT(worst, 0.05);
  EXPECT_GT(worst, 0.0);  // the F16 cache is used
}

// Lockstep decode of four sequences (their tokens grouped by expert inside the step) gives each the bits it gets alone;
// so does every kernel level this CPU has.
TEST_P(DeepseekCpu, LockstepDecodeEqualsEachSequenceAloneOnEveryLevel) {
  auto w = load_for_cpu(data_path("deepseek/" + GetParam() + ".gguf"));
  const size_t v = size_t(w->config.vocab);
  cf::BackendOptions o;
  o.threads = 2;
  o.max_seqs = 4;
  o.page_size = 4;
  cf::Runner batched(cf::create_backend("cpu", w, o), 4, 64);
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < 4; ++s) {
    prompts.push_back({});
    for (int i = 0; i < 3 + 4 * s; ++i) prompts.back().push_back(int32_t((i * 97 + s * 31 + 5) % int(v)));
    batched.prefill(s, prompts.back());
  }
  const std::vector<int32_t> seqs = {3, 0, 2, 1}, tokens = {17, 400, 5, 599};
  const std::vector<float> together = batched.decode(seqs, tokens);
  for (const std::string isa : {"", "portable", "avx2", "avx512"}) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      cf::BackendOptions one;
      one.threads = 1;
      one.cpu_isa = isa;
      std::unique_ptr<cf::Backend> backend;
      try {
        backend = cf::create_backend("cpu", w, one);
      } catch (const cf::InputError&) {  // a level this CPU does not have
        break;
      }
      cf::Runner alone(std::move(backend), 1, 64);
      std::vector<int32_t> all = prompts[size_t(seqs[i])];
      all.push_back(tokens[i]);
      EXPECT_TRUE(bit_equal(alone.prefill(0, all),
                            std::vector<float>(together.begin() + long(i * v), together.begin() + long((i + 1) * v))))
          << "sequence " << seqs[i] << ", level '" << isa << "'";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DeepseekCpu, ::testing::Values("tiny_mla", "tiny_mla_qlora"));

// ---- random DeepSeek-shaped models in every weight type against the reference ----------------------------------

struct RandomCase {
  cf::DType dtype;
  bool q_lora;
  bool split_kv_b;
  int expert_ffn;  // 24: experts whose rows do not start at the kernels' 16-row groups
  cf::TopkMethod method;
};

cf::ModelConfig random_deepseek_config(const RandomCase& rc) {
  cf::ModelConfig c;
  c.arch = "deepseek2";
  c.attention = cf::AttentionKind::Mla;
  c.n_layers = 3;
  c.hidden = 64;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.mla = {rc.q_lora ? 64 : 0, 32, 32, 8, rc.split_kv_b};
  c.rope_dim = 16;
  c.head_dim = c.mla.qk_nope + c.rope_dim;
  c.rope_style = cf::RopeStyle::GPTJ;
  c.yarn = {40.0f, 4096, 32.0f, 1.0f, 0.707f, 0.707f};
  c.ffn_hidden = 96;
  c.vocab = 300;
  c.max_context = 64;
  c.rms_eps = 1e-6f;
  c.moe.n_experts = 8;
  c.moe.n_shared = 2;
  c.moe.top_k = 3;
  c.moe.first_dense = 1;
  c.moe.expert_ffn = rc.expert_ffn;
  c.moe.norm_topk_prob = rc.method == cf::TopkMethod::Greedy;
  c.moe.routed_scaling = rc.method == cf::TopkMethod::Greedy ? 1.0f : 2.5f;
  c.moe.method = rc.method;
  c.moe.n_group = rc.method == cf::TopkMethod::Greedy ? 1 : 4;
  c.moe.topk_group = rc.method == cf::TopkMethod::Greedy ? 1 : 2;
  return c;
}

// Logits after each token by the reference blocks (reference/mla.hpp's absorbed decode, moe.hpp), one token at a
// time, on the dequantised weights.
std::vector<float> deepseek_reference_logits(const cf::ModelWeights& w, const std::vector<int32_t>& tokens) {
  const cf::ModelConfig& c = w.config;
  const cf::ref::MlaShape mla = cf::ref::mla_shape(c);
  const cf::ref::MoeShape moe = cf::ref::moe_shape(c);
  // every matrix dequantised, by its canonical name
  std::map<std::string, std::vector<float>> f;
  for (const cf::WeightEntry& e : cf::weight_table(c))
    if (e.form == cf::WeightForm::Matrix && !w.matrix(e).empty()) f[e.name] = w.matrix(e).dequantized();
  const auto get = [&](int l, const char* n) -> const float* {
    const auto it = f.find("blk." + std::to_string(l) + "." + n + ".weight");
    return it == f.end() ? nullptr : it->second.data();
  };
  const int n = int(tokens.size()), d = c.hidden, ffn = c.moe.expert_ffn;
  std::vector<std::vector<float>> caches(size_t(c.n_layers), std::vector<float>(size_t(n) * mla.latent_row()));
  std::vector<float> logits(size_t(n) * c.vocab);
  for (int t = 0; t < n; ++t) {
    std::vector<float> x(f["token_embd.weight"].begin() + long(tokens[size_t(t)]) * d,
                         f["token_embd.weight"].begin() + long(tokens[size_t(t)] + 1) * d);
    std::vector<float> h(static_cast<size_t>(d)), y(static_cast<size_t>(d));
    for (int l = 0; l < c.n_layers; ++l) {
      const cf::LayerWeights& lw = w.layers[size_t(l)];
      cf::ref::MlaWeights<float> a{get(l, "attn_q"), get(l, "attn_q_a"), lw.q_a_norm.empty() ? nullptr : lw.q_a_norm.data(),
                                   get(l, "attn_q_b"), get(l, "attn_kv_a_mqa"), lw.kv_a_norm.data(),
                                   get(l, "attn_kv_b"), get(l, "attn_k_b"), get(l, "attn_v_b"), get(l, "attn_output")};
      cf::ref::rmsnorm(x.data(), lw.attn_norm.data(), h.data(), d, c.rms_eps);
      cf::ref::mla_decode(h.data(), a, mla, t, caches[size_t(l)].data(), t, y.data());
      for (int i = 0; i < d; ++i) x[size_t(i)] += y[size_t(i)];
      cf::ref::rmsnorm(x.data(), lw.ffn_norm.data(), h.data(), d, c.rms_eps);
      if (c.layer_spec(l).ffn == cf::FfnKind::SwiGlu) {
        std::fill(y.begin(), y.end(), 0.0f);
        cf::ref::add_expert(h.data(), cf::ref::ExpertWeights<float>{get(l, "ffn_gate"), get(l, "ffn_up"), get(l, "ffn_down")},
                            d, c.ffn_hidden, 1.0f, y.data());
      } else {
        std::vector<cf::ref::ExpertWeights<float>> experts;
        for (int e = 0; e < c.moe.n_experts; ++e)
          experts.push_back({get(l, "ffn_gate_exps") + size_t(e) * ffn * d, get(l, "ffn_up_exps") + size_t(e) * ffn * d,
                             get(l, "ffn_down_exps") + size_t(e) * d * ffn});
        const cf::ref::MoeWeights<float> m{get(l, "ffn_gate_inp"), experts.data(),
                                           {get(l, "ffn_gate_shexp"), get(l, "ffn_up_shexp"), get(l, "ffn_down_shexp")}};
        cf::ref::moe_ffn(h.data(), m, moe, y.data());
      }
      for (int i = 0; i < d; ++i) x[size_t(i)] += y[size_t(i)];
    }
    cf::ref::rmsnorm(x.data(), w.output_norm.data(), h.data(), d, c.rms_eps);
    cf::ref::matvec(f["output.weight"].data(), h.data(), logits.data() + size_t(t) * c.vocab, c.vocab, d);
  }
  return logits;
}

class DeepseekRandom : public ::testing::TestWithParam<RandomCase> {};

// The cpu backend's quantised kernels on MLA and MoE layers (q_lora or not, kv_b split or one matrix, experts
// off the 16-row groups, group-limited routing) agree with the reference under the tolerance policy (the fp32
// arithmetic; the default int16 one within its rounding), and give the same bits with 1 and 3 threads.
TEST_P(DeepseekRandom, MatchesTheReference) {
  const RandomCase rc = GetParam();
  auto w = std::make_shared<const cf::ModelWeights>(cf::ModelWeights::random(random_deepseek_config(rc), 31, rc.dtype));
  EXPECT_EQ(w->layers[1].ffn_router.dtype, cf::DType::F32);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 20; ++i) tokens.push_back(int32_t((i * 53 + 7) % w->config.vocab));
  auto runner = cpu_runner(w, 2, 256, cf::DType::F32, cf::CpuArithmetic::F32);
  const std::vector<float> got = cf::teacher_forced_logits(runner, tokens);
  const std::vector<float> want = deepseek_reference_logits(*w, tokens);
  const size_t v = size_t(w->config.vocab);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const auto report =
        cf::ref::check_tolerance<float>(std::span(got).subspan(t * v, v), std::span(want).subspan(t * v, v));
    EXPECT_TRUE(report.ok) << "token " << t << ": " << report.message;
  }
  EXPECT_GT(cf::ref::rms(want), 0.1);
  for (int threads : {1, 3}) {
    auto other = cpu_runner(w, threads, 256, cf::DType::F32, cf::CpuArithmetic::F32);
    EXPECT_TRUE(bit_equal(got, cf::teacher_forced_logits(other, tokens))) << threads << " threads";
  }
  // int16: the 2^-16 rounding of every product's input (observed up to ~1e-4 x rms; a wrong scale, offset or plane
  // would be off by far more), and its own bits for any thread count.
  auto int16 = cpu_runner(w, 2, 256, cf::DType::F32, cf::CpuArithmetic::Int16);
  const std::vector<float> rounded = cf::teacher_forced_logits(int16, tokens);
  double max_err = 0;
  for (size_t i = 0; i < want.size(); ++i) max_err = std::max(max_err, double(std::fabs(rounded[i] - want[i])));
  EXPECT_LE(max_err, 1e-3 * cf::ref::rms(want));
  auto int16_three = cpu_runner(w, 3, 256, cf::DType::F32, cf::CpuArithmetic::Int16);
  EXPECT_TRUE(bit_equal(rounded, cf::teacher_forced_logits(int16_three, tokens)));
}

INSTANTIATE_TEST_SUITE_P(
    Variants, DeepseekRandom,
    ::testing::Values(RandomCase{cf::DType::F16, false, true, 24, cf::TopkMethod::Greedy},
                      RandomCase{cf::DType::F32, true, false, 24, cf::TopkMethod::GroupLimitedGreedy},
                      RandomCase{cf::DType::Q8_0, true, false, 32, cf::TopkMethod::Greedy},
                      RandomCase{cf::DType::Q4_1, false, false, 32, cf::TopkMethod::GroupLimitedGreedy}),
    [](const auto& info) {
      const RandomCase& r = info.param;
      return std::string(cf::dtype_name(r.dtype)) + (r.q_lora ? "_qlora" : "") + (r.split_kv_b ? "_split" : "_kvb") +
             "_ffn" + std::to_string(r.expert_ffn) + (r.method == cf::TopkMethod::Greedy ? "_greedy" : "_groups");
    });

}  // namespace
