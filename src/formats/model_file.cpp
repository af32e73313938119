// ModelFile implementations: GGUF, and Hugging Face safetensors folders (config.json + shards + tokenizer).
#include "clusterfusion/formats/model_file.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/model/weight_table.hpp"
#include "mapped_file.hpp"

namespace fs = std::filesystem;

namespace cf {

namespace {
constexpr size_t kMaxJsonBytes = size_t(16) << 20;
constexpr size_t kMaxShards = 4096;

std::string shape_text(const std::vector<int64_t>& shape) {
  TensorRef t;
  t.shape = shape;
  return t.shape_string();
}
}  // namespace

const TensorRef* ModelFile::find(const std::string& name) const {
  std::call_once(index_once_, [&] {
    const auto& all = tensors();
    index_.reserve(all.size());
    for (size_t i = 0; i < all.size(); ++i) index_.emplace(all[i].name, i);
  });
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors()[it->second];
}

const TensorRef& ModelFile::require(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const TensorRef* t = find(name);
  if (!t) throw InputError(path() + ": missing tensor " + quote_text(name));
  if (t->shape != expected_shape)
    throw InputError(path() + ": tensor " + quote_text(name) + " has shape " + t->shape_string() + ", expected " +
                     shape_text(expected_shape));
  return *t;
}

std::vector<const TensorRef*> require_entry(const ModelFile& m, const WeightEntry& e) {
  const WeightSlotInfo& info = slot_info(e.slot);
  if (info.expert_name.empty() || m.find(e.name)) return {&m.require(e.name, e.shape)};
  // the experts one tensor each (HF folders): stacked by the loader
  const std::vector<int64_t> one(e.shape.begin() + 1, e.shape.end());
  std::vector<const TensorRef*> pieces;
  for (int64_t x = 0; x < e.shape[0]; ++x) {
    const std::string name = expert_tensor_name(e.slot, e.layer, int(x));
    if (x == 0 && !m.find(name))
      throw InputError(m.path() + ": missing tensor " + quote_text(e.name) + " (or one tensor per expert, " +
                       quote_text(name) + " ...)");
    pieces.push_back(&m.require(name, one));
    if (pieces.back()->dtype != pieces.front()->dtype)
      throw InputError(m.path() + ": tensor " + quote_text(name) + " is " +
                       std::string(dtype_name(pieces.back()->dtype)) + " but expert 0's is " +
                       std::string(dtype_name(pieces.front()->dtype)) + " (the experts of a layer share one type)");
  }
  return pieces;
}

void check_model_tensors(const ModelFile& m) {
  const ModelConfig& c = m.config();
  for (const WeightEntry& e : weight_table(c))
    if (!e.optional || m.find(e.name)) require_entry(m, e);
  const int64_t vocab = c.vocab;
  const auto n_tokens = int64_t(m.tokenizer_spec().tokens.size());
  if (n_tokens > vocab)
    throw InputError(m.path() + ": the tokenizer has " + std::to_string(n_tokens) + " tokens but the embedding only " +
                     std::to_string(vocab) + " rows");
}

void check_weights_finite(const ModelFile& m) {
  for (const auto& t : m.tensors()) {
    const int64_t row = find_row_out_of_range(t, kWeightMagnitudeLimit);
    if (row < 0) continue;
    TensorRef one_row = t;
    one_row.shape = {1, t.cols()};
    one_row.data = t.row_data(row);
    const std::string where = m.path() + ": tensor " + quote_text(t.name);
    if (find_non_finite_row(one_row) >= 0)
      throw InputError(where + " holds NaN or Inf (row " + std::to_string(row) + ")");
    throw InputError(where + " holds a value of magnitude 65520 or more (row " + std::to_string(row) +
                     "): too large for fp16, and for any trained model's weights");
  }
}

// ---- GGUF ----------------------------------------------------------------------------------------------------------

namespace {
class GgufModel final : public ModelFile {
 public:
  explicit GgufModel(const std::string& path) : file_(path) {
    config_ = config_from_gguf(file_);
    tensors_.reserve(file_.tensors().size());
    for (const auto& info : file_.tensors()) tensors_.push_back(file_.tensor_ref(info));
    tokenizer_ = tokenizer_spec_from_gguf(file_);
    chat_template_ = file_.get_string("tokenizer.chat_template");
  }
  const std::string& path() const override { return file_.path(); }
  std::string format() const override { return "gguf"; }
  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorRef>& tensors() const override { return tensors_; }
  const TokenizerSpec& tokenizer_spec() const override { return tokenizer_; }
  std::optional<std::string> chat_template() const override { return chat_template_; }
  const GgufFile* gguf() const override { return &file_; }
  void check_unchanged() const override { file_.check_unchanged(); }

 private:
  GgufFile file_;
  ModelConfig config_;
  std::vector<TensorRef> tensors_;
  TokenizerSpec tokenizer_;
  std::optional<std::string> chat_template_;
};

// ---- safetensors ---------------------------------------------------------------------------------------------------

json::Value read_json(const fs::path& p) { return parse_json_file(p.string(), kMaxJsonBytes); }

// Whether a folder holds an entry of that name; an entry that cannot be examined (permissions, a loop of symbolic
// links) is an error naming it, not "missing". What it is (a FIFO, a folder) is for the reader to refuse.
bool has_entry(const fs::path& p) { return path_kind(p.string()) != PathKind::Missing; }

std::vector<int32_t> ids_from(const json::Value* v) {
  std::vector<int32_t> out;
  if (!v) return out;
  auto add = [&](const json::Value& x) {
    if (x.is_integer() && x.as_int() >= 0 && x.as_int() <= INT32_MAX) out.push_back(int32_t(x.as_int()));
  };
  if (v->is_array())
    for (const auto& x : v->as_array()) add(x);
  else
    add(*v);
  return out;
}

// A file name in the same folder, printable (names come from the index file and end up in error messages).
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos &&
         std::none_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

class SafetensorsModel final : public ModelFile {
 public:
  SafetensorsModel(const fs::path& dir, const std::optional<fs::path>& single_file) {
    path_ = dir.string();
    const fs::path config_path = dir / "config.json";
    if (!has_entry(config_path)) throw InputError(path_ + ": missing config.json (needed for a safetensors model)");
    const json::Value cfg = read_json(config_path);
    config_ = config_from_hf_json(cfg, config_path.string());

    open_shards(dir, single_file);
    load_tokenizer(dir, cfg);

    // Tied embeddings: config says so, or there is no separate lm_head at all.
    if (!config_.tied_embeddings && !find("output.weight"))
      throw InputError(path_ + ": missing tensor 'output.weight' (lm_head.weight) and tie_word_embeddings is false");
    // vocab_size may be padded past the tokenizer; the embedding's rows are what the model computes.
    if (const auto* emb = find("token_embd.weight"); emb && emb->shape.size() == 2 && emb->shape[0] != config_.vocab)
      throw InputError(path_ + ": token_embd (model.embed_tokens) has " + std::to_string(emb->shape[0]) +
                       " rows but config.json vocab_size is " + std::to_string(config_.vocab));
  }
  const std::string& path() const override { return path_; }
  std::string format() const override { return "safetensors"; }
  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorRef>& tensors() const override { return tensors_; }
  const TokenizerSpec& tokenizer_spec() const override { return tokenizer_; }
  std::optional<std::string> chat_template() const override { return chat_template_; }
  void check_unchanged() const override {
    for (const SafetensorsFile& shard : shards_) shard.check_unchanged();
  }

 private:
  void open_shards(const fs::path& dir, const std::optional<fs::path>& single_file) {
    std::vector<std::string> shard_names;
    std::map<std::string, std::string> index;  // tensor -> shard, from the index
    const fs::path index_path = dir / "model.safetensors.index.json";
    bool use_index = has_entry(index_path);
    if (use_index) {
      const json::Value doc = read_json(index_path);
      const auto* map = doc.is_object() ? doc.find("weight_map") : nullptr;
      if (!map || !map->is_object()) throw InputError(index_path.string() + ": missing weight_map object");
      std::set<std::string> seen;
      for (const auto& [tensor, shard] : map->as_object()) {
        if (!shard.is_string() || !plain_file_name(shard.as_string()))
          throw InputError(index_path.string() + ": weight_map entry " + quote_text(tensor) +
                           " must name a file in the same folder");
        if (!index.emplace(tensor, shard.as_string()).second)
          throw InputError(index_path.string() + ": tensor " + quote_text(tensor) + " listed twice");
        if (seen.insert(shard.as_string()).second) shard_names.push_back(shard.as_string());
      }
      if (shard_names.size() > kMaxShards) throw InputError(index_path.string() + ": too many shards");
      if (single_file && !seen.count(single_file->filename().string())) use_index = false;
    }
    if (!use_index) {
      shard_names.clear();
      index.clear();
      if (single_file) {
        shard_names.push_back(single_file->filename().string());
      } else if (has_entry(dir / "model.safetensors")) {
        shard_names.push_back("model.safetensors");
      } else {
        std::error_code ec;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
          if (it->path().extension() == ".safetensors") shard_names.push_back(it->path().filename().string());
          if (shard_names.size() > kMaxShards) throw InputError(path_ + ": more than " + std::to_string(kMaxShards) + " .safetensors files");
        }
        if (ec) throw InputError(path_ + ": cannot list the folder (" + ec.message() + ")");
        std::sort(shard_names.begin(), shard_names.end());
      }
      if (shard_names.empty()) throw InputError(path_ + ": no .safetensors files");
    }
    std::sort(shard_names.begin(), shard_names.end());

    shards_.reserve(shard_names.size());
    std::set<std::string> names;
    for (const auto& shard : shard_names) {
      shards_.emplace_back((dir / shard).string());
      const SafetensorsFile& f = shards_.back();
      for (const auto& t : f.tensors()) {
        if (use_index) {
          const auto it = index.find(t.name);
          if (it == index.end() || it->second != shard) continue;  // the index decides where a tensor lives
        }
        const auto canonical = canonical_tensor_name(t.name);
        // Tensors the model does not use (int buffers, F64 or F8 extras) never refuse it; the ones it needs must
        // have a type we compute with (tensor_ref says which).
        const auto dtype = dtype_from_name(t.dtype);
        const bool computable = dtype && (*dtype == DType::F32 || *dtype == DType::F16 || *dtype == DType::BF16);
        if (!canonical && !computable) continue;
        TensorRef ref = f.tensor_ref(t, canonical.value_or(t.name));
        if (!names.insert(ref.name).second)
          throw InputError(f.path() + ": tensor " + quote_text(t.name) + " appears in more than one shard");
        tensors_.push_back(std::move(ref));
      }
    }
    for (const auto& [tensor, shard] : index) {
      const auto& f = shards_[size_t(std::lower_bound(shard_names.begin(), shard_names.end(), shard) - shard_names.begin())];
      if (!f.find(tensor))
        throw InputError(index_path.string() + ": lists tensor " + quote_text(tensor) + " in " + shard + ", which does not contain it");
    }
  }

  void load_tokenizer(const fs::path& dir, const json::Value& cfg) {
    if (has_entry(dir / "tokenizer.json")) tokenizer_ = tokenizer_spec_from_hf_json((dir / "tokenizer.json").string());
    else if (has_entry(dir / "tokenizer.model")) tokenizer_ = tokenizer_spec_from_sentencepiece((dir / "tokenizer.model").string());
    else throw InputError(path_ + ": missing tokenizer (expected tokenizer.json or tokenizer.model)");

    // Special ids the tokenizer files did not name: config.json, then generation_config.json.
    const auto bos = ids_from(cfg.find("bos_token_id"));
    const auto eos = ids_from(cfg.find("eos_token_id"));
    if (tokenizer_.bos < 0 && !bos.empty()) tokenizer_.bos = bos[0];
    if (tokenizer_.eos < 0 && !eos.empty()) tokenizer_.eos = eos[0];
    for (const int32_t id : eos) tokenizer_.end_of_generation.push_back(id);
    if (has_entry(dir / "generation_config.json")) {
      const json::Value gen = read_json(dir / "generation_config.json");
      if (gen.is_object())
        for (const int32_t id : ids_from(gen.find("eos_token_id"))) tokenizer_.end_of_generation.push_back(id);
    }
    const auto n = int32_t(tokenizer_.tokens.size());
    for (const int32_t id : tokenizer_.end_of_generation)
      if (id >= n) throw InputError(path_ + ": eos_token_id " + std::to_string(id) + " is outside the tokenizer's " + std::to_string(n) + " tokens");
    for (const int32_t id : {tokenizer_.bos, tokenizer_.eos})
      if (id >= n) throw InputError(path_ + ": special token id " + std::to_string(id) + " is outside the tokenizer's " + std::to_string(n) + " tokens");

    if (has_entry(dir / "tokenizer_config.json")) {
      const json::Value tc = read_json(dir / "tokenizer_config.json");
      const auto* t = tc.is_object() ? tc.find("chat_template") : nullptr;
      if (t && t->is_string()) {
        chat_template_ = t->as_string();
      } else if (t && t->is_array()) {  // [{"name": "default", "template": "..."}, ...]
        for (const auto& entry : t->as_array()) {
          const auto* name = entry.is_object() ? entry.find("name") : nullptr;
          const auto* text = entry.is_object() ? entry.find("template") : nullptr;
          if (name && name->is_string() && name->as_string() == "default" && text && text->is_string()) chat_template_ = text->as_string();
        }
      }
    }
    if (!chat_template_ && has_entry(dir / "chat_template.jinja"))
      chat_template_ = read_text_file((dir / "chat_template.jinja").string(), kMaxJsonBytes);
  }

  std::string path_;
  ModelConfig config_;
  std::vector<SafetensorsFile> shards_;
  std::vector<TensorRef> tensors_;
  TokenizerSpec tokenizer_;
  std::optional<std::string> chat_template_;
};

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::unique_ptr<ModelFile> open_model_file(const std::string& path) {
  std::unique_ptr<ModelFile> model;
  switch (path_kind(path)) {
    case PathKind::Missing:
      throw InputError(path + ": no such file or directory");
    case PathKind::Other:
      throw InputError(path + ": not a model (" + path_kind_text(path) +
                       "; expected a .gguf file, a .safetensors file or a model folder)");
    case PathKind::Directory:
      model = std::make_unique<SafetensorsModel>(fs::path(path), std::nullopt);
      break;
    case PathKind::File:
      if (GgufFile::has_magic(path)) {  // opens the file: unreadable files are reported here, as what they are
        model = std::make_unique<GgufModel>(path);
      } else if (ends_with(path, ".safetensors")) {
        const fs::path p = fs::absolute(path);
        model = std::make_unique<SafetensorsModel>(p.parent_path(), p);
      } else if (ends_with(path, ".gguf")) {
        GgufFile check(path);  // throws the precise header error
        throw InputError(path + ": not a GGUF file");
      } else {
        throw InputError(path + ": not a model (expected a .gguf file, a .safetensors file or a model folder)");
      }
      break;
  }
  check_model_tensors(*model);
  model->check_unchanged();
  return model;
}

}  // namespace cf
