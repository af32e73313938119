// The built-in web chat page (chat_page.html, embedded at build time by cmake/embed_file.cmake).
#pragma once
#include <string_view>

namespace cf::server {
std::string_view chat_page_html();
}  // namespace cf::server
