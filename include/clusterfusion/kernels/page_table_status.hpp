// The device-side input checks the kernels over a paged cache share (decoder attention, MLA block): status words
// 0-3, set to 1 by a kernel that met the problem (a position, the page table's pointers and lengths, a page id, an
// empty sequence), and their one-line description for Plan::check_status().
#pragma once
#include <cstdint>
#include <string>

namespace cf::kernels {

inline constexpr uint32_t kPageTableStatusWords = 4;

inline std::string describe_page_table_status(const uint32_t* words) {
  static const char* const names[kPageTableStatusWords] = {
      "a position is negative or past the cos/sin table", "kv_indptr / kv_last_page_len is inconsistent",
      "a kv_indices entry is outside [0, n_pages)", "a sequence has no KV page"};
  std::string out;
  for (uint32_t i = 0; i < kPageTableStatusWords; ++i)
    if (words[i] != 0) out += (out.empty() ? "" : "; ") + std::string(names[i]);
  return out;
}

}  // namespace cf::kernels
