#include "common/args.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "clusterfusion/common/error.hpp"

namespace cf::bench {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int parse_int(const std::string& s, const char* flag, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < lo || v > hi)
    throw InputError(std::string(flag) + ": '" + s + "' is not an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return int(v);
}

std::string canonical_model(const std::string& name) {
  if (name == "llama2" || name == "llama2-7b") return "llama2-7b";
  if (name == "llama3" || name == "llama3-8b") return "llama3-8b";
  if (name == "smollm2" || name == "smollm2-135m") return "smollm2-135m";
  throw InputError("--models: unknown model '" + name + "' (known: llama2, llama3, smollm2)");
}

std::vector<int> parse_int_list(const std::string& s, const char* flag, int lo, int hi) {
  std::vector<int> out;
  for (const auto& item : split_list(s)) out.push_back(parse_int(item, flag, lo, hi));
  if (out.empty()) throw InputError(std::string(flag) + ": expected at least one value");
  return out;
}

std::vector<std::string> parse_choices(const std::string& s, const char* flag, const std::vector<std::string>& allowed) {
  const std::vector<std::string> items = split_list(s);
  if (items.empty()) throw InputError(std::string(flag) + ": expected at least one value");
  std::string names;
  for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
  for (const auto& item : items)
    if (std::find(allowed.begin(), allowed.end(), item) == allowed.end())
      throw InputError(std::string(flag) + ": '" + item + "' is not one of " + names);
  return items;
}

bool ArgReader::next() {
  if (++i_ >= argc_) return false;
  arg_ = argv_[i_];
  if (arg_ == "--help" || arg_ == "-h") {
    std::fputs(usage_, stdout);
    std::exit(0);
  }
  return true;
}

std::string ArgReader::value() {
  if (i_ + 1 >= argc_) throw InputError(arg_ + ": missing value");
  return argv_[++i_];
}

void ArgReader::unknown() const { throw InputError("unknown option '" + arg_ + "' (--help lists the options)"); }

bool read_graph_bench_option(ArgReader& args, GraphBenchOptions& o) {
  if (args.is("--calls")) {
    o.calls_per_graph = parse_int(args.value(), "--calls", 1, 1000);
  } else if (args.is("--replays")) {
    o.replays = parse_int(args.value(), "--replays", 1, 100000);
  } else if (args.is("--bandwidth-mib")) {
    o.bandwidth_bytes = size_t(parse_int(args.value(), "--bandwidth-mib", 16, 1 << 16)) << 20;
  } else if (args.is("--json")) {
    o.json_path = args.value();
  } else {
    return false;
  }
  return true;
}

}  // namespace cf::bench
