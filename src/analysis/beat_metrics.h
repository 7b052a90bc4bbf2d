// Beat-tracking evaluation metrics, following mir_eval 0.7 (mir_eval.beat) exactly:
// F-measure, the continuity family (CMLc/CMLt/AMLc/AMLt) and the downbeat F-measure
// used by shared/eval/score_beats.py.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace beatfarm::analysis {

// A beat annotation: times (increasing) and bar positions (1 = downbeat, 0 = unknown).
struct BeatAnnotation {
  std::vector<double> times;
  std::vector<int> positions;  // same length as times
  // True when at least one position is non-zero (score_beats.py: otherwise no downbeats).
  bool has_positions() const;
};

// Reads a .beats file the way score_beats.py does: one beat per line, time and optional
// position, whitespace or comma separated; blank and '#' lines skipped; sorted (stable),
// beats closer than 1e-9 s to the previous one dropped, negative times dropped. Throws
// InputError naming the file when it cannot be read or a line does not parse.
BeatAnnotation load_beats(const std::string& path);

// mir_eval.beat.trim_beats: the beats at or after min_time.
std::vector<double> trim_beats(const std::vector<double>& beats, double min_time = 5.0);

// Size of a maximum matching of reference and estimated times with |r - e| <= window
// (mir_eval.util.match_events).
size_t match_events(const std::vector<double>& reference, const std::vector<double>& estimate,
                    double window);

// mir_eval.beat.f_measure (0 when either side is empty).
double f_measure(const std::vector<double>& reference, const std::vector<double>& estimate,
                 double window = 0.07);

struct ContinuityScores {
  double cml_c = 0.0;
  double cml_t = 0.0;
  double aml_c = 0.0;
  double aml_t = 0.0;
};

// mir_eval.beat.continuity with its default thresholds (0 when either side has < 2 beats).
ContinuityScores continuity(const std::vector<double>& reference,
                            const std::vector<double>& estimate, double phase_threshold = 0.175,
                            double period_threshold = 0.175);

struct TrackScores {
  double f = 0.0;
  ContinuityScores continuity;
  std::optional<double> downbeat_f;  // only when both sides carry positions
  size_t reference_count = 0;        // after trimming
  size_t estimate_count = 0;
  bool trimmed = true;  // false when scored untrimmed (short clip or trim disabled)
};

// One track as score_beats.py scores it: beats before min_time removed from both sides
// unless trim is false or the reference keeps fewer than 2 beats after trimming.
TrackScores score_track(const BeatAnnotation& reference, const BeatAnnotation& estimate,
                        bool trim = true, double min_time = 5.0, double window = 0.07);

}  // namespace beatfarm::analysis
