// Errors carry a message that names the thing at fault (file, option, key, value).
// One catch at the entry point prints it and exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace beatfarm {

// Something the user gave us is wrong (option, file, value): exit code 2, checked
// before any rank renders.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

// Anything else that stops the job (I/O failure, corrupt data, codec failure).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append_all(out, rest...);
}
}  // namespace detail

// str("width ", w, " is not a multiple of 16") -> std::string
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  detail::append_all(out, args...);
  return out.str();
}

// Process exit codes shared by every entry point.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;   // a runtime failure during the job
inline constexpr int kExitBadInput = 2;  // rejected input, nothing rendered

}  // namespace beatfarm
