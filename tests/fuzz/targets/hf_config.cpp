// config.json text -> JSON (the limits parse_json_file uses) -> config_from_hf_json -> validated ModelConfig.
#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/common/text.hpp"
#include "clusterfusion/model/config.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

void hf_config(const uint8_t* data, size_t size) {
  json::ParseLimits limits;
  limits.max_bytes = size_t(16) << 20;  // parse_json_file's caps for config files
  limits.max_values = size_t(1) << 20;
  try {
    const json::Value doc = json::parse(as_text(data, size), limits);
    const ModelConfig c = config_from_hf_json(doc, "fuzz/config.json");
    // validate() has passed: the derived sizes the runtime computes must not overflow.
    CF_FUZZ_ASSERT(int64_t(c.q_dim()) == int64_t(c.n_heads) * c.head_dim, "q_dim overflow");
    CF_FUZZ_ASSERT(int64_t(c.kv_dim()) == int64_t(c.n_kv_heads) * c.head_dim, "kv_dim overflow");
    CF_FUZZ_ASSERT(c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0, "heads not divisible");
    CF_FUZZ_ASSERT(printable(c.name) && is_terminal_safe(c.name), "model name '" + show(c.name) + "' is not printable");
    (void)c.summary();
  } catch (const InputError&) {
  }
}

}  // namespace cf::fuzz
