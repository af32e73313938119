#include "options.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "clusterfusion/runtime/weights.hpp"

namespace cf::cli {

namespace {

// ---- loading ------------------------------------------------------------------------------------------------------

// A progress bar on stderr when it is a terminal; otherwise one line when done.
class Progress {
 public:
  Progress(std::string what, bool quiet) : what_(std::move(what)), quiet_(quiet), tty_(isatty(2) == 1) {}
  void update(size_t done, size_t total) {
    if (quiet_ || !tty_ || total == 0) return;
    const int percent = int(100.0 * double(done) / double(total));
    if (percent == last_percent_) return;
    last_percent_ = percent;
    constexpr int kWidth = 30;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %.0f/%.0f MB", what_.c_str(), std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), ' ').c_str(), percent, double(done) / 1e6, double(total) / 1e6);
    std::fflush(stderr);
  }
  void done(const std::string& summary) {
    if (quiet_) return;
    if (tty_ && last_percent_ >= 0) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", summary.c_str());
  }

 private:
  std::string what_;
  bool quiet_, tty_;
  int last_percent_ = -1;
};

}  // namespace

LoadedRunner load(const CommonOptions& common, int max_seqs) {
  const std::string backend = common.resolved_backend();
  const auto start = std::chrono::steady_clock::now();
  const std::string path = common.model_path();
  Progress progress("loading " + std::filesystem::path(path).filename().string(), common.quiet);
  LoadedRunner m;
  WeightLoadOptions load_options;
  // k-quant files: the device backends convert every matrix to 16 bits anyway, so take them to F16 exactly rather
  // than through the cpu backend's Q8_0.
  if (backend != "cpu") load_options.k_quant_as = DType::F16;
  m.model = load_model(path, load_options, [&](size_t done, size_t total) { progress.update(done, total); });
  const auto& weights = m.model.weights;
  const ModelConfig& c = weights->config;
  const int context = common.context > 0 ? std::min(common.context, c.max_context) : c.max_context;
  BackendOptions options;
  options.threads = common.threads;
  options.max_seqs = max_seqs;
  options.kv_pages = max_seqs * ((context + options.page_size - 1) / options.page_size);
  const double mb = double(weights->matrix_bytes()) / 1e6;
  m.runner = std::make_unique<Runner>(create_backend(backend, weights, options), max_seqs, context);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char line[512];
  const bool threaded = backend == "cpu";  // emu runs every device thread as a fiber of one host thread
  const std::string threads =
      threaded ? ", " + std::to_string(common.threads > 0 ? common.threads
                                                        : int(std::max(1u, std::thread::hardware_concurrency()))) +
                   " thread(s)"
               : std::string();
  std::snprintf(line, sizeof line, "loaded %s (%s, %d layers, %.0f MB of weights) in %.2f s; backend %s%s, context %d",
                path.c_str(), c.name.empty() ? c.arch.c_str() : c.name.c_str(), c.n_layers, mb, seconds,
                backend.c_str(), threads.c_str(), context);
  progress.done(line);
  if (backend == "emu" && mb > 10.0 && !common.quiet)
    std::fprintf(stderr,
                 "note: --backend emu runs the GPU kernels on the CPU emulator, seconds per token for a model this "
                 "size (it checks the kernels; --backend cpu is the fast CPU path)\n");
  return m;
}

}  // namespace cf::cli
