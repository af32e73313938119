// The OpenAI HTTP API's documents, without the HTTP: request bodies of /v1/chat/completions and /v1/completions
// checked and turned into a GenerationRequest (every mistake an ApiError naming the field, as OpenAI's 400s do),
// and the response, stream chunk, model list and error documents.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/sampler.hpp"
#include "clusterfusion/runtime/scheduler.hpp"

namespace cf::server {

// An error answered with an HTTP status and OpenAI's error object:
//   {"error": {"message": ..., "type": "invalid_request_error", "param": "messages", "code": null}}
class ApiError : public Error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // "invalid_request_error" (4xx but 401 and 429), "authentication_error" (401), "rate_limit_error" (429),
  // "server_error" (5xx).
  std::string type() const;

 private:
  int status_;
  std::string param_, code_;
};
std::string error_body(const ApiError& e);

enum class Endpoint { ChatCompletions, Completions };

// What a request is checked against: the server's defaults for omitted sampling fields and its limits.
struct RequestPolicy {
  SamplerConfig default_sampling;
  int context = 0;         // tokens per sequence (prompt + completion)
  int max_tokens_cap = 0;  // largest max_tokens a request may ask for (0: the context)
  size_t max_stop_strings = 4;
  std::optional<uint64_t> default_seed;  // for requests without a seed; none: a random seed each
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::ChatCompletions;
  std::vector<ChatMessage> messages;                          // chat
  std::variant<std::string, std::vector<int32_t>> prompt;      // completions: text, or token ids
  std::optional<int> max_tokens;                              // as asked (max_completion_tokens or max_tokens)
  std::string max_tokens_param = "max_tokens";                // which of the two names gave it
  bool seed_given = false;                                    // else the policy's default seed or a random one
  bool stream = false;
  bool include_usage = false;                                 // stream_options.include_usage
  GenerationRequest generation;  // sampling, penalties and stop strings; prompt and max_new_tokens come later
};

// Parses and checks a request body (JSON object). Throws ApiError(400) naming the field for malformed JSON, wrong
// types, values out of range, missing or empty messages, unknown roles and features this server does not have
// (n > 1, tools, logprobs, ...). Unknown fields are ignored, as OpenAI's own clients send extra ones.
ParsedRequest parse_request(Endpoint endpoint, std::string_view body, const RequestPolicy& policy);

// Sets the prompt tokens and max_new_tokens: max_tokens as asked, else as many as the context leaves (at most the
// cap). Throws ApiError(400) when the prompt and the completion do not fit the context or max_tokens exceeds the cap.
void fit_to_context(ParsedRequest& request, std::vector<int32_t> prompt_tokens, const RequestPolicy& policy);

// Identity of one response: "chatcmpl-..." / "cmpl-..." id, creation time (Unix seconds), model id.
struct ResponseIds {
  std::string id;
  int64_t created = 0;
  std::string model;
};

std::string_view openai_finish_reason(FinishReason r);  // "stop", "length"; others have no OpenAI name

// The whole (non-streamed) response.
std::string response_body(Endpoint endpoint, const ResponseIds& ids, std::string_view text,
                          const GenerationOutcome& outcome);
// One server-sent event's data: a chunk with text (and the assistant role in the first chat chunk), or the last
// chunk with its finish reason. with_usage_field: "usage": null, as OpenAI writes it when include_usage is on.
std::string chunk_body(Endpoint endpoint, const ResponseIds& ids, std::string_view text, bool first,
                       std::optional<FinishReason> finish, bool with_usage_field);
// The extra last chunk with include_usage: no choices, the token counts.
std::string usage_chunk_body(Endpoint endpoint, const ResponseIds& ids, const GenerationOutcome& outcome);
// GET /v1/models (one model) and GET /v1/models/{id}.
std::string model_list_body(const std::string& model_id, int64_t created);
std::string model_body(const std::string& model_id, int64_t created);

}  // namespace cf::server
