// Tempo estimation from an onset envelope (private to src/analysis).
#pragma once

#include <vector>

namespace beatfarm::analysis {

struct TempoEstimate {
  double period = 0.0;      // beat period in frames; 0 when there is no usable envelope
  double confidence = 0.0;  // normalised autocorrelation at the period, about 0 for noise
};

// Global tempo: autocorrelation of the envelope over [min_bpm, max_bpm], weighted by a
// log-normal prior around prior_bpm, with the double period reinforcing each candidate
// and an explicit octave check between T, 2T and T/2.
TempoEstimate estimate_tempo(const std::vector<float>& envelope, double frame_rate, double min_bpm,
                             double max_bpm, double prior_bpm);

// Per-frame beat period (frames) that follows tempo changes: the autocorrelation of
// sliding windows searched within about +-35% of global_period, median-smoothed. Falls
// back to global_period where the local evidence is weak or the input is short.
std::vector<double> local_periods(const std::vector<float>& envelope, double frame_rate,
                                  double global_period);

}  // namespace beatfarm::analysis
