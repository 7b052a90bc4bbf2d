// The beatfarm executable: everything lives in beatfarm_core; this only hands over argv.
#include "cli/app.h"

int main(int argc, char** argv) {
  return beatfarm::cli::main_entry(argc, argv);
}
