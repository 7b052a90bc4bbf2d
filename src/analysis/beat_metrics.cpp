#include "analysis/beat_metrics.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>

#include "common/error.h"

namespace beatfarm::analysis {
namespace {

// Beats closer than this to the previous one are duplicates (score_beats.py's rule).
constexpr double kDuplicateSeconds = 1e-9;

// mir_eval.beat._get_reference_beat_variations: original, off-beat, double tempo,
// half tempo (odd beats), half tempo (even beats).
std::vector<std::vector<double>> reference_variations(const std::vector<double>& reference) {
  size_t n = reference.size();
  // np.interp at indices 0, 0.5, ..., n - 1.
  std::vector<double> doubled;
  for (size_t k = 0; k + 1 < 2 * n; ++k) {
    size_t i = k / 2;
    doubled.push_back(k % 2 == 0 ? reference[i]
                                 : reference[i] + 0.5 * (reference[i + 1] - reference[i]));
  }
  std::vector<double> off_beat, half_odd, half_even;
  for (size_t k = 1; k < doubled.size(); k += 2) off_beat.push_back(doubled[k]);
  for (size_t i = 0; i < n; ++i) (i % 2 == 0 ? half_odd : half_even).push_back(reference[i]);
  return {reference, off_beat, doubled, half_odd, half_even};
}

// One variation of mir_eval.beat.continuity: (continuous, total) accuracy.
std::pair<double, double> continuity_against(const std::vector<double>& reference,
                                             const std::vector<double>& estimate,
                                             double phase_threshold, double period_threshold) {
  const double inf = std::numeric_limits<double>::infinity();
  size_t n_ref = reference.size(), n_est = estimate.size();
  size_t n_annotations = std::max(n_ref, n_est);
  std::vector<char> used(n_annotations, 0);
  std::vector<char> success(n_annotations, 0);
  for (size_t m = 0; m < n_est; ++m) {
    // np.argmin: the first of equal minima.
    size_t nearest = 0;
    double min_difference = std::abs(estimate[m] - reference[0]);
    for (size_t i = 1; i < n_ref; ++i) {
      double d = std::abs(estimate[m] - reference[i]);
      if (d < min_difference) {
        min_difference = d;
        nearest = i;
      }
    }
    if (used[nearest]) continue;
    double phase = 0.0, period = 0.0;
    if (m == 0 || nearest == 0) {
      // Look forward; at the last annotation use the previous interval (numpy's index -1
      // wraps, which only matters for a one-beat variation, where it gives 0).
      double reference_interval;
      if (nearest + 1 < n_ref)
        reference_interval = reference[nearest + 1] - reference[nearest];
      else
        reference_interval = reference[nearest] - reference[(nearest + n_ref - 1) % n_ref];
      if (reference_interval == 0.0)
        phase = min_difference == 0.0 ? 1.0 : inf;
      else
        phase = std::abs(min_difference / reference_interval);
      double estimated_interval =
          m + 1 < n_est ? estimate[m + 1] - estimate[m] : estimate[m] - estimate[m - 1];
      if (reference_interval == 0.0)
        period = estimated_interval == 0.0 ? 0.0 : inf;
      else
        period = std::abs(1.0 - estimated_interval / reference_interval);
    } else {
      double reference_interval = reference[nearest] - reference[nearest - 1];
      phase = std::abs(min_difference / reference_interval);
      double estimated_interval = estimate[m] - estimate[m - 1];
      period = std::abs(1.0 - estimated_interval / reference_interval);
    }
    if (phase < phase_threshold && period < period_threshold) {
      used[nearest] = 1;
      success[m] = 1;
    }
  }
  // Longest run of successes, and their total, over all n_annotations slots.
  size_t longest = 0, run = 0, total = 0;
  for (char s : success) {
    run = s ? run + 1 : 0;
    longest = std::max(longest, run);
    total += s ? 1 : 0;
  }
  return {double(longest) / double(n_annotations), double(total) / double(n_annotations)};
}

}  // namespace

bool BeatAnnotation::has_positions() const {
  return std::any_of(positions.begin(), positions.end(), [](int p) { return p > 0; });
}

BeatAnnotation load_beats(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(str("cannot read beats file ", path));
  std::vector<std::pair<double, int>> beats;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    size_t first = line.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || line[first] == '#') continue;
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream fields(line);
    double time = 0.0, position = 0.0;
    if (!(fields >> time)) throw InputError(str(path, ":", line_number, ": not a beat time"));
    if (!(fields >> position)) position = 0.0;
    beats.emplace_back(time, int(std::nearbyint(position)));
  }
  std::stable_sort(beats.begin(), beats.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  BeatAnnotation annotation;
  for (size_t i = 0; i < beats.size(); ++i) {
    if (i > 0 && !(beats[i].first - beats[i - 1].first > kDuplicateSeconds)) continue;
    if (!(beats[i].first >= 0.0)) continue;
    annotation.times.push_back(beats[i].first);
    annotation.positions.push_back(beats[i].second);
  }
  return annotation;
}

std::vector<double> trim_beats(const std::vector<double>& beats, double min_time) {
  std::vector<double> kept;
  for (double b : beats)
    if (b >= min_time) kept.push_back(b);
  return kept;
}

size_t match_events(const std::vector<double>& reference, const std::vector<double>& estimate,
                    double window) {
  // Bipartite graph est -> refs within the window (the same comparisons as mir_eval's
  // searchsorted on est -+ window), then Kuhn's augmenting paths: the size of a maximum
  // matching is unique, whatever algorithm finds it.
  std::vector<size_t> order(reference.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return reference[a] < reference[b]; });
  std::vector<double> sorted(reference.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = reference[order[i]];
  std::vector<std::vector<size_t>> graph(estimate.size());
  for (size_t j = 0; j < estimate.size(); ++j) {
    auto lo = std::lower_bound(sorted.begin(), sorted.end(), estimate[j] - window);
    auto hi = std::upper_bound(sorted.begin(), sorted.end(), estimate[j] + window);
    for (auto it = lo; it < hi; ++it) graph[j].push_back(order[size_t(it - sorted.begin())]);
  }
  const size_t none = size_t(-1);
  std::vector<size_t> match_of_ref(reference.size(), none);
  std::vector<size_t> visited(reference.size(), none);
  // Iterative DFS would be safer for huge inputs; the paths here are short (each estimate
  // reaches a handful of neighbouring references), so recursion depth stays small.
  std::function<bool(size_t, size_t)> augment = [&](size_t j, size_t round) {
    for (size_t r : graph[j]) {
      if (visited[r] == round) continue;
      visited[r] = round;
      if (match_of_ref[r] == none || augment(match_of_ref[r], round)) {
        match_of_ref[r] = j;
        return true;
      }
    }
    return false;
  };
  size_t matched = 0;
  for (size_t j = 0; j < estimate.size(); ++j)
    if (augment(j, j)) ++matched;
  return matched;
}

double f_measure(const std::vector<double>& reference, const std::vector<double>& estimate,
                 double window) {
  if (reference.empty() || estimate.empty()) return 0.0;
  double matched = double(match_events(reference, estimate, window));
  double precision = matched / double(estimate.size());
  double recall = matched / double(reference.size());
  if (precision == 0.0 && recall == 0.0) return 0.0;
  return 2.0 * precision * recall / (precision + recall);
}

ContinuityScores continuity(const std::vector<double>& reference,
                            const std::vector<double>& estimate, double phase_threshold,
                            double period_threshold) {
  ContinuityScores scores;
  if (reference.size() <= 1 || estimate.size() <= 1) return scores;
  bool first = true;
  for (const std::vector<double>& variation : reference_variations(reference)) {
    auto [continuous, total] =
        continuity_against(variation, estimate, phase_threshold, period_threshold);
    if (first) {
      scores.cml_c = continuous;
      scores.cml_t = total;
      scores.aml_c = continuous;
      scores.aml_t = total;
      first = false;
    }
    scores.aml_c = std::max(scores.aml_c, continuous);
    scores.aml_t = std::max(scores.aml_t, total);
  }
  return scores;
}

TrackScores score_track(const BeatAnnotation& reference, const BeatAnnotation& estimate, bool trim,
                        double min_time, double window) {
  TrackScores scores;
  if (trim && trim_beats(reference.times, min_time).size() < 2) trim = false;
  scores.trimmed = trim;
  auto cut = [&](const std::vector<double>& beats) {
    return trim ? trim_beats(beats, min_time) : beats;
  };
  std::vector<double> r = cut(reference.times), e = cut(estimate.times);
  scores.reference_count = r.size();
  scores.estimate_count = e.size();
  scores.f = f_measure(r, e, window);
  scores.continuity = continuity(r, e);
  if (reference.has_positions() && estimate.has_positions()) {
    auto downbeats = [](const BeatAnnotation& a) {
      std::vector<double> d;
      for (size_t i = 0; i < a.times.size(); ++i)
        if (a.positions[i] == 1) d.push_back(a.times[i]);
      return d;
    };
    std::vector<double> rd = cut(downbeats(reference)), ed = cut(downbeats(estimate));
    if (!rd.empty()) scores.downbeat_f = f_measure(rd, ed, window);
  }
  return scores;
}

}  // namespace beatfarm::analysis
