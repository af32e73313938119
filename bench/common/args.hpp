// Command-line helpers shared by the bench programs: comma lists, bounded integers, model names. Bad values throw
// cf::InputError with the flag named, so every benchmark refuses bad arguments the same way.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace cf::bench {

// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> split_list(const std::string& s);

// A decimal integer in [lo, hi], else InputError "<flag>: '<s>' is not an integer in [lo, hi]".
int parse_int(const std::string& s, const char* flag, int lo, int hi);

// The benchmark model presets by short or full name: llama2 / llama2-7b, llama3 / llama3-8b, smollm2 /
// smollm2-135m -> the full name; anything else is an InputError naming --models and the known names.
std::string canonical_model(const std::string& name);

// A comma list of integers in [lo, hi] (parse_int on each item); an empty list is an InputError naming the flag.
std::vector<int> parse_int_list(const std::string& s, const char* flag, int lo, int hi);

// A comma list whose items are all among `allowed`, else InputError "<flag>: '<item>' is not one of a, b".
std::vector<std::string> parse_choices(const std::string& s, const char* flag, const std::vector<std::string>& allowed);

// Walks a command line: for (ArgReader args(argc, argv, usage); args.next();) { if (args.is("--x")) x = args.value();
// ... else args.unknown(); }. --help / -h print `usage` and exit 0.
class ArgReader {
 public:
  ArgReader(int argc, char** argv, const char* usage) : argc_(argc), argv_(argv), usage_(usage) {}
  bool next();
  bool is(const char* flag) const { return arg_ == flag; }
  std::string value();             // the flag's value, or InputError "<flag>: missing value"
  [[noreturn]] void unknown() const;  // InputError "unknown option '<arg>'"

 private:
  int argc_;
  char** argv_;
  const char* usage_;
  int i_ = 0;
  std::string arg_;
};

// What every CUDA-graph benchmark reads besides its shapes (each sets its own json_path).
struct GraphBenchOptions {
  int calls_per_graph = 20;                  // --calls N (1..1000): calls captured per graph
  int replays = 15;                          // --replays N (1..100000): timed graph replays
  int warmup = 3;                            // untimed replays first
  size_t bandwidth_bytes = size_t(1) << 30;  // --bandwidth-mib N (16..65536): the copy-bandwidth probe's buffer
  std::string json_path;                     // --json PATH
};

// Reads the current flag of `args` into `o` when it is one of GraphBenchOptions'; false when it is not.
bool read_graph_bench_option(ArgReader& args, GraphBenchOptions& o);

}  // namespace cf::bench
