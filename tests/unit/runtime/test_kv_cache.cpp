// KV page table bookkeeping: pages handed out and returned, slots, last-page lengths, and a full pool.
#include <gtest/gtest.h>

#include <set>

#include "clusterfusion/runtime/kv_cache.hpp"

namespace {

TEST(KvPageTable, AppendTruncateReleaseAndSlots) {
  cf::KvPageTable t(4, 5, 2);
  EXPECT_EQ(t.append(0, 6), 0);  // 2 pages
  EXPECT_EQ(t.append(1, 3), 0);  // 1 page
  EXPECT_EQ(t.free_pages(), 2);
  EXPECT_EQ(t.length(0), 6);
  EXPECT_EQ(t.last_page_len(0), 2);
  EXPECT_EQ(t.last_page_len(1), 3);
  // No page is shared, slots follow the page list.
  std::set<int32_t> used(t.pages(0).begin(), t.pages(0).end());
  used.insert(t.pages(1).begin(), t.pages(1).end());
  EXPECT_EQ(used.size(), 3u);
  EXPECT_EQ(t.slot(0, 5), t.pages(0)[1] * 4 + 1);
  EXPECT_EQ(t.append(0, 2), 6);  // fills page 2 of seq 0 exactly: no new page
  EXPECT_EQ(t.pages(0).size(), 2u);
  EXPECT_EQ(t.last_page_len(0), 4);
  t.truncate(0, 3);
  EXPECT_EQ(t.pages(0).size(), 1u);
  EXPECT_EQ(t.free_pages(), 3);
  EXPECT_THROW(t.slot(0, 3), cf::Error);
  t.release(1);
  EXPECT_EQ(t.length(1), 0);
  EXPECT_EQ(t.last_page_len(1), 0);
  EXPECT_EQ(t.free_pages(), 4);
}

TEST(KvPageTable, FullPoolThrowsAndChangesNothing) {
  cf::KvPageTable t(2, 3, 1);
  t.append(0, 5);
  EXPECT_THROW(t.append(0, 2), cf::ContextFullError);
  EXPECT_EQ(t.length(0), 5);
  EXPECT_EQ(t.append(0, 1), 5);  // the last free slot of page 3
  EXPECT_THROW(cf::KvPageTable(0, 3, 1), cf::InputError);
  EXPECT_THROW(cf::KvPageTable(2, 3, 0), cf::InputError);
}

}  // namespace
