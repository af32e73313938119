// open_model(): path -> weights + tokenizer -> backend -> Runner, for every front end.
#include <algorithm>

#include "clusterfusion/runtime/model.hpp"

namespace cf {

OpenedModel open_model(const std::string& path, const OpenModelOptions& options) {
  OpenedModel m;
  m.model = load_model(path, weight_load_options(options.backend), options.progress);
  const int max_context = m.model.weights->config.max_context;
  m.context = options.context > 0 ? std::min(options.context, max_context) : max_context;
  BackendOptions backend = options.backend_options;
  backend.max_seqs = options.max_seqs;
  backend.kv_pages = options.max_seqs * ((m.context + backend.page_size - 1) / backend.page_size);
  m.runner = std::make_unique<Runner>(create_backend(options.backend, m.model.weights, backend), options.max_seqs,
                                      m.context);
  return m;
}

}  // namespace cf
