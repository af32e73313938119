// Code addresses in reports -> "dir/file.hpp:line": the innermost inlined frame that is kernel code (not the device
// API's own headers or the standard library), via addr2line on the module that holds the address. Runs at the end of
// a failed launch (off the fibers), once per address (cached); without addr2line: "module+0xoffset".
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emulator.hpp"
#include "shadow.hpp"

namespace cf::dev::emu {

namespace {

std::string last_two_components(const std::string& path) {
  const size_t last = path.rfind('/');
  if (last == std::string::npos) return path;
  const size_t prev = last == 0 ? std::string::npos : path.rfind('/', last - 1);
  return prev == std::string::npos ? path.substr(last + 1) : path.substr(prev + 1);
}

bool is_api_frame(const std::string& file) {
  return file.find("clusterfusion/device/") != std::string::npos || file.find("/c++/") != std::string::npos ||
         file.find("/bits/") != std::string::npos || file.rfind("/usr/include/", 0) == 0;
}

std::string quoted_for_shell(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string run_addr2line(const std::string& module, uintptr_t offset) {
  if (access("/usr/bin/addr2line", X_OK) != 0 && access("/bin/addr2line", X_OK) != 0) return "";
  const std::string cmd = "addr2line -i -e " + quoted_for_shell(module) + " " + hex(offset) + " 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return "";
  std::vector<std::string> frames;
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string l(line);
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
    if (const size_t d = l.find(" (discriminator"); d != std::string::npos) l.resize(d);
    frames.push_back(l);
  }
  pclose(f);
  for (const std::string& fr : frames)  // innermost first
    if (fr.rfind("??", 0) != 0 && !is_api_frame(fr)) return last_two_components(fr);
  for (const std::string& fr : frames)
    if (fr.rfind("??", 0) != 0) return last_two_components(fr);
  return "";
}

std::string symbolise(uintptr_t pc) {
  static std::mutex mutex;
  static std::map<uintptr_t, std::string> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(pc); it != cache.end()) return it->second;
  std::string out;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(pc - 1), &info) != 0 && info.dli_fname != nullptr) {
    std::string module = info.dli_fname;
    if (module.empty() || access(module.c_str(), R_OK) != 0) module = "/proc/self/exe";
    const uintptr_t offset = pc - 1 - reinterpret_cast<uintptr_t>(info.dli_fbase);
    out = run_addr2line(module, offset);
    if (out.empty()) out = last_two_components(module) + "+" + hex(offset);
  } else {
    out = hex(pc);
  }
  cache[pc] = out;
  return out;
}

}  // namespace

std::string symbolise_sites(const std::string& message) {
  std::string out;
  size_t i = 0;
  while (i < message.size()) {
    const size_t open = message.find('\x01', i);
    if (open == std::string::npos) break;
    const size_t close = message.find('\x02', open);
    if (close == std::string::npos) break;
    out += message.substr(i, open - i);
    out += symbolise(uintptr_t(std::strtoull(message.c_str() + open + 1, nullptr, 16)));
    i = close + 1;
  }
  out += message.substr(i);
  return out;
}

}  // namespace cf::dev::emu
