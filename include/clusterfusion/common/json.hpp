// A small strict JSON reader (RFC 8259) for safetensors headers, config.json and tokenizer.json.
// Bounded: input size, nesting depth and the number of values are limited, strings must be valid UTF-8, duplicate
// keys are kept in order (find() returns the last, as Python's json does). Errors throw cf::InputError naming the
// byte offset.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clusterfusion/common/error.hpp"

namespace cf::json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;
  static Value make_bool(bool b);
  static Value make_number(double d, bool is_integer, int64_t i);
  static Value make_string(std::string s);
  static Value make_array(Array a);
  static Value make_object(Object o);

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_integer() const { return kind_ == Kind::Number && is_integer_; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }

  // Typed accessors throw cf::InputError("json: expected <kind> for <what>") on a kind mismatch.
  bool as_bool(std::string_view what = "value") const;
  double as_number(std::string_view what = "value") const;
  int64_t as_int(std::string_view what = "value") const;  // integral numbers only
  const std::string& as_string(std::string_view what = "value") const;
  const Array& as_array(std::string_view what = "value") const;
  const Object& as_object(std::string_view what = "value") const;

  // Object lookup: nullptr when absent (or when this is not an object); the last of duplicate keys.
  const Value* find(std::string_view key) const;
  // Object lookup that throws "json: missing key '<key>'" when absent.
  const Value& at(std::string_view key) const;

  static const char* kind_name(Kind k);

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  bool is_integer_ = false;
  double number_ = 0;
  int64_t integer_ = 0;
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
};

// The parsed tree costs 70-140 bytes of peak memory per value (measured; "[1,1,...]" spends 2 bytes of text per
// value), so max_values, not max_bytes, is what bounds memory: the default 2^22 values is at most ~0.6 GB.
struct ParseLimits {
  size_t max_bytes = size_t(1) << 30;
  int max_depth = 128;
  size_t max_values = size_t(1) << 22;  // every scalar, array and object counts one
};

// Parses a whole document; trailing non-whitespace is an error.
Value parse(std::string_view text, const ParseLimits& limits = {});

// A JSON string literal of valid UTF-8 text: quotes, backslashes and control characters escaped, and so are C1 controls
// and bidirectional formatting characters (as \uXXXX, the same string to a JSON reader), so that the literal can
// also be shown on a terminal as it is (common/text.hpp). Bytes of invalid UTF-8 become U+FFFD.
std::string quote(std::string_view text);

// Appends the UTF-8 encoding of a code point (used by escapes and by the tokenizers).
void append_utf8(std::string& out, uint32_t code_point);
// True when s is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s);

// The server's responses: a writer of one JSON document front to back; commas and nesting are tracked, so a caller only says what comes next:
//   Writer w; w.begin_object().key("n").value(1).key("s").value("x").end_object(); w.str() == {"n":1,"s":"x"}
// Strings are escaped per RFC 8259; bytes that are not valid UTF-8 are written as U+FFFD, so the output is always
// valid JSON. Misuse (a value where a key is due, unbalanced ends) throws cf::Error.
class Writer {
 public:
  Writer& begin_object();
  Writer& end_object();
  Writer& begin_array();
  Writer& end_array();
  Writer& key(std::string_view k);
  Writer& value(std::string_view s);
  Writer& value(const char* s) { return value(std::string_view(s)); }
  Writer& value(int64_t i);
  Writer& value(int i) { return value(int64_t(i)); }
  Writer& value(double d);  // finite numbers only (non-finite ones are written as null)
  Writer& value(bool b);
  Writer& null();
  // The document so far; complete once every begin has its end.
  const std::string& str() const { return out_; }

 private:
  void before_value();
  std::string out_;
  struct Level {
    bool object;
    bool empty = true;
    bool key_written = false;
  };
  std::vector<Level> levels_;
};

}  // namespace cf::json
