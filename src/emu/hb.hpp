// Happens-before bookkeeping of the access checks (docs/emulator.md, "Data races"): vector clocks over the *agents*
// of the running cluster (its threads, then one async unit per mbarrier: the copies completing on it), per thread and
// per synchronisation object, joined at every synchronisation the device API models.
//
// Sharing makes them cheap. A thread's clock is (base, own): base is an immutable, reference-counted vector shared
// with other threads and sync objects, own the thread's own component (it advances after every release, so later
// accesses are not covered by it). A release joins (base, own) into the sync object's accumulator (a base already
// joined costs O(1)); the sync object freezes the accumulator when it completes (barrier phase, mbarrier phase) and
// an acquire replaces the thread's base by join(base, frozen), memoised per sync object: after a block_sync every
// thread of the block holds the same base, and 256 consumers acquiring one mbarrier phase compute one join.
//
// Beside the clock, a thread knows
//   proxy fences: its own clock at each fence_proxy_async, and its whole clock at the last one (a generic write is
//            published to the async proxy by a fence of the writing thread after it, or of the copy's issuing thread
//            ordered after it, that happens before the copy)
//   foreign: what it learned about earlier clusters of the launch, cluster by cluster (only atomics + fences order
//            accesses across clusters; clusters run one after another)
//   released / acquired: the release side of its last fence and what its atomics read since its last fence (the
//            fence-based atomics model: fence; atomic  ->  atomic; fence).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

namespace cf::dev::emu {

using Clock = uint32_t;

// Intrusive reference-counted pointer (the emulator runs launches on one thread: plain counts).
template <typename T>
class Ref {
 public:
  Ref() = default;
  explicit Ref(T* p) : p_(p) {}  // adopts one reference
  Ref(const Ref& o) : p_(o.p_) {
    if (p_) ++p_->refs;
  }
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(const Ref& o) {
    if (o.p_) ++o.p_->refs;
    reset();
    p_ = o.p_;
    return *this;
  }
  Ref& operator=(Ref&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~Ref() { reset(); }
  void reset() {
    if (p_ && --p_->refs == 0) T::destroy(p_);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }
  friend bool operator==(const Ref& a, const Ref& b) { return a.p_ == b.p_; }

 private:
  T* p_ = nullptr;
};

// An immutable vector clock (after construction), components beyond size() are 0.
struct Vc {
  uint32_t refs;
  uint32_t size;
  Clock c[1];  // size entries (allocated with the object)

  Clock at(uint32_t i) const { return i < size ? c[i] : 0; }
  static Vc* make(uint32_t size);  // zeroed, one reference
  static void destroy(Vc* v) { std::free(v); }
};
using VcRef = Ref<Vc>;

// join(a, b); shares a or b when the join equals one of them. Either may be null (the empty clock).
VcRef vc_join(const VcRef& a, const VcRef& b);
// a copy of v with component i raised to at least value
VcRef vc_with(const VcRef& v, uint32_t i, Clock value);

// What a thread knows about the earlier clusters of the launch: per cluster serial, a clock over its agents.
struct Foreign {
  uint32_t refs;
  std::vector<std::pair<uint32_t, VcRef>> entries;  // sorted by cluster serial
  Clock at(uint32_t cluster, uint32_t agent) const;
  static void destroy(Foreign* f) { delete f; }
};
using ForeignRef = Ref<Foreign>;
ForeignRef foreign_join(const ForeignRef& a, const ForeignRef& b);

// The happens-before state of one emulated thread.
struct ThreadClock {
  uint32_t tid = 0;  // agent index in the cluster
  Clock own = 1;
  VcRef base;
  ForeignRef foreign;
  std::vector<Clock> proxy_fences;  // own clock at each fence_proxy_async (increasing)
  VcRef proxy_base;                 // base and own at the last one
  Clock proxy_own = 0;
  // the release side of the last fence (materialised at the next atomic): base, own and foreign at that fence
  bool has_release = false;
  VcRef rel_base;
  Clock rel_own = 0;
  ForeignRef rel_foreign;
  ForeignRef acquired;  // what this thread's atomics read since its last fence (cluster serial -> clock)

  Clock at(uint32_t agent) const {
    if (agent == tid) return own;
    const Vc* b = base.get();
    return b != nullptr && agent < b->size ? b->c[agent] : 0;
  }
  VcRef snapshot() const { return vc_with(base, tid, own); }  // the full clock, own component included
  void reset(uint32_t agent) {
    *this = ThreadClock{};
    tid = agent;
  }
};

// What a completed synchronisation publishes to the threads that acquire it (one barrier generation, one mbarrier
// phase, one warp collective), with a one-entry memo of the last join it made.
struct Frozen {
  uint32_t refs = 1;
  VcRef vc;
  ForeignRef foreign;
  VcRef covered[4];             // bases joined into vc in full: an acquirer holding one of them just takes vc
  VcRef memo_src[4], memo_result[4];  // join(memo_src[i], vc) == memo_result[i]
  uint32_t memo_next = 0;

  void acquire(ThreadClock& t);  // t learns everything released before the freeze
  static void destroy(Frozen* f) { delete f; }
};
using FrozenRef = Ref<Frozen>;

// The accumulated releases of a synchronisation object.
class SyncClock {
 public:
  void release(const ThreadClock& t);       // join t's knowledge (the caller advances t.own afterwards)
  void raise(uint32_t agent, Clock value);  // an async unit's completion count
  FrozenRef freeze();                       // the releases so far, immutable (the same object until a release)
  void clear();  // keeps the vector's capacity

 private:
  std::vector<Clock> c_;
  VcRef seen_[4];  // bases joined into c_ in full (a release with one of them only adds its own component)
  uint32_t next_seen_ = 0;
  ForeignRef foreign_;
  FrozenRef frozen_;
};

}  // namespace cf::dev::emu
