// One error type for the whole project. Messages are one line: what was wrong, where (file, tensor, argument),
// and what was expected. The CLI prints e.what() and exits non-zero; Python maps it to ValueError.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>

namespace cf {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message) : std::runtime_error(std::move(message)) {}
};

// Thrown for bad user input (files, flags, shapes) as opposed to internal failures.
class InputError : public Error {
 public:
  using Error::Error;
};

#define CF_CHECK(cond, msg)                                \
  do {                                                     \
    if (!(cond)) throw ::cf::Error(std::string(msg));      \
  } while (0)

#define CF_CHECK_INPUT(cond, msg)                          \
  do {                                                     \
    if (!(cond)) throw ::cf::InputError(std::string(msg)); \
  } while (0)

}  // namespace cf
