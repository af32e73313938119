// The shared-memory carve of the LM head kernel (docs/ffn.md §5). Tile and stage geometry: pipeline/weight_stream.hpp.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/lm_head/params.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

namespace pl = cf::pipeline;

inline constexpr int kCandidatesInFlight = 8;  // per lane, in the last arriver's pick (132 CTAs: 5 loads a lane)

struct SmallBuffers {
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][pl::kNormPartsMax];  // per warp partial sums of squares
  float best_value[kMaxBatch];                   // this CTA's best logit so far per token
  int32_t best_index[kMaxBatch];                 // its id (-1: none yet)
  uint32_t last_flag;                            // 1: this CTA arrived last and picks the tokens
  uint32_t abort;                                // a wait of this CTA expired: the others return at once
  uint32_t pad[2];
};

// Every mbarrier of the kernel, at offset 0 of shared memory (pipeline::SmemHead): the ring's.
struct Barriers {
  dev::Mbarrier full[pl::kMaxStages], empty[pl::kMaxStages];
};

struct Layout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<SmallBuffers> small;
  pl::SmemSlot<uint8_t> x;           // x_s: the whole normed input, x_stride bytes per token
  pl::SmemSlot<float> scratch;       // a group's k-group partials, then (in place) its logits [row][token]
  pl::SmemSlot<uint8_t> ring;
  uint32_t x_stride;
  uint32_t fixed_bytes;              // everything before the ring
};

inline Layout make_layout(int max_batch, int hidden) {
  Layout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<SmallBuffers>(1);
  l.x_stride = pl::padded_row_stride(uint64_t(hidden) * 2);
  l.x = carve.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  l.scratch = carve.take<float>(pl::group_scratch_bytes(max_batch) / 4);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head
