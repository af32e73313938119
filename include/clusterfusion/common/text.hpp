// Text from model files and users, shown on a terminal. A file can hold bytes that move the cursor, clear the screen,
// set the window title or write the clipboard (C0 / C1 control sequences), characters that make a line read in
// another order than it is stored (bidirectional overrides such as U+202E), and invalid UTF-8. Everything that shows
// such text (`info`, the load line, error messages, generated text on a terminal) passes it through terminal_safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cf {

// Escapes, so that the result is one line of valid UTF-8 that reads as stored: C0 controls and DEL as \xNN (newline
// and tab too, unless keep_line_breaks, which keeps \n and \t), C1 controls (U+0080..U+009F) and bidirectional
// formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) as \uXXXX, bytes of invalid UTF-8
// as \xNN. Everything else passes unchanged. Longer than max_bytes of input: clipped at a character, "..." added.
std::string terminal_safe(std::string_view text, size_t max_bytes = std::string_view::npos, bool keep_line_breaks = false);

// True when terminal_safe(text) == text (and so the text can reach a terminal as it is).
bool is_terminal_safe(std::string_view text);

// What terminal_safe escapes: C0 and C1 controls, DEL, bidirectional formatting characters.
bool is_terminal_control(uint32_t code_point);
// Length (1..4) of the well-formed UTF-8 sequence starting at text[i], and its code point; 0 when the bytes there
// are not one (overlong, surrogate, past U+10FFFF, truncated).
size_t utf8_sequence(std::string_view text, size_t i, uint32_t& code_point);

}  // namespace cf
