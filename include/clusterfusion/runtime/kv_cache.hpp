// Host-side bookkeeping of a paged KV cache (the storage itself belongs to the backend). The pool holds n_pages pages
// of page_size positions; each sequence owns a list of pages in logical order. Batches hand backends exactly what the
// GPU kernels take (FlashInfer's convention): kv_indptr, kv_indices, kv_last_page_len, plus each new token's slot.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"

namespace cf {

// Thrown when a sequence would outgrow its context limit or the page pool is exhausted.
class ContextFullError : public Error {
 public:
  using Error::Error;
};

// Shape of one layer's cache; a backend allocates n_layers of these for K and for V:
// [n_pages, page_size, n_kv_heads, head_dim].
struct KvCacheShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;
  int n_pages = 0;

  int64_t elements_per_layer() const { return int64_t(n_pages) * page_size * n_kv_heads * head_dim; }
};

class KvPageTable {
 public:
  KvPageTable(int page_size, int n_pages, int max_seqs);

  int page_size() const { return page_size_; }
  int n_pages() const { return n_pages_; }
  int max_seqs() const { return int(seqs_.size()); }
  int free_pages() const { return int(free_.size()); }
  int length(int seq) const { return seqs_.at(size_t(seq)).length; }
  const std::vector<int32_t>& pages(int seq) const { return seqs_.at(size_t(seq)).pages; }

  // Makes room for `count` more positions of seq (allocating pages) and returns the first new position.
  // Throws ContextFullError (nothing changed) when the pool has too few free pages.
  int append(int seq, int count);
  // Drops positions past `len` (pages no longer needed go back to the pool).
  void truncate(int seq, int len);
  void release(int seq) { truncate(seq, 0); }

  // Physical slot (page * page_size + offset) of a logical position of seq.
  int32_t slot(int seq, int pos) const;
  int32_t last_page_len(int seq) const;

 private:
  struct Sequence {
    std::vector<int32_t> pages;
    int length = 0;
  };
  int page_size_;
  int n_pages_;
  std::vector<int32_t> free_;  // a stack; the lowest ids are handed out first
  std::vector<Sequence> seqs_;
};

}  // namespace cf
