#include <gtest/gtest.h>

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
