#include "farm/work_dir.h"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "common/error.h"

namespace beatfarm::farm {
namespace fs = std::filesystem;

void WorkDir::create() const {
  std::error_code error;
  for (const std::string& dir : {root, logs(), segments()}) {
    fs::create_directories(dir, error);
    if (error || !fs::is_directory(dir))
      throw InputError(str("cannot create work dir folder '", dir, "': ", error.message()));
  }
}

std::string default_work_dir_name() {
  std::time_t now = std::time(nullptr);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "work_%Y%m%d_%H%M%S", std::localtime(&now));
  return buffer;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(str("cannot write '", temporary, "'"));
    out << text;
    out.flush();
    if (!out) throw Error(str("cannot write '", temporary, "' (disk full?)"));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw Error(str("cannot rename '", temporary, "' to '", path, "'"));
  }
}

}  // namespace beatfarm::farm
