// GGUF bytes -> GgufFile -> metadata getters, config, tokenizer, tensors (dequantised rows, finiteness), the model
// checks open_model_file runs. The same steps as the GGUF path of open_model_file, from memory.
#include <algorithm>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/text.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

namespace {
// Rows dequantised per tensor: enough to cover block boundaries and the row stride, cheap on big tensors.
constexpr int64_t kRowsPerTensor = 3;
constexpr int64_t kMaxDequantElements = int64_t(1) << 16;

// open_model_file's GGUF model, built from a GgufFile in memory.
class MemoryGgufModel final : public ModelFile {
 public:
  MemoryGgufModel(const GgufFile& f, ModelConfig config, std::vector<TensorRef> tensors, TokenizerSpec spec)
      : file_(f), config_(std::move(config)), tensors_(std::move(tensors)), spec_(std::move(spec)) {}
  const std::string& path() const override { return file_.path(); }
  std::string format() const override { return "gguf"; }
  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorRef>& tensors() const override { return tensors_; }
  const TokenizerSpec& tokenizer_spec() const override { return spec_; }
  std::optional<std::string> chat_template() const override { return file_.get_string("tokenizer.chat_template"); }
  const GgufFile* gguf() const override { return &file_; }

 private:
  const GgufFile& file_;
  ModelConfig config_;
  std::vector<TensorRef> tensors_;
  TokenizerSpec spec_;
};

template <class F>
bool refused(F&& f) {
  try {
    f();
    return false;
  } catch (const InputError&) {
    return true;
  }
}

// Typed getters that do not match a key's type throw; exceptions are slow, so only the first keys get every getter
// (the mismatch path is the same for all keys), the rest the getters of their own type.
constexpr size_t kKeysWithEveryGetter = 8;

void read_metadata(const GgufFile& f) {
  size_t index = 0;
  for (const auto& entry : f.metadata()) {
    const std::string& key = entry.first;  // a plain reference: clang 14 lambdas cannot capture structured bindings
    const GgufValue& v = entry.second;
    (void)v.display();
    CF_FUZZ_ASSERT(f.find(key) != nullptr, "metadata key '" + show(key) + "' not found by find()");
    if (index++ >= kKeysWithEveryGetter) {
      if (v.is_integer()) (void)refused([&] { (void)f.get_int(key); });
      if (v.is_float()) (void)f.get_float(key);
      if (v.type() == GgufType::String) (void)f.get_string(key);
      if (v.type() == GgufType::Bool) (void)f.get_bool(key);
      if (v.is_array() && v.elem_type() == GgufType::String) (void)f.get_string_array(key);
      if (v.is_array() && v.elem_type() != GgufType::String && v.elem_type() != GgufType::Array)
        (void)refused([&] { (void)f.get_float_array(key); });
      continue;
    }
    // Every typed getter: a mismatch must be an InputError, never anything else.
    (void)refused([&] { (void)f.get_string(key); });
    (void)refused([&] { (void)f.get_int(key); });
    (void)refused([&] { (void)f.get_float(key); });
    (void)refused([&] { (void)f.get_bool(key); });
    (void)refused([&] { (void)f.get_string_array(key); });
    (void)refused([&] { (void)f.get_int_array(key); });
    (void)refused([&] { (void)f.get_float_array(key); });
  }
}

void read_tensors(const GgufFile& f, const uint8_t* begin, const uint8_t* end, std::vector<TensorRef>& refs,
                  bool& all_supported) {
  all_supported = true;
  std::vector<float> rows;
  for (const auto& info : f.tensors()) {
    CF_FUZZ_ASSERT(info.data >= begin + f.data_offset() && info.nbytes <= size_t(end - info.data),
                   "tensor '" + show(info.name) + "' extends past the data section");
    if (!dtype_from_ggml(info.ggml_type)) {
      all_supported = false;
      CF_FUZZ_ASSERT(refused([&] { (void)f.tensor_ref(info); }), "unsupported type accepted by tensor_ref");
      continue;
    }
    TensorRef t = f.tensor_ref(info);
    CF_FUZZ_ASSERT(size_t(t.rows() * t.row_bytes()) == t.nbytes, "rows x row bytes != nbytes for '" + show(t.name) + "'");
    const int64_t n_rows = std::min<int64_t>(t.rows(), kRowsPerTensor);
    if (n_rows * t.cols() <= kMaxDequantElements) {
      rows.resize(size_t(n_rows * t.cols()));
      dequantize_rows(t, 0, n_rows, rows.data());
      dequantize_rows(t, t.rows() - n_rows, n_rows, rows.data());
    }
    (void)find_non_finite_row(t);
    refs.push_back(std::move(t));
  }
}
}  // namespace

void gguf(const uint8_t* data, size_t size) {
  std::optional<GgufFile> file;
  if (refused([&] { file.emplace(GgufFile::from_memory("fuzz.gguf", data, size)); })) return;
  const GgufFile& f = *file;
  CF_FUZZ_ASSERT(f.data_offset() <= f.file_size() || f.tensors().empty(), "data section starts past the end");
  read_metadata(f);

  std::vector<TensorRef> tensors;
  bool all_supported = false;
  read_tensors(f, data, data + size, tensors, all_supported);

  std::optional<ModelConfig> config;
  (void)refused([&] { config = config_from_gguf(f); });
  if (config)
    CF_FUZZ_ASSERT(printable(config->name) && is_terminal_safe(config->name),
                   "model name '" + show(config->name) + "' is not printable");
  std::optional<TokenizerSpec> spec;
  (void)refused([&] { spec = tokenizer_spec_from_gguf(f); });
  if (spec && size <= kMaxInputBytes) {
    std::shared_ptr<const Tokenizer> tok;
    if (!refused([&] { tok = Tokenizer::create(*spec); })) exercise_tokenizer(*tok, as_text(data, size).substr(0, 1024));
  }
  if (config && spec && all_supported) {
    const MemoryGgufModel model(f, *config, std::move(tensors), *spec);
    if (!refused([&] { check_model_tensors(model); })) (void)refused([&] { check_weights_finite(model); });
    (void)model.chat_template();
  }
}

}  // namespace cf::fuzz
