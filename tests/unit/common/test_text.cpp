// terminal_safe and json::quote: what reaches a terminal is one line of valid UTF-8 that reads as stored.
#include <gtest/gtest.h>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/common/text.hpp"

namespace {

TEST(Text, TerminalSafeEscapesControlsOverridesAndInvalidBytes) {
  EXPECT_EQ(cf::terminal_safe("plain caf\xc3\xa9 \xe4\xb8\xad"), "plain caf\xc3\xa9 \xe4\xb8\xad");
  EXPECT_EQ(cf::terminal_safe("a\x1b[2Jb\x07\x7f"), "a\\x1b[2Jb\\x07\\x7f");
  EXPECT_EQ(cf::terminal_safe("line\nbreak\ttab\r"), "line\\x0abreak\\x09tab\\x0d");
  EXPECT_EQ(cf::terminal_safe("line\nbreak\ttab\r", std::string_view::npos, true), "line\nbreak\ttab\\x0d");
  EXPECT_EQ(cf::terminal_safe("\xe2\x80\xae" "txt.exe"), "\\u202etxt.exe");               // right-to-left override
  EXPECT_EQ(cf::terminal_safe("\xc2\x9b" "31m \xe2\x81\xa6 \xd8\x9c"), "\\u009b31m \\u2066 \\u061c");  // CSI, isolate, ALM
  EXPECT_EQ(cf::terminal_safe("bad \xff \xc3 \xed\xa0\x80"), "bad \\xff \\xc3 \\xed\\xa0\\x80");
  EXPECT_EQ(cf::terminal_safe("abcdef", 3), "abc...");
  EXPECT_EQ(cf::terminal_safe("ab\xe4\xb8\xad", 3), "ab\xe4\xb8\xad");  // a character is never cut
  for (const char* s : {"a\x1b", "\xe2\x80\xae", "\xff", "\n"}) {
    EXPECT_FALSE(cf::is_terminal_safe(s)) << s;
    EXPECT_TRUE(cf::is_terminal_safe(cf::terminal_safe(s))) << s;
    EXPECT_TRUE(cf::json::is_valid_utf8(cf::terminal_safe(s))) << s;
  }
}

TEST(Text, JsonQuoteIsValidJsonAndTerminalSafe) {
  for (const std::string& s : {std::string("plain"), std::string("q\"b\\s\nn\tt"), std::string("\x1b]0;x\x07"),
                              std::string("\xe2\x80\xae rtl"), std::string("\xc2\x85 nel"), std::string("\0nul", 4)}) {
    const std::string quoted = cf::json::quote(s);
    EXPECT_TRUE(cf::is_terminal_safe(quoted)) << quoted;
    EXPECT_EQ(cf::json::parse(quoted).as_string(), s) << quoted;
  }
  EXPECT_EQ(cf::json::parse(cf::json::quote("a\xff" "b")).as_string(), "a\xef\xbf\xbd" "b");
}

}  // namespace
