// JSON text -> parse (small limits, so the limits are exercised too) -> serialise -> parse again: the two trees
// must be equal, and every accessor must agree with kind().
#include <cmath>
#include <cstdio>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

namespace {
using json::Value;

void write_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

void write(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Null: out += "null"; break;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; break;
    case Value::Kind::Number: {
      if (v.is_integer()) {
        out += std::to_string(v.as_int());
      } else {
        char buf[40];
        std::snprintf(buf, sizeof buf, "%.17g", v.as_number());
        out += buf;
      }
      break;
    }
    case Value::Kind::String: write_string(out, v.as_string()); break;
    case Value::Kind::Array: {
      out += '[';
      bool first = true;
      for (const auto& x : v.as_array()) {
        if (!first) out += ',';
        first = false;
        write(out, x);
      }
      out += ']';
      break;
    }
    case Value::Kind::Object: {
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.as_object()) {
        if (!first) out += ',';
        first = false;
        write_string(out, k);
        out += ':';
        write(out, x);
      }
      out += '}';
      break;
    }
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Null: return true;
    case Value::Kind::Bool: return a.as_bool() == b.as_bool();
    case Value::Kind::Number:
      if (a.is_integer() && b.is_integer()) return a.as_int() == b.as_int();
      return a.as_number() == b.as_number();
    case Value::Kind::String: return a.as_string() == b.as_string();
    case Value::Kind::Array: {
      const auto &x = a.as_array(), &y = b.as_array();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equal(x[i], y[i])) return false;
      return true;
    }
    case Value::Kind::Object: {
      const auto &x = a.as_object(), &y = b.as_object();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (x[i].first != y[i].first || !equal(x[i].second, y[i].second)) return false;
      return true;
    }
  }
  return false;
}

void check_accessors(const Value& v) {
  CF_FUZZ_ASSERT(v.is_number() || !v.is_integer(), "is_integer() on a non-number");
  if (v.is_number()) {
    CF_FUZZ_ASSERT(std::isfinite(v.as_number()), "non-finite number parsed");
    if (v.is_integer()) CF_FUZZ_ASSERT(double(v.as_int()) == v.as_number(), "integer and double disagree");
  }
  if (v.is_string()) CF_FUZZ_ASSERT(json::is_valid_utf8(v.as_string()), "string is not valid UTF-8");
  if (v.is_array())
    for (const auto& x : v.as_array()) check_accessors(x);
  if (v.is_object())
    for (const auto& [k, x] : v.as_object()) {
      CF_FUZZ_ASSERT(json::is_valid_utf8(k), "key is not valid UTF-8");
      CF_FUZZ_ASSERT(v.find(k) != nullptr, "find() misses a key");
      check_accessors(x);
    }
}
}  // namespace

void json(const uint8_t* data, size_t size) {
  json::ParseLimits limits;
  limits.max_depth = 32;
  limits.max_values = 4096;
  Value v;
  try {
    v = json::parse(as_text(data, size), limits);
  } catch (const InputError&) {
    return;
  }
  check_accessors(v);
  std::string text;
  write(text, v);
  json::ParseLimits loose;
  loose.max_depth = 64;
  Value again;
  try {
    again = json::parse(text, loose);
  } catch (const InputError& e) {
    CF_FUZZ_ASSERT(false, "serialised document does not parse: " + std::string(e.what()) + " in '" + show(text) + "'");
  }
  CF_FUZZ_ASSERT(equal(v, again), "document changed through serialise + parse: '" + show(text) + "'");
}

}  // namespace cf::fuzz
