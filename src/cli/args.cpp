#include "args.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace cf::cli {

namespace {

// Value parsers throw UsageError("expected ..."); parse() prefixes the option as the user wrote it.
long long parse_integer(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) throw UsageError("expected an integer, got '" + text + "'");
  return v;
}

}  // namespace

void ArgParser::flag(const std::string& name, char short_name, const std::string& help, bool* out) {
  specs_.push_back({name, short_name, "", help, [out](const std::string&) { *out = true; }});
}

void ArgParser::option(const std::string& name, char short_name, const std::string& value_name,
                       const std::string& help, std::string* out) {
  specs_.push_back({name, short_name, value_name, help, [out](const std::string& v) { *out = v; }});
}

void ArgParser::option(const std::string& name, char short_name, const std::string& value_name,
                       const std::string& help, std::optional<std::string>* out) {
  specs_.push_back({name, short_name, value_name, help, [out](const std::string& v) { *out = v; }});
}

void ArgParser::option(const std::string& name, char short_name, const std::string& value_name,
                       const std::string& help, int* out, int min_value, int max_value) {
  specs_.push_back({name, short_name, value_name, help, [=](const std::string& v) {
                      const long long x = parse_integer(v);
                      if (x < min_value || x > max_value)
                        throw UsageError("expected an integer in " + std::to_string(min_value) +
                                         ".." + std::to_string(max_value) + ", got " + v);
                      *out = int(x);
                    }});
}

void ArgParser::option(const std::string& name, char short_name, const std::string& value_name,
                       const std::string& help, float* out) {
  specs_.push_back({name, short_name, value_name, help, [=](const std::string& v) {
                      char* end = nullptr;
                      const float x = std::strtof(v.c_str(), &end);
                      if (v.empty() || *end != '\0' || !std::isfinite(x))
                        throw UsageError("expected a number, got '" + v + "'");
                      *out = x;
                    }});
}

void ArgParser::option(const std::string& name, char short_name, const std::string& value_name,
                       const std::string& help, uint64_t* out) {
  specs_.push_back({name, short_name, value_name, help, [=](const std::string& v) {
                      char* end = nullptr;
                      errno = 0;
                      const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
                      if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
                        throw UsageError("expected a non-negative integer, got '" + v + "'");
                      *out = x;
                    }});
}

void ArgParser::positional(const std::string& name, const std::string& help, std::optional<std::string>* out) {
  positionals_.push_back({name, help, out});
}

void ArgParser::section(const std::string& title) { specs_.push_back({"", 0, "", title, nullptr}); }

const ArgParser::Spec* ArgParser::find_long(const std::string& name) const {
  for (const auto& s : specs_)
    if (!s.name.empty() && s.name == name) return &s;
  return nullptr;
}

const ArgParser::Spec* ArgParser::find_short(char c) const {
  for (const auto& s : specs_)
    if (!s.name.empty() && s.short_name == c) return &s;
  return nullptr;
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  bool only_positionals = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!only_positionals && (a == "--help" || a == "-h")) return false;
    if (!only_positionals && a == "--") {
      only_positionals = true;
      continue;
    }
    if (!only_positionals && a.size() > 1 && a[0] == '-') {
      const Spec* spec = nullptr;
      std::optional<std::string> inline_value;
      std::string shown;
      if (a[1] == '-') {
        const size_t eq = a.find('=');
        const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        if (eq != std::string::npos) inline_value = a.substr(eq + 1);
        spec = find_long(name);
        shown = "--" + name;
      } else if (a.size() == 2) {
        spec = find_short(a[1]);
        shown = a;
      }
      if (!spec) throw UsageError("unknown option '" + a + "' (see --help)");
      if (spec->value_name.empty()) {
        if (inline_value) throw UsageError(shown + " takes no value");
        spec->set("");
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= args.size()) throw UsageError(shown + ": missing value " + spec->value_name);
        inline_value = args[++i];
      }
      try {
        spec->set(*inline_value);
      } catch (const UsageError& e) {
        throw UsageError(shown + ": " + e.what());
      }
      continue;
    }
    if (next_positional >= positionals_.size()) throw UsageError("unexpected argument '" + a + "' (see --help)");
    *positionals_[next_positional++].out = a;
  }
  return true;
}

size_t ArgParser::leading_options(const std::vector<std::string>& args) const {
  size_t i = 0;
  while (i < args.size()) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-' || a == "--") break;
    const Spec* spec = nullptr;
    bool inline_value = false;
    if (a[1] == '-') {
      const size_t eq = a.find('=');
      spec = find_long(a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2));
      inline_value = eq != std::string::npos;
    } else if (a.size() == 2) {
      spec = find_short(a[1]);
    }
    if (!spec) break;
    const bool needs_next = !spec->value_name.empty() && !inline_value;
    if (needs_next && i + 1 >= args.size()) break;
    i += needs_next ? 2 : 1;
  }
  return i;
}

std::string ArgParser::help() const {
  std::ostringstream out;
  out << "usage: " << usage_ << "\n\n" << description_ << "\n";
  if (!positionals_.empty()) {
    out << "\narguments:\n";
    for (const auto& p : positionals_) out << "  " << p.name << std::string(p.name.size() < 26 ? 26 - p.name.size() : 1, ' ') << p.help << "\n";
  }
  bool heading_shown = false;
  for (const auto& s : specs_) {
    if (s.name.empty()) {
      out << "\n" << s.help << ":\n";
      heading_shown = true;
      continue;
    }
    if (!heading_shown) {
      out << "\noptions:\n";
      heading_shown = true;
    }
    std::string left = s.short_name ? std::string("-") + s.short_name + ", " : "    ";
    left += "--" + s.name;
    if (!s.value_name.empty()) left += " " + s.value_name;
    out << "  " << left << std::string(left.size() < 26 ? 26 - left.size() : 1, ' ') << s.help << "\n";
  }
  out << "  -h, --help                " << "show this help\n";
  return out.str();
}

}  // namespace cf::cli
