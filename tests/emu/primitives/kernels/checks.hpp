// Host references and checks for the collective test kernels (collective_kernels.hpp), shared by the emulator tests
// and the GPU tests. Every check returns "" when the device results are right, else one line naming the first
// difference (cluster, call, rank, element, got, want).
//   - gather: bit-exact concatenation in rank order; the guard elements after it still hold the sentinel.
//   - reduce: bit-exact against a host evaluation of the same expression tree (Linear: rank order; Tree: the
//     butterfly of cluster_reduce.hpp with the fold of ranks >= P), rounded to the element type where the device
//     stores a value; every rank therefore also holds identical bits. Reduce-to-root: the root holds the result and
//     the other ranks' buffers are unchanged.
//   - softmax merge: against a direct softmax over the concatenated scores (tolerance), and identical bits on all
//     ranks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "kernels/collective_kernels.hpp"

namespace cf::test {

// Host-only code of these tests (inputs, references, comparisons) shares its files with kernels the emulator's access
// checks instrument (cmake/CFEmuChecks.cmake); it has nothing to check, so it opts out of the instrumentation.
#if defined(__SANITIZE_THREAD__)
#define CF_TEST_HOST_ONLY __attribute__((no_sanitize("thread")))
#else
#define CF_TEST_HOST_ONLY
#endif
template <typename T>
float bits_to_float(BitsOf<T> b) {
  if constexpr (sizeof(T) == 4) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  } else if constexpr (std::is_same_v<T, dev::f16>) {
    return f16_bits_to_float(b);
  } else {
    return bf16_bits_to_float(b);
  }
}
template <typename T>
BitsOf<T> float_to_bits(float f) {
  if constexpr (sizeof(T) == 4) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  } else if constexpr (std::is_same_v<T, dev::f16>) {
    return float_to_f16_bits(f);
  } else {
    return float_to_bf16_bits(f);
  }
}
template <typename T>
const char* type_name() {
  if constexpr (sizeof(T) == 4) return "f32";
  if constexpr (std::is_same_v<T, dev::f16>) return "f16";
  return "bf16";
}

inline const char* strategy_name(prim::Strategy s) { return s == prim::Strategy::Linear ? "linear" : "tree"; }
inline const char* transport_name(prim::Transport x) { return x == prim::Transport::Pull ? "pull" : "push"; }

// Sample sizes from one element to 16 KB, as element counts for T.
template <typename T>
std::vector<uint32_t> sample_counts() {
  const uint32_t e = uint32_t(sizeof(T));
  return {1, 3, 16 / e, 100 / e + 1, 1024 / e, 4096 / e - 3, 16384 / e};
}

// The largest capacity among `counts` whose kernel fits in shared memory; the counts it allows.
template <typename Tr>
std::pair<uint32_t, std::vector<uint32_t>> fitting_counts(const std::vector<uint32_t>& counts) {
  std::vector<uint32_t> fit;
  uint32_t capacity = 0;
  for (uint32_t c : counts)
    if (Tr::smem_bytes(c) <= dev::kMaxSmemPerBlock) {
      fit.push_back(c);
      capacity = std::max(capacity, c);
    }
  return {capacity, fit};
}

// Random element values in [-2, 2) rounded to T, with some signed zeros and repeats (ties for max/min).
template <typename T>
CF_TEST_HOST_ONLY std::vector<BitsOf<T>> random_input(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<BitsOf<T>> out(n);
  for (size_t i = 0; i < n; ++i) {
    float v = dist(rng);
    if (rng() % 11 == 0) v = (rng() & 1) ? 0.0f : -0.0f;
    if (rng() % 13 == 0) v = 1.25f;
    out[i] = float_to_bits<T>(v);
  }
  return out;
}

// The reduction of x[0..N) (one element from each rank) in the device's order, rounded where the device rounds.
template <typename T, typename Op>
CF_TEST_HOST_ONLY BitsOf<T> reference_reduce(prim::Strategy s, uint32_t n, const std::vector<float>& x) {
  auto round_t = [](float v) { return bits_to_float<T>(float_to_bits<T>(v)); };
  if (s == prim::Strategy::Linear) {
    float acc = x[0];
    for (uint32_t q = 1; q < n; ++q) acc = Op::combine(acc, x[q]);
    return float_to_bits<T>(acc);
  }
  const uint32_t p = prim::detail::floor_pow2(n), extra = n - p;
  std::vector<float> v(x.begin(), x.begin() + p);
  for (uint32_t r = 0; r < extra; ++r) v[r] = round_t(Op::combine(x[r], x[r + p]));
  for (uint32_t k = 1; k < p; k *= 2) {
    std::vector<float> next(p);
    for (uint32_t r = 0; r < p; ++r) {
      const uint32_t q = r ^ k;
      next[r] = round_t(Op::combine(v[std::min(r, q)], v[std::max(r, q)]));
    }
    v = next;
  }
  return float_to_bits<T>(v[0]);
}

template <typename Bits>
std::string bits_string(Bits b) {
  char s[32];
  std::snprintf(s, sizeof(s), sizeof(Bits) == 4 ? "0x%08x" : "0x%04x", unsigned(b));
  return s;
}

template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K, typename Op = prim::Sum>
CF_TEST_HOST_ONLY std::string check_collective(const std::vector<uint32_t>& counts, uint32_t capacity,
                                               const CollectiveRun& run, uint32_t data_seed) {
  using Tr = CollectiveTraits<N, T, S, X, K, Op>;
  using Bits = BitsOf<T>;
  const uint32_t calls = uint32_t(counts.size()), stride = Tr::out_stride(capacity);
  const uint32_t sentinel = sizeof(T) == 4 ? 0x7fbadbadu : 0x7dadu;
  const std::vector<Bits> in = random_input<T>(size_t(run.clusters) * calls * N * capacity, data_seed);
  const std::vector<Bits> out = run_collective<N, T, S, X, K, Op>(in, counts, capacity, sentinel, run);
  const std::string config = std::string(type_name<T>()) + " N=" + std::to_string(N) + " " + strategy_name(S) + "/" +
                             transport_name(X) + " seed " + std::to_string(run.seed) + ": ";
#if !defined(CF_DEVICE_CUDA)
  // Back-to-back calls reuse the two ready mbarriers of each channel: with 6 calls or more each of them completes 3
  // phases or more, so every parity is reused (the wrap-around where stale-parity bugs live).
  if (calls >= 6 && dev::emu::last_launch_stats().max_phases < 3)
    return config + "the calls did not wrap the ready mbarriers around (" +
           std::to_string(dev::emu::last_launch_stats().max_phases) + " phases)";
#endif
  std::vector<float> x(N);
  for (uint32_t cl = 0; cl < run.clusters; ++cl)
    for (uint32_t call = 0; call < calls; ++call) {
      const uint32_t count = counts[call];
      auto input = [&](uint32_t rank, uint32_t e) {
        return in[((size_t(cl) * calls + call) * N + rank) * capacity + e];
      };
      for (uint32_t rank = 0; rank < N; ++rank) {
        const Bits* got = out.data() + ((size_t(cl) * calls + call) * N + rank) * stride;
        auto where = [&](uint32_t e) {
          return config + "cluster " + std::to_string(cl) + " call " + std::to_string(call) + " (count " +
                 std::to_string(count) + ") rank " + std::to_string(rank) + " element " + std::to_string(e);
        };
        if constexpr (K == Kind::AllGather) {
          for (uint32_t e = 0; e < N * count; ++e) {
            const Bits want = input(e / count, e % count);
            if (got[e] != want) return where(e) + ": " + bits_string(got[e]) + ", want " + bits_string(want);
          }
          for (uint32_t e = N * count; e < N * count + kGatherGuard; ++e)
            if (got[e] != Bits(sentinel)) return where(e) + ": guard overwritten (" + bits_string(got[e]) + ")";
        } else {
          const bool has_result = K == Kind::AllReduce || rank == call % N;
          for (uint32_t e = 0; e < count; ++e) {
            Bits want;
            if (has_result) {
              for (uint32_t q = 0; q < N; ++q) x[q] = bits_to_float<T>(input(q, e));
              want = reference_reduce<T, Op>(S, N, x);
            } else {
              want = input(rank, e);
            }
            if (got[e] != want)
              return where(e) + ": " + bits_string(got[e]) + " (" + std::to_string(bits_to_float<T>(got[e])) +
                     "), want " + bits_string(want) + " (" + std::to_string(bits_to_float<T>(want)) + ")" +
                     (has_result ? "" : " (unchanged: not the root)");
          }
        }
      }
    }
  return "";
}

// Counts for a run: the sample sizes that fit, ascending then descending (sizes change between calls).
template <typename Tr, typename T>
std::pair<uint32_t, std::vector<uint32_t>> sweep_counts() {
  auto [capacity, fit] = fitting_counts<Tr>(sample_counts<T>());
  std::vector<uint32_t> seq = fit;
  seq.insert(seq.end(), fit.rbegin(), fit.rend());
  return {capacity, seq};
}

template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K, typename Op = prim::Sum>
std::string check_sweep(const CollectiveRun& run, uint32_t data_seed) {
  using Tr = CollectiveTraits<N, T, S, X, K, Op>;
  auto [capacity, counts] = sweep_counts<Tr, T>();
  return check_collective<N, T, S, X, K, Op>(counts, capacity, run, data_seed);
}

// ---- softmax-state merge ----------------------------------------------------------------------------------------
inline constexpr uint32_t kSoftmaxDim = 64;
inline constexpr uint32_t kSoftmaxHeads = 3;
using SoftmaxTestState = prim::SoftmaxState<kSoftmaxDim>;
inline constexpr uint32_t kSoftmaxCount = kSoftmaxHeads * SoftmaxTestState::kFloats;

struct SoftmaxCase {
  std::vector<uint32_t> states;                 // [calls][N][kSoftmaxCount] float bits: each rank's state
  std::vector<std::vector<double>> expected;   // [calls * heads][D]: softmax(scores) @ V over all ranks
};

// Each rank gets a KV chunk of a random length (some empty) per head; scores in log2 units (exp2 merge).
CF_TEST_HOST_ONLY inline SoftmaxCase softmax_case(uint32_t n, uint32_t calls, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> score(-6.0f, 6.0f), value(-1.0f, 1.0f);
  SoftmaxCase c;
  c.states.resize(size_t(calls) * n * kSoftmaxCount);
  for (uint32_t call = 0; call < calls; ++call)
    for (uint32_t h = 0; h < kSoftmaxHeads; ++h) {
      std::vector<float> all_s;
      std::vector<std::vector<float>> all_v;
      for (uint32_t r = 0; r < n; ++r) {
        const uint32_t len = (rng() % 4 == 0) ? 0 : 1 + rng() % 9;
        std::vector<float> s(len);
        std::vector<std::vector<float>> v(len, std::vector<float>(kSoftmaxDim));
        for (uint32_t j = 0; j < len; ++j) {
          s[j] = score(rng) + (r == 1 ? 20.0f : 0.0f);  // one rank dominates: exercises the rescaling
          for (auto& x : v[j]) x = value(rng);
        }
        float m = -INFINITY;
        for (float x : s) m = std::max(m, x);
        double l = 0;
        std::vector<double> acc(kSoftmaxDim, 0.0);
        for (uint32_t j = 0; j < len; ++j) {
          const double w = std::exp2(double(s[j]) - m);
          l += w;
          for (uint32_t i = 0; i < kSoftmaxDim; ++i) acc[i] += w * v[j][i];
        }
        float* rec = reinterpret_cast<float*>(c.states.data()) +
                     (size_t(call) * n + r) * kSoftmaxCount + h * SoftmaxTestState::kFloats;
        rec[0] = m;
        rec[1] = float(l);
        rec[2] = rec[3] = 0.0f;
        for (uint32_t i = 0; i < kSoftmaxDim; ++i) rec[4 + i] = float(acc[i]);
        all_s.insert(all_s.end(), s.begin(), s.end());
        all_v.insert(all_v.end(), v.begin(), v.end());
      }
      if (all_s.empty()) {  // keep at least one score per head overall
        all_s.push_back(0.0f);
        all_v.push_back(std::vector<float>(kSoftmaxDim, 0.5f));
        float* rec = reinterpret_cast<float*>(c.states.data()) + (size_t(call) * n + 0) * kSoftmaxCount +
                     h * SoftmaxTestState::kFloats;
        rec[0] = 0.0f;
        rec[1] = 1.0f;
        for (uint32_t i = 0; i < kSoftmaxDim; ++i) rec[4 + i] = 0.5f;
      }
      double m = -INFINITY;
      for (float x : all_s) m = std::max(m, double(x));
      double l = 0;
      std::vector<double> o(kSoftmaxDim, 0.0);
      for (size_t j = 0; j < all_s.size(); ++j) {
        const double w = std::exp2(double(all_s[j]) - m);
        l += w;
        for (uint32_t i = 0; i < kSoftmaxDim; ++i) o[i] += w * all_v[j][i];
      }
      for (auto& x : o) x /= l;
      c.expected.push_back(o);
    }
  return c;
}

template <uint32_t N, prim::Strategy S, prim::Transport X>
CF_TEST_HOST_ONLY std::string check_softmax_merge(uint32_t calls, const CollectiveRun& run, uint32_t data_seed) {
  using Merge = prim::SoftmaxMerge<kSoftmaxDim>;
  const SoftmaxCase c = softmax_case(N, calls, data_seed);
  const std::vector<uint32_t> counts(calls, kSoftmaxCount);
  const std::vector<uint32_t> out =
      run_collective<N, float, S, X, Kind::AllReduce, Merge>(c.states, counts, kSoftmaxCount, 0, run);
  const std::string config = "softmax N=" + std::to_string(N) + " " + strategy_name(S) + "/" + transport_name(X) +
                             " seed " + std::to_string(run.seed) + ": ";
  for (uint32_t call = 0; call < calls; ++call) {
    const uint32_t* rank0 = out.data() + size_t(call) * N * kSoftmaxCount;
    for (uint32_t r = 1; r < N; ++r)
      if (std::memcmp(rank0, rank0 + r * kSoftmaxCount, kSoftmaxCount * 4) != 0)
        return config + "call " + std::to_string(call) + ": rank " + std::to_string(r) + " differs from rank 0";
    for (uint32_t h = 0; h < kSoftmaxHeads; ++h) {
      const float* rec = reinterpret_cast<const float*>(rank0) + h * SoftmaxTestState::kFloats;
      const std::vector<double>& want = c.expected[size_t(call) * kSoftmaxHeads + h];
      for (uint32_t i = 0; i < kSoftmaxDim; ++i) {
        const double got = double(rec[4 + i]) / double(rec[1]);
        if (!(std::fabs(got - want[i]) <= 2e-6 + 1e-5 * std::fabs(want[i])))
          return config + "call " + std::to_string(call) + " head " + std::to_string(h) + " o[" +
                 std::to_string(i) + "] = " + std::to_string(got) + ", want " + std::to_string(want[i]);
      }
    }
  }
  return "";
}

// Calls f.template operator()<N>() for N = First..Last.
template <uint32_t First, uint32_t Last, typename F>
void for_each_cluster_size(F&& f) {
  f.template operator()<First>();
  if constexpr (First < Last) for_each_cluster_size<First + 1, Last>(f);
}

}  // namespace cf::test
