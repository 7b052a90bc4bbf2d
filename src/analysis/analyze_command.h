// `beatfarm analyze`: the beat analysis of one file, without MPI or rendering.
#pragma once

#include <string>
#include <vector>

#include "analysis/beat_grid.h"
#include "audio/audio.h"

namespace beatfarm::analysis {

// beatfarm analyze --audio FILE --output FILE.beats [--audio-start S] [--audio-end S]
// Writes FILE.beats (time<TAB>position, song clock), FILE.json (tempo, meter, beats,
// downbeats, strengths and the beats the planner would pick for peak clips) and FILE.svg
// (waveform, novelty, beats, downbeats, peaks). argv[0] is "analyze". Returns the exit
// code: 0, or 2 with a message naming the file or option on bad input.
int run_analyze_command(int argc, char** argv);

// The SVG picture of an analysis: waveform of the mono PCM, the onset novelty, beats
// (grey), downbeats (red) and peak beats (orange markers).
std::string analysis_svg(const audio::Pcm& mono, const BeatGrid& grid,
                         const std::vector<double>& peaks);

// Beat times of the peak slots plan::make_timeline chooses with default PlanOptions over
// [audio_start, audio_end]; empty when none qualifies.
std::vector<double> peak_beats(const BeatGrid& grid, double audio_start, double audio_end);

}  // namespace beatfarm::analysis
