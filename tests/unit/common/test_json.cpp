#include <gtest/gtest.h>

#include <limits>

#include "clusterfusion/common/json.hpp"

namespace {
using cf::json::parse;

TEST(Json, ParsesNestedDocument) {
  const auto v = parse(R"({"a": [1, 2.5, -3e2, true, null], "b": {"c": "x\u00e9\ud83d\ude00\n"}, "big": 12345678901234})");
  const auto& a = v.at("a").as_array();
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0].as_int(), 1);
  EXPECT_DOUBLE_EQ(a[1].as_number(), 2.5);
  EXPECT_FALSE(a[1].is_integer());
  EXPECT_DOUBLE_EQ(a[2].as_number(), -300.0);
  EXPECT_TRUE(a[3].as_bool());
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(v.at("b").at("c").as_string(), "x\xc3\xa9\xf0\x9f\x98\x80\n");
  EXPECT_EQ(v.at("big").as_int(), 12345678901234);
  EXPECT_EQ(v.find("missing"), nullptr);
}

TEST(Json, RejectsMalformedInputWithOffset) {
  const char* bad[] = {"",        "{",          "[1,]",     "{\"a\" 1}", "01",      "1.",       "\"abc",
                       "\"\\x\"", "\"\\ud800\"", "tru",      "[1] 2",     "\"\x01\"", "{\"a\":}", "-",
                       "\"\xff\"", "\"\xc0\xaf\"", "1e",     "[\"\\udc00\"]"};
  for (const char* text : bad) {
    try {
      parse(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const cf::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("json: "), std::string::npos) << e.what();
    }
  }
}

TEST(Json, EnforcesDepthAndSizeLimits) {
  std::string deep(200, '[');
  deep += std::string(200, ']');
  EXPECT_THROW(parse(deep), cf::InputError);
  cf::json::ParseLimits small;
  small.max_bytes = 4;
  EXPECT_THROW(parse("[1,2,3]", small), cf::InputError);
}

TEST(Json, TypedAccessorsNameTheMismatch) {
  const auto v = parse(R"({"n": "str"})");
  try {
    v.at("n").as_int("config.n");
    FAIL();
  } catch (const cf::InputError& e) {
    EXPECT_STREQ(e.what(), "json: expected number for config.n, got string");
  }
}

TEST(Json, Utf8Validation) {
  EXPECT_TRUE(cf::json::is_valid_utf8("h\xc3\xa9llo \xf0\x9f\x98\x80"));
  EXPECT_FALSE(cf::json::is_valid_utf8("\xed\xa0\x80"));  // encoded surrogate
  EXPECT_FALSE(cf::json::is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(cf::json::is_valid_utf8("\xe2\x82"));  // truncated
}

// Duplicate keys: all kept in order, and lookups see the last one, as Python's json.loads does.
TEST(Json, DuplicateKeysLookUpTheLast) {
  const auto v = cf::json::parse(R"({"a": 1, "b": 2, "a": 3})");
  EXPECT_EQ(v.as_object().size(), 3u);
  EXPECT_EQ(v.at("a").as_int(), 3);
  EXPECT_EQ(v.find("b")->as_int(), 2);
}

}  // namespace

// The writer's output is read back by the parser: strings (quotes, backslashes, every control character, multi-byte
// UTF-8) come back unchanged; invalid UTF-8 becomes U+FFFD; numbers round-trip.
TEST(JsonWriter, OutputParsesBackToTheSameValues) {
  std::string all_controls;
  for (int c = 0; c < 0x20; ++c) all_controls.push_back(char(c));
  all_controls += "\x7f\"\\/ é 日本 🎉";
  cf::json::Writer w;
  w.begin_object()
      .key("text").value(all_controls)
      .key("list").begin_array().value(1).value(-7.25).value(true).null().begin_object().end_object().end_array()
      .key("big").value(int64_t(1) << 53)
      .key("small").value(1e-300)
      .key("inf").value(std::numeric_limits<double>::infinity())
      .end_object();
  const auto v = cf::json::parse(w.str());
  EXPECT_EQ(v.at("text").as_string(), all_controls);
  const auto& list = v.at("list").as_array();
  ASSERT_EQ(list.size(), 5u);
  EXPECT_EQ(list[0].as_int(), 1);
  EXPECT_EQ(list[1].as_number(), -7.25);
  EXPECT_TRUE(list[2].as_bool());
  EXPECT_TRUE(list[3].is_null());
  EXPECT_TRUE(list[4].is_object());
  EXPECT_EQ(v.at("big").as_int(), int64_t(1) << 53);
  EXPECT_EQ(v.at("small").as_number(), 1e-300);
  EXPECT_TRUE(v.at("inf").is_null());
  EXPECT_EQ(cf::json::Writer().value("a\x01").str(), "\"a\\u0001\"");
}

TEST(JsonWriter, InvalidUtf8BecomesReplacementCharacters) {
  const std::string bad = std::string("ok\xff") + "\xc3" + "\xe6\x97" + "\xed\xa0\x80" + "end";
  const auto v = cf::json::parse(cf::json::Writer().value(bad).str());
  EXPECT_EQ(v.as_string(), "ok\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                           "end");
}

TEST(JsonWriter, MisuseThrows) {
  cf::json::Writer a;
  a.begin_object();
  EXPECT_THROW(a.value(1), cf::Error);  // a value without a key
  cf::json::Writer b;
  b.begin_array();
  EXPECT_THROW(b.key("k"), cf::Error);
  EXPECT_THROW(b.end_object(), cf::Error);
  cf::json::Writer c;
  c.value(1);
  EXPECT_THROW(c.value(2), cf::Error);  // two documents
}
