// The tolerance policy of docs/tolerance.md as code. A kernel output y passes against the fp32 reference y_ref if
//   1. elementwise |y - y_ref| <= atol + rtol * |y_ref|, with atol = atol_rms * rms(y_ref), and
//   2. max |y - y_ref| <= 2 * max |y_naive - y_ref|, where y_naive is the reference with intermediates rounded to the
//      storage type where the kernel rounds. When the naive error is itself below atol (e.g. the naive result is
//      exact), rule 2 allows up to atol: a kernel is never required to beat a bound rule 1 already grants.
// Usage in a test:
//   auto report = cf::ref::check_policy<cf::half>(y, y_ref, y_naive);   // rules 1 + 2 with the noise fallback
//   EXPECT_TRUE(report.ok) << report.message;
// check_tolerance applies rules 1 and 2 only.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <type_traits>

#include "clusterfusion/common/half.hpp"

namespace cf::ref {

struct Tolerance {
  double rtol = 0.0;
  double atol_rms = 0.0;  // atol as a fraction of rms(y_ref)
};

// Per storage type. fp16 and bf16 are the documented values; fp32 (used for the CPU backend and the emulator at fp32)
// allows for fp32 accumulation in a different order.
template <typename T>
constexpr Tolerance tolerance_for() {
  if constexpr (std::is_same_v<T, half>) {
    return {1e-2, 1e-3};
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    return {4e-2, 4e-3};
  } else {
    static_assert(std::is_same_v<T, float>, "tolerance_for<T>: T must be float, cf::half or cf::bfloat16");
    return {1e-4, 1e-4};
  }
}

// The factor of rule 2.
inline constexpr double kNaiveErrorFactor = 2.0;

struct ToleranceReport {
  bool ok = true;
  int64_t count = 0;
  double rms_ref = 0.0;
  double atol = 0.0;
  double rtol = 0.0;
  double max_abs_error = 0.0;    // max |y - y_ref|
  int64_t worst_index = -1;      // element with the largest excess over its elementwise bound (or largest error)
  int64_t n_out_of_bound = 0;    // elements failing rule 1
  double max_naive_error = -1.0; // max |y_naive - y_ref|, -1 when no naive result was given
  std::string message;           // one line; says which rule failed and where
};

inline double rms(std::span<const float> x) {
  double sum = 0.0;
  for (float v : x) sum += double(v) * double(v);
  return x.empty() ? 0.0 : std::sqrt(sum / double(x.size()));
}

// Checks y against y_ref with explicit tolerances; y_naive may be empty (rule 2 skipped).
inline ToleranceReport check_tolerance(std::span<const float> y, std::span<const float> y_ref,
                                       std::span<const float> y_naive, Tolerance tol) {
  ToleranceReport r;
  r.count = int64_t(y_ref.size());
  r.rtol = tol.rtol;
  r.rms_ref = rms(y_ref);
  r.atol = tol.atol_rms * r.rms_ref;
  char line[512];
  if (y.size() != y_ref.size() || (!y_naive.empty() && y_naive.size() != y_ref.size())) {
    r.ok = false;
    std::snprintf(line, sizeof line, "size mismatch: y has %zu elements, y_ref %zu, y_naive %zu", y.size(),
                  y_ref.size(), y_naive.size());
    r.message = line;
    return r;
  }
  double worst_excess = -INFINITY;
  for (size_t i = 0; i < y_ref.size(); ++i) {
    const double ref = y_ref[i];
    const double err = std::fabs(double(y[i]) - ref);
    const double bound = r.atol + r.rtol * std::fabs(ref);
    const bool bad = !(err <= bound);  // NaN fails
    if (bad) ++r.n_out_of_bound;
    if (!(err <= r.max_abs_error)) r.max_abs_error = std::isnan(err) ? INFINITY : err;
    const double excess = std::isnan(err) ? INFINITY : err - bound;
    if (excess > worst_excess) {
      worst_excess = excess;
      r.worst_index = int64_t(i);
    }
  }
  bool naive_ok = true;
  double naive_limit = 0.0;
  if (!y_naive.empty()) {
    r.max_naive_error = 0.0;
    for (size_t i = 0; i < y_ref.size(); ++i)
      r.max_naive_error = std::fmax(r.max_naive_error, std::fabs(double(y_naive[i]) - double(y_ref[i])));
    naive_limit = std::fmax(kNaiveErrorFactor * r.max_naive_error, r.atol);
    naive_ok = r.max_abs_error <= naive_limit;
  }
  r.ok = r.n_out_of_bound == 0 && naive_ok;
  if (r.n_out_of_bound > 0) {
    const size_t w = size_t(r.worst_index);
    std::snprintf(line, sizeof line,
                  "%lld of %lld elements out of bound (atol %.3g = %.3g x rms %.3g, rtol %.3g); worst [%lld]: got %.7g, "
                  "want %.7g",
                  (long long)r.n_out_of_bound, (long long)r.count, r.atol, tol.atol_rms, r.rms_ref, r.rtol,
                  (long long)w, double(y[w]), double(y_ref[w]));
  } else if (!naive_ok) {
    std::snprintf(line, sizeof line, "max error %.3g is over %.0fx the naive low-precision error %.3g (limit %.3g)",
                  r.max_abs_error, kNaiveErrorFactor, r.max_naive_error, naive_limit);
  } else {
    std::snprintf(line, sizeof line, "ok: max error %.3g (atol %.3g, rtol %.3g, naive error %.3g) over %lld elements",
                  r.max_abs_error, r.atol, r.rtol, r.max_naive_error, (long long)r.count);
  }
  r.message = line;
  return r;
}

// Checks with the policy's tolerances for storage type T.
template <typename T>
ToleranceReport check_tolerance(std::span<const float> y, std::span<const float> y_ref,
                                std::span<const float> y_naive = {}) {
  return check_tolerance(y, y_ref, y_naive, tolerance_for<T>());
}

// The policy with its fallback (docs/tolerance.md, "When rule 1 is below the rounding noise"). Where the naive
// implementation uses more than half of the rule-1 bound at some element (or breaks it), rule 2's factor 2 allows
// errors that rule 1 forbids: the two rules contradict each other. There, and only there, the kernel is held to
// rule 2 and to at most 2x (+2) the naive's count of elements outside the rule-1 bound; the message then starts
// with "NOTE policy" so every use of the fallback shows in the test log.
struct PolicyCheck {
  bool ok = false;
  bool fallback = false;  // the rule-1 fallback decided (message starts with "NOTE policy")
  std::string message;    // one line
};

template <typename T>
PolicyCheck check_policy(std::span<const float> y, std::span<const float> y_ref, std::span<const float> y_naive) {
  const ToleranceReport r = check_tolerance<T>(y, y_ref, y_naive);
  if (r.ok || y_naive.empty() || y.size() != y_ref.size() || y_naive.size() != y_ref.size())
    return {r.ok, false, r.message};
  const ToleranceReport naive = check_tolerance<T>(y_naive, y_ref);
  // How much of its elementwise bound the naive implementation uses at its worst element.
  double naive_margin = 0.0;
  for (size_t i = 0; i < y_ref.size(); ++i) {
    const double bound = naive.atol + naive.rtol * std::fabs(double(y_ref[i]));
    const double err = std::fabs(double(y_naive[i]) - double(y_ref[i]));
    naive_margin = std::max(naive_margin, bound > 0.0 ? err / bound : (err > 0.0 ? INFINITY : 0.0));
  }
  if (!(naive_margin > 0.5) || r.n_out_of_bound == 0)  // a real failure (rule 2 alone failing is never excused)
    return {false, false, r.message + " (naive alone: " + naive.message + ")"};
  const double limit = std::max(kNaiveErrorFactor * naive.max_abs_error, r.atol);
  const bool ok = r.max_abs_error <= limit && r.n_out_of_bound <= 2 * naive.n_out_of_bound + 2;
  char line[512];
  std::snprintf(line, sizeof line,
                "NOTE policy: rule 1 at the rounding noise (the naive implementation uses %.2f of the bound, %lld of "
                "%lld elements out of bound, max error %.3g, atol %.3g); kernel: %lld out of bound, max error %.3g "
                "(limit %.3g) -> %s",
                naive_margin, (long long)naive.n_out_of_bound, (long long)r.count, naive.max_abs_error, r.atol,
                (long long)r.n_out_of_bound, r.max_abs_error, limit, ok ? "accepted" : "REJECTED");
  return {ok, true, line};
}

}  // namespace cf::ref
