// Stands in for fused_impl.cpp when the tree has no fused MLA / MoE plan sources (src/kernels/mla, src/kernels/moe):
// the "fused" rows are reported as skipped with the reason.
#include <memory>
#include <string>

#include "deepseek_blocks/impl.hpp"

namespace cf::bench {
namespace {

constexpr const char* kReason = "the fused MLA / MoE plans are not in this tree (src/kernels/mla, src/kernels/moe)";

class MissingFusedImpl final : public Impl {
 public:
  std::string name() const override { return "fused"; }
  bool available() const override { return false; }
  std::string unavailable_reason() const override { return kReason; }
  void prepare(const CaseData&) override {}
  void enqueue(const CaseData&, int, cudaStream_t) override {}
  void check(cudaStream_t) override {}
};

}  // namespace

std::unique_ptr<Impl> make_fused_impl() { return std::make_unique<MissingFusedImpl>(); }
bool fused_plans_built() { return false; }
const char* fused_missing_reason() { return kReason; }

}  // namespace cf::bench
