// Thread roles, the work split and the shared-memory carves of the three MoE kernels (docs/mla.md §2, "on the
// device"). Tile and panel geometry is the pipeline's PanelStage (pipeline/weight_stream.hpp); what depends on runtime
// shapes is computed on the host (make_split, the make_*_layout functions) and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/moe/params.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

namespace pl = cf::pipeline;

inline constexpr int kRouterChunkFloats = pl::kStageBytes / 4;  // fp32 router columns per ring item (16 KB)
inline constexpr int kScoresPerLane = kMaxExperts / 32;         // a token's router scores in one warp
inline constexpr int kGateUpCols = pl::kDefaultStageUnits * pl::kUnitCols;  // gate/up chunks: 4 KB boxes

// Small per-CTA scalars (every kernel's; each uses its part).
struct SmallBuffers {
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][pl::kNormPartsMax];  // per warp partial sums of squares
  int32_t token_expert[kMaxBatch][kMaxTopK];     // router's last arriver: each token's choice, by weight descending
  float token_weight[kMaxBatch][kMaxTopK];       //   ... and its weights g_e
  int32_t expert_slot[kMaxExperts];              //   ... an expert's slot in the active list (-1: unchosen)
  uint32_t last_flag;                            // 1: this CTA arrived last (router: routes; down: sums a block)
  uint32_t abort;                                // a wait of this CTA expired: the others return at once
  uint32_t pad[2];
};

struct Barriers {
  dev::Mbarrier full[pl::kMaxStages], empty[pl::kMaxStages];
};

// Where the buffers of one kernel live in dynamic shared memory (each kernel has its own carve; unused slots 0).
struct Layout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<SmallBuffers> small;
  pl::SmemSlot<uint8_t> x;      // router, gate/up: the normed input [batch][hidden] (TA), x_stride per token
  pl::SmemSlot<uint8_t> act;    // down: the activations of the slot at hand [batch][width] (TA), act_stride per token
  pl::SmemSlot<float> gate;     // gate/up: a group's gate rows [16 M][batch] while its up rows are computed
  pl::SmemSlot<float> scratch;  // gate/up, down: a group's k-group partials
  pl::SmemSlot<uint8_t> ring;
  uint32_t x_stride, act_stride;
  uint32_t fixed_bytes;         // everything before the ring
};

// The work split, identical on the host and the device. Work items: a panel group of one expert (the shared experts
// first, then the active slots in expert order); the grid strides over the items of a step.
struct Split {
  int32_t gu_cols, gu_tiles;      // gate/up: chunk width over hidden, tiles per stage (M)
  int32_t gu_groups;              // gate/up items of a routed expert (ceil(expert_ffn / 16 M))
  int32_t gu_groups_shared;       // ... of the shared experts (0: none)
  int32_t down_cols, down_tiles;  // down: chunk width over the expert width, tiles per stage
  int32_t row_groups;             // down items of any expert (ceil(hidden / 16 M)); the blocks of the final sum
  int32_t max_slots;              // active experts at most: min(n_experts, max_batch top_k)
};

inline Split make_split(const Shape& s, int max_batch) {
  Split sp{};
  sp.gu_cols = std::min(kGateUpCols, s.hidden);
  sp.gu_tiles = pl::panel_tiles(sp.gu_cols);
  const int32_t rows = sp.gu_tiles * pl::kTileRows;
  sp.gu_groups = pl::ceil_div(s.expert_ffn, rows);
  sp.gu_groups_shared = s.shared_ffn > 0 ? pl::ceil_div(s.shared_ffn, rows) : 0;
  int32_t width = std::min(s.expert_ffn, pl::kMaxChunkCols);
  if (s.shared_ffn > 0) width = std::min(width, s.shared_ffn);
  sp.down_cols = width;  // one width for both, so a block of output rows is the same for every expert
  sp.down_tiles = pl::panel_tiles(width);
  sp.row_groups = pl::ceil_div(s.hidden, sp.down_tiles * pl::kTileRows);
  sp.max_slots = std::min(s.n_experts, max_batch * s.top_k);
  return sp;
}

// Items of each expert kernel at most (the grid is sized for this worst case).
inline int32_t max_gate_up_items(const Split& sp) { return sp.gu_groups_shared + sp.max_slots * sp.gu_groups; }
inline int32_t max_down_items(const Split& sp, bool shared) {
  return (sp.max_slots + (shared ? 1 : 0)) * sp.row_groups;
}

inline Layout make_router_layout(int max_batch, const Shape& s) {
  Layout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<SmallBuffers>(1);
  l.x_stride = pl::padded_row_stride(uint64_t(s.hidden) * 2);
  l.x = carve.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

inline Layout make_gate_up_layout(int max_batch, const Shape& s, const Split& sp) {
  Layout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<SmallBuffers>(1);
  l.x_stride = pl::padded_row_stride(uint64_t(s.hidden) * 2);
  l.x = carve.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  l.gate = carve.take<float>(uint64_t(sp.gu_tiles) * pl::kTileRows * max_batch);
  l.scratch = carve.take<float>(pl::group_scratch_bytes(max_batch) / 4);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

inline Layout make_down_layout(int max_batch, const Shape& s) {
  Layout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<SmallBuffers>(1);
  const int32_t width = std::max(s.expert_ffn, s.shared_ffn);
  l.act_stride = pl::padded_row_stride(uint64_t(pl::ceil_div(width, pl::kUnitCols)) * pl::kUnitCols * 2);
  l.act = carve.take<uint8_t>(uint64_t(max_batch) * l.act_stride);
  l.scratch = carve.take<float>(pl::group_scratch_bytes(max_batch) / 4);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

// Ring stages that fit beside a layout's buffers (at most kMaxStages); < pl::kMinStages: does not fit.
inline int ring_stages(const Layout& l) {
  const size_t budget = dev::kMaxSmemPerBlock;
  const int fit = l.fixed_bytes < budget ? int((budget - l.fixed_bytes) / pl::kStageBytes) : 0;
  return std::min(fit, pl::kMaxStages);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe
