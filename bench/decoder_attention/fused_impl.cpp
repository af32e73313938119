// The fused decoder attention kernel (include/clusterfusion/kernels/decoder_attention, library cf_kernels) as a
// benchmark implementation: one Plan per rotation set (each set has its own weights, so its own tensor maps),
// built in prepare(); enqueue() is one launch (graph-capturable).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "decoder_attention/impl.hpp"

namespace cf::bench {
namespace {

namespace kda = cf::kernels::decoder_attention;

kda::Shape fused_shape(const ref::DecoderShape& s) {
  kda::Shape out;
  out.hidden = s.hidden;
  out.n_heads = s.n_heads;
  out.n_kv_heads = s.n_kv_heads;
  out.head_dim = s.head_dim;
  out.rot_dim = s.rot_dim;
  out.rope_style = s.rope_style;
  out.rope_theta = s.rope_theta;
  out.eps = s.eps;
  return out;
}

class FusedImpl final : public AttentionBlockImpl {
 public:
  explicit FusedImpl(const FusedOptions& options) : options_(options) {}
  std::string name() const override { return "fused"; }

  std::string unsupported_reason(const AttentionBenchCase& c) const override {
    try {
      kda::validate_shape(fused_shape(c.shape));
    } catch (const InputError& e) {
      return e.what();
    }
    if (c.batch > kda::kMaxBatch) return "batch > 16";
    return {};
  }

  void prepare(const AttentionBenchInputs& in) override {
    plans_.clear();
    for (const AttentionDeviceSet& set : in.sets) {
      kda::PlanConfig cfg;
      cfg.dtype = in.c.dtype == cuda_unfused::DType::F16 ? dev::DType::F16 : dev::DType::BF16;
      cfg.shape = fused_shape(in.c.shape);
      cfg.weights.norm = set.norm;
      cfg.weights.w_qkv = set.w_qkv;
      cfg.weights.w_o = set.w_o;
      cfg.cache.k_pages = set.k_pages;
      cfg.cache.v_pages = set.v_pages;
      cfg.cache.n_pages = in.n_pages;
      cfg.cache.page_size = in.c.page_size;
      cfg.rope.cos_sin = in.rope_cos_sin;
      cfg.rope.max_positions = in.rope_max_positions;
      cfg.max_batch = in.c.batch;
      cfg.cluster_size = options_.cluster_size;
      cfg.max_stages = options_.max_stages;
      cfg.early_stages = options_.early_stages;
      cfg.wait_budget_us = options_.wait_budget_us;
      plans_.push_back(std::make_unique<kda::Plan>(cfg));
    }
    if (!plans_.empty()) {
      const kda::LaunchInfo& li = plans_[0]->info();
      std::printf("  fused: %d clusters x %d CTAs x %d threads (max active clusters of %d: %d%s, %d wave%s), %d ring "
                  "stages of %zu B (%d early), %zu B shared memory\n",
                  li.clusters, li.cluster_size, li.threads, li.cluster_size, li.max_active_clusters,
                  li.occupancy_queried ? "" : " assumed", li.waves, li.waves == 1 ? "" : "s", li.stages,
                  li.stage_bytes, li.early_stages, li.smem_bytes);
    }
  }

  Json plan_json() const override {
    if (plans_.empty()) return Json();
    const kda::LaunchInfo& li = plans_[0]->info();
    Json j = Json::object();
    j.set("cluster_size", li.cluster_size);
    j.set("clusters", li.clusters);
    j.set("max_active_clusters", li.max_active_clusters);
    j.set("occupancy_queried", li.occupancy_queried);
    j.set("waves", li.waves);
    j.set("stages", li.stages);
    j.set("early_stages", li.early_stages);
    j.set("smem_bytes", li.smem_bytes);
    j.set("wait_budget_us", li.wait_budget_us);
    return j;
  }

  void enqueue(const AttentionBenchInputs& in, int set, cudaStream_t stream) override {
    const AttentionDeviceSet& s = in.sets.at(size_t(set));
    kda::StepArgs a;
    a.batch = in.c.batch;
    a.hidden = s.hidden;
    a.residual = s.residual;
    a.residual_out = s.residual_out;
    a.out = s.out;
    a.positions = in.positions;
    a.kv_indptr = in.kv_indptr;
    a.kv_indices = in.kv_indices;
    a.kv_last_page_len = in.kv_last_page_len;
    a.n_indices = in.n_indices;
    plans_.at(size_t(set))->run(a, stream);
  }

  void check(cudaStream_t stream) override {
    for (auto& plan : plans_) plan->check_status(stream);
  }

  void release() override { plans_.clear(); }

 private:
  FusedOptions options_;
  std::vector<std::unique_ptr<kda::Plan>> plans_;
};

}  // namespace

std::unique_ptr<AttentionBlockImpl> make_fused_impl(const FusedOptions& options) {
  return std::make_unique<FusedImpl>(options);
}

}  // namespace cf::bench
