// Files that are not what they seem, or change while they are read: FIFOs and devices where a model, a shard or a
// config file is expected (refused at once, never opened for a blocking read); a model truncated or overwritten
// while it is mapped (a clean error, not SIGBUS or garbage weights); paths that fail for another reason than
// "missing" (each says why); unused tensors and duplicate config keys (as the Hugging Face stack reads them).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "badinput_util.hpp"
#include "cli_runner.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "safetensors_writer.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace {
namespace fs = std::filesystem;
using cf::badinput::CliResult;
using cf::badinput::expect_clean_refusal;
using cf::badinput::run_cli;

// A refusal on the command line: exit 1, no hang, the fragment in the last stderr line, no "internal error".
void expect_cli_error(const CliResult& r, const std::string& fragment, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(r.timed_out) << "hang";
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

class Files : public ::testing::Test {
 protected:
  std::string fifo(const std::string& name) {
    const std::string p = dir_.file(name);
    fs::remove(p);
    EXPECT_EQ(::mkfifo(p.c_str(), 0644), 0);
    return p;
  }
  cf::test::TempDir dir_;
};

TEST_F(Files, FifosAreRefusedWithoutBlocking) {
  // Where the model goes (whatever its name), and inside a model folder: the shard, config.json, tokenizer files.
  for (const std::string name : {"model.gguf", "model.safetensors", "model.bin"})
    expect_cli_error(run_cli({"info", fifo(name)}, "", {}, 20), "a FIFO", name);
  const fs::path folder = dir_.path() / "hf";
  for (const std::string file : {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                                 "generation_config.json"}) {
    fs::remove_all(folder);
    cf::test::write_tiny_hf_model(folder, "tiny_smollm");
    fs::remove(folder / file);
    ASSERT_EQ(::mkfifo((folder / file).c_str(), 0644), 0);
    expect_cli_error(run_cli({"info", folder.string()}, "", {}, 20), "a FIFO", file);
    expect_cli_error(run_cli({"generate", "-m", folder.string(), "-p", "hi", "-n", "1"}, "", {}, 20), "a FIFO", file);
  }
  // A shard named by the index that is a FIFO, reached through a file argument.
  fs::remove_all(folder);
  cf::test::TinyHfOptions sharded;
  sharded.sharded = true;
  cf::test::write_tiny_hf_model(folder, "tiny_smollm", sharded);
  fs::remove(folder / "model-00002-of-00002.safetensors");
  ASSERT_EQ(::mkfifo((folder / "model-00002-of-00002.safetensors").c_str(), 0644), 0);
  expect_cli_error(run_cli({"info", (folder / "model-00001-of-00002.safetensors").string()}, "", {}, 20), "a FIFO",
                   "shard");
  // Devices: refused as what they are.
  expect_clean_refusal([] { cf::open_model_file("/dev/zero"); }, "a character device");
}

// Truncated under the mapping while the weights are copied (the load's progress callback cuts the file after the
// first tensor): the reads past the new end see zeros instead of raising SIGBUS, and the load fails naming the cause.
TEST_F(Files, TruncatedWhileLoadingIsAnErrorNotSigbus) {
  const std::string path = dir_.file("tiny.gguf");
  const auto bytes = cf::test::tiny_model_gguf();
  ASSERT_GT(bytes.size(), size_t(16) * 4096);
  for (const uint64_t keep : {uint64_t(0), uint64_t(4096), uint64_t(bytes.size() / 2)}) {
    SCOPED_TRACE(keep);
    cf::test::write_file(path, bytes);
    bool cut = false;
    expect_clean_refusal([&] {
      cf::load_model(path, {}, [&](size_t, size_t) {
        if (!cut) {
          ASSERT_EQ(::truncate(path.c_str(), off_t(keep)), 0);
        }
        cut = true;
      });
    }, "tiny.gguf: the file was truncated while it was being read");
    EXPECT_TRUE(cut);
  }
  // Reading an open file after it was cut: every tensor is still readable (as zeros); the file says it changed.
  cf::test::write_file(path, bytes);
  const auto file = cf::open_model_file(path);
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  cf::check_weights_finite(*file);
  expect_clean_refusal([&] { file->check_unchanged(); }, "was truncated while it was being read");
}

// Overwritten in place while loading (same size, other bytes): the load fails instead of running mixed weights.
TEST_F(Files, ModifiedWhileLoadingIsAnError) {
  const std::string path = dir_.file("tiny.gguf");
  const auto bytes = cf::test::tiny_model_gguf();
  cf::test::write_file(path, bytes);
  bool written = false;
  expect_clean_refusal([&] {
    cf::load_model(path, {}, [&](size_t, size_t) {
      if (written) return;
      written = true;
      const int fd = ::open(path.c_str(), O_WRONLY);
      ASSERT_GE(fd, 0);
      const std::vector<uint8_t> noise(bytes.size() / 2, 0x42);
      ASSERT_EQ(::pwrite(fd, noise.data(), noise.size(), off_t(bytes.size() / 4)), ssize_t(noise.size()));
      ::close(fd);
    });
  }, "tiny.gguf: the file was modified while it was being read");
  // Growing it (a download still being written) is reported as a size change.
  cf::test::write_file(path, bytes);
  written = false;
  expect_clean_refusal([&] {
    cf::load_model(path, {}, [&](size_t, size_t) {
      if (written) return;
      written = true;
      std::FILE* f = std::fopen(path.c_str(), "ab");
      std::fputs("more", f);
      std::fclose(f);
    });
  }, "changed size while it was being read");
  // Replacing the file by renaming another over it leaves the open one intact: that load is consistent.
  cf::test::write_file(path, bytes);
  const std::string other = dir_.file("other.gguf");
  cf::test::write_file(other, bytes);
  bool renamed = false;
  const auto model = cf::load_model(path, {}, [&](size_t, size_t) {
    if (!renamed) fs::rename(other, path);
    renamed = true;
  });
  EXPECT_EQ(model.weights->layers.size(), size_t(cf::test::kTinyLayers));
}

// Paths that fail for another reason than "missing" say why (before: "no such file" for all of them, and
// "internal error: filesystem error" inside folders and for the cache folder).
TEST_F(Files, PathErrorsSayWhatIsWrong) {
  const std::string a = dir_.file("loop_a"), b = dir_.file("loop_b");
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  expect_clean_refusal([&] { cf::open_model_file(a); }, "Too many levels of symbolic links");
  const std::string file = dir_.file("plain.gguf");
  cf::test::write_file(file, cf::test::tiny_model_gguf());
  expect_clean_refusal([&] { cf::open_model_file(file + "/model.gguf"); }, "is a file, not a folder");
  expect_clean_refusal([&] { cf::open_model_file(dir_.file(std::string(300, 'x'))); }, "File name too long");
  expect_clean_refusal([&] { cf::open_model_file(dir_.file("missing.gguf")); }, "no such file or directory");
  // Inside a folder: an entry that is a symbolic-link loop.
  const fs::path folder = dir_.path() / "hf";
  cf::test::write_tiny_hf_model(folder, "tiny_smollm");
  fs::remove(folder / "tokenizer.json");
  fs::create_symlink(folder / "tokenizer.json", folder / "tokenizer.json");
  expect_clean_refusal([&] { cf::open_model_file(folder.string()); }, "tokenizer.json: Too many levels of symbolic links");
  // The cache folder (for the default model) through the command line.
  expect_cli_error(run_cli({"generate", "-p", "hi"}, "", {"CF_CACHE_DIR=" + a}), "Too many levels of symbolic links",
                   "cache folder is a loop");
  expect_cli_error(run_cli({"generate", "-p", "hi"}, "", {"CF_CACHE_DIR=" + file}), "is a file, not a folder",
                   "cache folder is a file");
}

// Permission problems say so, whatever the file is called (before: "not a model" for a file not named .gguf).
TEST_F(Files, PermissionErrorsSaySo) {
  const std::string model = dir_.file("model.bin");
  cf::test::write_file(model, cf::test::tiny_model_gguf());
  ASSERT_EQ(::chmod(model.c_str(), 0), 0);
  const fs::path folder = dir_.path() / "hf";
  cf::test::write_tiny_hf_model(folder, "tiny_smollm");
  const fs::path locked = dir_.path() / "locked";
  cf::test::write_tiny_hf_model(locked, "tiny_smollm");
  ASSERT_EQ(::chmod((folder / "config.json").c_str(), 0), 0);
  ASSERT_EQ(::chmod(locked.c_str(), 0644), 0);  // listable name, but its entries cannot be reached
  const CliResult probe = run_cli({"--version"}, "", {}, 20, /*unprivileged=*/true);
  if (probe.exit_code == 125) GTEST_SKIP() << "cannot run as an unprivileged user here";
  ASSERT_EQ(probe.exit_code, 0) << probe.err;
  expect_cli_error(run_cli({"info", model}, "", {}, 20, true), "model.bin: cannot open (Permission denied)", "file");
  expect_cli_error(run_cli({"info", folder.string()}, "", {}, 20, true), "config.json: cannot open (Permission denied)",
                   "config.json");
  expect_cli_error(run_cli({"info", locked.string()}, "", {}, 20, true), "config.json: Permission denied", "folder");
  ::chmod(locked.c_str(), 0755);
}

// A tensor the model does not use never refuses it: a scalar, an int64 buffer, a float64 table.
TEST_F(Files, UnusedTensorsOfAnyShapeAreIgnored) {
  std::mt19937 rng(1);
  cf::test::TinyHfOptions o;
  o.extra_tensors = {{"model.logit_scale", "F32", {}, cf::test::random_tensor_bytes("F32", 1, rng)},
                     {"model.layers.0.self_attn.rotary_emb.inv_freq", "F64", {4}, std::vector<uint8_t>(32, 0)},
                     {"model.step", "I64", {}, std::vector<uint8_t>(8, 0)}};
  const fs::path folder = dir_.path() / "hf";
  cf::test::write_tiny_hf_model(folder, "tiny_smollm", o);
  const auto m = cf::open_model_file(folder.string());
  EXPECT_EQ(m->config().n_layers, 2);
  const cf::TensorRef* scalar = m->find("model.logit_scale");
  ASSERT_NE(scalar, nullptr);
  EXPECT_EQ(scalar->numel(), 1);
  cf::check_weights_finite(*m);
}

// config.json with a key twice: the last one counts, as in Python's json (what transformers reads it with).
TEST_F(Files, DuplicateConfigKeysTakeTheLastValue) {
  cf::test::TinyHfOptions o;
  o.extra_config = ",\"rope_theta\":500000.0,\"max_position_embeddings\":128";
  const fs::path folder = dir_.path() / "hf";
  cf::test::write_tiny_hf_model(folder, "tiny_smollm", o);
  const auto m = cf::open_model_file(folder.string());
  EXPECT_EQ(m->config().rope_theta, 500000.0f);
  EXPECT_EQ(m->config().max_context, 128);
}

// Without HOME (a service, `env -i`), the default model is looked for under the account's home folder, never
// relative to the current folder (before: ./.cache/clusterfusion/...); a relative XDG_CACHE_HOME is ignored (XDG).
TEST_F(Files, DefaultModelPathIsAbsoluteWithoutHome) {
  for (const std::vector<std::string>& env : {std::vector<std::string>{"HOME", "XDG_CACHE_HOME", "CF_CACHE_DIR"},
                                              std::vector<std::string>{"HOME=relative", "XDG_CACHE_HOME=cache", "CF_CACHE_DIR"}}) {
    const CliResult r = run_cli({"generate", "--help"}, "", env);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const size_t at = r.out.find("[default: ");
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_EQ(r.out.substr(at + 10, 1), "/") << r.out.substr(at, 80);
  }
}

}  // namespace
