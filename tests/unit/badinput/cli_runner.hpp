// Runs the clusterfusion binary as a user would (fork + exec, no shell, so arguments may hold any bytes), with a
// time limit: a run that takes longer is killed and reported as a hang.
#pragma once
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cf::badinput {

struct CliResult {
  int exit_code = -1;  // -1: killed (signal or time limit)
  bool timed_out = false;
  std::string out, err;
  long max_rss_kb = 0;  // the run's peak resident memory
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// How to run it. env: "NAME=value" sets a variable, "NAME" alone removes it. unprivileged: when running as root, the
// child becomes user and group 65534 (nobody) first, so that permission checks apply to it. stdin_path / stdout_path:
// a file or device to read from / write to instead of stdin_text / the captured output (e.g. /dev/zero, /dev/full).
struct CliOptions {
  std::vector<std::string> env;
  double time_limit_s = 60;
  bool unprivileged = false;
  std::string stdin_path, stdout_path;
};

inline CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text, const CliOptions& o) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("cf_badinput_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::create_directories(dir);
  const auto in = dir / "in", out = dir / "out", err = dir / "err";
  std::ofstream(in, std::ios::binary) << stdin_text;
  const std::string in_path = o.stdin_path.empty() ? in.string() : o.stdin_path;
  const std::string out_path = o.stdout_path.empty() ? out.string() : o.stdout_path;
  std::vector<char*> argv{const_cast<char*>(CF_CLI_PATH)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!std::freopen(in_path.c_str(), "rb", stdin) || !std::freopen(out_path.c_str(), "wb", stdout) ||
        !std::freopen(err.c_str(), "wb", stderr))
      std::_Exit(126);
    if (o.unprivileged && ::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0))
      std::_Exit(125);
    for (const auto& e : o.env) {
      if (e.find('=') == std::string::npos) ::unsetenv(e.c_str());
      else ::putenv(const_cast<char*>(e.c_str()));
    }
    ::execv(CF_CLI_PATH, argv.data());
    std::_Exit(127);
  }
  CliResult r;
  int status = 0;
  const auto start = std::chrono::steady_clock::now();
  rusage usage {};
  while (::wait4(pid, &status, WNOHANG, &usage) == 0) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o.time_limit_s) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &usage);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.max_rss_kb = usage.ru_maxrss;
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (o.stdout_path.empty()) r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove_all(dir);
  return r;
}

inline CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = "",
                         const std::vector<std::string>& env = {}, double time_limit_s = 60, bool unprivileged = false) {
  CliOptions o;
  o.env = env;
  o.time_limit_s = time_limit_s;
  o.unprivileged = unprivileged;
  return run_cli(args, stdin_text, o);
}

}  // namespace cf::badinput
