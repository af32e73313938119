#include "clusterfusion/runtime/kv_cache.hpp"

#include <algorithm>

namespace cf {

KvPageTable::KvPageTable(int page_size, int n_pages, int max_seqs)
    : page_size_(page_size), n_pages_(n_pages), seqs_(size_t(std::max(max_seqs, 0))) {
  CF_CHECK_INPUT(page_size > 0, "KV cache: page size must be positive, got " + std::to_string(page_size));
  CF_CHECK_INPUT(n_pages >= 0, "KV cache: page count must not be negative");
  CF_CHECK_INPUT(max_seqs >= 1, "KV cache: need at least one sequence, got " + std::to_string(max_seqs));
  free_.resize(size_t(n_pages));
  for (int i = 0; i < n_pages; ++i) free_[size_t(i)] = n_pages - 1 - i;  // page 0 on top of the stack
}

int KvPageTable::append(int seq, int count) {
  Sequence& s = seqs_.at(size_t(seq));
  const int new_length = s.length + count;
  const int pages_needed = (new_length + page_size_ - 1) / page_size_ - int(s.pages.size());
  if (pages_needed > int(free_.size()))
    throw ContextFullError("KV cache full: sequence " + std::to_string(seq) + " needs " + std::to_string(pages_needed) +
                           " more pages of " + std::to_string(page_size_) + " positions, " +
                           std::to_string(free_.size()) + " free");
  for (int i = 0; i < pages_needed; ++i) {
    s.pages.push_back(free_.back());
    free_.pop_back();
  }
  const int first = s.length;
  s.length = new_length;
  return first;
}

void KvPageTable::truncate(int seq, int len) {
  Sequence& s = seqs_.at(size_t(seq));
  len = std::clamp(len, 0, s.length);
  const size_t keep_pages = size_t((len + page_size_ - 1) / page_size_);
  while (s.pages.size() > keep_pages) {
    free_.push_back(s.pages.back());
    s.pages.pop_back();
  }
  s.length = len;
}

int32_t KvPageTable::slot(int seq, int pos) const {
  const Sequence& s = seqs_.at(size_t(seq));
  CF_CHECK(pos >= 0 && pos < s.length, "KV cache: position " + std::to_string(pos) + " outside sequence of length " +
                                           std::to_string(s.length));
  return s.pages[size_t(pos / page_size_)] * page_size_ + pos % page_size_;
}

int32_t KvPageTable::last_page_len(int seq) const {
  const Sequence& s = seqs_.at(size_t(seq));
  return s.length == 0 ? 0 : s.length - (int(s.pages.size()) - 1) * page_size_;
}

}  // namespace cf
