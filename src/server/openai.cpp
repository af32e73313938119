#include "clusterfusion/server/openai.hpp"

#include <cmath>
#include <limits>

#include "clusterfusion/common/json.hpp"

namespace cf::server {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : Error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}

std::string ApiError::type() const {
  if (status_ == 401) return "authentication_error";
  if (status_ == 429) return "rate_limit_error";
  if (status_ >= 500) return "server_error";
  return "invalid_request_error";
}

std::string error_body(const ApiError& e) {
  json::Writer w;
  w.begin_object().key("error").begin_object();
  w.key("message").value(std::string_view(e.what()));
  w.key("type").value(e.type());
  w.key("param");
  e.param().empty() ? w.null() : w.value(e.param());
  w.key("code");
  e.code().empty() ? w.null() : w.value(e.code());
  w.end_object().end_object();
  return w.str();
}

namespace {

using json::Value;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

// A field of the request object; JSON null counts as absent (OpenAI's clients send explicit nulls).
const Value* field(const Value& object, std::string_view key) {
  const Value* v = object.find(key);
  return v && !v->is_null() ? v : nullptr;
}

std::string kind_of(const Value& v) { return Value::kind_name(v.kind()); }

double number(const Value& object, std::string_view key, double lo, double hi, double fallback) {
  const Value* v = field(object, key);
  if (!v) return fallback;
  const std::string name(key);
  if (!v->is_number()) bad(name, "'" + name + "' must be a number, got " + kind_of(*v));
  const double d = v->as_number();
  if (!(d >= lo && d <= hi))
    bad(name, "'" + name + "' must be between " + json::Writer().value(lo).str() + " and " +
                  json::Writer().value(hi).str() + ", got " + json::Writer().value(d).str());
  return d;
}

std::optional<int64_t> integer(const Value& object, std::string_view key, int64_t lo, int64_t hi) {
  const Value* v = field(object, key);
  if (!v) return std::nullopt;
  const std::string name(key);
  if (!v->is_integer())
    bad(name, "'" + name + "' must be an integer, got " +
                  (v->is_number() ? std::string("a fraction or an out-of-range number") : kind_of(*v)));
  const int64_t i = v->as_int();
  if (i < lo || i > hi)
    bad(name, "'" + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                  std::to_string(i));
  return i;
}

bool boolean(const Value& object, std::string_view key, bool fallback) {
  const Value* v = field(object, key);
  if (!v) return fallback;
  const std::string name(key);
  if (!v->is_bool()) bad(name, "'" + name + "' must be true or false, got " + kind_of(*v));
  return v->as_bool();
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts (joined).
std::string message_content(const Value& content, const std::string& param) {
  if (content.is_string()) return content.as_string();
  if (!content.is_array())
    bad(param, "'" + param + "' must be a string or an array of text parts, got " + kind_of(content));
  std::string text;
  const auto& parts = content.as_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string part_param = param + "[" + std::to_string(i) + "]";
    const Value& part = parts[i];
    if (!part.is_object()) bad(part_param, "'" + part_param + "' must be an object");
    const Value* type = field(part, "type");
    if (!type || !type->is_string()) bad(part_param + ".type", "'" + part_param + ".type' must be a string");
    if (type->as_string() != "text")
      bad(part_param + ".type", "content parts of type '" + type->as_string() + "' are not supported (only 'text')");
    const Value* t = field(part, "text");
    if (!t || !t->is_string()) bad(part_param + ".text", "'" + part_param + ".text' must be a string");
    text += t->as_string();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const Value& body) {
  const Value* messages = field(body, "messages");
  if (!messages) bad("messages", "'messages' is required");
  if (!messages->is_array()) bad("messages", "'messages' must be an array, got " + kind_of(*messages));
  if (messages->as_array().empty()) bad("messages", "'messages' must hold at least one message");
  std::vector<ChatMessage> out;
  const auto& list = messages->as_array();
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string param = "messages[" + std::to_string(i) + "]";
    const Value& m = list[i];
    if (!m.is_object()) bad(param, "'" + param + "' must be an object, got " + kind_of(m));
    const Value* role = field(m, "role");
    if (!role || !role->is_string()) bad(param + ".role", "'" + param + ".role' must be a string");
    std::string r = role->as_string();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant")
      bad(param + ".role", "unknown role '" + role->as_string() + "' in '" + param +
                               ".role' (expected system, developer, user or assistant)");
    if (field(m, "tool_calls") || field(m, "function_call"))
      bad(param + ".tool_calls", "tool calls are not supported by this server");
    const Value* content = field(m, "content");
    if (!content) bad(param + ".content", "'" + param + ".content' is required");
    out.push_back({r, message_content(*content, param + ".content")});
  }
  return out;
}

std::vector<int32_t> token_ids(const Value::Array& items) {
  std::vector<int32_t> ids;
  for (const Value& v : items) {
    if (!v.is_integer() || v.as_int() < 0 || v.as_int() > std::numeric_limits<int32_t>::max())
      bad("prompt", "'prompt' as an array must hold token ids (non-negative integers)");
    ids.push_back(int32_t(v.as_int()));
  }
  return ids;
}

// A string, an array of token ids, or an array holding one of those (the batched form, with one prompt).
std::variant<std::string, std::vector<int32_t>> parse_prompt(const Value& body) {
  const Value* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "'prompt' is required");
  if (prompt->is_string()) return prompt->as_string();
  if (!prompt->is_array())
    bad("prompt", "'prompt' must be a string, an array of token ids or an array with one string");
  const auto& items = prompt->as_array();
  if (items.empty()) bad("prompt", "'prompt' must not be empty");
  if (!items[0].is_string() && !items[0].is_array()) return token_ids(items);
  if (items.size() != 1) bad("prompt", "only one prompt per request is supported");
  if (items[0].is_string()) return items[0].as_string();
  if (items[0].as_array().empty()) bad("prompt", "'prompt' must not be empty");
  return token_ids(items[0].as_array());
}

std::vector<std::string> parse_stop(const Value& body, size_t max_count) {
  const Value* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  if (stop->is_string()) {
    out.push_back(stop->as_string());
  } else if (stop->is_array()) {
    for (const Value& s : stop->as_array()) {
      if (!s.is_string()) bad("stop", "'stop' must be a string or an array of strings");
      out.push_back(s.as_string());
    }
  } else {
    bad("stop", "'stop' must be a string or an array of strings, got " + kind_of(*stop));
  }
  if (out.size() > max_count) bad("stop", "'stop' may hold at most " + std::to_string(max_count) + " strings");
  for (const auto& s : out)
    if (s.empty()) bad("stop", "'stop' strings must not be empty");
  return out;
}

// Fields of features this server does not have: a clear 400 rather than silently different behaviour.
void reject_unsupported(const Value& body, Endpoint endpoint) {
  if (auto n = integer(body, "n", 1, 128); n && *n != 1) bad("n", "'n' must be 1 (one choice per request)");
  if (endpoint == Endpoint::Completions) {
    if (auto best_of = integer(body, "best_of", 1, 128); best_of && *best_of != 1)
      bad("best_of", "'best_of' must be 1");
    if (boolean(body, "echo", false)) bad("echo", "'echo' is not supported");
    if (field(body, "suffix")) bad("suffix", "'suffix' is not supported");
    if (field(body, "logprobs")) bad("logprobs", "'logprobs' is not supported");
  } else {
    if (boolean(body, "logprobs", false)) bad("logprobs", "'logprobs' is not supported");
    if (field(body, "top_logprobs")) bad("top_logprobs", "'top_logprobs' is not supported");
  }
  for (const char* key : {"tools", "functions"}) {
    const Value* v = field(body, key);
    if (v && !(v->is_array() && v->as_array().empty())) bad(key, "tool calls are not supported by this server");
  }
  if (const Value* v = field(body, "tool_choice"); v && !(v->is_string() && v->as_string() == "none"))
    bad("tool_choice", "tool calls are not supported by this server");
  if (const Value* v = field(body, "logit_bias"); v && !(v->is_object() && v->as_object().empty()))
    bad("logit_bias", "'logit_bias' is not supported");
  if (const Value* v = field(body, "response_format")) {
    const Value* type = v->is_object() ? field(*v, "type") : nullptr;
    if (!type || !type->is_string() || type->as_string() != "text")
      bad("response_format", "only response_format {\"type\": \"text\"} is supported");
  }
}

}  // namespace

ParsedRequest parse_request(Endpoint endpoint, std::string_view body_text, const RequestPolicy& policy) {
  json::ParseLimits limits;
  limits.max_depth = 32;
  limits.max_values = size_t(1) << 20;
  Value body;
  try {
    body = json::parse(body_text, limits);
  } catch (const InputError& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object, got " + kind_of(body));

  ParsedRequest r;
  r.endpoint = endpoint;
  if (const Value* model = field(body, "model"); model && !model->is_string())
    bad("model", "'model' must be a string, got " + kind_of(*model));
  if (endpoint == Endpoint::ChatCompletions) {
    r.messages = parse_messages(body);
  } else {
    r.prompt = parse_prompt(body);
  }
  reject_unsupported(body, endpoint);

  const int64_t int_max = std::numeric_limits<int32_t>::max();
  r.max_tokens = integer(body, "max_tokens", 1, int_max);
  if (auto m = integer(body, "max_completion_tokens", 1, int_max)) {  // the newer name wins
    r.max_tokens = m;
    r.max_tokens_param = "max_completion_tokens";
  }
  r.stream = boolean(body, "stream", false);
  if (const Value* options = field(body, "stream_options")) {
    if (!options->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    r.include_usage = boolean(*options, "include_usage", false);
  }

  SamplerConfig& s = r.generation.sampling;
  s = policy.default_sampling;
  s.temperature = float(number(body, "temperature", 0.0, 2.0, s.temperature));
  s.top_p = float(number(body, "top_p", 0.0, 1.0, s.top_p));
  if (s.top_p == 0.0f) {  // only the most likely token survives: greedy
    s.top_p = 1.0f;
    s.temperature = 0.0f;
  }
  s.min_p = float(number(body, "min_p", 0.0, 0.999999, s.min_p));
  if (auto k = integer(body, "top_k", 0, 1 << 24)) s.top_k = int(*k);
  s.repeat_penalty = float(number(body, "repetition_penalty", 0.01, 100.0, s.repeat_penalty));
  if (auto seed = integer(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    s.seed = uint64_t(*seed);
    r.seed_given = true;
  }
  r.generation.presence_penalty = float(number(body, "presence_penalty", -2.0, 2.0, 0.0));
  r.generation.frequency_penalty = float(number(body, "frequency_penalty", -2.0, 2.0, 0.0));
  r.generation.stop = parse_stop(body, policy.max_stop_strings);
  return r;
}

void fit_to_context(ParsedRequest& r, std::vector<int32_t> prompt_tokens, const RequestPolicy& policy) {
  const int64_t prompt = int64_t(prompt_tokens.size());
  const std::string param = r.endpoint == Endpoint::ChatCompletions ? "messages" : "prompt";
  if (prompt == 0) throw ApiError(400, "the prompt is empty (it encodes to no tokens)", param);
  const int64_t cap = policy.max_tokens_cap > 0 ? policy.max_tokens_cap : policy.context;
  const std::string& asked_name = r.max_tokens_param;
  if (prompt >= policy.context || (r.max_tokens && prompt + *r.max_tokens > policy.context))
    throw ApiError(400,
                   "this model's context is " + std::to_string(policy.context) + " tokens, but the request has " +
                       std::to_string(prompt) + " prompt tokens" +
                       (r.max_tokens ? " and asks for " + std::to_string(*r.max_tokens) + " more" : std::string()) +
                       "; shorten the prompt or lower " + asked_name,
                   r.max_tokens && prompt < policy.context ? asked_name : param, "context_length_exceeded");
  if (r.max_tokens && *r.max_tokens > cap)
    throw ApiError(400, asked_name + " is " + std::to_string(*r.max_tokens) + " but this server allows at most " +
                            std::to_string(cap) + " per request (its --max-tokens)",
                   asked_name);
  r.generation.max_new_tokens = int(r.max_tokens ? *r.max_tokens : std::min(cap, policy.context - prompt));
  r.generation.prompt = std::move(prompt_tokens);
}

std::string_view openai_finish_reason(FinishReason reason) {
  return reason == FinishReason::Length ? "length" : "stop";
}

namespace {

void begin_response(json::Writer& w, Endpoint endpoint, const ResponseIds& ids, bool chunk) {
  w.begin_object();
  w.key("id").value(ids.id);
  w.key("object").value(endpoint == Endpoint::Completions ? "text_completion"
                        : chunk                           ? "chat.completion.chunk"
                                                          : "chat.completion");
  w.key("created").value(ids.created);
  w.key("model").value(ids.model);
  w.key("system_fingerprint").null();
}

void write_usage(json::Writer& w, const GenerationOutcome& o) {
  w.key("usage").begin_object();
  w.key("prompt_tokens").value(o.prompt_tokens);
  w.key("completion_tokens").value(o.completion_tokens);
  w.key("total_tokens").value(o.prompt_tokens + o.completion_tokens);
  w.end_object();
}

}  // namespace

std::string response_body(Endpoint endpoint, const ResponseIds& ids, std::string_view text,
                          const GenerationOutcome& outcome) {
  json::Writer w;
  begin_response(w, endpoint, ids, false);
  w.key("choices").begin_array().begin_object();
  w.key("index").value(0);
  if (endpoint == Endpoint::ChatCompletions) {
    w.key("message").begin_object().key("role").value("assistant").key("content").value(text).end_object();
  } else {
    w.key("text").value(text);
  }
  w.key("logprobs").null();
  w.key("finish_reason").value(openai_finish_reason(outcome.finish));
  w.end_object().end_array();
  write_usage(w, outcome);
  w.end_object();
  return w.str();
}

std::string chunk_body(Endpoint endpoint, const ResponseIds& ids, std::string_view text, bool first,
                       std::optional<FinishReason> finish, bool with_usage_field) {
  json::Writer w;
  begin_response(w, endpoint, ids, true);
  w.key("choices").begin_array().begin_object();
  w.key("index").value(0);
  if (endpoint == Endpoint::ChatCompletions) {
    w.key("delta").begin_object();
    if (first) w.key("role").value("assistant");
    if (first || !text.empty()) w.key("content").value(text);
    w.end_object();
  } else {
    w.key("text").value(text);
  }
  w.key("logprobs").null();
  w.key("finish_reason");
  finish ? w.value(openai_finish_reason(*finish)) : w.null();
  w.end_object().end_array();
  if (with_usage_field) w.key("usage").null();
  w.end_object();
  return w.str();
}

std::string usage_chunk_body(Endpoint endpoint, const ResponseIds& ids, const GenerationOutcome& outcome) {
  json::Writer w;
  begin_response(w, endpoint, ids, true);
  w.key("choices").begin_array().end_array();
  write_usage(w, outcome);
  w.end_object();
  return w.str();
}

namespace {
void write_model(json::Writer& w, const std::string& model_id, int64_t created) {
  w.begin_object();
  w.key("id").value(model_id);
  w.key("object").value("model");
  w.key("created").value(created);
  w.key("owned_by").value("clusterfusion");
  w.end_object();
}
}  // namespace

std::string model_list_body(const std::string& model_id, int64_t created) {
  json::Writer w;
  w.begin_object().key("object").value("list").key("data").begin_array();
  write_model(w, model_id, created);
  w.end_array().end_object();
  return w.str();
}

std::string model_body(const std::string& model_id, int64_t created) {
  json::Writer w;
  write_model(w, model_id, created);
  return w.str();
}

}  // namespace cf::server
