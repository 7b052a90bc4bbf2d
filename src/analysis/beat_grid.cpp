// Beat tracking in the style of Ellis (2007): onset envelope -> tempo -> dynamic
// programming over beat positions -> trimming, accents, meter and downbeats.
#include "analysis/beat_grid.h"

#include <algorithm>
#include <cmath>

#include "analysis/onset.h"
#include "analysis/tempo.h"

namespace beatfarm::analysis {
namespace {

// Inputs whose peak stays below -80 dBFS are treated as silence.
constexpr float kSilencePeak = 1e-4f;
// Shorter inputs cannot show two beats at the slowest tempo with any confidence.
constexpr double kMinSeconds = 1.0;
// Half-width of the moving mean removed from the flux: about one beat at 120 BPM, so
// that sustained textures (pads, hat carpets) do not count as onsets.
constexpr double kMeanRadiusSeconds = 0.5;
// Below this normalised autocorrelation at the beat period there is no pulse (the best lag
// of white noise reaches about 0.1 on a 10 s clip; the dev-set music stays well above).
constexpr double kMinPulseConfidence = 0.15;
// Gaussian smoothing of the onset envelope for the DP, as a fraction of the period:
// tolerates small timing deviations without blurring neighbouring onsets together.
constexpr double kSmoothingPerPeriod = 1.0 / 32.0;
// Leading/trailing beats whose onset score is below this fraction of the RMS beat
// onset score are dropped (intros without pulse, ring-outs, silence).
constexpr double kTrimRatio = 0.5;
// Beats that confirm where the music starts/ends (3 of these 4 must be strong).
constexpr int kTrimRun = 4;
// Beats in frames this far below the track's loud level are in silence.
constexpr double kSilentLevelDb = -50.0;
// Accent strength looks for the onset peak within this distance of the beat.
constexpr double kPeakWindowSeconds = 0.05;
// The accent used for meter and downbeats scales the onsets so that this quantile of the
// track's beats maps to 1, then squares (the flux is already log-compressed).
constexpr double kStrengthQuantile = 0.9;
constexpr double kStrengthExponent = 2.0;
// Reported beat strengths compare each beat's onset with the track's typical (median)
// beat: a typical beat maps to kTypicalStrength, a beat kAccentRatio times as strong to
// 0.5. The log-mel flux compresses level differences (the 8 dB + thump downbeats of a
// click track are only ~1.3x the plain clicks), so accents start a little above typical.
constexpr double kTypicalStrength = 0.3;
constexpr double kAccentRatio = 1.12;
// Weight of the full-band accent next to the low-band (kick/bass) onset for downbeats.
constexpr double kDownbeatStrengthWeight = 0.5;
// 3/4 must beat 4/4 by this factor and margin: 4/4 is far more common, so ties go to 4.
constexpr double kTripleRatio = 1.15;
constexpr double kTripleMargin = 0.02;
// Cost of breaking the bar pattern, in accent units (accents are ~0..1.5): several bars
// of contrary evidence are needed before the downbeat phase moves.
constexpr double kPhaseJumpPenalty = 3.0;

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  size_t k = std::min(values.size() - 1, size_t(q * double(values.size() - 1) + 0.5));
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

std::vector<float> mix_to_mono(const audio::Pcm& pcm) {
  size_t frames = pcm.frames();
  std::vector<float> mono(frames, 0.0f);
  int channels = pcm.channels;
  float scale = 1.0f / float(channels);
  for (size_t i = 0; i < frames; ++i) {
    float acc = 0.0f;
    for (int c = 0; c < channels; ++c) {
      float v = pcm.samples[i * channels + c];
      acc += std::isfinite(v) ? v : 0.0f;
    }
    mono[i] = acc * scale;
  }
  return mono;
}

// Flux minus its moving mean, half-wave rectified, divided by its standard deviation.
// Returns an all-zero envelope when there is no variation at all.
std::vector<float> detrended_envelope(const std::vector<float>& flux, double frame_rate) {
  size_t n = flux.size();
  size_t radius = std::max<size_t>(1, size_t(kMeanRadiusSeconds * frame_rate));
  std::vector<double> prefix(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + flux[i];
  std::vector<float> env(n, 0.0f);
  for (size_t i = 0; i < n; ++i) {
    size_t lo = i >= radius ? i - radius : 0;
    size_t hi = std::min(n, i + radius + 1);
    double mean = (prefix[hi] - prefix[lo]) / double(hi - lo);
    env[i] = float(std::max(0.0, flux[i] - mean));
  }
  double sum = 0.0, sum_squares = 0.0;
  for (float v : env) {
    sum += v;
    sum_squares += double(v) * v;
  }
  double mean = sum / double(n);
  double deviation = std::sqrt(std::max(0.0, sum_squares / double(n) - mean * mean));
  if (deviation <= 1e-12) return std::vector<float>(n, 0.0f);
  for (float& v : env) v = float(v / deviation);
  return env;
}

std::vector<double> gaussian_smooth(const std::vector<float>& x, double sigma) {
  int radius = std::max(1, int(std::ceil(3.0 * sigma)));
  std::vector<double> kernel(2 * radius + 1);
  for (int i = -radius; i <= radius; ++i)
    kernel[i + radius] = std::exp(-0.5 * (i / sigma) * (i / sigma));
  long n = long(x.size());
  std::vector<double> out(x.size(), 0.0);
  for (long t = 0; t < n; ++t) {
    double acc = 0.0;
    for (int i = -radius; i <= radius; ++i) {
      long s = t + i;
      if (s >= 0 && s < n) acc += kernel[i + radius] * x[s];
    }
    out[t] = acc;
  }
  return out;
}

// Dynamic programming: the best beat sequence maximising onset score minus
// tightness * log(interval / period)^2 per step. Returns increasing frame indices.
std::vector<long> track_beats(const std::vector<double>& score, const std::vector<double>& periods,
                              double tightness) {
  if (score.empty() || periods.size() != score.size()) return {};
  const long n = long(score.size());
  std::vector<double> cumulative(n, 0.0);
  std::vector<long> backlink(n, -1);
  long max_interval = 0;
  for (double p : periods) max_interval = std::max(max_interval, long(std::lround(2.0 * p)));
  std::vector<double> log_interval(max_interval + 1, 0.0);
  for (long d = 1; d <= max_interval; ++d) log_interval[d] = std::log(double(d));

  for (long t = 0; t < n; ++t) {
    double period = periods[t];
    double log_period = std::log(period);
    long nearest = std::max<long>(1, std::lround(0.5 * period));
    long farthest = std::lround(2.0 * period);
    // Starting a fresh sequence here is always allowed (score 0 for the past).
    double best = 0.0;
    long link = -1;
    for (long d = nearest; d <= farthest && d <= t; ++d) {
      double deviation = log_interval[d] - log_period;
      double candidate = cumulative[t - d] - tightness * deviation * deviation;
      if (candidate > best) {
        best = candidate;
        link = t - d;
      }
    }
    cumulative[t] = score[t] + best;
    backlink[t] = link;
  }

  // The last beat lies within one period of the end; take the best-scoring frame there.
  long tail = std::max<long>(1, std::lround(periods.back()));
  long last = n - 1;
  for (long t = std::max<long>(0, n - tail); t < n; ++t)
    if (cumulative[t] > cumulative[last]) last = t;
  std::vector<long> beats;
  for (long t = last; t >= 0; t = backlink[t]) beats.push_back(t);
  std::reverse(beats.begin(), beats.end());
  return beats;
}

// Drops leading and trailing beats without onset support or in silence.
void trim_weak_ends(std::vector<long>& beats, const std::vector<double>& score,
                    const std::vector<float>& level_db) {
  if (beats.empty()) return;
  double sum_squares = 0.0;
  for (long b : beats) sum_squares += score[b] * score[b];
  double threshold = kTrimRatio * std::sqrt(sum_squares / double(beats.size()));
  size_t n = beats.size();
  std::vector<bool> strong(n);
  for (size_t i = 0; i < n; ++i)
    strong[i] = score[beats[i]] >= threshold && level_db[beats[i]] >= kSilentLevelDb;
  // The music starts at the first strong beat that most of its next few beats confirm,
  // so that a lone onset in a beatless intro does not anchor the grid; likewise at the end.
  auto confirmed = [&](size_t i, int direction) {
    if (!strong[i]) return false;
    int count = 0, seen = 0;
    for (long j = long(i); j >= 0 && j < long(n) && seen < kTrimRun; j += direction, ++seen)
      count += strong[j] ? 1 : 0;
    return count * 4 >= seen * 3;
  };
  size_t first = 0, end = n;
  while (first < end && !confirmed(first, 1)) ++first;
  while (end > first && !confirmed(end - 1, -1)) --end;
  beats = std::vector<long>(beats.begin() + first, beats.begin() + end);
}

// Fractional offset (-0.5..0.5) of the parabola through a local maximum at t; 0 when
// t is not a local maximum.
double subframe_peak(const std::vector<double>& x, long t) {
  if (t <= 0 || t + 1 >= long(x.size())) return 0.0;
  double a = x[t - 1], b = x[t], c = x[t + 1];
  double denom = a - 2.0 * b + c;
  if (b < a || b < c || denom >= 0.0) return 0.0;
  return std::clamp(0.5 * (a - c) / denom, -0.5, 0.5);
}

// Maximum of x within +-radius frames of each beat.
std::vector<double> peak_near_beats(const std::vector<float>& x, const std::vector<long>& beats,
                                    long radius) {
  std::vector<double> peaks;
  long n = long(x.size());
  for (long b : beats) {
    double peak = 0.0;
    for (long t = std::max<long>(0, b - radius); t <= std::min(n - 1, b + radius); ++t)
      peak = std::max(peak, double(x[t]));
    peaks.push_back(peak);
  }
  return peaks;
}

// Divides by the kStrengthQuantile of the values and clips to [0, 1].
std::vector<double> robust_unit_scale(std::vector<double> values) {
  double reference = quantile(values, kStrengthQuantile);
  for (double& v : values) v = reference > 0.0 ? std::clamp(v / reference, 0.0, 1.0) : 0.0;
  return values;
}

// Strength of each beat on a scale shared by all tracks: with r = value / median value,
// 1 / (1 + (kAccentRatio / r)^p), where p puts r = 1 at kTypicalStrength. Increasing in r,
// 0.5 at r = kAccentRatio, towards 1 for the strongest accents (r = 1.3: 0.75, r = 1.5:
// 0.9). Independent of the overall gain (the ratio is), and a track without accents has
// all its beats near kTypicalStrength. All zero when the median beat has no onset.
std::vector<double> typical_beat_scale(std::vector<double> values) {
  double typical = quantile(values, 0.5);
  const double p = std::log((1.0 - kTypicalStrength) / kTypicalStrength) / std::log(kAccentRatio);
  for (double& v : values) {
    double ratio = typical > 0.0 ? v / typical : 0.0;
    v = ratio > 0.0 ? 1.0 / (1.0 + std::pow(kAccentRatio / ratio, p)) : 0.0;
  }
  return values;
}

// The meter (3 or 4) whose best bar phase has the highest mean accent on bar starts
// relative to the other beats.
int choose_meter(const std::vector<double>& accent) {
  double best_by_meter[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  size_t n = accent.size();
  for (int meter : {3, 4}) {
    double best = -1e300;
    for (int phase = 0; phase < meter; ++phase) {
      double on = 0.0, off = 0.0;
      int on_count = 0, off_count = 0;
      for (size_t i = 0; i < n; ++i) {
        if (int(i % meter) == phase) {
          on += accent[i];
          ++on_count;
        } else {
          off += accent[i];
          ++off_count;
        }
      }
      if (!on_count || !off_count) continue;
      double contrast = on / on_count - off / off_count;
      best = std::max(best, contrast);
    }
    best_by_meter[meter] = best;
  }
  bool triple = best_by_meter[3] > kTripleRatio * best_by_meter[4] &&
                best_by_meter[3] > best_by_meter[4] + kTripleMargin;
  return triple ? 3 : 4;
}

// Bar positions (1..meter) by Viterbi over beats: a position-1 beat earns its accent
// above the mean, the position advances by one each beat, and a jump to any other
// position (a dropped or extra beat, a short bar) costs kPhaseJumpPenalty.
std::vector<int> assign_positions(const std::vector<double>& accent, int meter) {
  size_t n = accent.size();
  std::vector<int> positions(n, 1);
  if (n == 0) return positions;
  double mean = 0.0;
  for (double a : accent) mean += a;
  mean /= double(n);
  // back[i][s]: state of beat i-1 on the best path into state s of beat i.
  std::vector<std::vector<int>> back(n, std::vector<int>(meter, 0));
  std::vector<double> score(meter, 0.0), next(meter);
  for (int s = 0; s < meter; ++s) score[s] = s == 0 ? accent[0] - mean : 0.0;
  for (size_t i = 1; i < n; ++i) {
    int best_state = int(std::max_element(score.begin(), score.end()) - score.begin());
    for (int s = 0; s < meter; ++s) {
      int previous = (s + meter - 1) % meter;
      double advance = score[previous];
      double jump = score[best_state] - kPhaseJumpPenalty;
      back[i][s] = advance >= jump ? previous : best_state;
      next[s] = std::max(advance, jump) + (s == 0 ? accent[i] - mean : 0.0);
    }
    score = next;
  }
  int state = int(std::max_element(score.begin(), score.end()) - score.begin());
  for (size_t i = n; i-- > 0;) {
    positions[i] = state + 1;
    state = back[i][state];
  }
  return positions;
}

}  // namespace

BeatGrid analyze(const audio::Pcm& pcm, const AnalysisOptions& options) {
  BeatGrid grid;
  if (pcm.sample_rate <= 0 || pcm.channels <= 0 || pcm.frames() == 0) return grid;
  if (pcm.duration() < kMinSeconds) return grid;

  std::vector<float> mono = mix_to_mono(pcm);
  float peak = 0.0f;
  for (float v : mono) peak = std::max(peak, std::abs(v));
  if (peak < kSilencePeak) return grid;

  OnsetFeatures features = compute_onset_features(mono.data(), mono.size(), pcm.sample_rate);
  double frame_rate = features.frame_rate;
  std::vector<float> envelope = detrended_envelope(features.flux, frame_rate);

  TempoEstimate tempo =
      estimate_tempo(envelope, frame_rate, options.min_bpm, options.max_bpm, options.prior_bpm);
  if (tempo.period <= 0.0 || tempo.confidence < kMinPulseConfidence) return grid;

  std::vector<double> periods = local_periods(envelope, frame_rate, tempo.period);
  std::vector<double> score = gaussian_smooth(envelope, tempo.period * kSmoothingPerPeriod);
  std::vector<long> beats = track_beats(score, periods, options.tightness);
  trim_weak_ends(beats, score, features.level_db);
  if (beats.size() < 2) return grid;

  // Accents: onset peak near each beat above the track's typical flux level.
  long radius = std::max<long>(1, std::lround(kPeakWindowSeconds * frame_rate));
  double flux_floor = quantile(std::vector<double>(features.flux.begin() + beats.front(),
                                                   features.flux.begin() + beats.back() + 1),
                               0.5);
  std::vector<double> raw_strength = peak_near_beats(features.flux, beats, radius);
  for (double& v : raw_strength) v = std::max(0.0, v - flux_floor);
  // The accent for meter and downbeats keeps its own (quantile) scaling; the reported
  // strengths are measured against the track's typical beat.
  std::vector<double> strengths = robust_unit_scale(raw_strength);
  for (double& v : strengths) v = std::pow(v, kStrengthExponent);
  std::vector<double> beat_strengths = typical_beat_scale(raw_strength);
  std::vector<double> low = robust_unit_scale(peak_near_beats(features.low_flux, beats, radius));
  std::vector<double> accent(beats.size());
  for (size_t i = 0; i < beats.size(); ++i)
    accent[i] = low[i] + kDownbeatStrengthWeight * strengths[i];
  grid.meter = choose_meter(accent);
  std::vector<int> positions = assign_positions(accent, grid.meter);

  for (size_t i = 0; i < beats.size(); ++i) {
    double frame = double(beats[i]) + subframe_peak(score, beats[i]);
    double time = pcm.start_seconds + frame / frame_rate + features.time_offset;
    int position = positions[i];
    grid.beats.push_back(time);
    grid.positions.push_back(position);
    grid.strengths.push_back(beat_strengths[i]);
    if (position == 1) grid.downbeats.push_back(time);
  }
  std::vector<double> intervals;
  for (size_t i = 1; i < grid.beats.size(); ++i)
    intervals.push_back(grid.beats[i] - grid.beats[i - 1]);
  double median_interval = quantile(intervals, 0.5);
  grid.tempo_bpm = median_interval > 0.0 ? 60.0 / median_interval : 0.0;
  return grid;
}

}  // namespace beatfarm::analysis
