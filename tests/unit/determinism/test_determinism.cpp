// Same prompt + sampling settings + seed => the same tokens: across runs, thread counts 1-3, fresh and reused
// sessions, and (when built) the emu backend under different emulator schedules; through the CLI too. Greedy and
// sampled decoding alike: sampling draws from a seeded generator, the cpu backend's logits do not depend on the
// thread count (one summation order), and the fused kernels' reductions have a fixed order (no float atomics).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "cli_runner.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "fuzz_seeds.hpp"
#include "gguf_writer.hpp"
#include "test_util.hpp"

namespace {

bool emu_built() {
  for (const auto& b : cf::backend_list())
    if (b.name == "emu") return b.built;
  return false;
}

// Sets an environment variable for one scope (the emulator reads its schedule seed from CF_EMU_SEED).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::shared_ptr<const cf::Tokenizer> tiny_tokenizer() {
  static const auto tok = cf::Tokenizer::create(
      cf::tokenizer_spec_from_hf_json(cf::test::data_path("tokenizer/tiny_smollm/tokenizer.json")));
  return tok;
}

// head_dim 16 for the cpu backend (fast); the fused kernels (emu backend) need head_dim 64 or 128.
std::shared_ptr<const cf::ModelWeights> tiny_weights(cf::DType dtype, int head_dim = 16) {
  cf::ModelConfig c;
  c.name = "determinism";
  c.n_layers = 2;
  c.hidden = 4 * head_dim;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = head_dim;
  c.ffn_hidden = 8 * head_dim;
  c.vocab = tiny_tokenizer()->vocab_size();
  c.max_context = 128;
  c.rope_dim = head_dim;
  c.rope_style = cf::RopeStyle::NeoX;
  return std::make_shared<const cf::ModelWeights>(cf::ModelWeights::random(c, 77, dtype));
}

struct Settings {
  const char* name;
  cf::SamplerConfig sampler;
};

std::vector<Settings> sampling_settings() {
  std::vector<Settings> out;
  out.push_back({"greedy", {}});
  cf::SamplerConfig s;
  s.temperature = 0.8f;
  s.top_k = 40;
  out.push_back({"temp 0.8, top-k 40", s});
  s = {};
  s.temperature = 1.0f;
  s.top_p = 0.9f;
  s.min_p = 0.05f;
  s.repeat_penalty = 1.1f;
  out.push_back({"temp 1, top-p 0.9, min-p 0.05, repeat 1.1", s});
  s = {};
  s.temperature = 1.5f;
  out.push_back({"temp 1.5, no filters", s});
  return out;
}

std::vector<int32_t> generate(const std::string& backend, std::shared_ptr<const cf::ModelWeights> weights,
                              std::shared_ptr<const cf::Tokenizer> tok, int threads, const std::vector<int32_t>& prompt,
                              const cf::SamplerConfig& sampler, int n) {
  cf::BackendOptions options;
  options.threads = threads;
  cf::Runner runner(cf::create_backend(backend, std::move(weights), options), 1);
  cf::Generator g(runner, std::move(tok));
  cf::GenerationOptions o;
  o.max_new_tokens = n;
  o.sampling = sampler;
  g.generate(prompt, o, [](std::string_view) { return true; });
  return std::vector<int32_t>(g.history().begin() + long(prompt.size()), g.history().end());
}

// Tokens per run: enough for the sampler's state to diverge on any difference (a different draw changes the next
// token's context), few enough that 100 runs take about a second.
constexpr int kTokens = 12;

TEST(Determinism, SameSeedSameTokensAcrossRunsAndThreads) {
  const auto tok = tiny_tokenizer();
  const auto prompt = tok->encode("The quick brown fox jumps over the lazy dog.", false, false);
  int combinations = 0;
  for (const cf::DType dtype : {cf::DType::F32, cf::DType::BF16, cf::DType::Q4_1}) {
    const auto weights = tiny_weights(dtype);
    for (const auto& settings : sampling_settings()) {
      for (const uint64_t seed : {uint64_t(12345), std::numeric_limits<uint64_t>::max()}) {
        cf::SamplerConfig sampler = settings.sampler;
        sampler.seed = seed;
        SCOPED_TRACE(std::string(cf::dtype_name(dtype)) + ", " + settings.name + ", seed " + std::to_string(seed));
        const auto reference = generate("cpu", weights, tok, 1, prompt, sampler, kTokens);
        ASSERT_FALSE(reference.empty());
        for (const int threads : {1, 2, 3})
          EXPECT_EQ(generate("cpu", weights, tok, threads, prompt, sampler, kTokens), reference)
              << threads << " thread(s)";
        ++combinations;
      }
    }
  }
  EXPECT_EQ(combinations, 3 * 4 * 2);
}

// The emu backend runs the fused kernels on the emulator, which interleaves the device threads in an order drawn
// from CF_EMU_SEED: a race or an order-dependent reduction in a kernel would give different tokens under another
// schedule. (Its tokens differ from the cpu backend's: 16-bit weights and activations; tests/emu/backends checks
// the agreement within the tolerance policy.)
TEST(Determinism, EmuBackendSameTokensUnderEverySchedule) {
  if (!emu_built()) GTEST_SKIP() << "emu backend not built";
  const auto tok = tiny_tokenizer();
  const auto prompt = tok->encode("The quick brown fox", false, false);
  // The fp16 kernels greedy, the bf16 kernels sampled (each run costs seconds on the emulator).
  const auto settings = sampling_settings();
  const std::pair<cf::DType, Settings> cases[] = {{cf::DType::F32, settings[0]}, {cf::DType::BF16, settings[2]}};
  for (const auto& [dtype, setting] : cases) {
    const auto weights = tiny_weights(dtype, 64);
    cf::SamplerConfig sampler = setting.sampler;
    sampler.seed = 12345;
    SCOPED_TRACE(std::string(cf::dtype_name(dtype)) + ", " + setting.name);
    std::vector<int32_t> reference;
    {
      const ScopedEnv schedule("CF_EMU_SEED", "1");
      reference = generate("emu", weights, tok, 1, prompt, sampler, kTokens);
    }
    ASSERT_FALSE(reference.empty());
    for (const char* emu_seed : {"1", "987654321"}) {  // a rerun, another schedule
      const ScopedEnv schedule("CF_EMU_SEED", emu_seed);
      EXPECT_EQ(generate("emu", weights, tok, 1, prompt, sampler, kTokens), reference) << "CF_EMU_SEED " << emu_seed;
    }
  }
}

// The seed matters (so the test above is not passing because sampling ignores it).
TEST(Determinism, DifferentSeedsGiveDifferentSamples) {
  const auto tok = tiny_tokenizer();
  const auto weights = tiny_weights(cf::DType::F32);
  const auto prompt = tok->encode("Once upon a time", false, false);
  std::set<std::vector<int32_t>> distinct;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    cf::SamplerConfig s;
    s.temperature = 1.5f;
    s.seed = seed;
    distinct.insert(generate("cpu", weights, tok, 2, prompt, s, 16));
  }
  EXPECT_GE(distinct.size(), 3u);
}

// A chat of three sampled turns (each turn reuses the previous turns' KV cache) replays identically in a fresh
// session, with another thread count.
TEST(Determinism, ChatSessionsReplayIdentically) {
  const auto tok = tiny_tokenizer();
  const auto weights = tiny_weights(cf::DType::Q8_0);
  const auto chat = [&](int threads) {
    cf::BackendOptions options;
    options.threads = threads;
    cf::Runner runner(cf::create_backend("cpu", weights, options), 1);
    cf::Generator g(runner, tok);
    cf::ChatSession session(g, cf::ChatTemplate::by_name("chatml"), std::string("Be brief."));
    cf::GenerationOptions o;
    o.max_new_tokens = 12;
    o.sampling.temperature = 0.9f;
    o.sampling.top_p = 0.95f;
    o.sampling.seed = 9;
    std::vector<std::string> replies;
    for (const char* turn : {"Hello!", "What is 2+2?", "Thanks."}) {
      std::string reply;
      session.send(turn, o, [](std::string_view) { return true; }, &reply);
      replies.push_back(reply);
    }
    return std::make_pair(replies, g.history());
  };
  const auto first = chat(1);
  EXPECT_EQ(chat(1), first);
  EXPECT_EQ(chat(3), first);
}

// The real model, sampled (skipped without it): the same text for 1 and 2 threads and on a second run.
TEST(Determinism, DefaultModelSampledAcrossThreads) {
  CF_REQUIRE_DEFAULT_MODEL(path);
  const auto model = cf::load_model(path);
  cf::SamplerConfig s;
  s.temperature = 0.7f;
  s.top_p = 0.9f;
  s.seed = 42;
  const auto chat_tokens = [&](int threads) {
    cf::BackendOptions options;
    options.threads = threads;
    cf::Runner runner(cf::create_backend("cpu", model.weights, options), 1, 256);
    cf::Generator g(runner, model.tokenizer);
    cf::ChatSession session(g, cf::ChatTemplate::detect(model.chat_template));
    cf::GenerationOptions o;
    o.max_new_tokens = 16;
    o.sampling = s;
    session.send("Write a haiku about the sea.", o, [](std::string_view) { return true; });
    return g.history();
  };
  const auto one = chat_tokens(1);
  EXPECT_EQ(chat_tokens(2), one);
  EXPECT_EQ(chat_tokens(1), one);
}

// The CLI: the same command gives the same bytes on stdout for any --threads; another seed gives another text.
TEST(Determinism, CliSameSeedSameOutput) {
  cf::test::TempDir dir;
  const std::string model = dir.file("micro.gguf");
  cf::test::write_file(model, cf::fuzz::micro_model_gguf());
  const auto run = [&](const std::string& threads, const std::string& seed) {
    const auto r = cf::badinput::run_cli(
        {"generate", "-m", model, "-p", "tell me a story", "-n", "24", "--temp", "1.2", "--top-k", "50", "--seed", seed,
         "-t", threads, "-q"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string reference = run("1", "11");
  EXPECT_FALSE(reference.empty());
  for (const char* threads : {"1", "2", "3"}) EXPECT_EQ(run(threads, "11"), reference) << threads << " threads";
  std::set<std::string> others;
  for (const char* seed : {"12", "13", "14"}) others.insert(run("2", seed));
  others.insert(reference);
  EXPECT_GE(others.size(), 3u) << "the seed does not change the sampled text";
}

}  // namespace
