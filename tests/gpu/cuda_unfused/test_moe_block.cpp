// cuda-unfused MoE block vs cf::ref::moe_ffn's math after add + RMSNorm (tolerance policy): the selection equals
// ref::select_experts on the GPU's own router logits (ids exact, weights to 1e-6) and ref::moe_route's choice; the
// output within tolerance and not worse than 2x the naive low-precision reference; residual_out bit-exact; the same
// bits on a second run and under CUDA-graph replay; non-finite router input reported by check_status().
// The router reads the block's normed x rounded to T (a documented rounding point), so the reference routes from
// that rounded x too: routing from the unrounded x would flip near-tied experts under bf16 rounding (gaps of
// ~1e-2 in the logits) and compare different experts; the experts themselves see the fp32 x in the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>

#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "deepseek_util.hpp"

namespace cf::test {
namespace {

using dev::DeviceBuffer;
using dev::to_device;
namespace cu = cuda_unfused;

struct MoeCase {
  std::string name;
  ref::MoeShape shape;
  int batch = 1;
  bool residual = true;
};

ref::MoeShape moe_shape(int hidden, int experts, int top_k, int ffn, int shared) {
  ref::MoeShape s;
  s.hidden = hidden;
  s.n_experts = experts;
  s.top_k = top_k;
  s.expert_ffn = ffn;
  s.shared_ffn = shared;
  return s;
}

std::string describe(const MoeCase& c) {
  const auto& s = c.shape;
  char line[256];
  std::snprintf(line, sizeof line, "%s: hidden %d, experts %d top %d, ffn %d, shared %d, %s%s, batch %d",
                c.name.c_str(), s.hidden, s.n_experts, s.top_k, s.expert_ffn, s.shared_ffn,
                s.method == ref::TopkMethod::Greedy ? "greedy" : "group-limited",
                s.norm_topk_prob ? ", renormalised" : "", c.batch);
  return line;
}
void PrintTo(const MoeCase& c, std::ostream* os) { *os << describe(c); }

template <typename T>
struct MoeHostData {
  std::vector<T> hidden, residual, norm, w_gate_up, w_down, shared_gate_up, shared_down;
  std::vector<float> router, f_norm, f_gate_up, f_down, f_shared_gate_up, f_shared_down;
  std::vector<ref::ExpertWeights<float>> experts;

  ref::MoeWeights<float> reference_weights(const ref::MoeShape& s) {
    const size_t d = size_t(s.hidden), f = size_t(s.expert_ffn), sf = size_t(s.shared_ffn);
    experts.clear();
    for (size_t e = 0; e < size_t(s.n_experts); ++e) {
      const float* gate = f_gate_up.data() + e * 2 * f * d;
      experts.push_back({gate, gate + f * d, f_down.data() + e * d * f});
    }
    ref::MoeWeights<float> w;
    w.router = router.data();
    w.experts = experts.data();
    if (sf > 0) w.shared = {f_shared_gate_up.data(), f_shared_gate_up.data() + sf * d, f_shared_down.data()};
    return w;
  }
};

template <typename T>
MoeHostData<T> make_moe_data(const MoeCase& c, uint64_t seed) {
  const ref::MoeShape& s = c.shape;
  const size_t d = size_t(s.hidden), E = size_t(s.n_experts), f = size_t(s.expert_ffn), sf = size_t(s.shared_ffn);
  const float a_in = 2.0f / std::sqrt(float(d)), a_down = 2.0f / std::sqrt(float(f));
  MoeHostData<T> h;
  h.hidden = random_values<T>(size_t(c.batch) * d, seed + 1, -1.0f, 1.0f);
  h.residual = random_values<T>(size_t(c.batch) * d, seed + 2, -1.0f, 1.0f);
  h.norm = random_values<T>(d, seed + 3, 0.5f, 1.5f);
  Rng rng(seed + 4);
  h.router.resize(E * d);
  for (float& v : h.router) v = rng.uniform(-2.0f * a_in, 2.0f * a_in);  // logits of O(1): clear top-k gaps
  h.w_gate_up = random_values<T>(E * 2 * f * d, seed + 5, -a_in, a_in);
  h.w_down = random_values<T>(E * d * f, seed + 6, -a_down, a_down);
  if (sf > 0) {
    const float a_shared = 2.0f / std::sqrt(float(sf));
    h.shared_gate_up = random_values<T>(2 * sf * d, seed + 7, -a_in, a_in);
    h.shared_down = random_values<T>(d * sf, seed + 8, -a_shared, a_shared);
  }
  h.f_norm = to_floats(h.norm);
  h.f_gate_up = to_floats(h.w_gate_up);
  h.f_down = to_floats(h.w_down);
  h.f_shared_gate_up = to_floats(h.shared_gate_up);
  h.f_shared_down = to_floats(h.shared_down);
  return h;
}

// acc += scale * expert(x) with the GPU's rounding point: the SiLU * up activation in T.
template <typename T>
void naive_add_expert(const T* x, const ref::ExpertWeights<float>& e, int hidden, int ffn, float scale, float* acc) {
  std::vector<float> gate(static_cast<size_t>(ffn)), up(static_cast<size_t>(ffn)), y(static_cast<size_t>(hidden));
  std::vector<T> act(static_cast<size_t>(ffn));
  ref::matvec(e.gate, x, gate.data(), ffn, hidden);
  ref::matvec(e.up, x, up.data(), ffn, hidden);
  ref::swiglu(gate.data(), up.data(), act.data(), ffn);
  ref::matvec(e.down, act.data(), y.data(), hidden, ffn);
  for (int i = 0; i < hidden; ++i) acc[i] += scale * y[size_t(i)];
}

template <typename T>
void run_moe_case(const MoeCase& c) {
  SCOPED_TRACE(describe(c));
  const ref::MoeShape& rs = c.shape;
  ASSERT_EQ(rs.check(), "");
  const MoeBlockShape s = cu::moe_block_shape(rs, 1e-6f);
  const int d = s.hidden, K = s.top_k;
  const uint64_t seed = std::hash<std::string>{}(c.name) ^ (std::is_same_v<T, half> ? 1 : 2);
  MoeHostData<T> h = make_moe_data<T>(c, seed);
  const ref::MoeWeights<float> wf = h.reference_weights(rs);

  // ---- references ----
  std::vector<float> out_ref(size_t(c.batch) * d), out_naive(size_t(c.batch) * d, 0.0f);
  std::vector<T> residual_out_ref(size_t(c.batch) * d);
  std::vector<ref::Routing> routing_ref;  // from the rounded x, as the GPU routes
  for (int b = 0; b < c.batch; ++b) {
    const T* hb = h.hidden.data() + size_t(b) * d;
    std::vector<float> x(static_cast<size_t>(d));
    std::vector<T> x_t(static_cast<size_t>(d)), scratch(static_cast<size_t>(d));
    if (c.residual) {
      const T* rb = h.residual.data() + size_t(b) * d;
      ref::add_rmsnorm(hb, rb, h.f_norm.data(), residual_out_ref.data() + size_t(b) * d, x.data(), d, s.eps);
      ref::add_rmsnorm(hb, rb, h.f_norm.data(), scratch.data(), x_t.data(), d, s.eps);
    } else {
      std::copy_n(hb, d, residual_out_ref.begin() + long(b) * d);
      ref::rmsnorm(hb, h.f_norm.data(), x.data(), d, s.eps);
      ref::rmsnorm(hb, h.f_norm.data(), x_t.data(), d, s.eps);
    }
    const ref::Routing routing = ref::moe_route(x_t.data(), wf.router, rs);
    routing_ref.push_back(routing);
    float* exact = out_ref.data() + size_t(b) * d;  // moe_ffn's sum, shared first, then the experts in order
    std::fill_n(exact, d, 0.0f);
    if (s.shared_ffn > 0) ref::add_expert(x.data(), wf.shared, d, s.shared_ffn, 1.0f, exact);
    for (size_t k = 0; k < routing.ids.size(); ++k)
      ref::add_expert(x.data(), wf.experts[routing.ids[k]], d, s.expert_ffn, routing.weights[k], exact);
    float* acc = out_naive.data() + size_t(b) * d;
    if (s.shared_ffn > 0) naive_add_expert(x_t.data(), wf.shared, d, s.shared_ffn, 1.0f, acc);
    for (size_t k = 0; k < routing.ids.size(); ++k)
      naive_add_expert(x_t.data(), wf.experts[routing.ids[k]], d, s.expert_ffn, routing.weights[k], acc);
    for (int i = 0; i < d; ++i) acc[i] = to_float(from_float<T>(acc[i]));
  }

  // ---- GPU ----
  DeviceBuffer<T> d_hidden = to_device(h.hidden, "hidden"), d_residual = to_device(h.residual, "residual");
  DeviceBuffer<T> d_residual_out(h.hidden.size(), "residual_out"), d_out(h.hidden.size(), "out");
  DeviceBuffer<T> d_norm = to_device(h.norm, "norm"), d_gate_up = to_device(h.w_gate_up, "w_gate_up");
  DeviceBuffer<T> d_down = to_device(h.w_down, "w_down");
  DeviceBuffer<T> d_shared_gate_up = to_device(h.shared_gate_up, "shared_gate_up");
  DeviceBuffer<T> d_shared_down = to_device(h.shared_down, "shared_down");
  DeviceBuffer<float> d_router = to_device(h.router, "router");
  DeviceBuffer<int32_t> d_ids(size_t(c.batch) * K, "expert ids");
  DeviceBuffer<float> d_weights(size_t(c.batch) * K, "expert weights");
  d_out.fill_bytes(0xFF);

  cu::MoeBlockParams p;
  p.dtype = dtype_of<T>();
  p.shape = s;
  p.batch = c.batch;
  p.hidden = d_hidden.data();
  p.residual = c.residual ? d_residual.data() : nullptr;
  p.residual_out = d_residual_out.data();
  p.out = d_out.data();
  p.weights.norm = d_norm.data();
  p.weights.router = d_router.data();
  p.weights.w_gate_up = d_gate_up.data();
  p.weights.w_down = d_down.data();
  if (s.shared_ffn > 0) {
    p.weights.shared_gate_up = d_shared_gate_up.data();
    p.weights.shared_down = d_shared_down.data();
  }
  p.expert_ids = d_ids.data();
  p.expert_weights = d_weights.data();
  cu::MoeWorkspace ws(s, c.batch);
  cuda::Stream stream;
  cu::moe_block(p, ws, stream);
  ws.check_status(stream);
  const auto out = d_out.download();
  const auto ids = d_ids.download();
  const auto weights = d_weights.download();
  std::vector<float> logits(size_t(c.batch) * s.n_experts);
  CF_CUDA_CHECK(cudaMemcpy(logits.data(), ws.router_logits(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost));

  // 1. selection: ref::select_experts on the GPU's logits, exactly; and the reference's own choice.
  for (int b = 0; b < c.batch; ++b) {
    std::vector<float> probs(logits.begin() + long(b) * s.n_experts, logits.begin() + long(b + 1) * s.n_experts);
    ref::softmax(probs.data(), probs.data(), s.n_experts);
    const ref::Routing expect = ref::select_experts(probs.data(), rs);
    for (int k = 0; k < K; ++k) {
      EXPECT_EQ(ids[size_t(b * K + k)], expect.ids[size_t(k)]) << "token " << b << " choice " << k;
      EXPECT_NEAR(weights[size_t(b * K + k)], expect.weights[size_t(k)], 1e-6 * std::max(1.0f, expect.weights[size_t(k)]))
          << "token " << b << " choice " << k;
      EXPECT_EQ(ids[size_t(b * K + k)], routing_ref[size_t(b)].ids[size_t(k)])
          << "token " << b << " choice " << k << ": ref::moe_route chose differently";
    }
  }
  // 2. output and residual_out.
  const auto report = check_policy<T>(to_floats(out), out_ref, out_naive);
  std::printf("[ case ] %s %s: out %s\n", describe(c).c_str(), cu::dtype_name(dtype_of<T>()), report.message.c_str());
  EXPECT_TRUE(report.ok) << "out: " << report.message;
  EXPECT_EQ(first_bit_difference(d_residual_out.download(), residual_out_ref), -1) << "residual_out differs";

  // 3. determinism: second run and graph replays.
  d_out.fill_bytes(0xFF);
  cu::moe_block(p, ws, stream);
  ws.check_status(stream);
  EXPECT_EQ(first_bit_difference(d_out.download(), out), -1) << "second run gave different bits";
  cuda::Graph graph = cuda::Graph::capture(stream, [&](cudaStream_t st) { cu::moe_block(p, ws, st); });
  d_out.fill_bytes(0xFF);
  for (int replay = 0; replay < 3; ++replay) graph.replay(stream);
  ws.check_status(stream);
  EXPECT_EQ(first_bit_difference(d_out.download(), out), -1) << "CUDA-graph replay gave different bits";
}

ref::MoeShape group_limited(ref::MoeShape s, int n_group, int topk_group) {
  s.method = ref::TopkMethod::GroupLimitedGreedy;
  s.n_group = n_group;
  s.topk_group = topk_group;
  return s;
}

std::vector<MoeCase> moe_cases() {
  std::vector<MoeCase> cases;
  cases.push_back({"GreedyShared", moe_shape(256, 8, 2, 64, 128), 3});
  {
    ref::MoeShape s = group_limited(moe_shape(128, 16, 3, 40, 0), 4, 2);
    s.norm_topk_prob = true;
    s.routed_scaling_factor = 2.5f;
    cases.push_back({"GroupLimitedRenormNoShared", s, 5});
  }
  {
    MoeCase c{"FirstLayerBatch1", moe_shape(64, 4, 1, 24, 48), 1};
    c.residual = false;
    cases.push_back(c);
  }
  cases.push_back({"Batch16TopK6", moe_shape(256, 64, 6, 48, 96), 16});
  cases.push_back({"V2LiteExpertsBatch3", moe_shape(2048, 64, 6, 1408, 2816), 3});
  return cases;
}

class UnfusedMoe : public ::testing::TestWithParam<MoeCase> {};

TEST_P(UnfusedMoe, Fp16MatchesReference) {
  CF_REQUIRE_GPU();
  run_moe_case<half>(GetParam());
}

TEST_P(UnfusedMoe, Bf16MatchesReference) {
  CF_REQUIRE_GPU();
  run_moe_case<bfloat16>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Shapes, UnfusedMoe, ::testing::ValuesIn(moe_cases()),
                         [](const ::testing::TestParamInfo<MoeCase>& info) { return info.param.name; });

TEST(UnfusedMoeV2Lite, Fp16Batch16) {
  CF_REQUIRE_GPU();
  run_moe_case<half>({"V2Lite_b16", moe_shape(2048, 64, 6, 1408, 2816), 16});
}

TEST(UnfusedMoeV2Lite, Bf16Batch1) {
  CF_REQUIRE_GPU();
  run_moe_case<bfloat16>({"V2Lite_b1", moe_shape(2048, 64, 6, 1408, 2816), 1});
}

TEST(UnfusedMoeDeviceChecks, NonFiniteRouterInputIsReported) {
  CF_REQUIRE_GPU();
  const MoeCase c{"Checks", moe_shape(64, 4, 2, 16, 0), 2};
  MoeHostData<half> h = make_moe_data<half>(c, 5);
  h.router[3] = std::numeric_limits<float>::infinity();
  DeviceBuffer<half> d_hidden = to_device(h.hidden, "hidden"), d_out(h.hidden.size(), "out");
  DeviceBuffer<half> d_residual_out(h.hidden.size(), "residual_out"), d_norm = to_device(h.norm, "norm");
  DeviceBuffer<half> d_gate_up = to_device(h.w_gate_up, "w_gate_up"), d_down = to_device(h.w_down, "w_down");
  DeviceBuffer<float> d_router = to_device(h.router, "router");
  cu::MoeBlockParams p;
  p.shape = cu::moe_block_shape(c.shape, 1e-6f);
  p.batch = c.batch;
  p.hidden = d_hidden.data();
  p.residual_out = d_residual_out.data();
  p.out = d_out.data();
  p.weights = {d_norm.data(), d_router.data(), d_gate_up.data(), d_down.data(), nullptr, nullptr};
  cu::MoeWorkspace ws(p.shape, c.batch);
  cuda::Stream stream;
  cu::moe_block(p, ws, stream);
  try {
    ws.check_status(stream);
    ADD_FAILURE() << "expected cf::InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("router logits"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::isnan(to_floats(d_out.download())[0])) << "a token with non-finite logits gives NaN";
}

}  // namespace
}  // namespace cf::test
