#include "analysis/tempo.h"

#include <algorithm>
#include <cmath>

namespace beatfarm::analysis {
namespace {

// Width of the tempo prior in octaves: wide enough that 70 or 180 BPM songs still win on
// evidence, narrow enough to settle half/double ties towards moderate tempi.
constexpr double kPriorOctaves = 1.0;
// How much the double period supports a candidate: a true beat period repeats at 2T,
// a subdivision period (T/2 of the real beat) gets no extra support from its double.
constexpr double kDoublePeriodWeight = 0.5;
// 3-against-4 check: a dotted-eighth accent pattern (every 3 sixteenths) can out-score
// the beat (every 4). The candidate moves to 4T/3 only when T's half period falls between
// onsets (no eighth notes) while 4T/3's half period lands on them, and 4T/3 keeps at
// least kTernaryMinRatio of T's periodicity.
constexpr double kTernaryMaxHalf = -0.1;
constexpr double kTernaryMinHalf = 0.2;
constexpr double kTernaryMinRatio = 0.5;
// An octave neighbour (T/2 or 2T) replaces the winner only when clearly better.
constexpr double kOctaveSwitchRatio = 1.1;
// Sliding windows for the local tempo: long enough for several bars, short enough to
// follow a tempo change within a few seconds.
constexpr double kLocalWindowSeconds = 4.0;
constexpr double kLocalStepSeconds = 0.5;
// The local period stays within this factor of the global one (no octave jumps).
constexpr double kLocalRange = 1.35;
// Log-normal pull of the local period towards the global one, in octaves.
constexpr double kLocalPriorOctaves = 1.0;
// Below this normalised autocorrelation a window has no pulse of its own.
constexpr double kLocalMinConfidence = 0.05;
// Median filter length (windows) that removes isolated wrong local estimates.
constexpr int kLocalMedianWindows = 5;

// Normalised autocorrelation r[lag] of x - mean(x) for lag 0..max_lag (r[0] = 1), each lag
// averaged over its overlap so that long lags are not biased down.
std::vector<double> autocorrelation(const float* x, size_t n, size_t max_lag) {
  std::vector<double> r(max_lag + 1, 0.0);
  if (n < 2) return r;
  double mean = 0.0;
  for (size_t i = 0; i < n; ++i) mean += x[i];
  mean /= double(n);
  std::vector<double> centred(n);
  for (size_t i = 0; i < n; ++i) centred[i] = x[i] - mean;
  double power = 0.0;
  for (double v : centred) power += v * v;
  power /= double(n);
  if (power <= 0.0) return r;
  for (size_t lag = 0; lag <= max_lag && lag < n; ++lag) {
    double acc = 0.0;
    for (size_t i = 0; i + lag < n; ++i) acc += centred[i] * centred[i + lag];
    r[lag] = acc / double(n - lag) / power;
  }
  return r;
}

// Linear interpolation of r at a fractional lag; 0 outside the computed range.
double value_at(const std::vector<double>& r, double lag) {
  if (lag < 0.0) return 0.0;
  size_t i = size_t(lag);
  if (i + 1 >= r.size()) return i < r.size() ? r[i] : 0.0;
  double frac = lag - double(i);
  return r[i] * (1.0 - frac) + r[i + 1] * frac;
}

double positive(double v) {
  return v > 0.0 ? v : 0.0;
}

}  // namespace

TempoEstimate estimate_tempo(const std::vector<float>& envelope, double frame_rate, double min_bpm,
                             double max_bpm, double prior_bpm) {
  TempoEstimate estimate;
  size_t n = envelope.size();
  if (n < 8 || frame_rate <= 0.0 || min_bpm <= 0.0 || max_bpm <= min_bpm) return estimate;
  double min_lag = frame_rate * 60.0 / max_bpm;
  // At least three periods must fit in the envelope (two give a single, unreliable
  // autocorrelation product on short clips).
  double max_lag = std::min(frame_rate * 60.0 / min_bpm, double(n) / 3.0);
  // Lags beyond half the envelope overlap too little to support a candidate.
  double reliable_lag = double(n) / 2.0;
  int first = std::max(2, int(std::ceil(min_lag)));
  int last = int(std::floor(max_lag));
  if (last < first) return estimate;
  std::vector<double> r = autocorrelation(envelope.data(), n, size_t(2 * last + 2));

  auto score = [&](double lag) {
    double bpm = frame_rate * 60.0 / lag;
    double octaves = std::log2(bpm / prior_bpm) / kPriorOctaves;
    double prior = std::exp(-0.5 * octaves * octaves);
    return prior *
           (positive(value_at(r, lag)) +
            (2 * lag <= reliable_lag ? kDoublePeriodWeight : 0.0) * positive(value_at(r, 2 * lag)));
  };
  std::vector<double> scores(size_t(last) + 2, 0.0);
  int best = first;
  for (int lag = first; lag <= last; ++lag) {
    scores[lag] = score(lag);
    if (scores[lag] > scores[best]) best = lag;
  }
  if (scores[best] <= 0.0) return estimate;

  // Octave check: the integer grid can favour an alias, so compare T with the refined
  // peaks near 2T and T/2 and move only when the neighbour is clearly better.
  auto peak_near = [&](double centre) {
    int lo = std::max(first, int(std::floor(centre)) - 1);
    int hi = std::min(last, int(std::ceil(centre)) + 1);
    int arg = -1;
    for (int lag = lo; lag <= hi; ++lag)
      if (arg < 0 || scores[lag] > scores[arg]) arg = lag;
    return arg;
  };
  for (double factor : {2.0, 0.5}) {
    int other = peak_near(best * factor);
    if (other >= 0 && std::abs(other - best) > 2 &&
        scores[other] > kOctaveSwitchRatio * scores[best])
      best = other;
  }

  double beat_lag = best * 4.0 / 3.0;
  if (beat_lag <= last && value_at(r, 0.5 * best) < kTernaryMaxHalf &&
      value_at(r, 0.5 * beat_lag) > kTernaryMinHalf &&
      value_at(r, beat_lag) > kTernaryMinRatio * value_at(r, best))
    best = peak_near(beat_lag);

  // Parabolic refinement of the peak to a fractional lag.
  double refined = best;
  if (best > first && best < last) {
    double a = scores[best - 1], b = scores[best], c = scores[best + 1];
    double denom = a - 2.0 * b + c;
    if (denom < 0.0) refined = best + std::clamp(0.5 * (a - c) / denom, -0.5, 0.5);
  }
  estimate.period = refined;
  estimate.confidence = positive(value_at(r, refined));
  return estimate;
}

std::vector<double> local_periods(const std::vector<float>& envelope, double frame_rate,
                                  double global_period) {
  size_t n = envelope.size();
  std::vector<double> periods(n, global_period);
  size_t window = size_t(kLocalWindowSeconds * frame_rate);
  size_t step = std::max<size_t>(1, size_t(kLocalStepSeconds * frame_rate));
  if (global_period <= 0.0 || n < window + 4 * step) return periods;

  int lo_lag = std::max(2, int(std::floor(global_period / kLocalRange)));
  int hi_lag = int(std::ceil(global_period * kLocalRange));
  if (size_t(hi_lag) * 2 >= window) return periods;

  // One estimate per window centre.
  std::vector<size_t> centres;
  std::vector<double> estimates;
  for (size_t start = 0; start + window <= n; start += step) {
    std::vector<double> r = autocorrelation(&envelope[start], window, size_t(hi_lag) + 1);
    double best_score = 0.0, best_lag = global_period;
    for (int lag = lo_lag; lag <= hi_lag; ++lag) {
      double octaves = std::log2(lag / global_period) / kLocalPriorOctaves;
      double s = r[lag] * std::exp(-0.5 * octaves * octaves);
      if (r[lag] > kLocalMinConfidence && s > best_score) {
        best_score = s;
        best_lag = lag;
        if (lag > lo_lag && lag < hi_lag) {
          double a = r[lag - 1], b = r[lag], c = r[lag + 1];
          double denom = a - 2.0 * b + c;
          if (denom < 0.0) best_lag = lag + std::clamp(0.5 * (a - c) / denom, -0.5, 0.5);
        }
      }
    }
    centres.push_back(start + window / 2);
    estimates.push_back(best_lag);
  }

  // Median filter over neighbouring windows.
  std::vector<double> smooth(estimates.size());
  int half = kLocalMedianWindows / 2;
  for (size_t i = 0; i < estimates.size(); ++i) {
    size_t lo = i >= size_t(half) ? i - half : 0;
    size_t hi = std::min(estimates.size(), i + half + 1);
    std::vector<double> part(estimates.begin() + lo, estimates.begin() + hi);
    std::nth_element(part.begin(), part.begin() + part.size() / 2, part.end());
    smooth[i] = part[part.size() / 2];
  }

  // Piecewise-linear in time between window centres, constant beyond the ends.
  for (size_t f = 0; f < n; ++f) {
    if (f <= centres.front()) {
      periods[f] = smooth.front();
    } else if (f >= centres.back()) {
      periods[f] = smooth.back();
    } else {
      size_t i = (f - centres.front()) / step;
      double frac = double(f - centres[i]) / double(centres[i + 1] - centres[i]);
      periods[f] = smooth[i] * (1.0 - frac) + smooth[i + 1] * frac;
    }
  }
  return periods;
}

}  // namespace beatfarm::analysis
