// Benchmark reporting shared by the bench programs: sample statistics, an aligned text table, a small JSON value
// with a writer, and run metadata (git sha, time). CPU only; the GPU side is in gpu_timing.hpp.
#pragma once
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace cf::bench {

struct Stats {
  double median = 0, min = 0, max = 0, mean = 0;
  int count = 0;
};
Stats summarize(std::vector<double> samples);

// printf into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A text table: columns are right-aligned except the first `left_columns`.
class Table {
 public:
  explicit Table(std::vector<std::string> header, int left_columns = 1)
      : header_(std::move(header)), left_columns_(left_columns) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void add_separator() { rows_.emplace_back(); }
  void print(std::FILE* out = stdout) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
  int left_columns_;
};

// A JSON value for writing results (objects keep insertion order).
class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;  // null
  Json(bool b) : value_(b) {}
  Json(double d) : value_(d) {}
  Json(int i) : value_(double(i)) {}
  Json(int64_t i) : value_(double(i)) {}
  Json(size_t i) : value_(double(i)) {}
  Json(const char* s) : value_(std::string(s)) {}
  Json(std::string s) : value_(std::move(s)) {}
  static Json array() { Json j; j.value_ = std::make_shared<Array>(); return j; }
  static Json object() { Json j; j.value_ = std::make_shared<Object>(); return j; }

  // Object: appends key (or replaces an existing one). Array: push.
  Json& set(const std::string& key, Json value);
  Json& push(Json value);
  bool is_null() const { return std::holds_alternative<std::monostate>(value_); }

  std::string dump(int indent = 1) const;

 private:
  void dump_to(std::string& out, int indent, int depth) const;
  std::variant<std::monostate, bool, double, std::string, std::shared_ptr<Array>, std::shared_ptr<Object>> value_;
};

// $CF_GIT_SHA, else the sha CMake saw at configure time, else "unknown".
std::string git_sha();

// A benchmark's main(): body's exit code; a cf::InputError (bad arguments, no GPU) prints "<program>: <what>" and
// exits 2, any other error "<program>: error: <what>" and exits 1.
int run_main(const char* program, int (*body)(int, char**), int argc, char** argv);
// UTC time, ISO 8601.
std::string utc_now();
// Writes text to a file; throws cf::Error naming the path on failure.
void write_file(const std::string& path, const std::string& text);

}  // namespace cf::bench
