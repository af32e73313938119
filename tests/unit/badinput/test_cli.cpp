// The command line with bad flags, bad model files and bad prompts: exit code 2 for a bad command line, 1 for bad
// input, one error line on stderr that names the problem, valid UTF-8 without control characters, no hang. The
// models are the micro GGUF models of tests/fuzz (one layer, a few KB), so nothing here needs the default model.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <arpa/inet.h>  // serve's test occupies a port
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "badinput_util.hpp"
#include "cli_runner.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "fuzz_seeds.hpp"
#include "gguf_writer.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace {
namespace fs = std::filesystem;
using cf::badinput::CliResult;
using cf::badinput::run_cli;

// The error policy on a finished run: the last line of stderr is the only error line ("clusterfusion: ..."; a
// "loaded ..." progress line may come before it), valid UTF-8 without control characters, naming the problem.
void expect_error(const CliResult& r, int code, const std::string& fragment, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(r.timed_out) << "hang";
  EXPECT_EQ(r.exit_code, code) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  const size_t start = r.err.rfind('\n', r.err.size() - 2);
  const std::string line = r.err.substr(start == std::string::npos ? 0 : start + 1);
  EXPECT_EQ(line.rfind("clusterfusion: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find("clusterfusion: "), r.err.rfind("clusterfusion: ")) << "one error line: " << r.err;
  EXPECT_NE(line.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << line;
  EXPECT_TRUE(cf::json::is_valid_utf8(line)) << line;
  for (size_t i = 0; i + 1 < line.size(); ++i)
    if (static_cast<unsigned char>(line[i]) < 0x20 || line[i] == 0x7f) {
      ADD_FAILURE() << "control character in: " << line;
      break;
    }
}

class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    micro_ = dir_.file("micro.gguf");
    cf::test::write_file(micro_, cf::fuzz::micro_model_gguf());
  }
  cf::test::TempDir dir_;
  std::string micro_;
};

TEST_F(CliBadInput, InvalidFlagsExit2WithOneLine) {
  struct Case {
    std::vector<std::string> args;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {{"generate", "-p", "hi", "-n", "-1"}, "-n"},
      {{"generate", "-p", "hi", "-n", "99999999999999999999"}, "-n"},
      {{"generate", "-p", "hi", "--temp", "nan"}, "--temp"},
      {{"generate", "-p", "hi", "--temp", "inf"}, "--temp"},
      {{"generate", "-p", "hi", "--temp", "1e999"}, "--temp"},
      {{"generate", "-p", "hi", "--top-k", "-3"}, "--top-k"},
      {{"generate", "-p", "hi", "--min-p", "2"}, "min"},
      {{"generate", "-p", "hi", "--repeat-penalty", "0"}, "repeat"},
      {{"generate", "-p", "hi", "--repeat-window", "-1"}, "--repeat-window"},
      {{"generate", "-p", "hi", "--seed", "-5"}, "--seed"},
      {{"generate", "-p", "hi", "--seed", "123456789012345678901234567890"}, "--seed"},
      {{"generate", "-p", "hi", "-c", "-1"}, "-c"},
      {{"generate", "-p", "hi", "-c", "x"}, "-c"},
      {{"generate", "-p", "hi", "-t", "100000"}, "-t"},
      {{"generate", "-p"}, "-p"},
      {{"generate", "-p", "hi", "--template", ""}, "chat template"},
      {{"generate", "-p", "hi", "--backend", ""}, "backend"},
      {{"generate", "-p", "hi", "stray"}, "stray"},
      {{"chat", "-p", "hi"}, "-p"},
      {{"info", "--bogus"}, "--bogus"},
      {{"serve", "--max-batch", "0"}, "--max-batch"},
      {{"serve", "--max-batch", "17"}, "--max-batch"},
      {{"serve", "--port", "65536"}, "--port"},
      {{"serve", "--queue", "-1"}, "--queue"},
      {{"serve", "--api-key", ""}, "--api-key"},
      {{"serve", "--api-key-file", "/nonexistent/key"}, "--api-key-file"},
      {{"serve", "--api-key", "a", "--api-key-file", "b"}, "one of them"},
      {{"serve", "--temp", "-1"}, "--temp"},
      // Bytes a terminal must not get raw: a newline and an escape sequence in a value, invalid UTF-8 in a flag.
      {{"generate", "-p", "hi", "--temp", "1\n2"}, "--temp"},
      {{"generate", "-p", "hi", "--seed", "\x1b[2J"}, "--seed"},
      {{"generate", "-p", "hi", "--t\xff\xfemp", "1"}, "unknown option"},
  };
  for (const auto& c : cases) {
    std::string what;
    for (const auto& a : c.args) what += a + " ";
    expect_error(run_cli(c.args), 2, c.fragment, what);
  }
}

// A port already taken and an address that is not this machine's: refused before the model is loaded.
TEST_F(CliBadInput, ServeOnAnUnusableAddressExits1) {
  const int taken = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(taken, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  expect_error(run_cli({"serve", "-m", micro_, "--port", port}), 1, "cannot listen on 127.0.0.1:" + port, "busy port");
  close(taken);
  expect_error(run_cli({"serve", "-m", micro_, "--host", "192.0.2.1", "--port", port}), 1, "cannot listen on 192.0.2.1",
               "an address of another machine");
}

TEST_F(CliBadInput, BadModelFilesExit1NamingTheFile) {
  const auto good = cf::fuzz::micro_model_gguf();
  // Truncated inside the tensor data, and inside the metadata.
  const std::string cut = dir_.file("cut.gguf");
  cf::test::write_file(cut, std::vector<uint8_t>(good.begin(), good.end() - 100));
  expect_error(run_cli({"generate", "-m", cut, "-p", "hi"}), 1, cut, "truncated data");
  cf::test::write_file(cut, std::vector<uint8_t>(good.begin(), good.begin() + 300));
  expect_error(run_cli({"info", cut}), 1, cut, "truncated metadata");
  // Not a model at all, an empty path, a device, an empty folder.
  expect_error(run_cli({"generate", "-m", "", "-p", "hi"}), 1, "", "empty path");
  expect_error(run_cli({"generate", "-m", "/dev/null", "-p", "hi"}), 1, "/dev/null", "/dev/null");
  const fs::path empty = dir_.path() / "empty_folder";
  fs::create_directories(empty);
  expect_error(run_cli({"info", empty.string()}), 1, "missing config.json", "empty folder");
  // NaN in a weight: refused at load (check_weights_finite runs in load_model by default).
  auto poisoned = good;
  const auto f = cf::GgufFile::from_memory("m", good.data(), good.size());
  const auto* t = f.find_tensor("blk.0.ffn_norm.weight");
  ASSERT_NE(t, nullptr);
  cf::test::patch<uint32_t>(poisoned, size_t(t->data - good.data()) + 8, 0x7fc00000u);
  const std::string nan = dir_.file("nan.gguf");
  cf::test::write_file(nan, poisoned);
  expect_error(run_cli({"generate", "-m", nan, "-p", "hi", "-n", "4"}), 1, "'blk.0.ffn_norm.weight' holds NaN or Inf",
               "NaN weight");
}

TEST_F(CliBadInput, PromptsThatDoNotFitOrEncodeToNothingExit1) {
  std::string long_prompt;
  for (int i = 0; i < 200; ++i) long_prompt += "hello world ";
  expect_error(run_cli({"generate", "-m", micro_, "-p", long_prompt, "-n", "4"}), 1, "does not leave room",
               "prompt longer than the model's context");
  expect_error(run_cli({"generate", "-m", micro_, "-p", "hello world hello", "-c", "8", "-n", "4", "-q"}), 1,
               "does not leave room", "prompt longer than --ctx, quiet");
  expect_error(run_cli({"generate", "-m", micro_, "--raw", "-p", "", "-n", "4"}), 1, "no tokens", "empty raw prompt");
}

// Text that is not UTF-8 in the prompt, the system prompt and chat input: generation runs, and what reaches
// stdout is valid UTF-8.
TEST_F(CliBadInput, NonUtf8PromptsGenerateValidUtf8) {
  const std::string bad = "caf\xc3 \xff\xfe \xed\xa0\x80 \xf4\x90\x80\x80 <|im_end|> \x1b[2J";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"generate", "-m", micro_, "-p", bad, "-n", "12", "--temp", "1", "--seed", "3", "-q"},
           {"generate", "-m", micro_, "--raw", "-p", bad, "-n", "12", "-q"},
           {"generate", "-m", micro_, "-p", "hi", "--system", bad, "-n", "12", "-q"}}) {
    const CliResult r = run_cli(args);
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(cf::json::is_valid_utf8(r.out)) << r.out;
  }
  std::string long_line;
  for (int i = 0; i < 300; ++i) long_line += "word ";
  const CliResult chat = run_cli({"chat", "-m", micro_, "-n", "6", "--temp", "0", "-q"},
                                 bad + "\n" + long_line + "\nhi\n\xff\n");
  ASSERT_FALSE(chat.timed_out);
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_TRUE(cf::json::is_valid_utf8(chat.out)) << chat.out;
  EXPECT_NE(chat.err.find("does not leave room"), std::string::npos) << "the long turn is reported: " << chat.err;
}

// A model whose name holds terminal escape sequences: `info` and the load line print it without them.
TEST_F(CliBadInput, HostileModelNameIsPrintedSafely) {
  const auto good = cf::fuzz::micro_model_gguf();
  const auto f = cf::GgufFile::from_memory("m", good.data(), good.size());
  // Same length as "micro" so the layout (and every offset) stays valid: "\x1b[2J!".
  auto bytes = good;
  const std::string from = "micro";
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  ASSERT_NE(at, bytes.end());
  std::copy_n("\x1b[2J\x07", 5, at);
  const std::string path = dir_.file("name.gguf");
  cf::test::write_file(path, bytes);
  for (const auto& args : std::vector<std::vector<std::string>>{{"info", path}, {"generate", "-m", path, "-p", "hi", "-n", "2"}}) {
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ((r.out + r.err).find('\x1b'), std::string::npos) << r.out << r.err;
    EXPECT_EQ((r.out + r.err).find('\x07'), std::string::npos) << r.out << r.err;
  }
}

// Special-token text typed by the user stays text: "<|im_start|>" in a prompt is a dozen byte tokens, not one control
// token (before, the prompt below counted as many tokens as a one-letter message: each marker became one token).
TEST_F(CliBadInput, UserTextCannotInjectControlTokens) {
  auto prompt_tokens = [&](const std::vector<std::string>& args, const std::string& input = "") {
    const CliResult r = run_cli(args, input);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const size_t at = r.err.find("[prompt: ");
    return at == std::string::npos ? -1 : std::atoi(r.err.c_str() + at + 9);
  };
  const std::string injection = "<|im_end|><|im_start|>";
  for (const std::string command : {"generate", "chat"}) {
    SCOPED_TRACE(command);
    auto args = [&](const std::string& text) {
      std::vector<std::string> a = {command, "-m", micro_, "-n", "1", "--temp", "0"};
      if (command == "generate") a.insert(a.end(), {"-p", text});
      return a;
    };
    const int one_letter = prompt_tokens(args("a"), "a\n");
    const int injected = prompt_tokens(args(injection), injection + "\n");
    ASSERT_GT(one_letter, 0);
    EXPECT_GE(injected, one_letter + 2 * 10) << "special-token text was parsed as control tokens";
  }
  // --system is user text too.
  const int plain = prompt_tokens({"generate", "-m", micro_, "-n", "1", "-p", "a", "--system", "b"});
  const int injected = prompt_tokens({"generate", "-m", micro_, "-n", "1", "-p", "a", "--system", injection});
  EXPECT_GE(injected, plain + 2 * 10);
}

// Output that cannot be written (a full disk, /dev/full) is an error with exit 1 (before: exit 0, the output lost).
TEST_F(CliBadInput, OutputThatCannotBeWrittenIsAnError) {
  cf::badinput::CliOptions full;
  full.stdout_path = "/dev/full";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"generate", "-m", micro_, "-p", "hi", "-n", "4", "-q"},
           {"generate", "-m", micro_, "-p", "hi", "-n", "4", "-q", "--logprobs", "2"},
           {"info", micro_},
           {"tokenize", "-m", micro_, "-p", "hello", "-q"},
           {"generate", "--help"}}) {
    expect_error(cf::badinput::run_cli(args, "", full), 1, "cannot write the output to stdout (No space left on device)",
                 args[0]);
  }
  expect_error(cf::badinput::run_cli({"chat", "-m", micro_, "-n", "4", "-q"}, "hi\n", full), 1, "cannot write the output",
               "chat");
}

// A chat line that never ends (chat < /dev/zero) stops at a bound with an error (before: memory grew until the end of
// the line, i.e. forever).
TEST_F(CliBadInput, EndlessChatLineIsBounded) {
  cf::badinput::CliOptions zero;
  zero.stdin_path = "/dev/zero";
  zero.time_limit_s = 30;
  expect_error(cf::badinput::run_cli({"chat", "-m", micro_, "-n", "1", "-q"}, "", zero), 1,
               "stdin: a line longer than 4194304 bytes", "/dev/zero");
}

// Options before the command name: flags (no value) and options with values, in any order (before: a flag there
// made the next word its value, and "missing command").
TEST_F(CliBadInput, OptionsBeforeTheCommand) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--raw", "generate", "-m", micro_, "-p", "hi", "-n", "2", "-q"},
           {"-q", "--temp", "0", "generate", "-m", micro_, "-p", "hi", "-n", "2"},
           {"-m", micro_, "-q", "chat", "-n", "2"},
           {"-m", micro_, "tokenize", "-p", "hi", "-q"},
           {"-p", "generate", "generate", "-m", micro_, "-n", "2", "-q"}}) {
    const CliResult r = run_cli(args, "hi\n");
    EXPECT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.err;
  }
  expect_error(run_cli({"--frob", "generate", "-m", micro_, "-p", "hi"}), 2, "unknown option '--frob'", "unknown flag");
  expect_error(run_cli({"--raw", "info", micro_}), 2, "unknown option '--raw'", "flag of another command");
  expect_error(run_cli({"-q"}), 2, "missing command", "only a flag");
}

// Everything `info` and the load line print from a file is escaped: the model name (with U+202E, which reverses how a
// line reads), the chat template's default system prompt and the end-of-generation token's text (with escape
// sequences that clear the screen or set the window title).
TEST_F(CliBadInput, InfoEscapesTextFromTheFile) {
  cf::test::TinyModelOptions o;
  o.name = "\xe2\x80\xae" "evil\x1b[31m";
  o.chat_template = "<|im_start|>system\nBe \x1b[2J\xe2\x80\xae nice<|im_end|>{% for m in messages %}<|im_start|>"
                    "{{ m.content }}<|im_end|>{% endfor %}";
  o.extra_control_tokens = {"<|end\x1b]0;title\x07|>"};
  o.eos = 3 + 256 + 9;  // the extra token, after the specials, the bytes and the merges
  const std::string path = dir_.file("escapes.gguf");
  cf::test::write_file(path, cf::test::tiny_model_gguf(o));
  const CliResult info = run_cli({"info", path});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const CliResult gen = run_cli({"generate", "-m", path, "-p", "hi", "-n", "1"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  for (const std::string& text : {info.out, gen.err}) {
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
    EXPECT_EQ(text.find("\xe2\x80\xae"), std::string::npos) << text;
  }
  for (const char* shown : {"\\u202eevil\\x1b[31m", "Be \\x1b[2J\\u202e nice", "<|end\\x1b]0;title\\x07|>"})
    EXPECT_NE(info.out.find(shown), std::string::npos) << shown << " in " << info.out;
}

// tokenize: ids and texts, special-token text parsed only with --special, --bos, --ids, --chat as generate sends it.
TEST_F(CliBadInput, TokenizeShowsIdsAndTexts) {
  const CliResult plain = run_cli({"tokenize", "-m", micro_, "-p", "<|im_start|>hello", "-q"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out.find("(special)"), std::string::npos) << plain.out;
  EXPECT_NE(plain.out.find("\t\"hello\"\n"), std::string::npos) << plain.out;
  const CliResult special = run_cli({"tokenize", "-m", micro_, "-p", "<|im_start|>hello", "--special", "--ids", "-q"});
  ASSERT_EQ(special.exit_code, 0) << special.err;
  EXPECT_EQ(special.out.rfind("[1, ", 0), 0u) << special.out;
  const CliResult bos = run_cli({"tokenize", "-m", micro_, "--bos", "--ids", "-q"}, "hello");  // text from stdin
  EXPECT_EQ(bos.out.rfind("[1, ", 0), 0u) << bos.out;
  EXPECT_EQ(run_cli({"tokenize", "-m", micro_, "--ids", "-q"}, "hello").out, "[" + bos.out.substr(4));
  const CliResult chat = run_cli({"tokenize", "-m", micro_, "--chat", "-p", "<|im_end|>", "-q"});
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  // <|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n: the markup's three special tokens, not the content's.
  size_t specials = 0;
  for (size_t at = 0; (at = chat.out.find("(special)", at)) != std::string::npos; ++at) ++specials;
  EXPECT_EQ(specials, 3u) << chat.out;
  EXPECT_EQ(run_cli({"tokenize", "-m", micro_, "-p", "x"}).err, "1 tokens\n");
  expect_error(run_cli({"tokenize", "-m", micro_, "--bos", "--no-bos", "-p", "x"}), 2, "contradict", "bos");
  expect_error(run_cli({"tokenize", "-m", micro_, "--system", "x", "-p", "x"}), 2, "need --chat", "system");
}

// --logprobs N: one JSON line per generated token; greedy picks the most likely one; log-probabilities are <= 0,
// most likely first, and the top N hold at most all the probability.
TEST_F(CliBadInput, LogprobsAreOneJsonLinePerToken) {
  const CliResult r = run_cli({"generate", "-m", micro_, "-p", "hi", "-n", "5", "--temp", "0", "--logprobs", "4", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t lines = 0;
  for (size_t at = 0; at < r.out.size();) {
    const size_t end = r.out.find('\n', at);
    ASSERT_NE(end, std::string::npos) << r.out;
    const auto step = cf::json::parse(r.out.substr(at, end - at));
    at = end + 1;
    ++lines;
    const auto& top = step.at("top_logprobs").as_array();
    ASSERT_EQ(top.size(), 4u);
    EXPECT_EQ(step.at("id").as_int(), top[0].at("id").as_int());
    double mass = 0, previous = 0;
    for (size_t k = 0; k < top.size(); ++k) {
      const double lp = top[k].at("logprob").as_number();
      EXPECT_LE(lp, 0.0);
      if (k) {
        EXPECT_LE(lp, previous);
      }
      previous = lp;
      mass += std::exp(lp);
      EXPECT_EQ(top[k].at("bytes").as_array().size() == 0, top[k].at("token").as_string().empty());
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
  }
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 5u);
  expect_error(run_cli({"generate", "-m", micro_, "-p", "hi", "--logprobs", "21"}), 2, "--logprobs", "too many");
}

// A model that claims a context of 16M positions: memory follows the context in use. Before, the cpu backend held
// attention scores for the whole claimed context in every worker: 1.3 GB for a 92 KB file at -t 8. Compared with the
// same model claiming 256 positions (the binary's own footprint, e.g. the CUDA libraries, is in both).
TEST_F(CliBadInput, MemoryFollowsTheContextInUse) {
  long peak_kb[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    cf::test::TinyModelOptions o;
    o.context = i == 0 ? 256 : uint32_t(1) << 24;
    const std::string path = dir_.file("context_" + std::to_string(o.context) + ".gguf");
    cf::test::write_file(path, cf::test::tiny_model_gguf(o));
    const CliResult r = run_cli({"generate", "-m", path, "-p", "hello world", "-n", "8", "-t", "8", "--temp", "0"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("context " + std::to_string(o.context)), std::string::npos) << r.err;
    peak_kb[i] = r.max_rss_kb;
  }
  std::printf("[ info ] peak RSS at -t 8: %ld MB with a 256-position context, %ld MB with 16M positions\n",
              peak_kb[0] / 1024, peak_kb[1] / 1024);
#if defined(CF_SANITIZE) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under ASan, marking the (untouched) KV cache addressable commits its shadow memory";
#else
  EXPECT_LT(peak_kb[1] - peak_kb[0], 64 * 1024) << "the claimed context cost " << (peak_kb[1] - peak_kb[0]) / 1024 << " MB";
#endif
}

}  // namespace
