// The OpenAI documents without HTTP: request checking (fields, defaults, errors naming the field), fitting to the
// context, response documents that parse back, the API key comparison and the metrics text.
#include <gtest/gtest.h>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/server/metrics.hpp"
#include "clusterfusion/server/openai.hpp"
#include "clusterfusion/server/server.hpp"

namespace {

using cf::server::ApiError;
using cf::server::Endpoint;

cf::server::RequestPolicy policy() {
  cf::server::RequestPolicy p;
  p.default_sampling.temperature = 0.2f;
  p.default_sampling.top_p = 0.9f;
  p.default_sampling.repeat_penalty = 1.1f;
  p.context = 100;
  return p;
}

// The ApiError a body gives (fails the test when it parses).
ApiError rejection(std::string_view body, Endpoint e = Endpoint::ChatCompletions) {
  try {
    cf::server::parse_request(e, body, policy());
  } catch (const ApiError& error) {
    return error;
  }
  ADD_FAILURE() << "accepted: " << body;
  return ApiError(0, "");
}

TEST(OpenAiRequest, ChatFieldsAndDefaults) {
  const auto r = cf::server::parse_request(Endpoint::ChatCompletions, R"({
      "model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?", "name": "x"}],
      "temperature": 0.5, "max_tokens": 7, "stop": "END", "seed": -3, "stream": true,
      "stream_options": {"include_usage": true}, "presence_penalty": 0.5, "user": "ignored", "top_p": null})",
                                           policy());
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hi there");
  EXPECT_FLOAT_EQ(r.generation.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.generation.sampling.top_p, 0.9f);  // null = absent: the server's default
  EXPECT_FLOAT_EQ(r.generation.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.generation.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.generation.sampling.seed, uint64_t(-3));
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_FLOAT_EQ(r.generation.presence_penalty, 0.5f);

  const auto greedy = cf::server::parse_request(
      Endpoint::ChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})", policy());
  EXPECT_EQ(greedy.generation.sampling.temperature, 0.0f);
  EXPECT_FALSE(greedy.seed_given);
  const auto newer = cf::server::parse_request(
      Endpoint::ChatCompletions,
      R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 3})", policy());
  EXPECT_EQ(newer.max_tokens, 3);
  EXPECT_EQ(newer.max_tokens_param, "max_completion_tokens");
}

TEST(OpenAiRequest, CompletionPrompts) {
  auto prompt = [](std::string_view body) {
    return cf::server::parse_request(Endpoint::Completions, body, policy()).prompt;
  };
  EXPECT_EQ(std::get<std::string>(prompt(R"({"prompt": "abc"})")), "abc");
  EXPECT_EQ(std::get<std::string>(prompt(R"({"prompt": ["abc"]})")), "abc");
  EXPECT_EQ(std::get<std::vector<int32_t>>(prompt(R"({"prompt": [1, 2, 3]})")), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(std::get<std::vector<int32_t>>(prompt(R"({"prompt": [[4, 5]]})")), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(rejection(R"({"prompt": ["a", "b"]})", Endpoint::Completions).param(), "prompt");
  EXPECT_EQ(rejection(R"({"prompt": [1.5]})", Endpoint::Completions).param(), "prompt");
  EXPECT_EQ(rejection(R"({"prompt": "a", "suffix": "b"})", Endpoint::Completions).param(), "suffix");
}

TEST(OpenAiRequest, MistakesNameTheField) {
  EXPECT_EQ(rejection("").status(), 400);
  EXPECT_EQ(rejection("null").param(), "");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "tool", "content": "x"}]})").param(), "messages[0].role");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "user", "content": "x"}], "top_k": -1})").param(), "top_k");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "user", "content": "x"}], "min_p": 1})").param(), "min_p");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "user", "content": "x"}], "stop": [""]})").param(), "stop");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})")
                .param(),
            "response_format");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e30})").param(), "max_tokens");
  EXPECT_EQ(rejection(R"({"messages": [{"role": "assistant", "content": null, "tool_calls": []}]})").param(),
            "messages[0].tool_calls");
  EXPECT_EQ(rejection("{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}").status(), 400);
}

TEST(OpenAiRequest, FitsTheContext) {
  auto parsed = [](std::string_view body) {
    return cf::server::parse_request(Endpoint::ChatCompletions, body, policy());
  };
  auto r = parsed(R"({"messages": [{"role": "user", "content": "x"}]})");
  cf::server::fit_to_context(r, std::vector<int32_t>(30, 1), policy());
  EXPECT_EQ(r.generation.max_new_tokens, 70);  // as much as the context leaves
  EXPECT_EQ(r.generation.prompt.size(), 30u);

  auto capped_policy = policy();
  capped_policy.max_tokens_cap = 16;
  auto capped = parsed(R"({"messages": [{"role": "user", "content": "x"}]})");
  cf::server::fit_to_context(capped, std::vector<int32_t>(30, 1), capped_policy);
  EXPECT_EQ(capped.generation.max_new_tokens, 16);
  auto over_cap = parsed(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 17})");
  EXPECT_THROW(cf::server::fit_to_context(over_cap, std::vector<int32_t>(30, 1), capped_policy), ApiError);

  auto too_many = parsed(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 71})");
  try {
    cf::server::fit_to_context(too_many, std::vector<int32_t>(30, 1), policy());
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code(), "context_length_exceeded");
    EXPECT_EQ(e.param(), "max_tokens");
  }
  auto long_prompt = parsed(R"({"messages": [{"role": "user", "content": "x"}]})");
  EXPECT_THROW(cf::server::fit_to_context(long_prompt, std::vector<int32_t>(100, 1), policy()), ApiError);
  EXPECT_THROW(cf::server::fit_to_context(long_prompt, {}, policy()), ApiError);
}

TEST(OpenAiResponse, DocumentsParseBack) {
  const cf::server::ResponseIds ids{"chatcmpl-1", 1700000000, "model \"x\""};
  cf::GenerationOutcome o;
  o.finish = cf::FinishReason::Length;
  o.prompt_tokens = 3;
  o.completion_tokens = 4;
  const auto whole = cf::json::parse(cf::server::response_body(Endpoint::ChatCompletions, ids, "a\"b\n", o));
  EXPECT_EQ(whole.at("model").as_string(), "model \"x\"");
  const auto& choice = whole.at("choices").as_array().at(0);
  EXPECT_EQ(choice.at("message").at("content").as_string(), "a\"b\n");
  EXPECT_EQ(choice.at("finish_reason").as_string(), "length");
  EXPECT_EQ(whole.at("usage").at("total_tokens").as_int(), 7);

  const auto first = cf::json::parse(
      cf::server::chunk_body(Endpoint::ChatCompletions, ids, "", true, std::nullopt, true));
  EXPECT_EQ(first.at("object").as_string(), "chat.completion.chunk");
  EXPECT_EQ(first.at("choices").as_array().at(0).at("delta").at("role").as_string(), "assistant");
  EXPECT_TRUE(first.at("usage").is_null());
  const auto last = cf::json::parse(
      cf::server::chunk_body(Endpoint::Completions, ids, "", false, cf::FinishReason::Stop, false));
  EXPECT_EQ(last.at("choices").as_array().at(0).at("finish_reason").as_string(), "stop");
  EXPECT_EQ(last.find("usage"), nullptr);
  const auto usage = cf::json::parse(cf::server::usage_chunk_body(Endpoint::ChatCompletions, ids, o));
  EXPECT_TRUE(usage.at("choices").as_array().empty());
  EXPECT_EQ(usage.at("usage").at("completion_tokens").as_int(), 4);

  const auto error = cf::json::parse(cf::server::error_body(ApiError(401, "no", "", "invalid_api_key")));
  EXPECT_EQ(error.at("error").at("type").as_string(), "authentication_error");
  EXPECT_TRUE(error.at("error").at("param").is_null());
  EXPECT_EQ(cf::json::parse(cf::server::model_list_body("m", 1)).at("data").as_array().size(), 1u);
}

TEST(ApiKey, ConstantTimeEqual) {
  EXPECT_TRUE(cf::server::constant_time_equal("secret", "secret"));
  EXPECT_FALSE(cf::server::constant_time_equal("secreT", "secret"));
  EXPECT_FALSE(cf::server::constant_time_equal("secret1", "secret"));
  EXPECT_FALSE(cf::server::constant_time_equal("secre", "secret"));
  EXPECT_FALSE(cf::server::constant_time_equal("", "secret"));
  EXPECT_FALSE(cf::server::constant_time_equal(std::string("secret\0", 7), "secret"));
}

TEST(Metrics, PrometheusText) {
  cf::server::Metrics m;
  m.count_response("/v1/chat/completions", 200);
  m.count_response("/v1/chat/completions", 200);
  m.count_response("other", 404);
  cf::GenerationOutcome o;
  o.prompt_tokens = 10;
  o.completion_tokens = 5;
  o.first_token_seconds = 0.2;
  o.decode_seconds = 0.08;  // 4 intervals of 0.02 s
  m.record_outcome(o);
  cf::SchedulerStats s;
  s.running = 2;
  s.kv_pages_in_use = 7;
  const std::string text = m.render(s);
  for (const char* line : {"clusterfusion_http_responses_total{endpoint=\"/v1/chat/completions\",code=\"200\"} 2\n",
                           "clusterfusion_http_responses_total{endpoint=\"other\",code=\"404\"} 1\n",
                           "clusterfusion_requests_finished_total{reason=\"stop\"} 1\n",
                           "clusterfusion_prompt_tokens_total 10\n", "clusterfusion_generation_tokens_total 5\n",
                           "clusterfusion_time_to_first_token_seconds_bucket{le=\"0.1\"} 0\n",
                           "clusterfusion_time_to_first_token_seconds_bucket{le=\"0.25\"} 1\n",
                           "clusterfusion_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1\n",
                           "clusterfusion_time_per_output_token_seconds_bucket{le=\"0.025\"} 1\n",
                           "clusterfusion_time_per_output_token_seconds_count 1\n",
                           "clusterfusion_requests_running 2\n", "clusterfusion_kv_pages_in_use 7\n",
                           "# TYPE clusterfusion_time_to_first_token_seconds histogram\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

}  // namespace
