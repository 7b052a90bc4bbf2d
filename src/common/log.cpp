#include "common/log.h"

#include <chrono>
#include <ctime>

namespace beatfarm {

Logger& Logger::instance() {
  static Logger logger;
  return logger;
}

void Logger::open_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_) std::fclose(file_);
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw Error(str("cannot open log file ", path));
}

void Logger::close_file() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_) std::fclose(file_);
  file_ = nullptr;
}

void Logger::write(LogLevel level, const std::string& message) {
  if (level < level_) return;
  const char* tag = level == LogLevel::Error  ? "error: "
                    : level == LogLevel::Warn ? "warning: "
                                              : "";
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_) {
    std::fprintf(file_, "%s [rank %d] %s%s\n", stamp, rank_, tag, message.c_str());
    std::fflush(file_);
  }
  if (echo_ || level >= LogLevel::Warn) {
    std::fprintf(stderr, "[rank %d] %s%s\n", rank_, tag, message.c_str());
    std::fflush(stderr);
  }
}

}  // namespace beatfarm
