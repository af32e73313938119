// Helpers of the bad-input suite: the error-message policy check, byte edits, the micro model.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"

namespace cf::badinput {

// The policy every refusal follows (docs/reliability.md): cf::InputError, one line, valid UTF-8, no control
// characters (a file's text cannot reach the terminal raw), bounded length, naming `where`. Returns the message.
inline std::string expect_clean_refusal(const std::function<void()>& fn, const std::string& where,
                                        size_t max_len = 1000) {
  try {
    fn();
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(where), std::string::npos) << "does not name '" << where << "': " << msg;
    EXPECT_TRUE(json::is_valid_utf8(msg)) << "invalid UTF-8 in: " << msg;
    for (const char c : msg)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        ADD_FAILURE() << "control character " << int(c) << " in: " << msg;
        break;
      }
    EXPECT_LE(msg.size(), max_len + where.size()) << "message too long: " << msg.substr(0, 300) << "...";
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cf::InputError, got: " << e.what();
    return {};
  }
  ADD_FAILURE() << "accepted (expected a refusal naming " << where << ")";
  return {};
}

inline std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace cf::badinput
