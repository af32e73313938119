// Runs the clusterfusion binary (path from CF_CLI_PATH) with arguments, environment and stdin; captures stdout,
// stderr and the exit code.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace cf::test {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs the CLI with a shell-quoted argument string; env is prepended as VAR=value assignments.
inline Result run_cli(const std::string& args, const std::string& env = "", const std::string& stdin_text = "") {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() / ("cf_test_cli_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string tag = std::to_string(counter++);
  const auto out = dir / ("out" + tag), err = dir / ("err" + tag), in = dir / ("in" + tag);
  std::ofstream(in) << stdin_text;
  const std::string cmd = env + " " + CF_CLI_PATH + " " + args + " <" + in.string() + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  std::filesystem::remove_all(dir);
  return r;
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace cf::test
