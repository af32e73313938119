// The MLA block op of the kernel-test harness (harness/driver.hpp; docs/mla.md §1.5): random inputs of a Case (a
// paged latent cache with each sequence's old rows), the run through a Plan, the CPU reference (cf::ref::mla_project,
// mla_absorb_query, mla_attention_latent, mla_output) and the checks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "harness/common.hpp"

namespace cf::test::mla {

namespace kmla = cf::kernels::mla;

// What goes wrong in a bad-token case (that token only).
enum class BadToken { None, Position, PageId, IndptrOrder, LastPageLen };

struct Case : CaseBase {
  int hidden = 64, n_heads = 2, q_lora = 0, r = 32, rope = 16, nope = 16, v = 16;
  int batch = 1, page_size = 3;
  std::vector<int> kv_lens;  // cached rows per token before this step (the new one is appended); empty: 5 each
  int max_clusters = 4;      // CTA budget per launch (0: one per SM, 132 assumed by the emulator)
  int max_batch = 0;         // 0: batch
  int max_stages = 0;        // 0: as many as fit
  bool residual = true;
  bool in_place = false;     // residual_out written over hidden, out over residual (the backends' in-place step)
  float yarn_factor = 1.0f;  // > 1: YaRN frequencies
  BadToken bad = BadToken::None;
  int bad_token = 0;

  int old_len(int b) const { return kv_lens.empty() ? 5 : kv_lens[size_t(b) % kv_lens.size()]; }
  int q_head() const { return nope + rope; }
  int row() const { return r + rope; }
  ref::MlaShape ref_shape() const {
    ref::MlaShape s;
    s.hidden = hidden, s.n_heads = n_heads, s.q_lora_rank = q_lora, s.kv_lora_rank = r, s.qk_nope = nope;
    s.v_head = v, s.eps = 1e-6f;
    s.rope.dim = rope;
    s.rope.factor = yarn_factor;
    s.rope.mscale = s.rope.mscale_all_dim = yarn_factor > 1.0f ? 0.707f : 0.0f;
    return s;
  }
};

struct HostInputs {
  std::vector<uint16_t> hidden, residual, norm, w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk, w_uv, w_o;
  std::vector<uint16_t> pages;  // the pool before the step
  int n_pages = 0, max_positions = 0;
  std::vector<int32_t> positions, kv_indptr, kv_indices, kv_last_page_len;
  std::vector<float> cos_sin;  // [max_positions, rope]
};

template <typename T>
std::vector<uint16_t> norm_weights(size_t n, uint64_t seed) {
  std::vector<uint16_t> w = random_bits<T>(n, 0.25f, seed);
  for (auto& x : w) x = to_bits16<T>(1.0f + from_bits16<T>(x));
  return w;
}

template <typename T>
HostInputs make_inputs(const Case& c) {
  HostInputs in;
  const size_t B = size_t(c.batch), D = size_t(c.hidden), H = size_t(c.n_heads), R = size_t(c.r);
  const size_t q_rows = H * size_t(c.q_head()), o_dim = H * size_t(c.v);
  const uint64_t s = c.seed * 32;
  in.hidden = random_bits<T>(B * D, 2.0f, s + 1);
  in.residual = random_bits<T>(B * D, 2.0f, s + 2);
  in.norm = norm_weights<T>(D, s + 3);
  if (c.q_lora == 0) {
    in.w_q = random_bits<T>(q_rows * D, 1.7f / std::sqrt(float(D)), s + 4);
  } else {
    in.w_q_a = random_bits<T>(size_t(c.q_lora) * D, 1.7f / std::sqrt(float(D)), s + 5);
    in.q_a_norm = norm_weights<T>(size_t(c.q_lora), s + 6);
    in.w_q_b = random_bits<T>(q_rows * size_t(c.q_lora), 1.7f / std::sqrt(float(c.q_lora)), s + 7);
  }
  in.w_kv_a = random_bits<T>(size_t(c.row()) * D, 1.7f / std::sqrt(float(D)), s + 8);
  in.kv_a_norm = norm_weights<T>(R, s + 9);
  in.w_uk = random_bits<T>(H * size_t(c.nope) * R, 1.7f / std::sqrt(float(c.nope)), s + 10);
  in.w_uv = random_bits<T>(H * size_t(c.v) * R, 1.7f / std::sqrt(float(R)), s + 11);
  in.w_o = random_bits<T>(D * o_dim, 1.7f / std::sqrt(float(o_dim)), s + 12);

  // page table: each sequence's pages (after the append) from a shuffled pool with 3 spare pages
  const int P = c.page_size;
  in.kv_indptr.push_back(0);
  int max_len = 0;
  for (int b = 0; b < c.batch; ++b) {
    const int len = c.old_len(b) + 1;  // after the append
    max_len = std::max(max_len, len);
    in.kv_indptr.push_back(in.kv_indptr.back() + (len + P - 1) / P);
    in.kv_last_page_len.push_back((len - 1) % P + 1);
    in.positions.push_back(c.old_len(b));
  }
  in.n_pages = in.kv_indptr.back() + 3;
  std::vector<int32_t> ids(size_t(in.n_pages));
  std::iota(ids.begin(), ids.end(), 0);
  FastRandom rng(s + 13);
  for (size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[size_t(rng.next() % i)]);
  in.kv_indices.assign(ids.begin(), ids.begin() + in.kv_indptr.back());
  in.pages = random_bits<T>(size_t(in.n_pages) * size_t(P) * size_t(c.row()), 1.0f, s + 14);

  in.max_positions = max_len + 4;
  const ref::MlaShape ms = c.ref_shape();
  in.cos_sin.resize(size_t(in.max_positions) * size_t(c.rope));
  for (int pos = 0; pos < in.max_positions; ++pos) {
    float* row = in.cos_sin.data() + size_t(pos) * size_t(c.rope);
    ref::yarn_cos_sin(ms.rope, pos, row, row + c.rope / 2);
  }
  return in;
}

// The pool offset (in values) of cache row t of token b.
inline size_t row_offset(const Case& c, const HostInputs& in, int b, int t) {
  const int page = in.kv_indices[size_t(in.kv_indptr[size_t(b)] + t / c.page_size)];
  return (size_t(page) * size_t(c.page_size) + size_t(t % c.page_size)) * size_t(c.row());
}

struct Oracle {
  std::vector<float> out_ref, out_naive;  // [batch, hidden]
  std::vector<float> row_ref, row_naive;  // [batch, r + rope]: the appended latent rows
  std::vector<uint16_t> residual_out;     // T(hidden + residual)
};

// One token through the reference: `naive` rounds to T where the kernels round (x, the normed q_a, q_nope, q_lat, o).
template <typename T>
void reference_token(const Case& c, const HostInputs& in, int b, bool naive, float* out, float* row_out) {
  const ref::MlaShape ms = c.ref_shape();
  auto as_t = [](const std::vector<uint16_t>& v) { return reinterpret_cast<const T*>(v.data()); };
  auto round_all = [&](std::vector<float>& v) {
    if (naive)
      for (float& e : v) e = round_through<T>(e);
  };
  const size_t D = size_t(c.hidden), H = size_t(c.n_heads), R = size_t(c.r), row = size_t(c.row());
  std::vector<float> x(D), sum(D);
  if (c.residual)
    ref::add_rmsnorm(as_t(in.hidden) + b * D, as_t(in.residual) + b * D, as_t(in.norm), sum.data(), x.data(),
                     c.hidden, ms.eps);
  else
    ref::rmsnorm(as_t(in.hidden) + b * D, as_t(in.norm), x.data(), c.hidden, ms.eps);
  round_all(x);
  // kv_b in HF's layout from W_UK / W_UV (per head nope rows, then v rows)
  std::vector<uint16_t> wkv_b(H * size_t(c.nope + c.v) * R);
  for (size_t h = 0; h < H; ++h) {
    std::memcpy(&wkv_b[h * size_t(c.nope + c.v) * R], &in.w_uk[h * size_t(c.nope) * R], size_t(c.nope) * R * 2);
    std::memcpy(&wkv_b[(h * size_t(c.nope + c.v) + size_t(c.nope)) * R], &in.w_uv[h * size_t(c.v) * R],
                size_t(c.v) * R * 2);
  }
  ref::MlaWeights<T> w;
  w.wq = c.q_lora ? nullptr : as_t(in.w_q);
  w.wq_a = c.q_lora ? as_t(in.w_q_a) : nullptr;
  w.q_a_norm = c.q_lora ? as_t(in.q_a_norm) : nullptr;
  w.wq_b = c.q_lora ? as_t(in.w_q_b) : nullptr;
  w.wkv_a = as_t(in.w_kv_a);
  w.kv_a_norm = as_t(in.kv_a_norm);
  w.wkv_b = reinterpret_cast<const T*>(wkv_b.data());
  w.wo = as_t(in.w_o);
  const int pos = in.positions[size_t(b)];
  std::vector<float> q(H * size_t(c.q_head())), latent(row);
  if (naive && c.q_lora) {  // mla_project with the normed q_a rounded
    std::vector<float> qa(size_t(c.q_lora));
    ref::matvec(w.wq_a, x.data(), qa.data(), c.q_lora, c.hidden);
    ref::rmsnorm(qa.data(), w.q_a_norm, qa.data(), c.q_lora, ms.eps);
    round_all(qa);
    ref::matvec(w.wq_b, qa.data(), q.data(), int(q.size()), c.q_lora);
    ref::yarn_rope(q.data() + c.nope, q.data() + c.nope, c.n_heads, c.q_head(), pos, ms.rope);
    std::vector<float> q_unused(q.size());  // the latent row does not depend on q
    ref::mla_project(x.data(), w, ms, pos, q_unused.data(), latent.data());
  } else {
    ref::mla_project(x.data(), w, ms, pos, q.data(), latent.data());
  }
  std::copy(latent.begin(), latent.end(), row_out);
  if (naive)  // stored as T
    for (size_t i = 0; i < row; ++i) row_out[i] = round_through<T>(row_out[i]);
  // the cache the attention reads: the old rows and the new one (as stored: T)
  const int len = c.old_len(b) + 1;
  std::vector<T> cache(size_t(len) * row);
  for (int t = 0; t < len; ++t)
    for (size_t i = 0; i < row; ++i)
      cache[size_t(t) * row + i] = t == len - 1 ? from_float<T>(latent[i])
                                                : T::from_bits(in.pages[row_offset(c, in, b, t) + i]);
  std::vector<float> q_lat(H * row), o_lat(H * R);
  if (naive)  // q_nope as T: the absorption's MMA operand
    for (size_t h = 0; h < H; ++h)
      for (size_t n = 0; n < size_t(c.nope); ++n) {
        float& v = q[h * size_t(c.q_head()) + n];
        v = round_through<T>(v);
      }
  ref::mla_absorb_query(q.data(), w, ms, q_lat.data());
  round_all(q_lat);
  ref::mla_attention_latent(q_lat.data(), cache.data(), len, ms, o_lat.data());
  if (!naive) {
    ref::mla_output(o_lat.data(), w, ms, out);
    return;
  }
  std::vector<float> o(H * size_t(c.v));
  for (int h = 0; h < c.n_heads; ++h)
    for (int j = 0; j < c.v; ++j) {
      float acc = 0.0f;
      for (int k = 0; k < c.r; ++k) acc += w.uv(ms, h, j, k) * o_lat[size_t(h) * R + size_t(k)];
      o[size_t(h) * size_t(c.v) + size_t(j)] = round_through<T>(acc);
    }
  ref::matvec(w.wo, o.data(), out, c.hidden, int(o.size()));
  for (int i = 0; i < c.hidden; ++i) out[i] = round_through<T>(out[i]);
}

template <typename T>
Oracle make_oracle(const Case& c, const HostInputs& in) {
  Oracle o;
  const size_t B = size_t(c.batch), D = size_t(c.hidden), row = size_t(c.row());
  o.out_ref.resize(B * D), o.out_naive.resize(B * D), o.row_ref.resize(B * row), o.row_naive.resize(B * row);
  o.residual_out.resize(B * D);
  for (size_t i = 0; i < B * D; ++i)
    o.residual_out[i] =
        to_bits16<T>(from_bits16<T>(in.hidden[i]) + (c.residual ? from_bits16<T>(in.residual[i]) : 0.0f));
  for_each_token(c.batch, int64_t(c.n_heads) * c.r * (c.nope + c.v + 64), [&](int b) {
    reference_token<T>(c, in, b, false, o.out_ref.data() + size_t(b) * D, o.row_ref.data() + size_t(b) * row);
    reference_token<T>(c, in, b, true, o.out_naive.data() + size_t(b) * D, o.row_naive.data() + size_t(b) * row);
  });
  return o;
}

struct DeviceInputs {
  dev::DeviceBuffer<uint16_t> hidden, residual, norm, w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk, w_uv, w_o;
  dev::DeviceBuffer<uint16_t> pages, residual_out, out;
  dev::DeviceBuffer<int32_t> positions, kv_indptr, kv_indices, kv_last_page_len;
  dev::DeviceBuffer<float> cos_sin;
};

// The device copy of the inputs; a bad-token case corrupts that token's entry here.
inline DeviceInputs uploaded(const Case& c, const HostInputs& in) {
  DeviceInputs d;
  for (auto [dst, src] : {std::pair{&d.hidden, &in.hidden}, {&d.residual, &in.residual}, {&d.norm, &in.norm},
                          {&d.w_q, &in.w_q}, {&d.w_q_a, &in.w_q_a}, {&d.q_a_norm, &in.q_a_norm},
                          {&d.w_q_b, &in.w_q_b}, {&d.w_kv_a, &in.w_kv_a}, {&d.kv_a_norm, &in.kv_a_norm},
                          {&d.w_uk, &in.w_uk}, {&d.w_uv, &in.w_uv}, {&d.w_o, &in.w_o}, {&d.pages, &in.pages}})
    if (!src->empty()) upload(*dst, *src);
  std::vector<int32_t> positions = in.positions, indptr = in.kv_indptr, indices = in.kv_indices;
  const size_t k = size_t(c.bad_token);
  if (c.bad == BadToken::Position) positions[k] = in.max_positions;
  if (c.bad == BadToken::PageId) indices[size_t(indptr[k])] = in.n_pages + 7;
  if (c.bad == BadToken::IndptrOrder) indptr[k + 1] = indptr[k] - 1;  // the last token's: the others keep theirs
  std::vector<int32_t> last_len = in.kv_last_page_len;
  if (c.bad == BadToken::LastPageLen) last_len[k] = c.page_size + 1;
  upload(d.positions, positions);
  upload(d.kv_indptr, indptr);
  upload(d.kv_indices, indices);
  upload(d.kv_last_page_len, last_len);
  upload(d.cos_sin, in.cos_sin);
  d.residual_out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * size_t(c.hidden));
  d.out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * size_t(c.hidden));
  return d;
}

inline kmla::PlanConfig plan_config(const Case& c, const HostInputs& in, DeviceInputs& d) {
  kmla::PlanConfig cfg;
  cfg.dtype = c.dtype;
  cfg.shape.hidden = c.hidden, cfg.shape.n_heads = c.n_heads, cfg.shape.q_lora_rank = c.q_lora;
  cfg.shape.kv_lora_rank = c.r, cfg.shape.qk_nope = c.nope, cfg.shape.qk_rope = c.rope, cfg.shape.v_head = c.v;
  cfg.shape.eps = 1e-6f;
  cfg.shape.softmax_scale = c.ref_shape().softmax_scale();
  kmla::Weights& w = cfg.weights;
  w.norm = d.norm.data(), w.w_q = d.w_q.data(), w.w_q_a = d.w_q_a.data(), w.q_a_norm = d.q_a_norm.data();
  w.w_q_b = d.w_q_b.data(), w.w_kv_a = d.w_kv_a.data(), w.kv_a_norm = d.kv_a_norm.data();
  w.w_uk = d.w_uk.data(), w.w_uv = d.w_uv.data(), w.w_o = d.w_o.data();
  cfg.cache = {d.pages.data(), in.n_pages, c.page_size};
  cfg.rope = {d.cos_sin.data(), in.max_positions};
  cfg.max_batch = c.max_batch > 0 ? c.max_batch : c.batch;
  cfg.max_clusters = c.max_clusters;
  cfg.max_stages = c.max_stages;
  if (c.wait_budget_us >= 0) cfg.wait_budget_us = c.wait_budget_us;
  return cfg;
}

inline kmla::StepArgs step_args(const Case& c, const HostInputs& in, DeviceInputs& d) {
  kmla::StepArgs a;
  a.batch = c.batch;
  a.hidden = d.hidden.data();
  a.residual = c.residual ? d.residual.data() : nullptr;
  a.residual_out = c.in_place ? d.hidden.data() : d.residual_out.data();
  a.out = c.in_place ? d.residual.data() : d.out.data();
  a.positions = d.positions.data();
  a.kv_indptr = d.kv_indptr.data();
  a.kv_indices = d.kv_indices.data();
  a.kv_last_page_len = d.kv_last_page_len.data();
  a.n_indices = int(in.kv_indices.size());
  return a;
}

struct RunResult {
  std::vector<uint16_t> out, residual_out, pages;
};

inline bool is_nan_bits(DType dt, uint16_t b) { return std::isnan(bits_to_float(dt, b)); }

// out within tolerance per token (a bad token's row all NaN), the appended rows within tolerance, every other cache
// value and residual_out bit-exact.
template <typename T>
CheckReport check_result(const Case& c, const HostInputs& in, const Oracle& o, const RunResult& r) {
  CheckReport rep;
  const size_t D = size_t(c.hidden), row = size_t(c.row());
  std::vector<uint16_t> pages_want = in.pages;
  for (int b = 0; b < c.batch; ++b) {
    const std::string tok = c.name + ": token " + std::to_string(b);
    const std::vector<uint16_t> got(r.out.begin() + ptrdiff_t(b * D), r.out.begin() + ptrdiff_t((b + 1) * D));
    if (c.bad != BadToken::None && b == c.bad_token) {
      if (!std::all_of(got.begin(), got.end(), [&](uint16_t v) { return is_nan_bits(c.dtype, v); }))
        rep.fail(tok + ": a bad token's output row is not all NaN");
      continue;
    }
    auto slice = [](const std::vector<float>& v, size_t at, size_t n) {
      return std::vector<float>(v.begin() + ptrdiff_t(at), v.begin() + ptrdiff_t(at + n));
    };
    const CheckReport t = check_values<T>(tok + " out", got, slice(o.out_ref, b * D, D), slice(o.out_naive, b * D, D));
    if (!t.ok) rep.fail(t.message);
    else if (b == 0 && rep.ok) rep.message = t.message;
    const size_t at = row_offset(c, in, b, c.old_len(b));
    const std::vector<uint16_t> got_row(r.pages.begin() + ptrdiff_t(at), r.pages.begin() + ptrdiff_t(at + row));
    const CheckReport tr = check_values<T>(tok + " appended row", got_row, slice(o.row_ref, b * row, row),
                                           slice(o.row_naive, b * row, row));
    if (!tr.ok) rep.fail(tr.message);
    std::copy(got_row.begin(), got_row.end(), pages_want.begin() + ptrdiff_t(at));
  }
  check_bit_exact(rep, c.name + ": the cache outside the appended rows", r.pages, pages_want);
  check_bit_exact(rep, c.name + ": residual_out", r.residual_out, o.residual_out);
  return rep;
}

// The op of the harness's driver.
struct Op {
  using Case = mla::Case;
  using Result = RunResult;
  static bool same_bits(const Result& a, const Result& b) {
    return a.out == b.out && a.residual_out == b.residual_out && a.pages == b.pages;
  }
  struct Launch {
    const HostInputs& in;
    const bool in_place;
    DeviceInputs d;
    kmla::Plan plan;
    kmla::StepArgs step;
    Launch(const Case& c, const HostInputs& inputs)
        : in(inputs), in_place(c.in_place), d(uploaded(c, inputs)), plan(plan_config(c, inputs, d)),
          step(step_args(c, inputs, d)) {}
    void poison() {  // outputs NaN (in place: the inputs again), the pool back to its state before the step
      d.out.fill_bytes(0xFF);
      d.residual_out.fill_bytes(0xFF);
      if (in_place) {
        d.hidden.upload(in.hidden);
        d.residual.upload(in.residual);
      }
      d.pages.upload(in.pages);
    }
    void run(void* stream, uint64_t emu_seed) { plan.run(step, stream, emu_seed); }
    Result result() {
      if (in_place) return {d.residual.download(), d.hidden.download(), d.pages.download()};
      return {d.out.download(), d.residual_out.download(), d.pages.download()};
    }
    int ctas() const { return plan.info().attention_ctas; }
    int ring_stages() const { return plan.config().max_stages; }  // set: the driver checks the last launch lapped
    std::string describe() const { return plan.info().describe(); }
  };
};

}  // namespace cf::test::mla
