// The typed shared-memory carve of a kernel (ThunderKittens' shared allocator is the model): the host lays out every
// buffer of a CTA's dynamic shared memory once per plan (runtime shapes decide the sizes), the kernel's params carry
// the typed slots, and the device turns a slot into a pointer. The same carve in every CTA keeps offsets equal across
// the cluster, which the peer operations (map_shared_rank, bulk_copy_s2peer, arrive_remote) rely on.
//
//   struct Barriers { dev::Mbarrier full[kMaxStages], empty[kMaxStages]; };
//   pipeline::SmemCarve carve(sizeof(Barriers));                     // host, at plan time: the head first
//   layout.small = carve.take<SmallBuffers>(1);
//   pipeline::SmemRegion x = carve.region();                         // buffers of phases that never overlap
//   layout.x_s  = x.take<uint8_t>(batch * x_stride);                 //   phase 1
//   x.restart();
//   layout.act  = x.take<uint8_t>(batch * act_stride);               //   phase 2, over x_s
//   carve.close(x);
//   layout.ring = carve.take<uint8_t>(0, 1024);                      // where the ring starts
//   ...
//   float* act = p.layout.act.in(dev::dynamic_smem());               // device
//   Barriers* bars = pipeline::SmemHead<Barriers>::in(dev::dynamic_smem());
// The head (a struct at offset 0, e.g. every mbarrier of the kernel) is addressed from the base without a runtime
// offset: its members share one base register and immediate offsets.
#pragma once
#include <cstdint>

#include "clusterfusion/device/types.hpp"

namespace cf::pipeline {

constexpr uint32_t align_up(uint64_t v, uint32_t a) { return uint32_t((v + a - 1) / a * a); }

// A buffer of T at a byte offset of the CTA's dynamic shared memory.
template <typename T>
struct SmemSlot {
  uint32_t offset = 0;
  CF_HOST_DEVICE T* in(uint8_t* smem) const { return reinterpret_cast<T*>(smem + offset); }
};

// The struct at offset 0 of the carve.
template <typename T>
struct SmemHead {
  CF_HOST_DEVICE static T* in(uint8_t* smem) { return reinterpret_cast<T*>(smem); }
};

// Buffers of phases that never live at the same time, sharing one region: take() carves from the region's start
// after each restart(); the region ends after the largest alternative.
class SmemRegion {
 public:
  constexpr explicit SmemRegion(uint32_t start) : start_(start), at_(start), end_(start) {}
  template <typename T>
  constexpr SmemSlot<T> take(uint64_t count, uint32_t align = 128) {
    at_ = align_up(at_, align);
    const SmemSlot<T> slot{at_};
    at_ += uint32_t(count * sizeof(T));
    if (at_ > end_) end_ = at_;
    return slot;
  }
  constexpr void restart() { at_ = start_; }
  constexpr uint32_t end() const { return end_; }

 private:
  uint32_t start_, at_, end_;
};

// The carve: buffers in order, each aligned (128 bytes unless said otherwise).
class SmemCarve {
 public:
  // head_bytes: the SmemHead struct's size (0: none).
  constexpr explicit SmemCarve(uint32_t head_bytes = 0) : offset_(head_bytes) {}
  template <typename T>
  constexpr SmemSlot<T> take(uint64_t count, uint32_t align = 128) {
    offset_ = align_up(offset_, align);
    const SmemSlot<T> slot{offset_};
    offset_ += uint32_t(count * sizeof(T));
    return slot;
  }
  constexpr SmemRegion region(uint32_t align = 128) const { return SmemRegion(align_up(offset_, align)); }
  constexpr void close(const SmemRegion& r) { offset_ = r.end(); }
  constexpr uint32_t bytes() const { return offset_; }

 private:
  uint32_t offset_;
};

}  // namespace cf::pipeline
