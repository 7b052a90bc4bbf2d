// File-level helpers around analyze(): decode and analyse a file, write .beats files.
#pragma once

#include <string>

#include "analysis/beat_grid.h"

namespace beatfarm::analysis {

// Decodes [start, end) seconds of the file (end < 0: to its end) as mono at
// kAnalysisSampleRate and analyses it; times are in the file's clock. Throws InputError
// naming the file when it is missing or undecodable.
BeatGrid analyze_file(const std::string& path, double start = 0.0, double end = -1.0,
                      const AnalysisOptions& options = {});

// The grid as .beats text: one "time<TAB>position" line per beat, 6 decimals.
std::string beats_text(const BeatGrid& grid);

// Writes beats_text(grid) to path; throws Error naming the file on failure.
void write_beats(const BeatGrid& grid, const std::string& path);

}  // namespace beatfarm::analysis
