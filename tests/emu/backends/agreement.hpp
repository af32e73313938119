// End-to-end agreement of a device backend (emu, cuda, cuda-unfused) with the cpu backend, shared by the emulator
// tests (CI) and the GPU tests (tests/gpu/backends).
//
// The rule (docs/tolerance.md, end to end): the cpu backend runs on exactly the weights the device backend computes
// from (every matrix rounded to the device's 16-bit type: device_layout::rounded_copy), in fp32 — the policy's
// reference. Both are teacher-forced on the same token streams: a few prompt tokens, then the cpu's own greedy
// continuation. At every step the device's logits must be within the end-to-end tolerance of the cpu's, and the
// device's greedy token must equal the cpu's wherever the cpu's top-2 margin exceeds twice the tolerance at the top
// logit (a smaller margin is a near-tie that rounding may flip legitimately).
//
// Device steps go through Runner::decode, one token per sequence per step (B sequences in lockstep): the decode
// path of the backend (for cuda: the captured graphs) is what is checked, from the first token on.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "clusterfusion/reference/tolerance.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/rng.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "common/device_layout.hpp"

namespace cf::test {

// End-to-end tolerance of the logits against the fp32 cpu backend on the rounded weights: elementwise
// |y - y_ref| <= atol + rtol |y_ref|, atol = atol_rms * rms(y_ref) of the step. Kernel-level rounding (fp16
// activations between every block, fp16 KV cache, fp16 attention probabilities) compounds over the layers; these
// bounds are ~4x the largest error measured on the emulator's tiny models and on the GPU, see
// docs/backends.md for the numbers.
struct EndToEndTolerance {
  double rtol = 0.0;
  double atol_rms = 0.0;
};
inline EndToEndTolerance end_to_end_tolerance(device_layout::Storage s) {
  return s == device_layout::Storage::F16 ? EndToEndTolerance{0.02, 0.02} : EndToEndTolerance{0.08, 0.08};
}

// A tiny Llama-shaped model the emulator runs in seconds: GQA 4/2 heads of 64, two layers.
inline ModelConfig tiny_llama(RopeStyle style = RopeStyle::GPTJ, bool tied = false, bool bias = false) {
  ModelConfig c;
  c.name = "tiny-llama";
  c.n_layers = 2;
  c.hidden = 256;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_hidden = 512;
  c.vocab = 512;
  c.max_context = 128;
  c.rope_theta = 10000.0f;
  c.rope_dim = 64;
  c.rope_style = style;
  c.rms_eps = 1e-5f;
  c.tied_embeddings = tied;
  c.qkv_bias = bias;
  return c;
}

// B token streams: `prompt` random tokens each, then the reference's greedy continuation to `length` tokens.
inline std::vector<std::vector<int32_t>> greedy_streams(Runner& reference, int batch, int prompt, int length,
                                                        uint64_t seed) {
  Rng rng(seed);
  const int vocab = reference.vocab();
  std::vector<std::vector<int32_t>> streams(static_cast<size_t>(batch));
  for (auto& s : streams)
    for (int i = 0; i < prompt; ++i) s.push_back(int32_t(rng.below(uint32_t(vocab))));
  for (int b = 0; b < batch; ++b) {
    auto& s = streams[size_t(b)];
    reference.reset(0);
    std::vector<float> logits = reference.prefill(0, s);
    while (int(s.size()) < length) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      s.push_back(next);
      if (int(s.size()) == length) break;
      const int32_t seq = 0;
      logits = reference.decode(std::span(&seq, 1), std::span(&next, 1));
    }
  }
  reference.reset(0);
  return streams;
}

// Logits after every token of every stream, [stream][step][vocab], computed by lockstep decode steps.
inline std::vector<std::vector<std::vector<float>>> lockstep_logits(Runner& runner,
                                                                    const std::vector<std::vector<int32_t>>& streams) {
  const int batch = int(streams.size());
  const size_t vocab = size_t(runner.vocab());
  std::vector<int32_t> seqs(static_cast<size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    seqs[size_t(b)] = b;
    runner.reset(b);
  }
  std::vector<std::vector<std::vector<float>>> out(static_cast<size_t>(batch));
  for (size_t step = 0; step < streams[0].size(); ++step) {
    std::vector<int32_t> tokens;
    for (const auto& s : streams) tokens.push_back(s[step]);
    const std::vector<float>& logits = runner.decode(seqs, tokens);
    for (int b = 0; b < batch; ++b)
      out[size_t(b)].emplace_back(logits.begin() + long(size_t(b) * vocab), logits.begin() + long(size_t(b + 1) * vocab));
  }
  return out;
}

struct AgreementReport {
  bool ok = true;
  int steps = 0;
  int greedy_checked = 0;    // steps whose margin made the greedy token binding
  int greedy_matched = 0;    // of those, equal tokens
  int greedy_equal_all = 0;  // steps where the argmax was equal anyway (binding or not)
  double max_error_over_rms = 0.0;  // max |y - y_ref| / rms(y_ref) over all steps
  std::string first_failure;
  std::string summary() const {
    char line[256];
    std::snprintf(line, sizeof line,
                  "%d steps: logits max error %.4f x rms; greedy binding at %d steps, %d equal; argmax equal at %d of "
                  "%d steps",
                  steps, max_error_over_rms, greedy_checked, greedy_matched, greedy_equal_all, steps);
    return line;
  }
};

// Compares device logits with reference logits (same layout) from `first_step` on (earlier steps are prompt).
inline AgreementReport compare_logits(const std::vector<std::vector<std::vector<float>>>& device,
                                      const std::vector<std::vector<std::vector<float>>>& reference,
                                      const std::vector<std::vector<int32_t>>& streams, EndToEndTolerance tol,
                                      int first_step = 0) {
  AgreementReport r;
  for (size_t b = 0; b < reference.size(); ++b) {
    for (size_t step = size_t(first_step); step < reference[b].size(); ++step) {
      const std::vector<float>& y = device[b][step];
      const std::vector<float>& y_ref = reference[b][step];
      ++r.steps;
      const ref::ToleranceReport t = ref::check_tolerance(y, y_ref, {}, ref::Tolerance{tol.rtol, tol.atol_rms});
      if (t.rms_ref > 0) r.max_error_over_rms = std::max(r.max_error_over_rms, t.max_abs_error / t.rms_ref);
      auto fail = [&](const std::string& what) {
        if (r.ok) r.first_failure = "stream " + std::to_string(b) + " step " + std::to_string(step) + ": " + what;
        r.ok = false;
      };
      if (!t.ok) fail("logits: " + t.message);
      // Greedy rule: the reference's top-2 margin against twice the bound at its top logit.
      std::vector<float> sorted(y_ref);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      const size_t top_ref = size_t(std::max_element(y_ref.begin(), y_ref.end()) - y_ref.begin());
      const size_t top = size_t(std::max_element(y.begin(), y.end()) - y.begin());
      const double bound = t.atol + t.rtol * std::fabs(double(sorted[0]));
      if (top == top_ref) ++r.greedy_equal_all;
      if (double(sorted[0]) - double(sorted[1]) > 2.0 * bound) {
        ++r.greedy_checked;
        if (top == top_ref)
          ++r.greedy_matched;
        else
          fail("greedy token " + std::to_string(top) + ", reference " + std::to_string(top_ref) + " (margin " +
               std::to_string(sorted[0] - sorted[1]) + " > 2 x bound " + std::to_string(bound) + ")");
      }
      (void)streams;
    }
  }
  return r;
}

}  // namespace cf::test
