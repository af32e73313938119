#include "hb.hpp"

#include <algorithm>

namespace cf::dev::emu {

Vc* Vc::make(uint32_t size) {
  const size_t bytes = sizeof(Vc) + sizeof(Clock) * (size > 0 ? size - 1 : 0);
  void* mem = std::calloc(1, bytes);
  if (mem == nullptr) throw std::bad_alloc();
  auto* v = static_cast<Vc*>(mem);
  v->refs = 1;
  v->size = size;
  return v;
}

VcRef vc_join(const VcRef& a, const VcRef& b) {
  if (!b || a == b) return a;
  if (!a) return b;
  const Vc& x = *a;
  const Vc& y = *b;
  // a covers b?  b covers a?
  bool a_covers = x.size >= y.size, b_covers = y.size >= x.size;
  const uint32_t common = std::min(x.size, y.size);
  for (uint32_t i = 0; i < common && (a_covers || b_covers); ++i) {
    a_covers = a_covers && x.c[i] >= y.c[i];
    b_covers = b_covers && y.c[i] >= x.c[i];
  }
  if (a_covers) {
    for (uint32_t i = common; i < y.size && a_covers; ++i) a_covers = y.c[i] == 0;
    if (a_covers) return a;
  }
  if (b_covers) {
    bool ok = true;
    for (uint32_t i = common; i < x.size && ok; ++i) ok = x.c[i] == 0;
    if (ok) return b;
  }
  const uint32_t n = std::max(x.size, y.size);
  Vc* r = Vc::make(n);
  for (uint32_t i = 0; i < n; ++i) r->c[i] = std::max(x.at(i), y.at(i));
  return VcRef(r);
}

VcRef vc_with(const VcRef& v, uint32_t i, Clock value) {
  if (v && v->at(i) >= value) return v;
  const uint32_t n = std::max(v ? v->size : 0u, i + 1);
  Vc* r = Vc::make(n);
  if (v) std::memcpy(r->c, v->c, sizeof(Clock) * v->size);
  r->c[i] = value;
  return VcRef(r);
}

Clock Foreign::at(uint32_t cluster, uint32_t agent) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), cluster,
                             [](const std::pair<uint32_t, VcRef>& e, uint32_t c) { return e.first < c; });
  if (it == entries.end() || it->first != cluster) return 0;
  return it->second->at(agent);
}

ForeignRef foreign_join(const ForeignRef& a, const ForeignRef& b) {
  if (!b || a == b) return a;
  if (!a) return b;
  auto* r = new Foreign{1, {}};
  auto& out = r->entries;
  auto i = a->entries.begin(), j = b->entries.begin();
  while (i != a->entries.end() || j != b->entries.end()) {
    if (j == b->entries.end() || (i != a->entries.end() && i->first < j->first)) {
      out.push_back(*i++);
    } else if (i == a->entries.end() || j->first < i->first) {
      out.push_back(*j++);
    } else {
      out.emplace_back(i->first, vc_join(i->second, j->second));
      ++i, ++j;
    }
  }
  return ForeignRef(r);
}

void SyncClock::release(const ThreadClock& t) {
  const Vc* b = t.base.get();
  if (b != nullptr) {
    bool seen = false;
    for (const VcRef& s : seen_) seen = seen || s.get() == b;
    if (!seen) {
      if (c_.size() < b->size) c_.resize(b->size, 0);
      for (uint32_t i = 0; i < b->size; ++i) c_[i] = std::max(c_[i], b->c[i]);
      seen_[next_seen_] = t.base;
      next_seen_ = (next_seen_ + 1) % 4;
    }
  }
  if (c_.size() <= t.tid) c_.resize(t.tid + 1, 0);
  c_[t.tid] = std::max(c_[t.tid], t.own);
  if (t.foreign) foreign_ = foreign_join(foreign_, t.foreign);
  frozen_.reset();
}

void SyncClock::raise(uint32_t agent, Clock value) {
  if (c_.size() <= agent) c_.resize(agent + 1, 0);
  if (c_[agent] >= value) return;
  c_[agent] = value;
  frozen_.reset();
}

void SyncClock::clear() {
  c_.clear();
  for (VcRef& v : seen_) v.reset();
  next_seen_ = 0;
  foreign_.reset();
  frozen_.reset();
}

FrozenRef SyncClock::freeze() {
  if (!frozen_) {
    auto* f = new Frozen();
    if (!c_.empty()) {
      Vc* v = Vc::make(uint32_t(c_.size()));
      std::memcpy(v->c, c_.data(), sizeof(Clock) * c_.size());
      f->vc = VcRef(v);
    }
    f->foreign = foreign_;
    for (int i = 0; i < 4; ++i) f->covered[i] = seen_[i];
    frozen_ = FrozenRef(f);
  }
  return frozen_;
}

void Frozen::acquire(ThreadClock& t) {
  if (vc && t.base != vc) {
    const Vc* b = t.base.get();
    bool done = b == nullptr;
    for (int i = 0; i < 4 && !done; ++i) done = covered[i].get() == b;
    if (done) {
      t.base = vc;
    } else {
      for (int i = 0; i < 4 && !done; ++i) {
        if (memo_src[i].get() == b) {
          t.base = memo_result[i];
          done = true;
        }
      }
      if (!done) {
        VcRef joined = vc_join(t.base, vc);
        memo_src[memo_next] = t.base;
        memo_result[memo_next] = joined;
        memo_next = (memo_next + 1) % 4;
        t.base = std::move(joined);
      }
    }
  }
  if (foreign) t.foreign = foreign_join(t.foreign, foreign);
}

}  // namespace cf::dev::emu
