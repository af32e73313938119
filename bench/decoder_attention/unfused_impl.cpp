// The cuda-unfused attention block (src/backends/cuda_unfused) as a benchmark implementation, with its stages.
#include <memory>

#include "decoder_attention/impl.hpp"

namespace cf::bench {
namespace {

namespace cu = cuda_unfused;

class UnfusedImpl final : public AttentionBlockImpl {
 public:
  std::string name() const override { return "cuda-unfused"; }

  std::string unsupported_reason(const AttentionBenchCase& c) const override {
    if (c.shape.head_dim != 64 && c.shape.head_dim != 128) return "head_dim not 64/128";
    return {};
  }

  void prepare(const AttentionBenchInputs& in) override {
    workspace_ = std::make_unique<cu::Workspace>(in.c.shape, in.c.batch);
    params_.clear();
    for (const AttentionDeviceSet& set : in.sets) {
      cu::AttentionBlockParams p;
      p.dtype = in.c.dtype;
      p.shape = in.c.shape;
      p.batch = in.c.batch;
      p.hidden = set.hidden;
      p.residual = set.residual;
      p.residual_out = set.residual_out;
      p.out = set.out;
      p.norm = set.norm;
      p.w_qkv = set.w_qkv;
      p.w_o = set.w_o;
      p.positions = in.positions;
      p.rope = {in.rope_cos_sin, in.rope_max_positions, in.c.shape.rot_dim};
      p.kv.k_pages = set.k_pages;
      p.kv.v_pages = set.v_pages;
      p.kv.n_pages = in.n_pages;
      p.kv.page_size = in.c.page_size;
      p.kv.kv_indptr = in.kv_indptr;
      p.kv.kv_indices = in.kv_indices;
      p.kv.kv_last_page_len = in.kv_last_page_len;
      p.kv.n_seqs = in.c.batch;
      p.kv.n_indices = in.n_indices;
      p.validate();
      params_.push_back(p);
    }
  }

  void enqueue(const AttentionBenchInputs&, int set, cudaStream_t stream) override {
    cu::attention_block(params_.at(size_t(set)), *workspace_, stream);
  }

  void check(cudaStream_t stream) override { workspace_->check_status(stream); }

  std::vector<Stage> stages(const AttentionBenchInputs&) override {
    std::vector<Stage> out;
    out.emplace_back("add_rmsnorm", [this](int set, cudaStream_t st) {
      cu::add_rmsnorm(cu::attention_block_stages(params_.at(size_t(set)), *workspace_).norm, st);
    });
    out.emplace_back("qkv_gemm", [this](int set, cudaStream_t st) {
      cu::attention_qkv_gemm(params_.at(size_t(set)), *workspace_, st);
    });
    out.emplace_back("rope_append", [this](int set, cudaStream_t st) {
      cu::rope_append(cu::attention_block_stages(params_.at(size_t(set)), *workspace_).rope, st);
    });
    out.emplace_back("attention", [this](int set, cudaStream_t st) {
      cu::decode_attention(cu::attention_block_stages(params_.at(size_t(set)), *workspace_).attention, st);
    });
    out.emplace_back("o_gemm", [this](int set, cudaStream_t st) {
      cu::attention_o_gemm(params_.at(size_t(set)), *workspace_, st);
    });
    return out;
  }

  void release() override {
    params_.clear();
    workspace_.reset();
  }

 private:
  std::unique_ptr<cu::Workspace> workspace_;
  std::vector<cu::AttentionBlockParams> params_;
};

}  // namespace

std::unique_ptr<AttentionBlockImpl> make_unfused_impl() { return std::make_unique<UnfusedImpl>(); }

}  // namespace cf::bench
