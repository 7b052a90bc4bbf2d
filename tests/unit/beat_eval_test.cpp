// The beat-tracking metrics (mir_eval 0.7 definitions): hand-computed cases, and agreement
// with python3-mir-eval itself when it is installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/beat_metrics.h"
#include "common/error.h"
#include "test_util.h"

namespace beatfarm::analysis {
namespace {

std::vector<double> grid(double first, double step, int count) {
  std::vector<double> times;
  for (int i = 0; i < count; ++i) times.push_back(first + i * step);
  return times;
}

TEST(BeatMetricsTest, FMeasureCountsOneToOneMatchesInTheWindow) {
  std::vector<double> reference = {1.0, 2.0, 3.0, 4.0};
  // 1.05 and 3.0 hit; 2.1 is 100 ms off; 5.0 has no partner.
  EXPECT_DOUBLE_EQ(f_measure(reference, {1.05, 2.1, 3.0, 5.0}), 0.5);
  // One estimate cannot match two references: P = 1, R = 1/2.
  EXPECT_DOUBLE_EQ(f_measure({1.0, 1.1}, {1.05}), 2.0 / 3.0);
  // Two estimates near one reference: P = 1/2, R = 1.
  EXPECT_DOUBLE_EQ(f_measure({1.0}, {0.97, 1.03}), 2.0 / 3.0);
  // A maximum matching, not a greedy one: 1.04 must go to 1.1 so that 0.95 gets 1.0.
  EXPECT_EQ(match_events({1.0, 1.1}, {1.04, 0.95}, 0.07), 2u);
  EXPECT_DOUBLE_EQ(f_measure(reference, reference), 1.0);
  EXPECT_DOUBLE_EQ(f_measure(reference, {}), 0.0);
  EXPECT_DOUBLE_EQ(f_measure({}, reference), 0.0);
  EXPECT_DOUBLE_EQ(f_measure(reference, {10.0}), 0.0);
}

TEST(BeatMetricsTest, ContinuityOfExactAndMetricLevelVariants) {
  std::vector<double> reference = grid(0.0, 1.0, 8);  // 0..7 s
  ContinuityScores exact = continuity(reference, reference);
  EXPECT_DOUBLE_EQ(exact.cml_c, 1.0);
  EXPECT_DOUBLE_EQ(exact.cml_t, 1.0);
  EXPECT_DOUBLE_EQ(exact.aml_t, 1.0);

  // Off-beat: wrong at the correct level, right at any level.
  ContinuityScores off = continuity(reference, grid(0.5, 1.0, 7));
  EXPECT_DOUBLE_EQ(off.cml_t, 0.0);
  EXPECT_DOUBLE_EQ(off.aml_t, 1.0);
  EXPECT_DOUBLE_EQ(off.aml_c, 1.0);

  // Double and half tempo.
  ContinuityScores doubled = continuity(reference, grid(0.0, 0.5, 15));
  EXPECT_DOUBLE_EQ(doubled.cml_t, 0.0);
  EXPECT_DOUBLE_EQ(doubled.aml_t, 1.0);
  ContinuityScores half = continuity(reference, grid(0.0, 2.0, 4));
  EXPECT_DOUBLE_EQ(half.cml_t, 0.0);
  EXPECT_DOUBLE_EQ(half.aml_t, 1.0);

  // Triple tempo is not an accepted level.
  EXPECT_LT(continuity(reference, grid(0.0, 1.0 / 3.0, 22)).aml_t, 0.2);
}

TEST(BeatMetricsTest, ContinuityBreaksAtAGlitch) {
  std::vector<double> reference = grid(0.0, 1.0, 8);
  // 4.5 is half a beat off (phase fails) and makes 5.0's interval 0.5 (period fails).
  ContinuityScores s = continuity(reference, {0.0, 1.0, 2.0, 3.0, 4.5, 5.0, 6.0, 7.0});
  EXPECT_DOUBLE_EQ(s.cml_c, 4.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.cml_t, 6.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.aml_c, 4.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.aml_t, 6.0 / 8.0);
  // Accuracy divides by max(reference, estimate) beats: half the song tracked gives 1/2.
  ContinuityScores partial = continuity(reference, {4.0, 5.0, 6.0, 7.0});
  EXPECT_DOUBLE_EQ(partial.cml_c, 0.5);
  EXPECT_DOUBLE_EQ(partial.cml_t, 0.5);
  // A beat 20% of the interval off fails the 17.5% phase tolerance, and the next beat's
  // 0.8 interval fails the period tolerance; at 15% both pass.
  EXPECT_DOUBLE_EQ(continuity(reference, {0.0, 1.0, 2.2, 3.0, 4.0, 5.0, 6.0, 7.0}).cml_t,
                   6.0 / 8.0);
  EXPECT_DOUBLE_EQ(continuity(reference, {0.0, 1.0, 2.15, 3.0, 4.0, 5.0, 6.0, 7.0}).cml_t, 1.0);
  // Fewer than two beats on either side: 0.
  EXPECT_DOUBLE_EQ(continuity(reference, {1.0}).aml_t, 0.0);
  EXPECT_DOUBLE_EQ(continuity({1.0}, reference).aml_t, 0.0);
}

TEST(BeatMetricsTest, ScoreTrackTrimsAndScoresDownbeats) {
  BeatAnnotation reference, estimate;
  for (int i = 0; i < 16; ++i) {
    reference.times.push_back(1.0 + 0.5 * i);
    reference.positions.push_back(i % 4 + 1);
  }
  estimate = reference;
  // Wrong beats before 5 s do not count once trimmed.
  estimate.times[0] = 1.3;
  estimate.times[1] = 1.4;
  TrackScores s = score_track(reference, estimate);
  EXPECT_TRUE(s.trimmed);
  EXPECT_EQ(s.reference_count, 8u);  // 5.0 .. 8.5
  EXPECT_DOUBLE_EQ(s.f, 1.0);
  ASSERT_TRUE(s.downbeat_f.has_value());
  EXPECT_DOUBLE_EQ(*s.downbeat_f, 1.0);
  TrackScores untrimmed = score_track(reference, estimate, false);
  EXPECT_FALSE(untrimmed.trimmed);
  EXPECT_DOUBLE_EQ(untrimmed.f, 14.0 / 16.0);
  // Downbeats one beat late: beat F stays, downbeat F drops to 0.
  for (int& p : estimate.positions) p = p % 4 + 1;
  EXPECT_DOUBLE_EQ(*score_track(reference, estimate).downbeat_f, 0.0);
  // No positions on the estimate: no downbeat score.
  for (int& p : estimate.positions) p = 0;
  EXPECT_FALSE(score_track(reference, estimate).downbeat_f.has_value());
  // A clip with < 2 reference beats after 5 s is scored untrimmed.
  BeatAnnotation short_clip;
  short_clip.times = {0.5, 1.2, 1.9, 2.6};
  short_clip.positions = {0, 0, 0, 0};
  TrackScores u = score_track(short_clip, short_clip);
  EXPECT_FALSE(u.trimmed);
  EXPECT_DOUBLE_EQ(u.f, 1.0);
}

TEST(BeatMetricsTest, LoadBeatsReadsTheScorersFormat) {
  test::TempDir dir;
  std::ofstream(dir.file("a.beats")) << "# comment\n\n2.0\t2\n1.0,1\n1.0000000001 3\n-0.5 1\n3.5\n";
  BeatAnnotation a = load_beats(dir.file("a.beats"));
  ASSERT_EQ(a.times.size(), 3u);  // sorted, duplicate and negative time dropped
  EXPECT_DOUBLE_EQ(a.times[0], 1.0);
  EXPECT_EQ(a.positions[0], 1);
  EXPECT_DOUBLE_EQ(a.times[1], 2.0);
  EXPECT_EQ(a.positions[1], 2);
  EXPECT_EQ(a.positions[2], 0);
  EXPECT_TRUE(a.has_positions());
  EXPECT_THROW(load_beats(dir.file("missing.beats")), InputError);
  std::ofstream(dir.file("bad.beats")) << "1.0\nabc\n";
  EXPECT_THROW(load_beats(dir.file("bad.beats")), InputError);
}

// Estimates that exercise every branch: jitter, octave errors, off-beat, dropouts,
// tempo drift, extra beats, a short clip and an empty estimate.
std::vector<std::pair<BeatAnnotation, BeatAnnotation>> agreement_cases() {
  std::mt19937 rng(11);
  std::normal_distribution<double> jitter(0.0, 0.04);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<std::pair<BeatAnnotation, BeatAnnotation>> cases;
  auto annotate = [](const std::vector<double>& times, int meter, int phase) {
    BeatAnnotation a;
    a.times = times;
    for (size_t i = 0; i < times.size(); ++i)
      a.positions.push_back(meter ? int((i + phase) % meter) + 1 : 0);
    return a;
  };
  for (int k = 0; k < 24; ++k) {
    double period = 0.4 + 0.4 * uniform(rng);
    int meter = k % 3 == 0 ? 3 : 4;
    BeatAnnotation reference = annotate(grid(0.7, period, int(30.0 / period)), meter, 0);
    std::vector<double> est;
    int kind = k % 8;
    for (size_t i = 0; i < reference.times.size(); ++i) {
      double t = reference.times[i];
      if (kind == 0) est.push_back(t + jitter(rng));
      if (kind == 1) {
        est.push_back(t + 0.5 * jitter(rng));
        est.push_back(t + 0.5 * period + 0.5 * jitter(rng));
      }
      if (kind == 2 && i % 2 == 0) est.push_back(t + 0.5 * jitter(rng));
      if (kind == 3) est.push_back(t + 0.5 * period + 0.5 * jitter(rng));
      if (kind == 4 && (i < 20 || i > 30)) est.push_back(t + 0.3 * jitter(rng));
      if (kind == 5) est.push_back(0.7 + i * period * 1.02);
      if (kind == 6) {
        est.push_back(t + 0.3 * jitter(rng));
        if (uniform(rng) < 0.2) est.push_back(t + period * uniform(rng));
      }
    }
    if (kind == 7 && k % 16 == 7) {
      reference = annotate({0.2, 0.9, 1.6, 2.3}, 0, 0);
      est = {0.25, 0.95, 1.5, 2.35, 2.9};
    }
    std::sort(est.begin(), est.end());
    std::vector<double> cleaned;
    for (double t : est)
      if (t >= 0.0 && (cleaned.empty() || t - cleaned.back() > 1e-3)) cleaned.push_back(t);
    cases.push_back({reference, annotate(cleaned, meter, k % 2)});
  }
  return cases;
}

void write_annotation(const std::string& path, const BeatAnnotation& a) {
  std::ofstream out(path);
  char line[64];
  for (size_t i = 0; i < a.times.size(); ++i) {
    std::snprintf(line, sizeof(line), "%.9f\t%d\n", a.times[i], a.positions[i]);
    out << line;
  }
}

// The same scores as shared/eval/score_beats.py, straight from mir_eval.
const char* const kMirEvalScript = R"(
import json, sys, warnings
import numpy as np, mir_eval
def load(p):
    d = np.loadtxt(p, ndmin=2)
    if d.size == 0:
        return np.zeros(0), np.zeros(0, int)
    return d[:, 0], np.round(d[:, 1]).astype(int)
out = []
for i in range(int(sys.argv[2])):
    rt, rp = load('%s/ref%d.beats' % (sys.argv[1], i))
    et, ep = load('%s/est%d.beats' % (sys.argv[1], i))
    for trim in (True, False):
        t = trim and len(mir_eval.beat.trim_beats(rt)) >= 2
        tr = (lambda x: mir_eval.beat.trim_beats(x)) if t else (lambda x: x)
        r, e = tr(rt), tr(et)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            f = mir_eval.beat.f_measure(r, e)
            c = mir_eval.beat.continuity(r, e)
            dbf = None
            if np.any(rp > 0) and np.any(ep > 0):
                rd, ed = tr(rt[rp == 1]), tr(et[ep == 1])
                dbf = mir_eval.beat.f_measure(rd, ed) if len(rd) else None
        out.append({'F': f, 'CMLc': c[0], 'CMLt': c[1], 'AMLc': c[2], 'AMLt': c[3], 'DbF': dbf})
json.dump(out, open(sys.argv[3], 'w'))
)";

TEST(BeatMetricsTest, AgreesWithMirEval) {
  if (test::run_command("/usr/bin/python3 -c 'import mir_eval, numpy'") != 0)
    GTEST_SKIP() << "python3-mir-eval is not installed (/usr/bin/python3 cannot import "
                    "mir_eval); apt-get install python3-mir-eval";
  test::TempDir dir;
  auto cases = agreement_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    write_annotation(dir.file("ref" + std::to_string(i) + ".beats"), cases[i].first);
    write_annotation(dir.file("est" + std::to_string(i) + ".beats"), cases[i].second);
  }
  std::ofstream(dir.file("score.py")) << kMirEvalScript;
  std::string log;
  ASSERT_EQ(test::run_command("/usr/bin/python3 " + dir.file("score.py") + " " + dir.path() + " " +
                                  std::to_string(cases.size()) + " " + dir.file("scores.json"),
                              &log),
            0)
      << log;
  std::ifstream in(dir.file("scores.json"));
  nlohmann::json expected = nlohmann::json::parse(in);
  ASSERT_EQ(expected.size(), 2 * cases.size());
  constexpr double kAgreement = 1e-6;
  for (size_t i = 0; i < cases.size(); ++i) {
    // Read back through load_beats so that the text round trip is the same on both sides.
    BeatAnnotation reference = load_beats(dir.file("ref" + std::to_string(i) + ".beats"));
    BeatAnnotation estimate = load_beats(dir.file("est" + std::to_string(i) + ".beats"));
    for (int trim = 0; trim < 2; ++trim) {
      const nlohmann::json& e = expected[2 * i + trim];
      TrackScores s = score_track(reference, estimate, trim == 0);
      SCOPED_TRACE("case " + std::to_string(i) + (trim == 0 ? " trimmed" : " untrimmed"));
      EXPECT_NEAR(s.f, e["F"].get<double>(), kAgreement);
      EXPECT_NEAR(s.continuity.cml_c, e["CMLc"].get<double>(), kAgreement);
      EXPECT_NEAR(s.continuity.cml_t, e["CMLt"].get<double>(), kAgreement);
      EXPECT_NEAR(s.continuity.aml_c, e["AMLc"].get<double>(), kAgreement);
      EXPECT_NEAR(s.continuity.aml_t, e["AMLt"].get<double>(), kAgreement);
      ASSERT_EQ(s.downbeat_f.has_value(), !e["DbF"].is_null());
      if (s.downbeat_f) {
        EXPECT_NEAR(*s.downbeat_f, e["DbF"].get<double>(), kAgreement);
      }
    }
  }
}

}  // namespace
}  // namespace beatfarm::analysis
