#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/backend.hpp"

namespace cf {

void Batch::validate(const KvCacheShape& kv, int vocab) const {
  const size_t n = tokens.size();
  auto fail = [](const std::string& what) { throw Error("invalid batch: " + what); };
  if (positions.size() != n || token_seq.size() != n || kv_slot.size() != n || kv_len.size() != n)
    fail("per-token arrays differ in length");
  if (kv_indptr.size() != kv_last_page_len.size() + 1 || kv_indptr.empty() || kv_indptr[0] != 0)
    fail("kv_indptr must have n_seqs + 1 entries starting at 0");
  if (size_t(kv_indptr.back()) != kv_indices.size()) fail("kv_indptr does not end at kv_indices.size()");
  const int64_t n_slots = int64_t(kv.n_pages) * kv.page_size;
  for (int32_t page : kv_indices)
    if (page < 0 || page >= kv.n_pages) fail("page id " + std::to_string(page) + " out of range");
  for (size_t s = 0; s + 1 < kv_indptr.size(); ++s) {
    const int pages = kv_indptr[s + 1] - kv_indptr[s];
    if (pages < 0) fail("kv_indptr decreases at sequence " + std::to_string(s));
    if (pages > 0 && (kv_last_page_len[s] < 1 || kv_last_page_len[s] > kv.page_size))
      fail("kv_last_page_len of sequence " + std::to_string(s) + " out of range");
  }
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) fail("token id " + std::to_string(tokens[i]) + " outside the vocabulary");
    const int32_t s = token_seq[i];
    if (s < 0 || s >= n_seqs()) fail("token " + std::to_string(i) + " belongs to no sequence");
    const int pages = kv_indptr[size_t(s) + 1] - kv_indptr[size_t(s)];
    const int seq_len = pages == 0 ? 0 : (pages - 1) * kv.page_size + kv_last_page_len[size_t(s)];
    if (kv_len[i] < 1 || kv_len[i] > seq_len) fail("kv_len of token " + std::to_string(i) + " out of range");
    if (kv_slot[i] < 0 || kv_slot[i] >= n_slots) fail("kv_slot of token " + std::to_string(i) + " out of range");
    if (positions[i] < 0) fail("negative position");
  }
  for (int32_t t : logit_tokens)
    if (t < 0 || size_t(t) >= n) fail("logit token index out of range");
}

}  // namespace cf
