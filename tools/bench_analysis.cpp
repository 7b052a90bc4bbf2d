// Times the beat analysis of one file, decode included (what `beatfarm analyze` and rank 0
// of the farm do). Run it pinned to one core for the number:
//
//   taskset -c 0 build/bench_analysis song.mp3 [runs]
//
// Prints decode and analysis seconds per run and the best total.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "analysis/beat_grid.h"
#include "audio/audio.h"

using namespace beatfarm;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_analysis AUDIO_FILE [runs (default 5)]\n");
    return 2;
  }
  std::string path = argv[1];
  int runs = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  try {
    double best = 1e300;
    for (int run = 0; run < runs; ++run) {
      auto start = Clock::now();
      audio::Pcm pcm = audio::decode(path, 0.0, -1.0, analysis::kAnalysisSampleRate, 1);
      auto decoded = Clock::now();
      analysis::BeatGrid grid = analysis::analyze(pcm);
      auto done = Clock::now();
      double decode_s = std::chrono::duration<double>(decoded - start).count();
      double analyze_s = std::chrono::duration<double>(done - decoded).count();
      best = std::min(best, decode_s + analyze_s);
      std::printf(
          "run %d: %.1f s of audio, decode %.3f s, analysis %.3f s, total %.3f s "
          "(%zu beats, %.1f BPM, %d/4)\n",
          run, pcm.duration(), decode_s, analyze_s, decode_s + analyze_s, grid.beats.size(),
          grid.tempo_bpm, grid.meter);
    }
    std::printf("best total: %.3f s\n", best);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_analysis: %s\n", e.what());
    return 2;
  }
  return 0;
}
