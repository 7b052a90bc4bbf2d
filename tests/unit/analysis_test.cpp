// Beat grid analysis on synthetic click tracks and degenerate inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "analysis/beat_grid.h"
#include "analysis/beat_metrics.h"
#include "test_util.h"

namespace beatfarm::analysis {
namespace {

// Beat times must land this close to the clicks (cuts are frame-accurate at 30 fps).
constexpr double kBeatTolerance = 0.030;
// Tempo must be right to within this fraction (and so never an octave off).
constexpr double kTempoTolerance = 0.02;
constexpr int kRate = kAnalysisSampleRate;
constexpr double kFirstBeat = 0.5;

audio::Pcm make_pcm(std::vector<float> samples, int rate = kRate, int channels = 1,
                    double start = 0.0) {
  audio::Pcm pcm;
  pcm.samples = std::move(samples);
  pcm.sample_rate = rate;
  pcm.channels = channels;
  pcm.start_seconds = start;
  return pcm;
}

// Click times test::click_track places for a track of `seconds`.
std::vector<double> click_times(double seconds, double bpm) {
  std::vector<double> times;
  for (int k = 0;; ++k) {
    double t = kFirstBeat + k * 60.0 / bpm;
    if (t >= seconds) break;
    times.push_back(t);
  }
  return times;
}

// Index of the reference time nearest to t.
size_t nearest(const std::vector<double>& reference, double t) {
  size_t best = 0;
  for (size_t i = 1; i < reference.size(); ++i)
    if (std::abs(reference[i] - t) < std::abs(reference[best] - t)) best = i;
  return best;
}

void expect_consistent(const BeatGrid& grid) {
  ASSERT_EQ(grid.positions.size(), grid.beats.size());
  ASSERT_EQ(grid.strengths.size(), grid.beats.size());
  for (size_t i = 1; i < grid.beats.size(); ++i) EXPECT_LT(grid.beats[i - 1], grid.beats[i]);
  std::vector<double> downbeats;
  for (size_t i = 0; i < grid.beats.size(); ++i) {
    EXPECT_GE(grid.positions[i], 1);
    EXPECT_LE(grid.positions[i], grid.meter);
    EXPECT_GE(grid.strengths[i], 0.0);
    EXPECT_LE(grid.strengths[i], 1.0);
    if (grid.positions[i] == 1) downbeats.push_back(grid.beats[i]);
  }
  EXPECT_EQ(grid.downbeats, downbeats);
}

struct ClickCase {
  double bpm;
  int meter;
};

class ClickTrackTest : public ::testing::TestWithParam<ClickCase> {};

TEST_P(ClickTrackTest, FindsTempoBeatsMeterAndDownbeats) {
  const ClickCase& c = GetParam();
  const double seconds = 30.0;
  BeatGrid grid = analyze(make_pcm(test::click_track(seconds, kRate, c.bpm, c.meter, kFirstBeat)));
  expect_consistent(grid);
  std::vector<double> truth = click_times(seconds, c.bpm);

  EXPECT_NEAR(grid.tempo_bpm, c.bpm, kTempoTolerance * c.bpm);
  EXPECT_EQ(grid.meter, c.meter);
  // Every click is found (the last may be cut short by the end of the track) ...
  ASSERT_GE(grid.beats.size(), truth.size() - 1);
  ASSERT_LE(grid.beats.size(), truth.size());
  // ... at the right time, and the loud clicks are the downbeats.
  for (size_t i = 0; i < grid.beats.size(); ++i) {
    size_t k = nearest(truth, grid.beats[i]);
    EXPECT_NEAR(grid.beats[i], truth[k], kBeatTolerance) << "beat " << i;
    EXPECT_EQ(grid.positions[i], int(k % c.meter) + 1) << "beat " << i;
  }
  ASSERT_FALSE(grid.beats.empty());
  EXPECT_NEAR(grid.beats.front(), truth.front(), kBeatTolerance);

  // Downbeat clicks are louder: every downbeat is stronger than every other beat.
  double weakest_downbeat = 1.0, strongest_other = 0.0;
  for (size_t i = 0; i < grid.beats.size(); ++i) {
    if (grid.positions[i] == 1)
      weakest_downbeat = std::min(weakest_downbeat, grid.strengths[i]);
    else
      strongest_other = std::max(strongest_other, grid.strengths[i]);
  }
  EXPECT_GT(weakest_downbeat, strongest_other);
  // On the shared scale the accented downbeats clear 0.5 and the plain beats do not.
  EXPECT_GT(weakest_downbeat, 0.5);
  EXPECT_LT(strongest_other, 0.5);
}

INSTANTIATE_TEST_SUITE_P(Tempi, ClickTrackTest,
                         ::testing::Values(ClickCase{90.0, 4}, ClickCase{120.0, 4},
                                           ClickCase{140.0, 4}, ClickCase{100.0, 3}),
                         [](const ::testing::TestParamInfo<ClickCase>& info) {
                           return "bpm" + std::to_string(int(info.param.bpm)) + "_meter" +
                                  std::to_string(info.param.meter);
                         });

TEST(AnalysisTest, SilenceGivesNoBeats) {
  BeatGrid grid;
  EXPECT_NO_THROW(grid = analyze(make_pcm(std::vector<float>(10 * kRate, 0.0f))));
  EXPECT_TRUE(grid.beats.empty());
  EXPECT_TRUE(grid.downbeats.empty());
  EXPECT_TRUE(grid.strengths.empty());
}

TEST(AnalysisTest, NoiseWithoutPulseGivesNoBeats) {
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 0.2f);
  std::vector<float> samples(10 * kRate);
  for (float& s : samples) s = noise(rng);
  BeatGrid grid;
  EXPECT_NO_THROW(grid = analyze(make_pcm(samples)));
  EXPECT_TRUE(grid.beats.empty());
}

TEST(AnalysisTest, DegenerateInputsDoNotThrow) {
  EXPECT_NO_THROW(analyze(audio::Pcm{}));
  EXPECT_TRUE(analyze(make_pcm({})).beats.empty());
  EXPECT_TRUE(analyze(make_pcm({0.5f, -0.5f}, 0, 1)).beats.empty());
  BeatGrid grid;
  EXPECT_NO_THROW(grid = analyze(make_pcm(test::click_track(0.5, kRate, 120.0, 4, 0.1))));
  expect_consistent(grid);
  EXPECT_NO_THROW(grid = analyze(make_pcm(std::vector<float>(kRate, 1.0f))));  // DC
  expect_consistent(grid);
  EXPECT_TRUE(grid.beats.empty());
  std::vector<float> broken = test::click_track(5.0, kRate, 120.0);
  broken[1000] = std::nanf("");
  broken[2000] = INFINITY;
  EXPECT_NO_THROW(grid = analyze(make_pcm(broken)));
  expect_consistent(grid);
}

TEST(AnalysisTest, StartOffsetShiftsAllTimes) {
  std::vector<float> samples = test::click_track(20.0, kRate, 120.0);
  BeatGrid base = analyze(make_pcm(samples));
  BeatGrid shifted = analyze(make_pcm(samples, kRate, 1, 10.0));
  ASSERT_FALSE(base.beats.empty());
  ASSERT_EQ(shifted.beats.size(), base.beats.size());
  for (size_t i = 0; i < base.beats.size(); ++i) {
    EXPECT_NEAR(shifted.beats[i], base.beats[i] + 10.0, 1e-9);
    EXPECT_EQ(shifted.positions[i], base.positions[i]);
    EXPECT_DOUBLE_EQ(shifted.strengths[i], base.strengths[i]);
  }
  ASSERT_EQ(shifted.downbeats.size(), base.downbeats.size());
  for (size_t i = 0; i < base.downbeats.size(); ++i)
    EXPECT_NEAR(shifted.downbeats[i], base.downbeats[i] + 10.0, 1e-9);
  EXPECT_DOUBLE_EQ(shifted.tempo_bpm, base.tempo_bpm);
}

TEST(AnalysisTest, StereoMatchesMono) {
  std::vector<float> mono = test::click_track(20.0, kRate, 120.0);
  std::vector<float> stereo(mono.size() * 2);
  for (size_t i = 0; i < mono.size(); ++i) {
    stereo[2 * i] = mono[i];
    stereo[2 * i + 1] = 0.5f * mono[i];
  }
  BeatGrid a = analyze(make_pcm(mono));
  BeatGrid b = analyze(make_pcm(stereo, kRate, 2));
  ASSERT_FALSE(a.beats.empty());
  ASSERT_EQ(b.beats.size(), a.beats.size());
  for (size_t i = 0; i < a.beats.size(); ++i) {
    EXPECT_NEAR(b.beats[i], a.beats[i], 0.011);
    EXPECT_EQ(b.positions[i], a.positions[i]);
  }
}

TEST(AnalysisTest, ClippedLoudInputGivesSameBeats) {
  std::vector<float> normal = test::click_track(20.0, kRate, 120.0);
  std::vector<float> clipped(normal.size());
  for (size_t i = 0; i < normal.size(); ++i)
    clipped[i] = std::clamp(20.0f * normal[i], -1.0f, 1.0f);
  BeatGrid a = analyze(make_pcm(normal));
  BeatGrid b = analyze(make_pcm(clipped));
  ASSERT_FALSE(a.beats.empty());
  ASSERT_EQ(b.beats.size(), a.beats.size());
  for (size_t i = 0; i < a.beats.size(); ++i) EXPECT_NEAR(b.beats[i], a.beats[i], 0.011);
  EXPECT_NEAR(b.tempo_bpm, a.tempo_bpm, 0.01 * a.tempo_bpm);
}

TEST(AnalysisTest, QuietInputGivesSameBeats) {
  std::vector<float> samples = test::click_track(20.0, kRate, 120.0);
  BeatGrid a = analyze(make_pcm(samples));
  for (float& s : samples) s *= 0.01f;  // -40 dB
  BeatGrid b = analyze(make_pcm(samples));
  ASSERT_FALSE(a.beats.empty());
  ASSERT_EQ(b.beats.size(), a.beats.size());
  for (size_t i = 0; i < a.beats.size(); ++i) {
    EXPECT_NEAR(b.beats[i], a.beats[i], 1e-6);
    EXPECT_NEAR(b.strengths[i], a.strengths[i], 0.02);
  }
}

TEST(AnalysisTest, OtherSampleRatesWork) {
  const double seconds = 20.0, bpm = 120.0;
  std::vector<double> truth = click_times(seconds, bpm);
  for (int rate : {8000, 11025, 16000, 44100, 48000, 96000}) {
    BeatGrid grid = analyze(make_pcm(test::click_track(seconds, rate, bpm), rate));
    expect_consistent(grid);
    EXPECT_NEAR(grid.tempo_bpm, bpm, kTempoTolerance * bpm) << rate;
    ASSERT_GE(grid.beats.size(), truth.size() - 1) << rate;
    for (size_t i = 0; i < grid.beats.size(); ++i) {
      size_t k = nearest(truth, grid.beats[i]);
      EXPECT_NEAR(grid.beats[i], truth[k], kBeatTolerance) << rate << " beat " << i;
      EXPECT_EQ(grid.positions[i], int(k % 4) + 1) << rate << " beat " << i;
    }
  }
}

TEST(AnalysisTest, LeadingAndTrailingSilenceIsTrimmed) {
  const double bpm = 120.0;
  std::vector<float> clicks = test::click_track(12.0, kRate, bpm, 4, kFirstBeat);
  // 5 s of silence, the clicks, 5 s of silence.
  std::vector<float> samples(5 * kRate, 0.0f);
  samples.insert(samples.end(), clicks.begin(), clicks.end());
  samples.resize(samples.size() + 5 * kRate, 0.0f);
  BeatGrid grid = analyze(make_pcm(samples));
  expect_consistent(grid);
  ASSERT_FALSE(grid.beats.empty());
  EXPECT_NEAR(grid.beats.front(), 5.0 + kFirstBeat, kBeatTolerance);
  double last_click = 5.0 + click_times(12.0, bpm).back();
  EXPECT_LT(grid.beats.back(), last_click + kBeatTolerance);
  EXPECT_GT(grid.beats.back(), last_click - 60.0 / bpm - kBeatTolerance);
}

// 8 bars at 100 BPM, then (on a downbeat) 10 bars at 128 BPM: the click times and bar
// positions.
struct TempoChange {
  std::vector<float> samples;
  std::vector<double> beats;
  std::vector<int> positions;
};

TempoChange tempo_change_track() {
  TempoChange track;
  const double change = kFirstBeat + 32 * 0.6;  // 19.7 s
  track.samples = test::click_track(change, kRate, 100.0, 4, kFirstBeat);
  std::vector<float> fast = test::click_track(40 * 60.0 / 128.0 + 0.5, kRate, 128.0, 4, 0.0);
  track.samples.resize(size_t(change * kRate), 0.0f);
  track.samples.insert(track.samples.end(), fast.begin(), fast.end());
  for (int k = 0; k < 32; ++k) track.beats.push_back(kFirstBeat + k * 0.6);
  for (int k = 0; k < 40; ++k) track.beats.push_back(change + k * 60.0 / 128.0);
  for (size_t k = 0; k < track.beats.size(); ++k) track.positions.push_back(int(k % 4) + 1);
  return track;
}

TEST(AnalysisTest, FollowsAnAbruptTempoChangeAndKeepsTheBar) {
  TempoChange track = tempo_change_track();
  BeatGrid grid = analyze(make_pcm(track.samples));
  expect_consistent(grid);
  EXPECT_EQ(grid.meter, 4);
  std::vector<double> downbeats;
  for (size_t k = 0; k < track.beats.size(); ++k)
    if (track.positions[k] == 1) downbeats.push_back(track.beats[k]);
  EXPECT_GE(f_measure(track.beats, grid.beats), 0.97);
  EXPECT_GE(f_measure(downbeats, grid.downbeats), 0.9);
  EXPECT_GE(continuity(track.beats, grid.beats).cml_t, 0.9);
}

TEST(AnalysisTest, ThreeSecondClipGivesItsBeats) {
  const double seconds = 3.0, bpm = 120.0;
  BeatGrid grid = analyze(make_pcm(test::click_track(seconds, kRate, bpm, 4, kFirstBeat)));
  expect_consistent(grid);
  std::vector<double> truth = click_times(seconds, bpm);
  EXPECT_GE(f_measure(truth, grid.beats), 0.8);
  EXPECT_NEAR(grid.tempo_bpm, bpm, 0.05 * bpm);
}

TEST(AnalysisTest, TwentyMinuteFileIsTracked) {
  // A cheap click track at the analysis rate; the whole analysis takes about a second.
  const double seconds = 20 * 60.0, bpm = 124.0;
  BeatGrid grid = analyze(make_pcm(test::click_track(seconds, kRate, bpm, 4, kFirstBeat)));
  expect_consistent(grid);
  std::vector<double> truth = click_times(seconds, bpm);
  EXPECT_NEAR(grid.tempo_bpm, bpm, kTempoTolerance * bpm);
  EXPECT_GE(f_measure(truth, grid.beats), 0.99);
  std::vector<double> downbeats;
  for (size_t k = 0; k < truth.size(); k += 4) downbeats.push_back(truth[k]);
  EXPECT_GE(f_measure(downbeats, grid.downbeats), 0.99);
}

TEST(AnalysisTest, BeatlessIntroGetsNoBeats) {
  // 8 s of a slowly swelling noise pad, then a click track.
  const double intro = 8.0, bpm = 110.0;
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::vector<float> samples(size_t(intro * kRate));
  float state = 0.0f;
  for (size_t i = 0; i < samples.size(); ++i) {
    state = 0.995f * state + 0.005f * noise(rng);  // low-passed
    float swell = 0.5f - 0.5f * std::cos(2.0f * float(M_PI) * float(i) / kRate / 4.0f);
    samples[i] = 2.0f * swell * state;
  }
  std::vector<float> clicks = test::click_track(20.0, kRate, bpm, 4, 0.0);
  samples.insert(samples.end(), clicks.begin(), clicks.end());
  BeatGrid grid = analyze(make_pcm(samples));
  expect_consistent(grid);
  ASSERT_FALSE(grid.beats.empty());
  EXPECT_GT(grid.beats.front(), intro - kBeatTolerance);
  EXPECT_NEAR(grid.tempo_bpm, bpm, kTempoTolerance * bpm);
}

TEST(AnalysisTest, SurroundMatchesMono) {
  // 5.1: the clicks on front left/right and centre, silence on LFE and surrounds.
  std::vector<float> mono = test::click_track(15.0, kRate, 120.0);
  std::vector<float> surround(mono.size() * 6, 0.0f);
  for (size_t i = 0; i < mono.size(); ++i)
    for (int c : {0, 1, 2}) surround[6 * i + c] = mono[i];
  BeatGrid a = analyze(make_pcm(mono));
  BeatGrid b = analyze(make_pcm(surround, kRate, 6));
  expect_consistent(b);
  ASSERT_FALSE(a.beats.empty());
  ASSERT_EQ(b.beats.size(), a.beats.size());
  for (size_t i = 0; i < a.beats.size(); ++i) EXPECT_NEAR(b.beats[i], a.beats[i], 0.011);
}

TEST(AnalysisTest, AccentsAreOnTheSameScaleAcrossTracks) {
  // Accented downbeats clear 0.5 and outrank plain beats at any tempo, and the level of
  // the track does not change the strengths.
  for (double bpm : {85.0, 128.0, 170.0}) {
    std::vector<double> reference;
    for (float gain : {1.0f, 0.05f}) {
      std::vector<float> samples = test::click_track(20.0, kRate, bpm, 4, kFirstBeat);
      for (float& v : samples) v *= gain;
      BeatGrid grid = analyze(make_pcm(samples));
      ASSERT_FALSE(grid.beats.empty()) << bpm;
      double weakest_downbeat = 1.0, strongest_other = 0.0;
      for (size_t i = 0; i < grid.beats.size(); ++i) {
        if (grid.positions[i] == 1)
          weakest_downbeat = std::min(weakest_downbeat, grid.strengths[i]);
        else
          strongest_other = std::max(strongest_other, grid.strengths[i]);
      }
      EXPECT_GT(weakest_downbeat, 0.5) << bpm;
      EXPECT_LT(strongest_other, 0.5) << bpm;
      EXPECT_GT(weakest_downbeat, strongest_other) << bpm;
      if (reference.empty()) {
        reference = grid.strengths;
      } else {
        ASSERT_EQ(grid.strengths.size(), reference.size()) << bpm;
        for (size_t i = 0; i < reference.size(); ++i)
          EXPECT_NEAR(grid.strengths[i], reference[i], 0.02) << bpm << " beat " << i;
      }
    }
  }
}

// A click on every beat, all at the same gain: no accents anywhere.
std::vector<float> uniform_click_track(double seconds, double bpm) {
  std::vector<float> samples(static_cast<size_t>(seconds * kRate), 0.0f);
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> noise(-1.0f, 1.0f);
  for (double t = kFirstBeat; t < seconds; t += 60.0 / bpm) {
    size_t start = static_cast<size_t>(t * kRate);
    for (size_t i = 0; i < static_cast<size_t>(0.06 * kRate) && start + i < samples.size(); ++i)
      samples[start + i] += 0.5f * std::exp(-float(i) / (0.012f * kRate)) * 0.6f * noise(rng);
  }
  return samples;
}

TEST(AnalysisTest, UnaccentedBeatsStayBelowTheAccentLevel) {
  // Without accents every beat is a typical beat: all of them sit in a band below 0.5,
  // whatever the tempo and level.
  for (double bpm : {90.0, 120.0, 150.0}) {
    for (float gain : {1.0f, 0.05f}) {
      std::vector<float> samples = uniform_click_track(20.0, bpm);
      for (float& v : samples) v *= gain;
      BeatGrid grid = analyze(make_pcm(samples));
      expect_consistent(grid);
      ASSERT_GE(grid.beats.size(), size_t(20)) << bpm;
      double sum = 0.0;
      for (size_t i = 0; i < grid.strengths.size(); ++i) {
        EXPECT_LT(grid.strengths[i], 0.5) << bpm << " beat " << i;
        EXPECT_GT(grid.strengths[i], 0.1) << bpm << " beat " << i;
        sum += grid.strengths[i];
      }
      EXPECT_NEAR(sum / double(grid.strengths.size()), 0.3, 0.05) << bpm;
    }
  }
}

}  // namespace
}  // namespace beatfarm::analysis
