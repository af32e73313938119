// Helpers shared by the engine tests: error expectations, temporary folders, the default model's location.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string>

#include "clusterfusion/common/error.hpp"

namespace cf::test {

// Runs fn; passes when it throws cf::InputError whose message contains every fragment. Returns the message.
inline std::string expect_input_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
  } catch (const cf::InputError& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cf::InputError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected cf::InputError, nothing was thrown";
  return {};
}

// A fresh folder under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string leaf = "cf_test_";
    if (info) leaf += std::string(info->test_suite_name()) + "_" + info->name();
    path_ = std::filesystem::temp_directory_path() / (leaf + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string cache_dir() {
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/clusterfusion";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/clusterfusion";
  return {};
}

// Path of the default model, or "" when it is not installed.
inline std::string default_model_path() {
  const std::string p = cache_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : std::string();
}

#define CF_REQUIRE_DEFAULT_MODEL(var)                                                                            \
  const std::string var = ::cf::test::default_model_path();                                                      \
  if (var.empty()) GTEST_SKIP() << "default model not found under " << ::cf::test::cache_dir()                   \
                                << "/models (run scripts/setup.sh)"

inline std::string data_path(const std::string& rel) { return std::string(CF_SOURCE_DIR) + "/tests/data/" + rel; }

}  // namespace cf::test
