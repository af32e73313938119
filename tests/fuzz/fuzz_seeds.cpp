#include "fuzz_seeds.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "gguf_writer.hpp"
#include "safetensors_writer.hpp"
#include "tiny_model.hpp"

namespace cf::fuzz {

namespace {
using test::GgufTypeCode;
using test::GgufWriter;

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string data_dir() { return std::string(CF_SOURCE_DIR) + "/tests/data/"; }

// ---- GGUF --------------------------------------------------------------------------------------------------------

// ggml blocks of 32 with random payload and a small scale (each type's layout: scale(s) then quants).
std::vector<uint8_t> random_blocks(uint32_t type, uint64_t numel, std::mt19937& rng) {
  std::vector<uint8_t> b;
  const uint64_t blocks = numel / 32;
  for (uint64_t i = 0; i < blocks; ++i) {
    test::put<uint16_t>(b, float_to_f16_bits(0.01f));
    if (type == test::kGgmlQ4_1) test::put<uint16_t>(b, float_to_f16_bits(-0.05f));
    const int payload = type == test::kGgmlQ8_0 ? 32 : 16;
    for (int k = 0; k < payload; ++k) b.push_back(uint8_t(rng()));
  }
  return b;
}

std::vector<uint8_t> plain_values(uint32_t type, uint64_t numel, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<uint8_t> b;
  for (uint64_t i = 0; i < numel; ++i) {
    const float x = normal(rng);
    if (type == test::kGgmlF32) test::put<float>(b, x);
    else if (type == test::kGgmlF16) test::put<uint16_t>(b, float_to_f16_bits(x));
    else test::put<uint16_t>(b, float_to_bf16_bits(x));
  }
  return b;
}

// Copies one metadata value into the writer's byte encoding (scalars, strings, arrays of anything, nested).
void encode_value(std::vector<uint8_t>& out, const GgufValue& v) {
  switch (v.type()) {
    case GgufType::String: test::put_string(out, *v.to_string()); return;
    case GgufType::Bool: out.push_back(*v.to_bool() ? 1 : 0); return;
    case GgufType::F32: test::put<float>(out, float(*v.to_float())); return;
    case GgufType::F64: test::put<double>(out, *v.to_float()); return;
    case GgufType::U8: case GgufType::I8: out.push_back(uint8_t(*v.to_int())); return;
    case GgufType::U16: case GgufType::I16: test::put<uint16_t>(out, uint16_t(*v.to_int())); return;
    case GgufType::U32: case GgufType::I32: test::put<uint32_t>(out, uint32_t(*v.to_int())); return;
    case GgufType::U64: case GgufType::I64: test::put<uint64_t>(out, uint64_t(v.to_int().value_or(-1))); return;
    case GgufType::Array: break;
  }
  test::put<uint32_t>(out, uint32_t(v.elem_type()));
  test::put<uint64_t>(out, v.size());
  for (uint64_t i = 0; i < v.size(); ++i) {
    switch (v.elem_type()) {
      case GgufType::String: test::put_string(out, v.string_at(i)); break;
      case GgufType::Array: {
        std::vector<uint8_t> nested;
        encode_value(nested, v.array_at(i));
        out.insert(out.end(), nested.begin(), nested.end());
        break;
      }
      case GgufType::F32: test::put<float>(out, float(v.float_at(i))); break;
      case GgufType::F64: test::put<double>(out, v.float_at(i)); break;
      case GgufType::Bool: case GgufType::U8: case GgufType::I8: out.push_back(uint8_t(*v.int_at(i))); break;
      case GgufType::U16: case GgufType::I16: test::put<uint16_t>(out, uint16_t(*v.int_at(i))); break;
      case GgufType::U32: case GgufType::I32: test::put<uint32_t>(out, uint32_t(*v.int_at(i))); break;
      case GgufType::U64: case GgufType::I64: test::put<uint64_t>(out, uint64_t(v.int_at(i).value_or(-1))); break;
    }
  }
}

// A few hand-made files: every metadata type, nested arrays, a v2 file, a custom alignment, every tensor type.
std::vector<uint8_t> rich_gguf() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_raw("k.u8", GgufTypeCode::U8, {200});
  w.add_raw("k.i16", GgufTypeCode::I16, {0xfe, 0xff});
  w.add_u32("k.u32", 4000000000u);
  w.add_i32("k.i32", -5);
  w.add_f32("k.f32", 1.5f);
  w.add_bool("k.bool", true);
  w.add_u64("k.u64", 1ull << 40);
  w.add_f64("k.f64", -0.25);
  w.add_string_array("k.strings", {"a", "", "b\xc3\xa9"});
  w.add_array<int32_t>("k.ints", GgufTypeCode::I32, {1, -2, 3});
  w.add_array<float>("k.floats", GgufTypeCode::F32, {0.5f, 2.0f});
  w.add_array<uint8_t>("k.bools", GgufTypeCode::Bool, {0, 1});
  std::vector<uint8_t> nested;
  test::put<uint32_t>(nested, uint32_t(GgufTypeCode::Array));
  test::put<uint64_t>(nested, 2);
  test::put<uint32_t>(nested, uint32_t(GgufTypeCode::U8));
  test::put<uint64_t>(nested, 2);
  nested.push_back(7);
  nested.push_back(9);
  test::put<uint32_t>(nested, uint32_t(GgufTypeCode::String));
  test::put<uint64_t>(nested, 1);
  test::put_string(nested, "deep");
  w.add_raw("k.nested", GgufTypeCode::Array, nested);
  std::mt19937 rng(5);
  for (const uint32_t type : {test::kGgmlF32, test::kGgmlF16, test::kGgmlBF16})
    w.add_tensor("plain." + std::to_string(type), type, {8, 2}, plain_values(type, 16, rng));
  for (const uint32_t type : {test::kGgmlQ8_0, test::kGgmlQ4_0, test::kGgmlQ4_1})
    w.add_tensor("quant." + std::to_string(type), type, {64, 2}, random_blocks(type, 128, rng));
  w.add_tensor("q6k", 14, {256}, std::vector<uint8_t>(210, 1));
  w.add_tensor("q3k", 11, {256}, std::vector<uint8_t>(110, 1));  // listed, not computable
  return w.build();
}
}  // namespace

std::vector<uint8_t> micro_model_gguf(const std::string& arch, bool spm) {
  constexpr uint64_t hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 32;
  GgufWriter w;
  const std::string a = arch + ".";
  w.add_string("general.architecture", arch);
  w.add_string("general.name", "micro");
  w.add_u32(a + "block_count", 1);
  w.add_u32(a + "context_length", 64);
  w.add_u32(a + "embedding_length", hidden);
  w.add_u32(a + "feed_forward_length", ffn);
  w.add_u32(a + "attention.head_count", heads);
  w.add_u32(a + "attention.head_count_kv", kv_heads);
  w.add_f32(a + "rope.freq_base", 10000.0f);
  w.add_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  uint64_t vocab = 0;
  if (spm) {
    const auto s = tokenizer_spec_from_sentencepiece(data_dir() + "tokenizer/tiny_spm/tokenizer.model");
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", s.tokens);
    w.add_array<float>("tokenizer.ggml.scores", GgufTypeCode::F32, s.scores);
    w.add_array<int32_t>("tokenizer.ggml.token_type", GgufTypeCode::I32, s.token_types);
    w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(s.bos));
    w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(s.eos));
    w.add_u32("tokenizer.ggml.unknown_token_id", uint32_t(s.unk));
    w.add_string("tokenizer.chat_template", "{% if messages[0]['role'] == 'system' %}[INST] <<SYS>>{% endif %}");
    vocab = s.tokens.size();
  } else {
    std::vector<std::string> tokens, merges;
    std::vector<int32_t> types;
    test::tiny_vocab(tokens, types, merges);
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", arch == "qwen2" ? "qwen2" : "smollm");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_array<int32_t>("tokenizer.ggml.token_type", GgufTypeCode::I32, types);
    w.add_string_array("tokenizer.ggml.merges", merges);
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);
    w.add_bool("tokenizer.ggml.add_bos_token", false);
    w.add_string("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}");
    vocab = tokens.size();
  }
  std::mt19937 rng(11);
  auto quant = [&](const std::string& name, uint32_t type, uint64_t in, uint64_t out) {
    w.add_tensor(name, type, {in, out}, random_blocks(type, in * out, rng));
  };
  auto plain = [&](const std::string& name, uint32_t type, std::vector<uint64_t> ne) {
    uint64_t n = 1;
    for (const auto d : ne) n *= d;
    w.add_tensor(name, type, std::move(ne), plain_values(type, n, rng));
  };
  quant("token_embd.weight", test::kGgmlQ4_0, hidden, vocab);
  plain("output_norm.weight", test::kGgmlF32, {hidden});
  const std::string p = "blk.0.";
  plain(p + "attn_norm.weight", test::kGgmlF16, {hidden});
  quant(p + "attn_q.weight", test::kGgmlQ4_1, hidden, heads * head_dim);
  quant(p + "attn_k.weight", test::kGgmlQ8_0, hidden, kv_heads * head_dim);
  quant(p + "attn_v.weight", test::kGgmlQ8_0, hidden, kv_heads * head_dim);
  if (arch == "qwen2") {
    plain(p + "attn_q.bias", test::kGgmlF32, {heads * head_dim});
    plain(p + "attn_k.bias", test::kGgmlF32, {kv_heads * head_dim});
    plain(p + "attn_v.bias", test::kGgmlF32, {kv_heads * head_dim});
  }
  plain(p + "attn_output.weight", test::kGgmlBF16, {heads * head_dim, hidden});
  plain(p + "ffn_norm.weight", test::kGgmlF32, {hidden});
  quant(p + "ffn_gate.weight", test::kGgmlQ4_0, hidden, ffn);
  quant(p + "ffn_up.weight", test::kGgmlQ4_1, hidden, ffn);
  plain(p + "ffn_down.weight", test::kGgmlF16, {ffn, hidden});
  return w.build();
}

std::vector<uint8_t> default_model_metadata_gguf(size_t keep_tokens) {
  std::string cache;
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) cache = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = std::string(x) + "/clusterfusion";
  else if (const char* h = std::getenv("HOME"); h && *h) cache = std::string(h) + "/.cache/clusterfusion";
  const std::string path = cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (cache.empty() || !std::filesystem::exists(path)) return {};
  const GgufFile f(path);
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens").value_or(std::vector<std::string>{});
  keep_tokens = std::min(keep_tokens, tokens.size());
  const std::set<std::string> kept(tokens.begin(), tokens.begin() + long(keep_tokens));
  GgufWriter w;
  for (const auto& [key, v] : f.metadata()) {
    if (key == "tokenizer.ggml.tokens") {
      w.add_string_array(key, std::vector<std::string>(tokens.begin(), tokens.begin() + long(keep_tokens)));
    } else if (key == "tokenizer.ggml.token_type") {
      auto types = f.get_int_array(key).value_or(std::vector<int64_t>{});
      types.resize(keep_tokens);
      w.add_array<int32_t>(key, GgufTypeCode::I32, std::vector<int32_t>(types.begin(), types.end()));
    } else if (key == "tokenizer.ggml.scores") {
      auto scores = f.get_float_array(key).value_or(std::vector<float>{});
      scores.resize(keep_tokens);
      w.add_array<float>(key, GgufTypeCode::F32, scores);
    } else if (key == "tokenizer.ggml.merges") {
      std::vector<std::string> merges;
      const auto all_merges = f.get_string_array(key).value_or(std::vector<std::string>{});
      for (const auto& m : all_merges) {
        const size_t sp = m.find(' ');
        if (sp != std::string::npos && kept.count(m.substr(0, sp)) && kept.count(m.substr(sp + 1)) &&
            kept.count(m.substr(0, sp) + m.substr(sp + 1)))
          merges.push_back(m);
      }
      w.add_string_array(key, merges);
    } else {
      std::vector<uint8_t> value;
      encode_value(value, v);
      w.add_raw(key, GgufTypeCode(uint32_t(v.type())), std::move(value));
    }
  }
  return w.build();
}

std::vector<Seed> make_seeds() {
  std::vector<Seed> seeds;
  auto add = [&](const std::string& target, const std::string& name, std::vector<uint8_t> bytes) {
    seeds.push_back({target, name, std::move(bytes)});
  };

  // gguf
  add("gguf", "micro_llama.gguf", micro_model_gguf("llama", false));
  add("gguf", "micro_qwen2.gguf", micro_model_gguf("qwen2", false));
  add("gguf", "micro_spm.gguf", micro_model_gguf("llama", true));
  add("gguf", "rich.gguf", rich_gguf());
  {
    GgufWriter w;
    w.version = 2;
    w.alignment = 64;
    w.add_u32("general.alignment", 64);
    w.add_string("general.architecture", "llama");
    w.add_f32_tensor("t", {4, 2}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8});
    add("gguf", "v2_aligned.gguf", w.build());
  }
  if (auto meta = default_model_metadata_gguf(); !meta.empty()) add("gguf", "smollm2_metadata.gguf", std::move(meta));
  // DeepSeek-V2 (MLA + MoE, docs/mla.md): both converter generations, with and without q_lora
  for (const char* name : {"tiny_mla.gguf", "tiny_mla_qlora.gguf", "tiny_mla_legacy_kv_b.gguf"})
    add("gguf", std::string("deepseek2_") + name, bytes_of(read_file(data_dir() + "deepseek/" + name)));

  // safetensors
  {
    std::mt19937 rng(2);
    std::vector<test::StTensor> t;
    t.push_back({"model.embed_tokens.weight", "BF16", {8, 32}, test::random_tensor_bytes("BF16", 256, rng)});
    t.push_back({"model.norm.weight", "F32", {32}, test::random_tensor_bytes("F32", 32, rng)});
    t.push_back({"model.layers.0.self_attn.q_proj.weight", "F16", {4, 32}, test::random_tensor_bytes("F16", 128, rng)});
    t.push_back({"model.layers.0.self_attn.q_proj.bias", "F32", {4}, test::random_tensor_bytes("F32", 4, rng)});
    t.push_back({"lm_head.weight", "F16", {8, 32}, test::random_tensor_bytes("F16", 256, rng)});
    t.push_back({"position_ids", "I32", {1, 4}, test::random_tensor_bytes("I32", 4, rng)});
    t.push_back({"scalar", "F32", {}, test::random_tensor_bytes("F32", 1, rng)});
    t.push_back({"empty", "F16", {0, 4}, {}});
    add("safetensors", "micro.safetensors", test::safetensors_bytes(t));
    add("safetensors", "two.safetensors",
        test::safetensors_bytes({{"a", "F32", {2, 3}, test::random_tensor_bytes("F32", 6, rng)},
                                 {"b", "BF16", {4}, test::random_tensor_bytes("BF16", 4, rng)}}));
  }

  // hf_config
  const std::string llama_config =
      R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,"intermediate_size":128,)"
      R"("num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":512,)"
      R"("rms_norm_eps":1e-05,"rope_theta":10000.0,"vocab_size":600,"hidden_act":"silu","tie_word_embeddings":true,)"
      R"("bos_token_id":1,"eos_token_id":[2,0],"torch_dtype":"bfloat16","head_dim":16})";
  add("hf_config", "llama.json", bytes_of(llama_config));
  add("hf_config", "qwen2.json",
      bytes_of(R"({"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,)"
               R"("num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,)"
               R"("rms_norm_eps":1e-06,"rope_theta":1000000.0,"vocab_size":151936,"tie_word_embeddings":true,)"
               R"("use_sliding_window":false,"sliding_window":32768,"hidden_act":"silu"})"));
  add("hf_config", "mistral.json",
      bytes_of(R"({"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,)"
               R"("num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,"rope_theta":1e6,)"
               R"("sliding_window":null,"rms_norm_eps":1e-5})"));
  add("hf_config", "rope_scaling.json",
      bytes_of(R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,)"
               R"("num_attention_heads":4,"vocab_size":600,"rope_scaling":{"type":"llama3","factor":8.0}})"));

  for (const char* name : {"tiny_mla", "tiny_mla_qlora"})
    add("hf_config", std::string("deepseek_v2_") + name + ".json",
        bytes_of(read_file(data_dir() + "deepseek/" + name + "/config.json")));
  add("hf_config", "deepseek_v2_group_limited.json",
      bytes_of(R"({"model_type":"deepseek_v2","hidden_size":64,"intermediate_size":96,"num_hidden_layers":3,)"
               R"("num_attention_heads":4,"vocab_size":600,"q_lora_rank":56,"kv_lora_rank":32,"qk_nope_head_dim":24,)"
               R"("qk_rope_head_dim":16,"v_head_dim":12,"n_routed_experts":8,"n_shared_experts":1,)"
               R"("num_experts_per_tok":2,"first_k_dense_replace":1,"moe_intermediate_size":16,)"
               R"("routed_scaling_factor":16.0,"norm_topk_prob":false,"topk_method":"group_limited_greedy",)"
               R"("n_group":4,"topk_group":2,"scoring_func":"softmax","moe_layer_freq":1,)"
               R"("rope_scaling":{"type":"yarn","factor":40,"original_max_position_embeddings":4096,)"
               R"("beta_fast":32,"beta_slow":1,"mscale":0.707,"mscale_all_dim":0.707}})"));

  // tokenizer_json, sentencepiece
  for (const char* name : {"tiny_gpt2", "tiny_llama3", "tiny_qwen2", "tiny_smollm", "tiny_spm"})
    add("tokenizer_json", std::string(name) + ".json", bytes_of(read_file(data_dir() + "tokenizer/" + name + "/tokenizer.json")));
  add("sentencepiece", "tiny_spm.model", bytes_of(read_file(data_dir() + "tokenizer/tiny_spm/tokenizer.model")));

  // tokenize: byte 0 picks tokenizer (low 3 bits, mod 6) and flags (bit 3 parse_special, bit 4 add BOS)
  const std::vector<std::string> texts = {
      "Hello world! It's 12345 o'clock.",
      "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
      "  spaces\t\ttabs\n\nnewlines \r\n",
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e caf\xc3\xa9 \xf0\x9f\x98\x80 <|user|> don't",
      "\xff\xfe\xc0\xaf broken \xed\xa0\x80 utf-8 \xe2\x96\x81",
  };
  for (uint8_t pick = 0; pick < 6; ++pick)
    for (size_t i = 0; i < texts.size(); ++i) {
      const uint8_t flags = uint8_t(pick | ((i % 2) << 3) | ((i % 3 == 0) << 4));
      std::vector<uint8_t> b(texts[i].size() + 1, flags);
      std::copy(texts[i].begin(), texts[i].end(), b.begin() + 1);
      add("tokenize", "t" + std::to_string(pick) + "_" + std::to_string(i), std::move(b));
    }

  // json
  add("json", "config.json", bytes_of(llama_config));
  add("json", "tokenizer_config.json", bytes_of(read_file(data_dir() + "tokenizer/tiny_gpt2/tokenizer_config.json")));
  add("json", "values.json",
      bytes_of(R"({"a": [1, -2.5e-3, 1E+2, 0, -0, true, false, null], "s": "x\u00e9\ud83d\ude00\n\"\\\/\b\f\r\t",)"
               R"( "o": {"": {}, "k": [[], [[]], {}]}, "big": 12345678901234567890, "dup": 1, "dup": 2})"));
  add("json", "tokenize_golden.json", bytes_of(read_file(data_dir() + "golden/tokenize.json")));

  // chat_template: byte 0 = mode (0-3 detect, 4-7 by name) | add_generation_prompt << 3; then NUL-separated:
  // the Jinja text, then messages (first byte: role 0 system, 1 user, 2 assistant, 3 tool).
  std::vector<std::string> templates = {
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
      "{% if messages[0].role != 'system' %}<|im_start|>system\nBe brief.<|im_end|>\n{% endif %}"
      "{% for m in messages %}<|im_start|>{{ m.role + '\n' + m.content }}<|im_end|>{% endfor %}",
      "<|im_start|>system\n{{ system }}<|im_end|><|im_start|>system\nA literal default.<|im_end|>",
      "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
      "{{ m.content | trim }}<|eot_id|>{% endfor %}",
      "{% for m in messages %}{% if m.role == 'user' %}{{ '<s>[INST] ' + m.content + ' [/INST]' }}{% endif %}{% endfor %}",
      "no markers at all",
  };
  if (const auto meta = default_model_metadata_gguf(16); !meta.empty()) {
    const auto f = GgufFile::from_memory("default", meta.data(), meta.size());
    if (auto t = f.get_string("tokenizer.chat_template")) templates.push_back(*t);
  }
  auto conversation = [](const std::vector<std::pair<char, std::string>>& turns) {
    std::string out;
    for (size_t k = 0; k < turns.size(); ++k) out += (k ? std::string(1, '\0') : std::string()) + turns[k].first + turns[k].second;
    return out;
  };
  const std::vector<std::string> conversations = {
      conversation({{1, "Hello there!"}}),
      conversation({{0, "You are terse."}, {1, "What is 2+2?"}, {2, "4"}, {1, "And 3+3?"}}),
      conversation({{1, "  padded  \n"}, {2, "<|im_end|> inside \xff\xfe bytes"}, {3, "tool output"}}),
  };
  for (size_t i = 0; i < templates.size(); ++i)
    for (size_t c = 0; c < conversations.size(); ++c) {
      const std::string body = templates[i] + std::string(1, '\0') + conversations[c];
      std::vector<uint8_t> b(body.size() + 1, uint8_t(1 + (c % 3) + ((i % 2) << 3)));
      std::copy(body.begin(), body.end(), b.begin() + 1);
      add("chat_template", "t" + std::to_string(i) + "_c" + std::to_string(c), std::move(b));
    }
  for (uint8_t mode = 4; mode < 8; ++mode) {
    const std::string body = std::string(1, '\0') + conversations[1];
    std::vector<uint8_t> b(body.size() + 1, uint8_t(mode | 8));
    std::copy(body.begin(), body.end(), b.begin() + 1);
    add("chat_template", "by_name_" + std::to_string(mode), std::move(b));
  }
  return seeds;
}

}  // namespace cf::fuzz
