// Chat templates: SmolLM2's real template (from the GGUF) rendered by python jinja2 is the golden
// (tests/data/chat_template/smollm2.json, scripts/record_chat_template_golden.py); detection by markers; the
// Llama-2 and Llama-3 layouts checked piece by piece.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/runtime/chat_template.hpp"

namespace {

cf::json::Value load_golden() {
  std::ifstream f(std::string(CF_SOURCE_DIR) + "/tests/data/chat_template/smollm2.json");
  std::stringstream s;
  s << f.rdbuf();
  return cf::json::parse(s.str());
}

TEST(ChatTemplate, SmolLM2MatchesJinjaRenderingOfItsOwnTemplate) {
  const auto golden = load_golden();
  const std::string jinja = golden.at("template").as_string();
  const cf::ChatTemplate t = cf::ChatTemplate::detect(jinja);
  ASSERT_EQ(t.format(), cf::ChatFormat::ChatML);
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  int n = 0;
  for (const auto& c : golden.at("cases").as_array()) {
    std::vector<cf::ChatMessage> messages;
    for (const auto& m : c.at("messages").as_array())
      messages.push_back({m.at("role").as_string(), m.at("content").as_string()});
    EXPECT_EQ(t.render(messages, c.at("add_generation_prompt").as_bool()), c.at("expected").as_string())
        << "case " << n;
    ++n;
  }
  EXPECT_GE(n, 5);
}

TEST(ChatTemplate, DetectionByMarkersAndOverrideByName) {
  EXPECT_EQ(cf::ChatTemplate::detect(std::nullopt).format(), cf::ChatFormat::None);
  EXPECT_EQ(cf::ChatTemplate::detect("{{ messages }}").format(), cf::ChatFormat::None);
  EXPECT_EQ(cf::ChatTemplate::detect("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}").format(),
            cf::ChatFormat::Llama3);
  EXPECT_EQ(cf::ChatTemplate::detect("{{ bos_token + '[INST] ' + content + ' [/INST]' }}").format(),
            cf::ChatFormat::Llama2);
  // A ChatML template whose system turn is the user's (an expression, not a literal) has no default system prompt.
  const auto expr = cf::ChatTemplate::detect("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}");
  EXPECT_EQ(expr.format(), cf::ChatFormat::ChatML);
  EXPECT_FALSE(expr.default_system().has_value());
  // Escaped newline inside a Jinja string literal (as in some templates) is understood too.
  const auto escaped = cf::ChatTemplate::detect("{{ '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}");
  ASSERT_TRUE(escaped.default_system().has_value());
  EXPECT_EQ(*escaped.default_system(), "You are Qwen.");

  EXPECT_EQ(cf::ChatTemplate::by_name("llama3").format(), cf::ChatFormat::Llama3);
  EXPECT_EQ(cf::ChatTemplate::by_name("none").format(), cf::ChatFormat::None);
  EXPECT_EQ(cf::ChatTemplate::by_name("chatml").name(), "chatml");
  EXPECT_THROW(cf::ChatTemplate::by_name("vicuna"), cf::InputError);
}

TEST(ChatTemplate, ChatMLWithoutDefaultSystem) {
  const auto t = cf::ChatTemplate::by_name("chatml");
  EXPECT_EQ(t.render({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.end_of_turn(), "<|im_end|>");
}

TEST(ChatTemplate, Llama2Layout) {
  auto t = cf::ChatTemplate::by_name("llama2");
  // System prompt folded into the first user turn, and the folded text stripped as a whole (so only the trailing
  // space of " Hi " goes); assistant turns closed by </s>.
  const std::vector<cf::ChatMessage> conversation = {
      {"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello."}, {"user", "Bye"}};
  EXPECT_EQ(t.render(conversation, true),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello. </s><s>[INST] Bye [/INST]");
  EXPECT_EQ(t.render({{"user", " Hi "}}, true), "<s>[INST] Hi [/INST]");
  EXPECT_EQ(t.end_of_turn(), "</s>");
}

TEST(ChatTemplate, Llama3Layout) {
  auto t = cf::ChatTemplate::by_name("llama3");
  EXPECT_EQ(t.render({{"system", "Be brief."}, {"user", "Hi\n"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t.render({{"user", "Hi"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(t.end_of_turn(), "<|eot_id|>");
}

TEST(ChatTemplate, NoneConcatenates) {
  const auto t = cf::ChatTemplate::by_name("none");
  EXPECT_EQ(t.render({{"user", "Once upon"}, {"assistant", " a time"}}, true), "Once upon a time");
  EXPECT_EQ(t.end_of_turn(), "");
}

}  // namespace
