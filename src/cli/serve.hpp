// The `serve` command (serve.cpp): an OpenAI-compatible HTTP server with continuous batching.
#pragma once
#include <string>
#include <vector>

#include "args.hpp"

namespace cf::cli {
int cmd_serve(const std::vector<std::string>& args);
}  // namespace cf::cli
