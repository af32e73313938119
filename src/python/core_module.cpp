// clusterfusion._core: the CPU side of the Python package. The public API (argument defaults, device dispatch,
// docstrings) is python/clusterfusion/__init__.py; these functions take every argument explicitly.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include <nanobind/ndarray.h>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "cpu_blocks.hpp"
#include "engine.hpp"
#include "layer_args.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace cf::py {
namespace {

CpuBackend cpu_backend(const std::string& name) {
  if (name == "auto" || name == "reference" || name == "cpu") return CpuBackend::Reference;
  if (name == "emu") return CpuBackend::Emu;
  throw nb::value_error(("backend: '" + name + "' does not run on CPU arrays (expected 'auto', 'reference' or "
                         "'emu'; 'cuda' needs CUDA tensors)").c_str());
}

void expect_cpu(bool cuda, const char* fn) {
  if (cuda)
    throw nb::value_error((std::string(fn) + ": CUDA tensors reached the CPU module (call clusterfusion." + fn +
                           ", which sends them to the CUDA module)").c_str());
}

void llama_decoder_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states, nb::handle residual,
                         nb::handle qkv_weight, nb::handle o_weight, nb::handle paged_kv_indptr,
                         nb::handle paged_kv_indices, nb::handle k_cache, nb::handle v_cache, int layer_id,
                         nb::handle rms_weight, float eps, nb::handle positions, nb::handle cos_sin,
                         nb::handle kv_last_page_len, nb::handle qkv_bias, const std::string& rope_style,
                         float rope_theta, const std::optional<std::vector<int64_t>>& kv_cache_shape,
                         const std::string& backend, int cluster_size, int max_batch, uint64_t emu_seed) {
  const CpuBackend which = cpu_backend(backend);
  const DecoderLayerArgs a = parse_decoder_layer(output, residual_output, hidden_states, residual, qkv_weight,
                                                 o_weight, paged_kv_indptr, paged_kv_indices, k_cache, v_cache,
                                                 layer_id, rms_weight, eps, positions, cos_sin, kv_last_page_len,
                                                 qkv_bias, rope_style, rope_theta, kv_cache_shape);
  expect_cpu(a.cuda, "llama_decoder_layer");
  nb::gil_scoped_release no_gil;
  decoder_layer_cpu(a, which, {cluster_size, max_batch, emu_seed});
}

void llama_ffn_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states, nb::handle residual,
                     nb::handle gate_up_weight, nb::handle down_weight, nb::handle rms_weight, float eps,
                     const std::string& backend, int cluster_size, int max_batch, uint64_t emu_seed) {
  const CpuBackend which = cpu_backend(backend);
  const FfnLayerArgs a = parse_ffn_layer(output, residual_output, hidden_states, residual, gate_up_weight,
                                         down_weight, rms_weight, eps);
  expect_cpu(a.cuda, "llama_ffn_layer");
  nb::gil_scoped_release no_gil;
  ffn_layer_cpu(a, which, {cluster_size, max_batch, emu_seed});
}

void deepseek_decoder_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                            nb::handle residual, nb::handle q_weight, nb::handle kv_a_weight, nb::handle kv_a_norm,
                            nb::handle uk_weight, nb::handle uv_weight, nb::handle o_weight, nb::handle rms_weight,
                            nb::handle latent_cache, nb::handle paged_kv_indptr, nb::handle paged_kv_indices,
                            nb::handle positions, nb::handle cos_sin, nb::handle q_a_weight, nb::handle q_a_norm,
                            nb::handle q_b_weight, nb::handle kv_last_page_len, float eps,
                            std::optional<float> softmax_scale, const std::string& backend, int cluster_size,
                            int max_batch, uint64_t emu_seed) {
  const CpuBackend which = cpu_backend(backend);
  const MlaLayerArgs a = parse_mla_layer(output, residual_output, hidden_states, residual, q_weight, kv_a_weight,
                                         kv_a_norm, uk_weight, uv_weight, o_weight, rms_weight, latent_cache,
                                         paged_kv_indptr, paged_kv_indices, positions, cos_sin, q_a_weight, q_a_norm,
                                         q_b_weight, kv_last_page_len, eps, softmax_scale);
  expect_cpu(a.cuda, "deepseek_decoder_layer");
  nb::gil_scoped_release no_gil;
  mla_layer_cpu(a, which, {cluster_size, max_batch, emu_seed});
}

void deepseek_moe_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                        nb::handle residual, nb::handle router_weight, nb::handle gate_up_weight,
                        nb::handle down_weight, nb::handle rms_weight, nb::handle shared_gate_up_weight,
                        nb::handle shared_down_weight, int top_k, bool norm_topk_prob, float routed_scaling,
                        const std::string& topk_method, int n_group, int topk_group, float eps,
                        const std::string& backend, int cluster_size, int max_batch, uint64_t emu_seed) {
  const CpuBackend which = cpu_backend(backend);
  const MoeLayerArgs a = parse_moe_layer(output, residual_output, hidden_states, residual, router_weight,
                                         gate_up_weight, down_weight, rms_weight, shared_gate_up_weight,
                                         shared_down_weight, top_k, norm_topk_prob, routed_scaling, topk_method,
                                         n_group, topk_group, eps);
  expect_cpu(a.cuda, "deepseek_moe_layer");
  nb::gil_scoped_release no_gil;
  moe_layer_cpu(a, which, {cluster_size, max_batch, emu_seed});
}

// deepseek_rope_table's work: ref::yarn_cos_sin_table as a new numpy array [positions, rope].
nb::ndarray<nb::numpy, float, nb::ndim<2>> yarn_rope_table(int rope, int positions, float theta, float factor,
                                                           float original_context, float beta_fast, float beta_slow,
                                                           float mscale, float mscale_all_dim) {
  ref::YarnRope r;
  r.dim = rope;
  r.theta = theta;
  r.factor = factor;
  r.original_context = int(original_context);
  r.beta_fast = beta_fast;
  r.beta_slow = beta_slow;
  r.mscale = mscale;
  r.mscale_all_dim = mscale_all_dim;
  if (!(theta > 1.0f)) throw nb::value_error("rope_theta: must be > 1");
  if (r.yarn() && (r.original_context <= 0 || !(beta_fast > 0.0f) || !(beta_slow > 0.0f)))
    throw nb::value_error("rope_scaling: YaRN needs original_max_position_embeddings, beta_fast and beta_slow > 0");
  auto* table = new std::vector<float>(ref::yarn_cos_sin_table(r, positions));
  nb::capsule owner(table, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return nb::ndarray<nb::numpy, float, nb::ndim<2>>(table->data(), {size_t(positions), size_t(rope)}, owner);
}

void rms_norm(nb::handle output, nb::handle input, nb::handle weight, float eps, nb::handle residual,
              nb::handle residual_output) {
  const RmsNormArgs a = parse_rms_norm(output, input, weight, eps, residual, residual_output);
  expect_cpu(a.cuda, "rms_norm");
  nb::gil_scoped_release no_gil;
  rms_norm_cpu(a);
}

}  // namespace
}  // namespace cf::py

NB_MODULE(_core, m) {
  using namespace cf::py;
  m.doc() = "clusterfusion's CPU module: reference blocks, emulated fused kernels, the engine";
  m.attr("__version__") = CF_VERSION;

  // cf::InputError (bad input: shapes, files, flags, page tables) -> ValueError; any other cf::Error (internal
  // failures, emulator reports) -> RuntimeError.
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
        "kv_cache_shape"_a.none(), "backend"_a, "cluster_size"_a, "max_batch"_a, "emu_seed"_a,
        "The attention block on CPU arrays (reference or emulated kernel); see clusterfusion.llama_decoder_layer.");
  m.def("llama_ffn_layer", &llama_ffn_layer, "output"_a.none(), "residual_output"_a.none(), "hidden_states"_a.none(),
        "residual"_a.none(), "gate_up_weight"_a.none(), "down_weight"_a.none(), "rms_weight"_a.none(), "eps"_a, "backend"_a,
        "cluster_size"_a, "max_batch"_a, "emu_seed"_a,
        "The FFN block on CPU arrays (reference or emulated kernel); see clusterfusion.llama_ffn_layer.");
  m.def("deepseek_decoder_layer", &deepseek_decoder_layer, "output"_a.none(), "residual_output"_a.none(),
        "hidden_states"_a.none(), "residual"_a.none(), "q_weight"_a.none(), "kv_a_weight"_a.none(),
        "kv_a_norm"_a.none(), "uk_weight"_a.none(), "uv_weight"_a.none(), "o_weight"_a.none(), "rms_weight"_a.none(),
        "latent_cache"_a.none(), "paged_kv_indptr"_a.none(), "paged_kv_indices"_a.none(), "positions"_a.none(),
        "cos_sin"_a.none(), "q_a_weight"_a.none(), "q_a_norm"_a.none(), "q_b_weight"_a.none(),
        "kv_last_page_len"_a.none(), "eps"_a, "softmax_scale"_a.none(), "backend"_a, "cluster_size"_a, "max_batch"_a,
        "emu_seed"_a,
        "The MLA attention block on CPU arrays (reference or emulated kernel); see "
        "clusterfusion.deepseek_decoder_layer.");
  m.def("deepseek_moe_layer", &deepseek_moe_layer, "output"_a.none(), "residual_output"_a.none(), "hidden_states"_a.none(),
        "residual"_a.none(), "router_weight"_a.none(), "gate_up_weight"_a.none(), "down_weight"_a.none(),
        "rms_weight"_a.none(), "shared_gate_up_weight"_a.none(), "shared_down_weight"_a.none(), "top_k"_a,
        "norm_topk_prob"_a, "routed_scaling"_a, "topk_method"_a, "n_group"_a, "topk_group"_a, "eps"_a, "backend"_a,
        "cluster_size"_a, "max_batch"_a, "emu_seed"_a,
        "The MoE FFN block on CPU arrays (reference or emulated kernel); see clusterfusion.deepseek_moe_layer.");
  m.def("yarn_rope_table", &yarn_rope_table, "rope"_a, "positions"_a, "theta"_a, "factor"_a, "original_context"_a,
        "beta_fast"_a, "beta_slow"_a, "mscale"_a, "mscale_all_dim"_a,
        "The MLA RoPE table (cos, then sin of the adjacent pairs; YaRN); see clusterfusion.deepseek_rope_table.");
  m.def("rms_norm", &rms_norm, "output"_a.none(), "input"_a.none(), "weight"_a.none(), "eps"_a, "residual"_a.none(),
        "residual_output"_a.none(), "RMSNorm on CPU arrays (reference); see clusterfusion.rms_norm.");
  bind_engine(m);
}
