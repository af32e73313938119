// The kernel-test harness's driver (llama.cpp's tests/test-backend-ops.cpp is the model): a test case is an op and
// its shapes and options; the driver makes the case's random inputs, runs the op's plan on the device of the build
// (the CPU emulator, or the GPU), and checks the outputs against the CPU reference under the tolerance policy. The
// same ops and drivers serve the emulator tests (tests/kernels/emu) and the GPU tests (tests/kernels/gpu).
//
// An op (harness/attention.hpp, ffn.hpp, lm_head.hpp) is a namespace with
//   Case (: CaseBase), HostInputs, Oracle, RunResult   the case (name, dtype, seed, shapes, options), ...
//   template <T> HostInputs make_inputs(const Case&)                       random inputs in storage bits
//   template <T> Oracle make_oracle(const Case&, const HostInputs&)        fp32 reference + naive low-precision
//   template <T> CheckReport check_result(const Case&, const HostInputs&, const Oracle&, const RunResult&)
// (the driver finds them by argument-dependent lookup from the case) and a struct Op with
//   using Case = ...; using Result = RunResult;
//   struct Launch { Launch(const Case&, const HostInputs&); Plan plan; void poison(); void run(stream, seed);
//                   Result result(); std::string describe() const; int ctas() const; }
//                                                                          device inputs, the plan, one step
//   static bool same_bits(const Result&, const Result&)                    for reruns and replays
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "harness/common.hpp"

namespace cf::test {

// f.template operator()<T>() with T the case's storage type (cf::half or cf::bfloat16).
template <typename F>
decltype(auto) with_element_type(DType dtype, F&& f) {
  if (dtype == DType::F16) return f.template operator()<half>();
  return f.template operator()<bfloat16>();
}

// One step of a case: inputs, reference, the plan on fresh device inputs (outputs poisoned), the check; prints the
// plan's choices, the time and the check's message. Returns the outputs.
template <typename Op, typename T>
typename Op::Result run_and_check(const typename Op::Case& c, uint64_t emu_seed = 0) {
  const auto in = make_inputs<T>(c);
  const auto o = make_oracle<T>(c, in);
  const auto t0 = std::chrono::steady_clock::now();
  typename Op::Launch launch(c, in);
  launch.poison();
  launch.run(nullptr, emu_seed);
  launch.plan.check_status();
  typename Op::Result r = launch.result();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string emulator;
#if defined(CF_DEVICE_EMU)
  const auto stats = dev::emu::last_launch_stats();
  emulator = ", " + std::to_string(stats.switches) + " switches, " + std::to_string(stats.copies) + " copies";
#endif
  std::printf("%s: %s: %.2f s%s\n", c.name.c_str(), launch.describe().c_str(), secs, emulator.c_str());
#if defined(CF_DEVICE_EMU)
  // the smallest weight ring must lap: parities reused, where stale-parity bugs live
  if constexpr (requires { launch.ring_stages(); }) {
    if (launch.ring_stages() == pipeline::kMinStages) {
      EXPECT_GE(stats.max_phases, 3u) << c.name << ": the ring did not wrap around";
    }
  }
#endif
  const CheckReport rep = check_result<T>(c, in, o, r);
  EXPECT_TRUE(rep.ok) << rep.message;
  if (rep.ok) std::printf("  %s\n", rep.message.c_str());
  return r;
}

template <typename Op>
typename Op::Result run_and_check_any(const typename Op::Case& c, uint64_t emu_seed = 0) {
  return with_element_type(c.dtype, [&]<typename T>() { return run_and_check<Op, T>(c, emu_seed); });
}

// Uploads fresh inputs, poisons the outputs, runs one step (emulator: with this schedule seed), downloads.
template <typename Op, typename HostInputs>
typename Op::Result run_once(const typename Op::Case& c, const HostInputs& in, uint64_t emu_seed = 0) {
  typename Op::Launch launch(c, in);
  launch.poison();
  launch.run(nullptr, emu_seed);
  launch.plan.check_status();
  return launch.result();
}

// The phase trace (Case::trace: PlanConfig::trace) changes nothing in the results and has `slots` records per CTA;
// a plan made without it refuses read_trace().
template <typename Op>
void expect_trace_keeps_the_bits(const typename Op::Case& c, size_t slots) {
  with_element_type(c.dtype, [&]<typename T>() {
    const auto in = make_inputs<T>(c);
    const typename Op::Result base = run_once<Op>(c, in);
    typename Op::Case traced = c;
    traced.trace = true;
    typename Op::Launch launch(traced, in);
    launch.poison();
    launch.run(nullptr, 0);
    launch.plan.check_status();
    EXPECT_TRUE(Op::same_bits(launch.result(), base)) << c.name << ": the trace changed the results";
    EXPECT_EQ(launch.plan.read_trace().size(), size_t(launch.ctas()) * slots);
    typename Op::Launch plain(c, in);
    EXPECT_THROW(plain.plan.read_trace(), InputError);
  });
}

// f() throws a cf::InputError whose message holds `fragment` (host validation names the field).
template <typename F>
void expect_input_error(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no cf::InputError (expected one mentioning '" << fragment << "')";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace cf::test
