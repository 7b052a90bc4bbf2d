// Pins the dev-set scores of the beat analysis just below what it reaches: the synthesized
// tracks from tests/data/beats (ours), and the research-only real clips from
// ../shared/eval/beats/real when that folder is present.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "analysis/beat_file.h"
#include "analysis/beat_metrics.h"
#include "test_util.h"

namespace beatfarm::analysis {
namespace {

struct Pinned {
  const char* name;
  double min_f;         // beat F-measure, 5 s trimmed (untrimmed for short clips)
  double min_downbeat;  // downbeat F-measure; < 0: not scored
  int meter;            // expected meter; 0: not checked
};

TrackScores score_file(const std::string& audio, const std::string& reference, BeatGrid* grid) {
  *grid = analyze_file(audio);
  BeatAnnotation estimate;
  estimate.times = grid->beats;
  estimate.positions = grid->positions;
  return score_track(load_beats(reference), estimate);
}

void check(const std::string& folder, const std::string& extension, const Pinned& pin) {
  SCOPED_TRACE(pin.name);
  BeatGrid grid;
  TrackScores s =
      score_file(folder + "/" + pin.name + extension, folder + "/" + pin.name + ".beats", &grid);
  EXPECT_GE(s.f, pin.min_f);
  if (pin.min_downbeat >= 0.0) {
    ASSERT_TRUE(s.downbeat_f.has_value());
    EXPECT_GE(*s.downbeat_f, pin.min_downbeat);
  }
  if (pin.meter) {
    EXPECT_EQ(grid.meter, pin.meter);
  }
}

class SynthRegressionTest : public ::testing::TestWithParam<Pinned> {};

TEST_P(SynthRegressionTest, ScoresStayAbovePins) {
  check(test::data_path("beats"), ".ogg", GetParam());
}

// Measured: F 1.000 / 0.993 / 1.000 / 1.000 / 0.985 / 1.000, DbF 1.000 on all six.
INSTANTIATE_TEST_SUITE_P(
    DevSet, SynthRegressionTest,
    ::testing::Values(Pinned{"hiphop_90_swing", 0.98, 0.95, 4}, Pinned{"house_126", 0.97, 0.95, 4},
                      Pinned{"pad_intro_110", 0.98, 0.95, 4}, Pinned{"pop_rock_120", 0.98, 0.95, 4},
                      Pinned{"tempo_change_100_128", 0.96, 0.95, 4},
                      Pinned{"waltz_90", 0.98, 0.95, 3}),
    [](const ::testing::TestParamInfo<Pinned>& info) { return std::string(info.param.name); });

class RealRegressionTest : public ::testing::TestWithParam<Pinned> {};

TEST_P(RealRegressionTest, ScoresStayAbovePins) {
  std::string folder = test::shared_path("eval/beats/real");
  if (folder.empty() || !std::filesystem::is_directory(folder))
    GTEST_SKIP() << "../shared/eval/beats/real is absent (research-only clips, not in the repo)";
  check(folder, ".flac", GetParam());
}

// Measured: ballroom F 0.971 DbF 0.957, gtzan F 0.889 DbF 0.889, madmom (untrimmed) F 1.0.
INSTANTIATE_TEST_SUITE_P(DevSet, RealRegressionTest,
                         ::testing::Values(Pinned{"ballroom_media105901", 0.95, 0.93, 3},
                                           Pinned{"gtzan_country00000", 0.87, 0.87, 4},
                                           Pinned{"madmom_sample", 0.95, -1.0, 0}),
                         [](const ::testing::TestParamInfo<Pinned>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace beatfarm::analysis
