// clusterfusion._cuda: the fused kernels (cf_kernels, sm_90a) and cuda-unfused's RMSNorm on CUDA tensors. Built when
// nvcc is found. Every call enqueues on the given stream (no synchronisation unless check_status), so it works with
// torch / cupy streams and inside CUDA-graph capture once the layer's plan exists (the first call of a layer builds
// its plan: tensor maps and a workspace allocation, which must not happen while capturing).
#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <array>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "layer_args.hpp"
#include "mla_args.hpp"
#include "moe_args.hpp"
#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace cf::py {
namespace {

namespace da = cf::kernels::decoder_attention;
namespace ffn = cf::kernels::ffn;

// Plans kept per layer; past this many the cache starts over (a serving loop needs n_layers x batch sizes).
constexpr size_t kMaxPlans = 4096;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the call and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      check(cudaSetDevice(device), "cudaSetDevice");
    } else {
      previous_ = -1;
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

dev::DType kernel_dtype(Elem e, const char* fn) {
  if (e == Elem::F16) return dev::DType::F16;
  if (e == Elem::BF16) return dev::DType::BF16;
  throw nb::type_error((std::string(fn) + ": the fused CUDA kernels take float16 or bfloat16 tensors, got " +
                        elem_name(e)).c_str());
}

void expect_cuda(bool cuda, const char* fn) {
  if (!cuda)
    throw nb::value_error((std::string(fn) + ": CPU arrays reached the CUDA module (call clusterfusion." + fn +
                           ", which runs them on the CPU)").c_str());
}

// The activation fields every block's StepArgs shares, from its parsed layer arguments.
template <typename Step, typename Args>
Step block_step(const Args& a) {
  Step step;
  step.batch = a.batch;
  step.hidden = a.hidden.data();
  step.residual = a.residual ? a.residual->data() : nullptr;
  step.residual_out = a.residual_output.data();
  step.out = a.output.data();
  return step;
}

template <typename Plan, typename Step>
void run_plan(Plan& plan, const Step& step, uintptr_t stream, bool check_status) {
  void* s = reinterpret_cast<void*>(stream);
  plan.run(step, s);
  if (check_status) plan.check_status(s);
}

void expect_backend(const std::string& backend, const char* fn) {
  if (backend != "auto" && backend != "cuda")
    throw nb::value_error((std::string(fn) + ": backend '" + backend + "' does not run on CUDA tensors (expected "
                           "'auto' or 'cuda'; 'reference' and 'emu' take CPU arrays)").c_str());
}

// The largest batch a cached plan serves: max_batch, or the call's batch when 0.
int plan_batch_for(int max_batch, int batch) {
  if (max_batch > 0 && max_batch < batch)
    throw nb::value_error(("max_batch " + std::to_string(max_batch) + " is smaller than the batch of " +
                           std::to_string(batch)).c_str());
  return max_batch > 0 ? max_batch : batch;
}

int64_t bits_of(float f) { return int64_t(std::bit_cast<uint32_t>(f)); }
int64_t address(const void* p) { return int64_t(reinterpret_cast<uintptr_t>(p)); }

// Never destroyed: at interpreter exit the CUDA runtime may already be gone, and the process frees device memory.
auto& decoder_plans = *new std::map<std::array<int64_t, 24>, std::unique_ptr<da::Plan>>;
auto& ffn_plans = *new std::map<std::array<int64_t, 11>, std::unique_ptr<ffn::Plan>>;

da::Plan& decoder_plan(const DecoderLayerArgs& a, int cluster_size, int max_batch) {
  const dev::DType dtype = kernel_dtype(a.dtype, "llama_decoder_layer");
  const int plan_batch = plan_batch_for(max_batch, a.batch);
  const void* norm = a.rms_weight.data();
  const void* bias = a.qkv_bias ? a.qkv_bias->data() : nullptr;
  const void* cos_sin = a.cos_sin ? a.cos_sin->data() : nullptr;
  const std::array<int64_t, 24> key = {
      a.device_id, int64_t(dtype), a.hidden_size, a.n_heads, a.n_kv_heads, a.head_dim, a.rot_dim,
      int64_t(a.rope_style), bits_of(a.rope_theta), bits_of(a.eps), address(norm), address(a.qkv_weight.data()),
      address(bias), address(a.o_weight.data()), address(a.k_cache.data()), address(a.v_cache.data()),
      int64_t(a.pointer_table), a.pointer_table ? a.layer_id : 0, a.n_pages, a.page_size, address(cos_sin),
      a.cos_sin_rows, plan_batch, cluster_size};
  auto it = decoder_plans.find(key);
  if (it != decoder_plans.end()) return *it->second;
  if (decoder_plans.size() >= kMaxPlans) decoder_plans.clear();

  da::PlanConfig cfg;
  cfg.dtype = dtype;
  cfg.shape.hidden = a.hidden_size;
  cfg.shape.n_heads = a.n_heads;
  cfg.shape.n_kv_heads = a.n_kv_heads;
  cfg.shape.head_dim = a.head_dim;
  cfg.shape.rot_dim = a.rot_dim;
  cfg.shape.rope_style = a.rope_style;
  cfg.shape.rope_theta = a.rope_theta;
  cfg.shape.eps = a.eps;
  cfg.weights.norm = norm;
  cfg.weights.w_qkv = a.qkv_weight.data();
  cfg.weights.b_qkv = bias;
  cfg.weights.w_o = a.o_weight.data();
  if (a.pointer_table) {
    cfg.cache.k_layer_table = static_cast<const uint64_t*>(a.k_cache.data());
    cfg.cache.v_layer_table = static_cast<const uint64_t*>(a.v_cache.data());
    cfg.cache.layer_id = a.layer_id;
  } else {
    cfg.cache.k_pages = a.k_cache.data();
    cfg.cache.v_pages = a.v_cache.data();
  }
  cfg.cache.n_pages = a.n_pages;
  cfg.cache.page_size = a.page_size;
  cfg.rope.cos_sin = static_cast<const float*>(cos_sin);
  cfg.rope.max_positions = a.cos_sin_rows;
  cfg.max_batch = plan_batch;
  cfg.cluster_size = cluster_size;
  auto plan = std::make_unique<da::Plan>(cfg);
  return *decoder_plans.emplace(key, std::move(plan)).first->second;
}

void llama_decoder_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states, nb::handle residual,
                         nb::handle qkv_weight, nb::handle o_weight, nb::handle paged_kv_indptr,
                         nb::handle paged_kv_indices, nb::handle k_cache, nb::handle v_cache, int layer_id,
                         nb::handle rms_weight, float eps, nb::handle positions, nb::handle cos_sin,
                         nb::handle kv_last_page_len, nb::handle qkv_bias, const std::string& rope_style,
                         float rope_theta, const std::optional<std::vector<int64_t>>& kv_cache_shape,
                         const std::string& backend, int cluster_size, int max_batch, uintptr_t stream,
                         bool check_status) {
  expect_backend(backend, "llama_decoder_layer");
  const DecoderLayerArgs a = parse_decoder_layer(output, residual_output, hidden_states, residual, qkv_weight,
                                                 o_weight, paged_kv_indptr, paged_kv_indices, k_cache, v_cache,
                                                 layer_id, rms_weight, eps, positions, cos_sin, kv_last_page_len,
                                                 qkv_bias, rope_style, rope_theta, kv_cache_shape);
  expect_cuda(a.cuda, "llama_decoder_layer");
  DeviceGuard device(a.device_id);
  da::Plan& plan = decoder_plan(a, cluster_size, max_batch);
  auto step = block_step<da::StepArgs>(a);
  if (a.positions.elem == Elem::I64) {
    step.positions64 = static_cast<const int64_t*>(a.positions.data());
  } else {
    step.positions = static_cast<const int32_t*>(a.positions.data());
  }
  step.kv_indptr = static_cast<const int32_t*>(a.kv_indptr.data());
  step.kv_indices = static_cast<const int32_t*>(a.kv_indices.data());
  step.kv_last_page_len = a.kv_last_page_len ? static_cast<const int32_t*>(a.kv_last_page_len->data()) : nullptr;
  step.n_indices = a.n_indices;
  run_plan(plan, step, stream, check_status);
}

ffn::Plan& ffn_plan(const FfnLayerArgs& a, int cluster_size, int max_batch) {
  const dev::DType dtype = kernel_dtype(a.dtype, "llama_ffn_layer");
  const int plan_batch = plan_batch_for(max_batch, a.batch);
  const std::array<int64_t, 11> key = {a.device_id, int64_t(dtype), a.hidden_size, a.ffn_hidden, bits_of(a.eps),
                                       address(a.rms_weight.data()), address(a.gate_up_weight.data()),
                                       address(a.down_weight.data()), plan_batch, cluster_size, 0};
  auto it = ffn_plans.find(key);
  if (it != ffn_plans.end()) return *it->second;
  if (ffn_plans.size() >= kMaxPlans) ffn_plans.clear();
  ffn::PlanConfig cfg;
  cfg.dtype = dtype;
  cfg.shape.hidden = a.hidden_size;
  cfg.shape.ffn_hidden = a.ffn_hidden;
  cfg.shape.eps = a.eps;
  cfg.weights.norm = a.rms_weight.data();
  cfg.weights.set_fused_gate_up(a.gate_up_weight.data(), cfg.shape, dtype);
  cfg.weights.w_down = a.down_weight.data();
  cfg.max_batch = plan_batch;
  cfg.cluster_size = cluster_size;
  auto plan = std::make_unique<ffn::Plan>(cfg);
  return *ffn_plans.emplace(key, std::move(plan)).first->second;
}

void llama_ffn_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states, nb::handle residual,
                     nb::handle gate_up_weight, nb::handle down_weight, nb::handle rms_weight, float eps,
                     const std::string& backend, int cluster_size, int max_batch, uintptr_t stream,
                     bool check_status) {
  expect_backend(backend, "llama_ffn_layer");
  const FfnLayerArgs a = parse_ffn_layer(output, residual_output, hidden_states, residual, gate_up_weight,
                                         down_weight, rms_weight, eps);
  expect_cuda(a.cuda, "llama_ffn_layer");
  DeviceGuard device(a.device_id);
  ffn::Plan& plan = ffn_plan(a, cluster_size, max_batch);
  auto step = block_step<ffn::StepArgs>(a);
  run_plan(plan, step, stream, check_status);
}

namespace mla = cf::kernels::mla;
auto& mla_plans = *new std::map<std::array<int64_t, 26>, std::unique_ptr<mla::Plan>>;

mla::Plan& mla_plan(const MlaLayerArgs& a, int cluster_size, int max_batch) {
  const dev::DType dtype = kernel_dtype(a.dtype, "deepseek_decoder_layer");
  const int plan_batch = plan_batch_for(max_batch, a.batch);
  auto ptr = [](const std::optional<Array>& x) -> const void* { return x ? x->data() : nullptr; };
  const std::array<int64_t, 26> key = {
      a.device_id, int64_t(dtype), a.hidden_size, a.n_heads, a.q_lora_rank, a.kv_lora_rank, a.qk_nope, a.qk_rope,
      a.v_head, bits_of(a.eps), bits_of(a.softmax_scale), address(a.rms_weight.data()), address(ptr(a.q_weight)),
      address(ptr(a.q_a_weight)), address(ptr(a.q_a_norm)), address(ptr(a.q_b_weight)),
      address(a.kv_a_weight.data()), address(a.kv_a_norm.data()), address(a.uk_weight.data()),
      address(a.uv_weight.data()), address(a.o_weight.data()), address(a.latent_cache.data()),
      int64_t(a.n_pages) << 32 | a.page_size, address(a.cos_sin.data()), int64_t(a.cos_sin_rows) << 8 | plan_batch,
      cluster_size};
  auto it = mla_plans.find(key);
  if (it != mla_plans.end()) return *it->second;
  if (mla_plans.size() >= kMaxPlans) mla_plans.clear();
  const mla::PlanConfig cfg = mla_plan_config<mla::PlanConfig>(
      a, dtype, plan_batch, cluster_size, [](const Array& x) -> void* { return x.data(); });
  auto plan = std::make_unique<mla::Plan>(cfg);
  return *mla_plans.emplace(key, std::move(plan)).first->second;
}

void deepseek_decoder_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                            nb::handle residual, nb::handle q_weight, nb::handle kv_a_weight, nb::handle kv_a_norm,
                            nb::handle uk_weight, nb::handle uv_weight, nb::handle o_weight, nb::handle rms_weight,
                            nb::handle latent_cache, nb::handle paged_kv_indptr, nb::handle paged_kv_indices,
                            nb::handle positions, nb::handle cos_sin, nb::handle q_a_weight, nb::handle q_a_norm,
                            nb::handle q_b_weight, nb::handle kv_last_page_len, float eps,
                            std::optional<float> softmax_scale, const std::string& backend, int cluster_size,
                            int max_batch, uintptr_t stream, bool check_status) {
  expect_backend(backend, "deepseek_decoder_layer");
  const MlaLayerArgs a = parse_mla_layer(output, residual_output, hidden_states, residual, q_weight, kv_a_weight,
                                         kv_a_norm, uk_weight, uv_weight, o_weight, rms_weight, latent_cache,
                                         paged_kv_indptr, paged_kv_indices, positions, cos_sin, q_a_weight, q_a_norm,
                                         q_b_weight, kv_last_page_len, eps, softmax_scale);
  expect_cuda(a.cuda, "deepseek_decoder_layer");
  if (a.positions.elem != Elem::I32)
    a.positions.fail_type("the fused MLA kernel takes int32 positions on CUDA tensors (got int64)");
  DeviceGuard device(a.device_id);
  mla::Plan& plan = mla_plan(a, cluster_size, max_batch);
  auto step = block_step<mla::StepArgs>(a);
  step.positions = static_cast<const int32_t*>(a.positions.data());
  step.kv_indptr = static_cast<const int32_t*>(a.kv_indptr.data());
  step.kv_indices = static_cast<const int32_t*>(a.kv_indices.data());
  step.kv_last_page_len = a.kv_last_page_len ? static_cast<const int32_t*>(a.kv_last_page_len->data()) : nullptr;
  step.n_indices = a.n_indices;
  run_plan(plan, step, stream, check_status);
}

namespace moe = cf::kernels::moe;
auto& moe_plans = *new std::map<std::array<int64_t, 20>, std::unique_ptr<moe::Plan>>;

moe::Plan& moe_plan(const MoeLayerArgs& a, int cluster_size, int max_batch) {
  const dev::DType dtype = kernel_dtype(a.dtype, "deepseek_moe_layer");
  const int plan_batch = plan_batch_for(max_batch, a.batch);
  auto ptr = [](const std::optional<Array>& x) -> const void* { return x ? x->data() : nullptr; };
  const MoeBlockShape& s = a.shape;
  const std::array<int64_t, 20> key = {
      a.device_id, int64_t(dtype), s.hidden, s.n_experts, s.top_k, s.expert_ffn, s.shared_ffn,
      int64_t(s.norm_topk_prob), bits_of(s.routed_scaling), int64_t(s.selection), int64_t(s.n_group) << 32 | s.topk_group,
      bits_of(s.eps), address(a.rms_weight.data()), address(a.router_weight.data()), address(a.gate_up_weight.data()),
      address(a.down_weight.data()), address(ptr(a.shared_gate_up_weight)), address(ptr(a.shared_down_weight)),
      plan_batch, cluster_size};
  auto it = moe_plans.find(key);
  if (it != moe_plans.end()) return *it->second;
  if (moe_plans.size() >= kMaxPlans) moe_plans.clear();
  const moe::PlanConfig cfg = moe_plan_config<moe::PlanConfig>(
      a, dtype, plan_batch, cluster_size, [](const Array& x) -> void* { return x.data(); });
  auto plan = std::make_unique<moe::Plan>(cfg);
  return *moe_plans.emplace(key, std::move(plan)).first->second;
}

void deepseek_moe_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                        nb::handle residual, nb::handle router_weight, nb::handle gate_up_weight,
                        nb::handle down_weight, nb::handle rms_weight, nb::handle shared_gate_up_weight,
                        nb::handle shared_down_weight, int top_k, bool norm_topk_prob, float routed_scaling,
                        const std::string& topk_method, int n_group, int topk_group, float eps,
                        const std::string& backend, int cluster_size, int max_batch, uintptr_t stream, bool check_status) {
  expect_backend(backend, "deepseek_moe_layer");
  const MoeLayerArgs a = parse_moe_layer(output, residual_output, hidden_states, residual, router_weight,
                                         gate_up_weight, down_weight, rms_weight, shared_gate_up_weight,
                                         shared_down_weight, top_k, norm_topk_prob, routed_scaling, topk_method,
                                         n_group, topk_group, eps);
  expect_cuda(a.cuda, "deepseek_moe_layer");
  DeviceGuard device(a.device_id);
  moe::Plan& plan = moe_plan(a, cluster_size, max_batch);
  auto step = block_step<moe::StepArgs>(a);
  run_plan(plan, step, stream, check_status);
}

void rms_norm(nb::handle output, nb::handle input, nb::handle weight, float eps, nb::handle residual,
              nb::handle residual_output, uintptr_t stream) {
  const RmsNormArgs a = parse_rms_norm(output, input, weight, eps, residual, residual_output);
  expect_cuda(a.cuda, "rms_norm");
  DeviceGuard device(a.device_id);
  cuda_unfused::AddRmsNormParams p;
  if (a.dtype == Elem::F16) {
    p.dtype = cuda_unfused::DType::F16;
  } else if (a.dtype == Elem::BF16) {
    p.dtype = cuda_unfused::DType::BF16;
  } else {
    throw nb::type_error((std::string("rms_norm: CUDA tensors must be float16 or bfloat16, got ") +
                          elem_name(a.dtype)).c_str());
  }
  p.rows = a.rows;
  p.n = a.n;
  p.eps = a.eps;
  p.hidden = a.input.data();
  p.residual = a.residual ? a.residual->data() : nullptr;
  p.weight = a.weight.data();
  p.residual_out = a.residual_output ? a.residual_output->data() : nullptr;
  p.y = a.output.data();
  cuda_unfused::add_rmsnorm(p, reinterpret_cast<cudaStream_t>(stream));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: not an error here
    return 0;
  }
  return n;
}

}  // namespace
}  // namespace cf::py

NB_MODULE(_cuda, m) {
  using namespace cf::py;
  m.doc() = "clusterfusion's CUDA module: the fused kernels on CUDA tensors";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const cf::InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const cf::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  m.def("llama_decoder_layer", &llama_decoder_layer, "output"_a.none(), "residual_output"_a.none(), "hidden_states"_a.none(),
        "residual"_a.none(), "qkv_weight"_a.none(), "o_weight"_a.none(), "paged_kv_indptr"_a.none(), "paged_kv_indices"_a.none(), "k_cache"_a.none(),
        "v_cache"_a.none(), "layer_id"_a, "rms_weight"_a.none(), "eps"_a, "positions"_a.none(), "cos_sin"_a.none(),
        "kv_last_page_len"_a.none(), "qkv_bias"_a.none(), "rope_style"_a, "rope_theta"_a,
        "kv_cache_shape"_a.none(), "backend"_a, "cluster_size"_a, "max_batch"_a, "stream"_a, "check_status"_a,
        "The fused attention block on CUDA tensors; see clusterfusion.llama_decoder_layer.");
  m.def("llama_ffn_layer", &llama_ffn_layer, "output"_a.none(), "residual_output"_a.none(), "hidden_states"_a.none(),
        "residual"_a.none(), "gate_up_weight"_a.none(), "down_weight"_a.none(), "rms_weight"_a.none(), "eps"_a, "backend"_a,
        "cluster_size"_a, "max_batch"_a, "stream"_a, "check_status"_a,
        "The fused FFN block on CUDA tensors; see clusterfusion.llama_ffn_layer.");
  m.def("deepseek_decoder_layer", &deepseek_decoder_layer, "output"_a.none(), "residual_output"_a.none(),
        "hidden_states"_a.none(), "residual"_a.none(), "q_weight"_a.none(), "kv_a_weight"_a.none(),
        "kv_a_norm"_a.none(), "uk_weight"_a.none(), "uv_weight"_a.none(), "o_weight"_a.none(), "rms_weight"_a.none(),
        "latent_cache"_a.none(), "paged_kv_indptr"_a.none(), "paged_kv_indices"_a.none(), "positions"_a.none(),
        "cos_sin"_a.none(), "q_a_weight"_a.none(), "q_a_norm"_a.none(), "q_b_weight"_a.none(),
        "kv_last_page_len"_a.none(), "eps"_a, "softmax_scale"_a.none(), "backend"_a, "cluster_size"_a, "max_batch"_a,
        "stream"_a, "check_status"_a, "The fused MLA block on CUDA tensors; see clusterfusion.deepseek_decoder_layer.");
  m.def("deepseek_moe_layer", &deepseek_moe_layer, "output"_a.none(), "residual_output"_a.none(), "hidden_states"_a.none(),
        "residual"_a.none(), "router_weight"_a.none(), "gate_up_weight"_a.none(), "down_weight"_a.none(),
        "rms_weight"_a.none(), "shared_gate_up_weight"_a.none(), "shared_down_weight"_a.none(), "top_k"_a,
        "norm_topk_prob"_a, "routed_scaling"_a, "topk_method"_a, "n_group"_a, "topk_group"_a, "eps"_a, "backend"_a,
        "cluster_size"_a, "max_batch"_a, "stream"_a,
        "check_status"_a, "The fused MoE block on CUDA tensors; see clusterfusion.deepseek_moe_layer.");
  m.def("rms_norm", &rms_norm, "output"_a.none(), "input"_a.none(), "weight"_a.none(), "eps"_a, "residual"_a.none(),
        "residual_output"_a.none(), "stream"_a, "RMSNorm on CUDA tensors; see clusterfusion.rms_norm.");
  m.def("device_count", &device_count, "Number of CUDA devices visible (0 without a driver or GPU).");
  m.def("plan_count", [] { return decoder_plans.size() + ffn_plans.size() + mla_plans.size() + moe_plans.size(); },
        "Number of cached kernel plans (one per layer and shape).");
  m.def("clear_plans", [] {
    decoder_plans.clear();
    ffn_plans.clear();
    mla_plans.clear();
    moe_plans.clear();
  }, "Frees every cached kernel plan (their device workspaces); the next call of each layer builds it again.");
}
