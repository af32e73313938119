// A loaded model file (GGUF or safetensors + config.json): config, tensors under canonical names, tokenizer spec.
// Canonical tensor names follow GGUF: token_embd.weight, output_norm.weight, output.weight (absent when tied),
// blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight, blk.N.attn_{q,k,v}.bias.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/tensor.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"

namespace cf {

class GgufFile;

class ModelFile {
 public:
  virtual ~ModelFile() = default;
  virtual const std::string& path() const = 0;
  virtual std::string format() const = 0;  // "gguf", "safetensors"
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<TensorRef>& tensors() const = 0;
  // By name, through an index built on first use (tensors() must not change after that): loading looks up every
  // tensor, and a linear search would make that quadratic in a hostile file's tensor count.
  const TensorRef* find(const std::string& name) const;
  // Throws cf::InputError("<path>: missing tensor '<name>'") or a shape mismatch naming expected and actual.
  const TensorRef& require(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  virtual const TokenizerSpec& tokenizer_spec() const = 0;
  // Jinja chat template string from the file, if any.
  virtual std::optional<std::string> chat_template() const = 0;
  // The underlying GGUF file (all metadata, every tensor info) when format() == "gguf", else nullptr.
  virtual const GgufFile* gguf() const { return nullptr; }
  // cf::InputError naming the file when a mapped file changed since it was opened (truncated or written while it
  // was read: what was read may be zeros or a mix of two versions). Readers call it once they have read what they
  // need (open_model_file and load_model do).
  virtual void check_unchanged() const {}

 private:
  mutable std::once_flag index_once_;
  mutable std::unordered_map<std::string, size_t> index_;  // name -> position in tensors(); first one wins
};

struct WeightEntry;

// The tensors of weight-table entry e (model/weight_table.hpp): the one of its name, or for a stacked expert slot
// whose stacked tensor is absent, the per-expert tensors expert_tensor_name(e.slot, e.layer, 0 .. n-1) (HF folders),
// each of shape e.shape without its first dimension and all of one type, to be stacked in this order. Throws
// cf::InputError naming the file and the missing or misshapen tensor.
std::vector<const TensorRef*> require_entry(const ModelFile& model, const WeightEntry& e);

// Checks that every tensor the Llama forward pass needs is present with the shape config() implies
// (token_embd [vocab, hidden], blk.N.attn_q [q_dim, hidden], ...). open_model_file() calls it.
void check_model_tensors(const ModelFile& model);

// Scans every tensor for NaN/Inf (quantised types: their block scales) and plain values of magnitude
// kWeightMagnitudeLimit or more: finite, but past what fp16 holds (the device backends compute in it), no trained
// model's weights come near it, and they overflow the forward pass into NaN logits. cf::InputError("<path>: tensor
// '<name>' holds NaN or Inf (row r)", or "... holds a value of magnitude 65520 or more ..."). Not done by
// open_model_file (it reads every weight once); callers that want it call it.
inline constexpr float kWeightMagnitudeLimit = 65520.0f;  // the smallest magnitude fp16 rounds to infinity
void check_weights_finite(const ModelFile& model);

// Opens a .gguf file, or a safetensors model (a directory with config.json, *.safetensors and tokenizer.json, or a
// .safetensors file next to them). Every error is a cf::InputError naming the file and the problem.
// Safetensors models: shards from model.safetensors.index.json when present (else model.safetensors, else every
// *.safetensors in the folder); tokenizer from tokenizer.json (+ tokenizer_config.json) or tokenizer.model; extra
// end-of-generation ids from generation_config.json; chat template from tokenizer_config.json or
// chat_template.jinja. Tensors with Hugging Face names get canonical names (canonical_tensor_name); others keep
// theirs. The file stays memory-mapped while the ModelFile lives: TensorRef::data points into it. A path that is not
// a regular file or folder (a FIFO, a device) is refused without being read; so is every file inside a folder.
std::unique_ptr<ModelFile> open_model_file(const std::string& path);

}  // namespace cf
