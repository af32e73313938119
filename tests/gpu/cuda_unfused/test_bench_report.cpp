// bench/common's report helpers (CPU): the JSON the benchmarks write is valid, statistics are right.
#include <gtest/gtest.h>

#include <cmath>

#include "clusterfusion/common/json.hpp"
#include "common/report.hpp"

namespace cf::test {
namespace {

// bench/common's JSON writer produces what the project's strict JSON reader accepts (NaN/inf become null).
TEST(BenchReport, JsonRoundTripsThroughTheStrictReader) {
  bench::Json root = bench::Json::object();
  root.set("name", "H100 \"80GB\"\n");
  root.set("us", 75.25);
  root.set("count", 18);
  root.set("ratio", std::nan(""));
  bench::Json rows = bench::Json::array();
  bench::Json row = bench::Json::object();
  row.set("bytes", int64_t(151000000));
  rows.push(row);
  rows.push(bench::Json::array());
  root.set("rows", rows);
  const json::Value v = json::parse(root.dump());
  EXPECT_EQ(v.at("name").as_string(), "H100 \"80GB\"\n");
  EXPECT_DOUBLE_EQ(v.at("us").as_number(), 75.25);
  EXPECT_EQ(v.at("count").as_int(), 18);
  EXPECT_TRUE(v.at("ratio").is_null());
  EXPECT_EQ(v.at("rows").as_array()[0].at("bytes").as_int(), 151000000);
  EXPECT_EQ(json::parse(bench::Json::object().dump(0)).as_object().size(), 0u);
}

TEST(BenchReport, StatsMedianOfEvenAndOddCounts) {
  EXPECT_DOUBLE_EQ(bench::summarize({3, 1, 2}).median, 2.0);
  EXPECT_DOUBLE_EQ(bench::summarize({4, 1, 3, 2}).median, 2.5);
  EXPECT_EQ(bench::summarize({}).count, 0);
}

}  // namespace
}  // namespace cf::test
