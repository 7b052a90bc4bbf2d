#include "analysis/beat_file.h"

#include <cstdio>
#include <fstream>

#include "audio/audio.h"
#include "common/error.h"

namespace beatfarm::analysis {

BeatGrid analyze_file(const std::string& path, double start, double end,
                      const AnalysisOptions& options) {
  audio::Pcm pcm = audio::decode(path, start, end, kAnalysisSampleRate, 1);
  return analyze(pcm, options);
}

std::string beats_text(const BeatGrid& grid) {
  std::string text;
  char line[64];
  for (size_t i = 0; i < grid.beats.size(); ++i) {
    std::snprintf(line, sizeof(line), "%.6f\t%d\n", grid.beats[i],
                  i < grid.positions.size() ? grid.positions[i] : 0);
    text += line;
  }
  return text;
}

void write_beats(const BeatGrid& grid, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  out << beats_text(grid);
  out.close();
  if (!out) throw Error(str("cannot write beats file ", path));
}

}  // namespace beatfarm::analysis
