// The shared-memory carve of the LM head kernel (docs/ffn.md §5). Tile and stage geometry: ffn/weight_stream.hpp.
#pragma once
#include <cstdint>

#include "clusterfusion/kernels/ffn/weight_stream.hpp"
#include "clusterfusion/kernels/lm_head/params.hpp"

namespace cf::kernels::lm_head {

namespace ws = cf::kernels::weight_stream;

inline constexpr int kCandidatesInFlight = 8;  // per lane, in the last arriver's pick (132 CTAs: 5 loads a lane)

struct SmallBuffers {
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][8];  // per warp partial sums of squares
  float best_value[kMaxBatch];   // this CTA's best logit so far per token
  int32_t best_index[kMaxBatch]; // its id (-1: none yet)
  uint32_t last_flag;            // 1: this CTA arrived last and picks the tokens
  uint32_t abort;                // a wait of this CTA expired: the others return at once (prim::WaitLimit)
  uint32_t pad[2];
};

struct Layout {
  uint32_t off_small, off_x, off_scratch, off_ring;
  uint32_t x_stride;
  uint32_t fixed_bytes;
};

inline Layout make_layout(int max_batch, int hidden) {
  Layout l{};
  uint32_t off = 0;
  auto take = [&](uint64_t bytes, uint32_t align = 128) {
    off = ws::align_up(off, align);
    const uint32_t at = off;
    off += uint32_t(bytes);
    return at;
  };
  take(uint64_t(2 * ws::kMaxStages) * 8);  // mbarriers at offset 0
  l.off_small = take(sizeof(SmallBuffers));
  l.x_stride = ws::padded_row_stride(uint64_t(hidden) * 2);
  l.off_x = take(uint64_t(max_batch) * l.x_stride);                        // x_s: the whole normed input
  // a group's k-group partials, then (in place) its logits [row][token]
  l.off_scratch = take(uint64_t(ws::group_scratch_bytes(max_batch)));
  l.off_ring = ws::align_up(off, 1024);
  l.fixed_bytes = l.off_ring;
  return l;
}

}  // namespace cf::kernels::lm_head
