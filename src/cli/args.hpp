// A small command-line parser: long (--name VALUE, --name=VALUE) and short (-n VALUE) options, flags, positionals,
// generated --help. Every mistake is a UsageError with a one-line message naming the option.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"

namespace cf::cli {

// Bad command line (exit code 2).
class UsageError : public InputError {
 public:
  using InputError::InputError;
};

class ArgParser {
 public:
  ArgParser(std::string usage, std::string description) : usage_(std::move(usage)), description_(std::move(description)) {}

  void flag(const std::string& name, char short_name, const std::string& help, bool* out);
  void option(const std::string& name, char short_name, const std::string& value_name, const std::string& help,
              std::string* out);
  void option(const std::string& name, char short_name, const std::string& value_name, const std::string& help,
              std::optional<std::string>* out);
  void option(const std::string& name, char short_name, const std::string& value_name, const std::string& help,
              int* out, int min_value, int max_value);
  void option(const std::string& name, char short_name, const std::string& value_name, const std::string& help,
              float* out);
  void option(const std::string& name, char short_name, const std::string& value_name, const std::string& help,
              uint64_t* out);
  void positional(const std::string& name, const std::string& help, std::optional<std::string>* out);
  void section(const std::string& title);  // a heading in --help before the options that follow

  // Parses args (without the program / command name). Returns false when --help was given (help printed to stdout).
  bool parse(const std::vector<std::string>& args);
  // How many of the first args are complete options of this parser (each known flag, or option and its value),
  // without setting anything: used to tell options given before the command name from the command.
  size_t leading_options(const std::vector<std::string>& args) const;
  std::string help() const;

 private:
  struct Spec {
    std::string name;  // without dashes; empty for a section heading
    char short_name = 0;
    std::string value_name;  // empty for flags
    std::string help;
    std::function<void(const std::string&)> set;  // throws UsageError on a bad value
  };
  const Spec* find_long(const std::string& name) const;
  const Spec* find_short(char c) const;
  std::string usage_, description_;
  std::vector<Spec> specs_;
  struct Positional {
    std::string name, help;
    std::optional<std::string>* out;
  };
  std::vector<Positional> positionals_;
};

}  // namespace cf::cli
