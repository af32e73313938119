#include "clusterfusion/common/json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "clusterfusion/common/text.hpp"

namespace cf::json {

Value Value::make_bool(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.bool_ = b;
  return v;
}
Value Value::make_number(double d, bool is_integer, int64_t i) {
  Value v;
  v.kind_ = Kind::Number;
  v.number_ = d;
  v.is_integer_ = is_integer;
  v.integer_ = i;
  return v;
}
Value Value::make_string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.string_ = std::move(s);
  return v;
}
Value Value::make_array(Array a) {
  Value v;
  v.kind_ = Kind::Array;
  v.array_ = std::make_shared<Array>(std::move(a));
  return v;
}
Value Value::make_object(Object o) {
  Value v;
  v.kind_ = Kind::Object;
  v.object_ = std::make_shared<Object>(std::move(o));
  return v;
}

const char* Value::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "bool";
    case Kind::Number: return "number";
    case Kind::String: return "string";
    case Kind::Array: return "array";
    case Kind::Object: return "object";
  }
  return "?";
}

namespace {
[[noreturn]] void kind_error(Value::Kind want, Value::Kind got, std::string_view what) {
  throw InputError("json: expected " + std::string(Value::kind_name(want)) + " for " + std::string(what) + ", got " +
                   Value::kind_name(got));
}
}  // namespace

bool Value::as_bool(std::string_view what) const {
  if (kind_ != Kind::Bool) kind_error(Kind::Bool, kind_, what);
  return bool_;
}
double Value::as_number(std::string_view what) const {
  if (kind_ != Kind::Number) kind_error(Kind::Number, kind_, what);
  return number_;
}
int64_t Value::as_int(std::string_view what) const {
  if (kind_ != Kind::Number) kind_error(Kind::Number, kind_, what);
  if (!is_integer_) throw InputError("json: expected an integer for " + std::string(what));
  return integer_;
}
const std::string& Value::as_string(std::string_view what) const {
  if (kind_ != Kind::String) kind_error(Kind::String, kind_, what);
  return string_;
}
const Value::Array& Value::as_array(std::string_view what) const {
  if (kind_ != Kind::Array) kind_error(Kind::Array, kind_, what);
  return *array_;
}
const Value::Object& Value::as_object(std::string_view what) const {
  if (kind_ != Kind::Object) kind_error(Kind::Object, kind_, what);
  return *object_;
}
const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::Object) return nullptr;
  // The last of duplicate keys, as Python's json (what the Hugging Face stack reads these files with) keeps.
  for (auto it = object_->rbegin(); it != object_->rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}
const Value& Value::at(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw InputError("json: missing key '" + std::string(key) + "'");
  return *v;
}

std::string quote(std::string_view text) {
  static const char* hex = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t len = utf8_sequence(text, i, cp);
    if (len == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (cp == '"' || cp == '\\') {
      out += '\\';
      out += char(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (is_terminal_control(cp)) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += hex[(cp >> shift) & 15];
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out + "\"";
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xc0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xe0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(char(0xf0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  }
}

namespace {
// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 when the bytes there are not one.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto c = uint8_t(s[i]);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = uint8_t(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
  if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}
}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

namespace {

// Position of the first significant digit of a JSON number token relative to the decimal point (1 for "5", -2 for
// "0.005", 309 for "1e308"), saturating. It tells an overflow (> 0) from an underflow (<= 0) when from_chars reports
// a number out of range.
int64_t decimal_magnitude(std::string_view tok) {
  auto digit = [&](size_t i) { return i < tok.size() && tok[i] >= '0' && tok[i] <= '9'; };
  size_t i = (!tok.empty() && tok[0] == '-') ? 1 : 0;
  int64_t magnitude = 0;
  bool significant = false;
  for (; digit(i); ++i)
    if (significant || tok[i] != '0') {
      significant = true;
      ++magnitude;
    }
  if (i < tok.size() && tok[i] == '.')
    for (++i; digit(i); ++i)
      if (!significant) {
        if (tok[i] != '0') significant = true;
        else --magnitude;
      }
  if (i < tok.size() && (tok[i] == 'e' || tok[i] == 'E')) {
    ++i;
    const bool negative = i < tok.size() && tok[i] == '-';
    if (i < tok.size() && (tok[i] == '-' || tok[i] == '+')) ++i;
    int64_t exponent = 0;
    for (; digit(i); ++i) exponent = std::min<int64_t>(exponent * 10 + (tok[i] - '0'), int64_t(1) << 40);
    magnitude += negative ? -exponent : exponent;
  }
  return magnitude;
}

class Parser {
 public:
  Parser(std::string_view text, const ParseLimits& limits) : s_(text), limits_(limits) {}

  Value document() {
    if (s_.size() > limits_.max_bytes)
      throw InputError("json: document of " + std::to_string(s_.size()) + " bytes exceeds the limit of " +
                       std::to_string(limits_.max_bytes));
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError("json: " + what + " at byte " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool consume(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect_word(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) fail("invalid literal");
    pos_ += w.size();
  }

  Value value(int depth) {
    if (depth > limits_.max_depth) fail("nesting deeper than " + std::to_string(limits_.max_depth));
    if (++values_ > limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " values");
    if (pos_ >= s_.size()) fail("unexpected end of input");
    switch (s_[pos_]) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"': return Value::make_string(string());
      case 't': expect_word("true"); return Value::make_bool(true);
      case 'f': expect_word("false"); return Value::make_bool(false);
      case 'n': expect_word("null"); return Value();
      default: return number();
    }
  }

  Value object(int depth) {
    ++pos_;  // '{'
    Value::Object members;
    skip_ws();
    if (consume('}')) return Value::make_object(std::move(members));
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key");
      std::string key = string();
      skip_ws();
      if (!consume(':')) fail("expected ':'");
      skip_ws();
      Value v = value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (consume(',')) continue;
      if (consume('}')) break;
      fail("expected ',' or '}'");
    }
    return Value::make_object(std::move(members));
  }

  Value array(int depth) {
    ++pos_;  // '['
    Value::Array items;
    skip_ws();
    if (consume(']')) return Value::make_array(std::move(items));
    for (;;) {
      skip_ws();
      items.push_back(value(depth + 1));
      skip_ws();
      if (consume(',')) continue;
      if (consume(']')) break;
      fail("expected ',' or ']'");
    }
    return Value::make_array(std::move(items));
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else fail("invalid hex digit in \\u escape");
    }
    return v;
  }

  std::string string() {
    ++pos_;  // opening quote
    std::string out;
    const size_t start = pos_;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        break;
      }
      if (uint8_t(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out.push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') fail("unpaired high surrogate");
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xdc00 || lo > 0xdfff) fail("invalid low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail("unpaired low surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("invalid escape");
      }
    }
    if (!is_valid_utf8(out)) {
      pos_ = start;
      fail("string is not valid UTF-8");
    }
    return out;
  }

  Value number() {
    const size_t start = pos_;
    consume('-');
    if (pos_ >= s_.size()) fail("invalid number");
    if (s_[pos_] == '0') {
      ++pos_;
    } else if (s_[pos_] >= '1' && s_[pos_] <= '9') {
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    } else {
      fail("unexpected character");
    }
    bool integral = true;
    if (consume('.')) {
      integral = false;
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') fail("invalid fraction");
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (!consume('+')) consume('-');
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') fail("invalid exponent");
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    }
    const std::string_view tok = s_.substr(start, pos_ - start);
    double d = 0;
    // Locale-independent. Out of range leaves d = 0: right for an underflow, an error for an overflow (1e999 must
    // not quietly read as 0).
    if (std::from_chars(tok.data(), tok.data() + tok.size(), d).ec == std::errc::result_out_of_range &&
        decimal_magnitude(tok) > 0) {
      pos_ = start;
      fail("number out of range");
    }
    int64_t i = 0;
    if (integral) {
      auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), i);
      if (ec != std::errc() || p != tok.data() + tok.size()) integral = false;  // out of int64 range
    }
    return Value::make_number(d, integral, i);
  }

  std::string_view s_;
  ParseLimits limits_;
  size_t pos_ = 0;
  size_t values_ = 0;
};

}  // namespace

Value parse(std::string_view text, const ParseLimits& limits) { return Parser(text, limits).document(); }

// ---- writer --------------------------------------------------------------------------------------------------

namespace {
// Appends s as a JSON string literal.
void append_quoted(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0) {
      out += "\ufffd";  // not UTF-8: the replacement character keeps the document valid
      ++i;
      continue;
    }
    if (len > 1) {
      out.append(s.substr(i, len));
    } else if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(char(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    } else {
      out.push_back(char(c));
    }
    i += len;
  }
  out.push_back('"');
}
}  // namespace

void Writer::before_value() {
  if (levels_.empty()) {
    CF_CHECK(out_.empty(), "json::Writer: a second top-level value");
    return;
  }
  Level& level = levels_.back();
  if (level.object) {
    CF_CHECK(level.key_written, "json::Writer: a value in an object needs a key first");
    level.key_written = false;
  } else {
    if (!level.empty) out_.push_back(',');
    level.empty = false;
  }
}

Writer& Writer::begin_object() {
  before_value();
  out_.push_back('{');
  levels_.push_back({true});
  return *this;
}

Writer& Writer::end_object() {
  CF_CHECK(!levels_.empty() && levels_.back().object && !levels_.back().key_written,
           "json::Writer: end_object without a matching begin_object");
  levels_.pop_back();
  out_.push_back('}');
  return *this;
}

Writer& Writer::begin_array() {
  before_value();
  out_.push_back('[');
  levels_.push_back({false});
  return *this;
}

Writer& Writer::end_array() {
  CF_CHECK(!levels_.empty() && !levels_.back().object, "json::Writer: end_array without a matching begin_array");
  levels_.pop_back();
  out_.push_back(']');
  return *this;
}

Writer& Writer::key(std::string_view k) {
  CF_CHECK(!levels_.empty() && levels_.back().object && !levels_.back().key_written,
           "json::Writer: a key outside an object or after another key");
  Level& level = levels_.back();
  if (!level.empty) out_.push_back(',');
  level.empty = false;
  level.key_written = true;
  append_quoted(out_, k);
  out_.push_back(':');
  return *this;
}

Writer& Writer::value(std::string_view s) {
  before_value();
  append_quoted(out_, s);
  return *this;
}

Writer& Writer::value(int64_t i) {
  before_value();
  out_ += std::to_string(i);
  return *this;
}

Writer& Writer::value(double d) {
  before_value();
  if (!std::isfinite(d)) {
    out_ += "null";
    return *this;
  }
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);  // shortest text that reads back as d
  out_.append(buf, ec == std::errc() ? end : buf);
  return *this;
}

Writer& Writer::value(bool b) {
  before_value();
  out_ += b ? "true" : "false";
  return *this;
}

Writer& Writer::null() {
  before_value();
  out_ += "null";
  return *this;
}

}  // namespace cf::json
