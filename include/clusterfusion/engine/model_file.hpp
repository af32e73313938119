// A loaded model file (GGUF or safetensors + config.json): config, tensors under canonical names, tokenizer spec.
// Canonical tensor names follow GGUF: token_embd.weight, output_norm.weight, output.weight (absent when tied),
// blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight, blk.N.attn_{q,k,v}.bias.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/engine/model_config.hpp"
#include "clusterfusion/engine/tensor.hpp"
#include "clusterfusion/engine/tokenizer.hpp"

namespace cf {

class ModelFile {
 public:
  virtual ~ModelFile() = default;
  virtual const std::string& path() const = 0;
  virtual std::string format() const = 0;  // "gguf", "safetensors"
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<TensorRef>& tensors() const = 0;
  const TensorRef* find(const std::string& name) const;
  // Throws cf::InputError("<path>: missing tensor '<name>'") or a shape mismatch naming expected and actual.
  const TensorRef& require(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  virtual const TokenizerSpec& tokenizer_spec() const = 0;
  // Jinja chat template string from the file, if any.
  virtual std::optional<std::string> chat_template() const = 0;
};

// Opens a .gguf file, or a safetensors model (a directory with config.json, *.safetensors and tokenizer.json, or a
// .safetensors file next to them). Every error is a cf::InputError naming the file and the problem.
std::unique_ptr<ModelFile> open_model_file(const std::string& path);

}  // namespace cf
