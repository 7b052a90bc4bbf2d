// Onset-strength features of mono PCM (private to src/analysis).
#pragma once

#include <cstddef>
#include <vector>

namespace beatfarm::analysis {

// Frame-rate features. Frame f is centred on sample f * hop of the input, so its time is
// f / frame_rate seconds after the first sample.
struct OnsetFeatures {
  double frame_rate = 0.0;  // frames per second (sample_rate / hop, ~100)
  // Add to frame times to place flux peaks on the sound's onset: a peak shows up before
  // the onset reaches the window centre (about a quarter window early).
  double time_offset = 0.0;
  std::vector<float> flux;      // full-band log-mel spectral flux, >= 0, per frame
  std::vector<float> low_flux;  // the same over the bands below ~200 Hz (kick, bass)
  std::vector<float> level_db;  // frame level in dB relative to the loudest frames (<= ~0)
};

// Computes the features of `count` mono samples. The log compression is referenced to the
// signal's own loud frames, so the features do not depend on the overall gain. Returns
// empty vectors when there are no samples.
OnsetFeatures compute_onset_features(const float* mono, size_t count, int sample_rate);

}  // namespace beatfarm::analysis
