// The fused MLA and MoE plans (kernels/mla/launch.hpp, kernels/moe/launch.hpp) as the bench's "fused" Impl: one plan
// per rotation set (a plan holds its weights and its latent pool), built once per case, not timed.
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"
#include "deepseek_blocks/impl.hpp"

namespace cf::bench {
namespace {

namespace kmla = cf::kernels::mla;
namespace kmoe = cf::kernels::moe;

class FusedImpl final : public Impl {
 public:
  std::string name() const override { return "fused"; }
  void prepare(const CaseData& d) override {
    mla_.clear();
    moe_.clear();
    const dev::DType dt = d.c.dtype == cuda_unfused::DType::F16 ? dev::DType::F16 : dev::DType::BF16;
    for (const DeviceSet& t : d.sets) {
      if (d.c.block == "mla") {
        kmla::PlanConfig cfg;
        cfg.dtype = dt;
        cfg.shape = v2_lite_mla();
        cfg.weights.norm = t.norm;
        cfg.weights.w_q = t.w_q;
        cfg.weights.w_kv_a = t.w_kv_a;
        cfg.weights.kv_a_norm = t.kv_a_norm;
        cfg.weights.w_uk = t.w_uk;
        cfg.weights.w_uv = t.w_uv;
        cfg.weights.w_o = t.w_o;
        cfg.cache = {t.pages, d.n_pages, d.page_size};
        cfg.rope = {d.rope.data(), d.max_positions};
        cfg.max_batch = d.c.batch;
        mla_.push_back(std::make_unique<kmla::Plan>(cfg));
      } else {
        kmoe::PlanConfig cfg;
        cfg.dtype = dt;
        cfg.shape = v2_lite_moe();
        cfg.weights = {t.norm, t.router, t.w_gate_up, t.w_down, t.shared_gate_up, t.shared_down};
        cfg.max_batch = d.c.batch;
        moe_.push_back(std::make_unique<kmoe::Plan>(cfg));
      }
    }
  }
  void enqueue(const CaseData& d, int set, cudaStream_t stream) override {
    const DeviceSet& t = d.sets.at(size_t(set));
    if (d.c.block == "mla") {
      kmla::StepArgs a;
      a.batch = d.c.batch;
      a.hidden = t.hidden;
      a.residual = t.residual;
      a.residual_out = t.residual_out;
      a.out = t.out;
      a.positions = d.positions.data();
      a.kv_indptr = d.indptr.data();
      a.kv_indices = d.indices.data();
      a.kv_last_page_len = d.last_page_len.data();
      a.n_indices = int(d.indices.size());
      mla_.at(size_t(set))->run(a, stream);
    } else {
      moe_.at(size_t(set))->run({d.c.batch, t.hidden, t.residual, t.residual_out, t.out, t.expert_ids,
                                 t.expert_weights},
                                stream);
    }
  }
  void check(cudaStream_t stream) override {
    for (auto& p : mla_) p->check_status(stream);
    for (auto& p : moe_) p->check_status(stream);
  }
  std::string describe() const override {
    if (!mla_.empty()) return mla_[0]->info().describe();
    if (!moe_.empty()) return moe_[0]->info().describe();
    return {};
  }

 private:
  std::vector<std::unique_ptr<kmla::Plan>> mla_;
  std::vector<std::unique_ptr<kmoe::Plan>> moe_;
};

}  // namespace

std::unique_ptr<Impl> make_fused_impl() { return std::make_unique<FusedImpl>(); }
bool fused_plans_built() { return true; }
const char* fused_missing_reason() { return ""; }

}  // namespace cf::bench
