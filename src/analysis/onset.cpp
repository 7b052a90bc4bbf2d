#include "analysis/onset.h"

#include <algorithm>
#include <cmath>
#include <memory>

extern "C" {
#include <libavutil/mem.h>
#include <libavutil/tx.h>
}

#include "common/error.h"

namespace beatfarm::analysis {
namespace {

// 10 ms feature resolution: fine enough for +-70 ms beat tolerance, cheap for the DP.
constexpr double kTargetFrameRate = 100.0;
// ~93 ms analysis window (2048 samples at 22050 Hz): resolves bass notes ~11 Hz apart.
constexpr double kWindowSeconds = 0.0929;
// Filterbank range; the upper edge is fixed so that results barely depend on the rate.
constexpr double kMinFrequency = 30.0;
constexpr double kMaxFrequency = 11025.0;
// Mel-spaced band edges requested; low bands that round to the same FFT bin are merged.
constexpr int kMelBands = 80;
// Bands centred below this carry the kick drum and bass line (downbeat cues).
constexpr double kLowBandMaxHz = 200.0;
// Log compression log10(1 + gain * S / ref): ~60 dB of dynamics map onto ~3 decades.
constexpr float kLogGain = 1000.0f;
// The reference level is this quantile of per-frame band maxima, robust to a lone peak.
constexpr double kReferenceQuantile = 0.99;
// Flux peaks lead the onset by this fraction of the window (measured on click tracks at
// 11-96 kHz: 0.21-0.25).
constexpr double kFluxLeadWindows = 0.23;
// Floor for level_db so that digital silence gives a finite value.
constexpr double kLevelFloorDb = -120.0;

double hz_to_mel(double hz) {
  return 2595.0 * std::log10(1.0 + hz / 700.0);
}
double mel_to_hz(double mel) {
  return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
}

struct AvFree {
  void operator()(void* p) const { av_free(p); }
};

// Real-input FFT through libavutil's av_tx (SIMD, far faster than a hand-written one).
class RealFft {
 public:
  explicit RealFft(int size) : size_(size) {
    float scale = 1.0f;
    if (av_tx_init(&context_, &transform_, AV_TX_FLOAT_RDFT, 0, size, &scale, 0) < 0)
      throw Error(str("analysis: cannot set up a ", size, "-point FFT"));
    input_.reset(static_cast<float*>(av_mallocz(sizeof(float) * (size + 2))));
    output_.reset(
        static_cast<AVComplexFloat*>(av_mallocz(sizeof(AVComplexFloat) * (size / 2 + 1))));
    if (!input_ || !output_) {
      av_tx_uninit(&context_);
      throw Error("analysis: out of memory for the FFT");
    }
  }
  ~RealFft() { av_tx_uninit(&context_); }
  RealFft(const RealFft&) = delete;
  RealFft& operator=(const RealFft&) = delete;

  float* input() { return input_.get(); }
  // Transforms input() and writes size/2+1 magnitudes to out.
  void magnitudes(float* out) {
    transform_(context_, output_.get(), input_.get(), sizeof(float));
    const AVComplexFloat* spectrum = output_.get();
    for (int k = 0; k <= size_ / 2; ++k)
      out[k] = std::sqrt(spectrum[k].re * spectrum[k].re + spectrum[k].im * spectrum[k].im);
  }

 private:
  int size_;
  AVTXContext* context_ = nullptr;
  av_tx_fn transform_ = nullptr;
  std::unique_ptr<float, AvFree> input_;
  std::unique_ptr<AVComplexFloat, AvFree> output_;
};

// Triangular filter over FFT bins [first_bin, first_bin + weights.size()).
struct Band {
  int first_bin = 0;
  std::vector<float> weights;
  double centre_hz = 0.0;
};

// Mel-spaced triangles on FFT bins. Centres that fall on the same bin are merged so that
// every band covers at least one bin (the narrow low mel bands would otherwise be empty).
std::vector<Band> make_bands(int fft_size, int sample_rate) {
  double bin_hz = double(sample_rate) / fft_size;
  int max_bin = fft_size / 2;
  double top = std::min(kMaxFrequency, 0.5 * sample_rate);
  double low_mel = hz_to_mel(kMinFrequency), high_mel = hz_to_mel(top);
  std::vector<int> bins;
  for (int i = 0; i < kMelBands + 2; ++i) {
    double hz = mel_to_hz(low_mel + (high_mel - low_mel) * i / (kMelBands + 1));
    int bin = std::clamp(int(std::lround(hz / bin_hz)), 1, max_bin);
    if (bins.empty() || bin > bins.back()) bins.push_back(bin);
  }
  std::vector<Band> bands;
  for (size_t i = 1; i + 1 < bins.size(); ++i) {
    int lo = bins[i - 1], mid = bins[i], hi = bins[i + 1];
    Band band;
    band.first_bin = lo + 1;
    band.centre_hz = mid * bin_hz;
    for (int k = lo + 1; k < hi; ++k) {
      float w = k <= mid ? float(k - lo) / float(mid - lo) : float(hi - k) / float(hi - mid);
      band.weights.push_back(w);
    }
    bands.push_back(std::move(band));
  }
  return bands;
}

}  // namespace

OnsetFeatures compute_onset_features(const float* mono, size_t count, int sample_rate) {
  OnsetFeatures features;
  if (count == 0 || sample_rate <= 0) return features;

  int hop = std::max(1, int(std::lround(sample_rate / kTargetFrameRate)));
  int fft_size = 1 << std::clamp(int(std::lround(std::log2(kWindowSeconds * sample_rate))), 8, 15);
  features.frame_rate = double(sample_rate) / hop;
  features.time_offset = kFluxLeadWindows * fft_size / sample_rate;
  size_t frames = count / hop + 1;

  std::vector<float> window(fft_size);
  for (int i = 0; i < fft_size; ++i)
    window[i] = float(0.5 - 0.5 * std::cos(2.0 * M_PI * (i + 0.5) / fft_size));
  std::vector<Band> bands = make_bands(fft_size, sample_rate);
  size_t band_count = bands.size();
  RealFft fft(fft_size);
  std::vector<float> magnitude(fft_size / 2 + 1);

  // Pass 1: mel magnitudes and frame energy.
  std::vector<float> mel(frames * band_count);
  std::vector<double> energy(frames);
  long half = fft_size / 2;
  for (size_t f = 0; f < frames; ++f) {
    float* in = fft.input();
    long start = long(f) * hop - half;
    double sum_squares = 0.0;
    for (int i = 0; i < fft_size; ++i) {
      long s = start + i;
      float x = (s >= 0 && s < long(count)) ? mono[s] * window[i] : 0.0f;
      in[i] = x;
      sum_squares += double(x) * x;
    }
    energy[f] = sum_squares;
    fft.magnitudes(magnitude.data());
    float* row = &mel[f * band_count];
    for (size_t b = 0; b < band_count; ++b) {
      const Band& band = bands[b];
      float acc = 0.0f;
      for (size_t k = 0; k < band.weights.size(); ++k)
        acc += band.weights[k] * magnitude[band.first_bin + k];
      row[b] = acc;
    }
  }

  // Reference level for gain-independent log compression and for level_db.
  std::vector<float> frame_max(frames);
  for (size_t f = 0; f < frames; ++f)
    frame_max[f] = *std::max_element(&mel[f * band_count], &mel[f * band_count] + band_count);
  size_t q = std::min(frames - 1, size_t(kReferenceQuantile * (frames - 1)));
  std::nth_element(frame_max.begin(), frame_max.begin() + q, frame_max.end());
  float reference = frame_max[q];
  std::vector<double> sorted_energy(energy);
  std::nth_element(sorted_energy.begin(), sorted_energy.begin() + q, sorted_energy.end());
  double energy_reference = sorted_energy[q];

  features.flux.assign(frames, 0.0f);
  features.low_flux.assign(frames, 0.0f);
  features.level_db.assign(frames, float(kLevelFloorDb));
  if (!(reference > 0.0f) || !(energy_reference > 0.0)) return features;

  for (size_t f = 0; f < frames; ++f) {
    double db = 10.0 * std::log10(std::max(energy[f] / energy_reference, 1e-12));
    features.level_db[f] = float(std::max(db, kLevelFloorDb));
  }
  float scale = kLogGain / reference;
  for (float& v : mel) v = std::log10(1.0f + scale * v);

  // Compare each frame with the one a quarter window earlier: adjacent frames overlap so
  // much that their difference would mostly be noise.
  size_t lag = std::max<size_t>(1, size_t(std::lround(0.25 * fft_size / hop)));
  size_t first_full = std::min(frames - 1, size_t((half + hop - 1) / hop));
  size_t low_count = 0;
  while (low_count < band_count && bands[low_count].centre_hz < kLowBandMaxHz) ++low_count;
  for (size_t f = 0; f < frames; ++f) {
    const float* row = &mel[f * band_count];
    // Before the first frame whose window lies wholly inside the signal, the zero padding
    // would turn the start of the audio into a fake onset: compare with that frame instead.
    size_t reference_frame = std::max(f >= lag ? f - lag : 0, std::min(f, first_full));
    const float* previous = &mel[reference_frame * band_count];
    float total = 0.0f, low = 0.0f;
    for (size_t b = 0; b < band_count; ++b) {
      float rise = std::max(0.0f, row[b] - previous[b]);
      total += rise;
      if (b < low_count) low += rise;
    }
    features.flux[f] = total / float(band_count);
    features.low_flux[f] = low_count ? low / float(low_count) : 0.0f;
  }
  return features;
}

}  // namespace beatfarm::analysis
