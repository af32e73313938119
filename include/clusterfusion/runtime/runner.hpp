// Runs a backend over sequences: owns the KV page table, turns "append these tokens to sequence s" and "one decode
// step for these sequences" into Batches, and returns logits. Prefill is chunked to the backend's batch limit.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/kv_cache.hpp"

namespace cf {

class Runner {
 public:
  // context: positions per sequence (0 = the model's max_context); must fit the backend's page pool.
  explicit Runner(std::unique_ptr<Backend> backend, int max_seqs = 1, int context = 0);

  Backend& backend() { return *backend_; }
  const ModelConfig& config() const { return backend_->config(); }
  int vocab() const { return config().vocab; }
  int max_seqs() const { return pages_.max_seqs(); }
  int context_limit() const { return context_; }
  int length(int seq) const { return pages_.length(seq); }
  // Pages of the KV pool: all of them, and those the sequences hold now (0 when every sequence is reset).
  int kv_pages() const { return pages_.n_pages(); }
  int kv_pages_in_use() const { return pages_.n_pages() - pages_.free_pages(); }

  void reset(int seq) { pages_.release(seq); }
  void truncate(int seq, int len) { pages_.truncate(seq, len); }

  // Appends tokens to seq. Returns the logits after its last token ([vocab]), or after every token
  // ([tokens.size(), vocab]) when all_logits. Throws ContextFullError (nothing appended) past the context limit.
  const std::vector<float>& prefill(int seq, std::span<const int32_t> tokens, bool all_logits = false);
  // One lockstep decode step: tokens[i] is appended to seqs[i] (distinct sequences). Returns [n, vocab].
  const std::vector<float>& decode(std::span<const int32_t> seqs, std::span<const int32_t> tokens);

 private:
  Batch make_batch(std::span<const int32_t> seqs_of_tokens, std::span<const int32_t> tokens,
                   std::span<const int32_t> first_positions, bool all_logits) const;
  std::unique_ptr<Backend> backend_;
  KvPageTable pages_;
  int context_;
  std::vector<float> logits_;
};

// Teacher forcing: feeds `tokens` to a fresh sequence `seq` and returns the logits after each token
// ([tokens.size(), vocab]): row i predicts token i + 1. For comparisons with recorded outputs (llama.cpp goldens).
std::vector<float> teacher_forced_logits(Runner& runner, std::span<const int32_t> tokens, int seq = 0);

}  // namespace cf
