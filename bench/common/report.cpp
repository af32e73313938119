#include "common/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>

#include "clusterfusion/common/error.hpp"

#ifndef CF_BENCH_GIT_SHA
#define CF_BENCH_GIT_SHA "unknown"
#endif

namespace cf::bench {

Stats summarize(std::vector<double> samples) {
  Stats s;
  s.count = int(samples.size());
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  s.median = n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
  s.min = samples.front();
  s.max = samples.back();
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean = sum / double(n);
  return s;
}

std::string format(const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  const int n = std::vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  if (n < 0) return {};
  if (size_t(n) < sizeof buffer) return std::string(buffer, size_t(n));
  std::string big(size_t(n) + 1, '\0');
  va_start(args, fmt);
  std::vsnprintf(big.data(), big.size(), fmt, args);
  va_end(args);
  big.resize(size_t(n));
  return big;
}

void Table::print(std::FILE* out) const {
  std::vector<size_t> width(header_.size(), 0);
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  auto print_row = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      if (int(c) < left_columns_)
        std::fprintf(out, "%-*s", int(width[c]), cell.c_str());
      else
        std::fprintf(out, "%*s", int(width[c]), cell.c_str());
      std::fprintf(out, c + 1 < width.size() ? "  " : "\n");
    }
  };
  auto print_rule = [&] {
    size_t total = 0;
    for (size_t w : width) total += w + 2;
    std::fprintf(out, "%s\n", std::string(total > 2 ? total - 2 : 0, '-').c_str());
  };
  print_row(header_);
  print_rule();
  for (const auto& row : rows_) {
    if (row.empty())
      print_rule();
    else
      print_row(row);
  }
  std::fflush(out);
}

Json& Json::set(const std::string& key, Json value) {
  auto* obj = std::get_if<std::shared_ptr<Object>>(&value_);
  CF_CHECK(obj != nullptr, "Json::set on a non-object");
  for (auto& [k, v] : **obj)
    if (k == key) {
      v = std::move(value);
      return *this;
    }
  (*obj)->emplace_back(key, std::move(value));
  return *this;
}

Json& Json::push(Json value) {
  auto* arr = std::get_if<std::shared_ptr<Array>>(&value_);
  CF_CHECK(arr != nullptr, "Json::push on a non-array");
  (*arr)->push_back(std::move(value));
  return *this;
}

namespace {
void append_escaped(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20)
          out += format("\\u%04x", c);
        else
          out += char(c);
    }
  }
  out += '"';
}
}  // namespace

void Json::dump_to(std::string& out, int indent, int depth) const {
  const std::string pad = indent > 0 ? "\n" + std::string(size_t(indent * (depth + 1)), ' ') : "";
  const std::string pad_end = indent > 0 ? "\n" + std::string(size_t(indent * depth), ' ') : "";
  if (std::holds_alternative<std::monostate>(value_)) {
    out += "null";
  } else if (const bool* b = std::get_if<bool>(&value_)) {
    out += *b ? "true" : "false";
  } else if (const double* d = std::get_if<double>(&value_)) {
    if (!std::isfinite(*d))
      out += "null";  // JSON has no inf/nan
    else if (*d == std::floor(*d) && std::fabs(*d) < 1e15)
      out += format("%.0f", *d);
    else
      out += format("%.6g", *d);
  } else if (const std::string* s = std::get_if<std::string>(&value_)) {
    append_escaped(out, *s);
  } else if (const auto* a = std::get_if<std::shared_ptr<Array>>(&value_)) {
    out += '[';
    for (size_t i = 0; i < (*a)->size(); ++i) {
      out += i ? "," : "";
      out += pad;
      (**a)[i].dump_to(out, indent, depth + 1);
    }
    if (!(*a)->empty()) out += pad_end;
    out += ']';
  } else if (const auto* o = std::get_if<std::shared_ptr<Object>>(&value_)) {
    out += '{';
    for (size_t i = 0; i < (*o)->size(); ++i) {
      out += i ? "," : "";
      out += pad;
      append_escaped(out, (**o)[i].first);
      out += indent > 0 ? ": " : ":";
      (**o)[i].second.dump_to(out, indent, depth + 1);
    }
    if (!(*o)->empty()) out += pad_end;
    out += '}';
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  out += '\n';
  return out;
}

std::string git_sha() {
  const char* env = std::getenv("CF_GIT_SHA");
  if (env && *env) return env;
  return CF_BENCH_GIT_SHA;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "' for writing");
  f << text;
  if (!f) throw Error("failed to write '" + path + "'");
}

int run_main(const char* program, int (*body)(int, char**), int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const InputError& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace cf::bench
