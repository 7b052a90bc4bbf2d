// Runs the beat analysis over a folder of audio with .beats references and prints per-track
// and mean F-measure, CMLt, AMLt and downbeat F (mir_eval's definitions, as
// shared/eval/score_beats.py computes them).
//
//   beat_eval REF_DIR [--write-estimates DIR] [--estimates DIR] [--no-trim]
//
// --estimates DIR scores existing DIR/<name>.beats files instead of running the analysis
// (a missing one scores 0), so other trackers can be scored with the same code.
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "analysis/beat_file.h"
#include "analysis/beat_metrics.h"
#include "common/error.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace beatfarm;
using namespace beatfarm::analysis;

namespace {

const char* const kAudioExtensions[] = {".flac", ".wav", ".mp3", ".ogg", ".m4a"};

std::string find_audio(const fs::path& reference) {
  for (const char* ext : kAudioExtensions) {
    fs::path candidate = reference;
    candidate.replace_extension(ext);
    if (fs::is_regular_file(candidate)) return candidate.string();
  }
  return "";
}

std::string format(std::optional<double> v) {
  if (!v) return "     -";
  char text[16];
  std::snprintf(text, sizeof(text), "%6.3f", *v);
  return text;
}

int run(int argc, char** argv) {
  std::string reference_dir, estimates_dir, write_dir;
  double min_time = 5.0, window = 0.07;
  po::options_description options("beat_eval REF_DIR [options]");
  options.add_options()("help", "this text")(
      "estimates", po::value(&estimates_dir),
      "score DIR/<name>.beats instead of running the analysis")(
      "write-estimates", po::value(&write_dir), "write our estimates to DIR/<name>.beats")(
      "no-trim", "keep beats before --min-beat-time")(
      "min-beat-time", po::value(&min_time)->default_value(5.0), "trim point (s)")(
      "window", po::value(&window)->default_value(0.07), "F-measure window (s)");
  po::options_description hidden;
  hidden.add_options()("reference-dir", po::value(&reference_dir));
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("reference-dir", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "beat_eval: " << e.what() << "\n" << options;
    return kExitBadInput;
  }
  if (vm.count("help") || reference_dir.empty()) {
    std::cout << options;
    return vm.count("help") ? kExitOk : kExitBadInput;
  }
  bool trim = !vm.count("no-trim");
  if (!fs::is_directory(reference_dir)) {
    std::cerr << "beat_eval: reference folder " << reference_dir << " does not exist\n";
    return kExitBadInput;
  }
  if (!write_dir.empty()) fs::create_directories(write_dir);

  std::vector<fs::path> references;
  for (const auto& entry : fs::recursive_directory_iterator(reference_dir))
    if (entry.is_regular_file() && entry.path().extension() == ".beats")
      references.push_back(entry.path());
  std::sort(references.begin(), references.end());
  if (references.empty()) {
    std::cerr << "beat_eval: no .beats files under " << reference_dir << "\n";
    return kExitBadInput;
  }

  std::printf("beat_eval | %s | F window +-%g ms\n",
              trim ? ("beats < " + std::to_string(min_time).substr(0, 4) + " s trimmed").c_str()
                   : "untrimmed",
              window * 1000.0);
  std::printf("%-34s %5s %5s %6s %6s %6s %6s %7s  flags\n", "track", "n_ref", "n_est", "F", "CMLt",
              "AMLt", "DbF", "run_s");
  double sum_f = 0.0, sum_cmlt = 0.0, sum_amlt = 0.0, sum_dbf = 0.0;
  int tracks = 0, downbeat_tracks = 0;
  for (const fs::path& reference_path : references) {
    std::string name = fs::relative(reference_path, reference_dir).replace_extension().string();
    BeatAnnotation reference = load_beats(reference_path.string());
    BeatAnnotation estimate;
    std::string flags;
    double seconds = -1.0;
    if (!estimates_dir.empty()) {
      fs::path path = fs::path(estimates_dir) / (reference_path.stem().string() + ".beats");
      if (fs::is_regular_file(path))
        estimate = load_beats(path.string());
      else
        flags += "MISSING ";
    } else {
      std::string audio = find_audio(reference_path);
      if (audio.empty()) {
        flags += "NOAUDIO ";
      } else {
        auto start = std::chrono::steady_clock::now();
        try {
          BeatGrid grid = analyze_file(audio);
          seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (!write_dir.empty())
            write_beats(
                grid, (fs::path(write_dir) / (reference_path.stem().string() + ".beats")).string());
          estimate.times = grid.beats;
          estimate.positions = grid.positions;
        } catch (const std::exception& e) {
          std::cerr << "beat_eval: " << name << ": " << e.what() << "\n";
          flags += "RUNFAIL ";
        }
      }
    }
    TrackScores s = score_track(reference, estimate, trim, min_time, window);
    if (trim && !s.trimmed) flags += "U";
    char run_s[16] = "      -";
    if (seconds >= 0.0) std::snprintf(run_s, sizeof(run_s), "%7.2f", seconds);
    std::printf("%-34s %5zu %5zu %s %s %s %s %s  %s\n", name.c_str(), s.reference_count,
                s.estimate_count, format(s.f).c_str(), format(s.continuity.cml_t).c_str(),
                format(s.continuity.aml_t).c_str(), format(s.downbeat_f).c_str(), run_s,
                flags.c_str());
    sum_f += s.f;
    sum_cmlt += s.continuity.cml_t;
    sum_amlt += s.continuity.aml_t;
    ++tracks;
    if (s.downbeat_f) {
      sum_dbf += *s.downbeat_f;
      ++downbeat_tracks;
    }
  }
  std::optional<double> mean_dbf;
  if (downbeat_tracks) mean_dbf = sum_dbf / downbeat_tracks;
  std::string label = "MEAN (" + std::to_string(tracks) + " tracks)";
  std::printf("%-34s %5s %5s %s %s %s %s   (DbF over %d tracks)\n", label.c_str(), "", "",
              format(sum_f / tracks).c_str(), format(sum_cmlt / tracks).c_str(),
              format(sum_amlt / tracks).c_str(), format(mean_dbf).c_str(), downbeat_tracks);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const InputError& e) {
    std::cerr << "beat_eval: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "beat_eval: " << e.what() << "\n";
    return kExitFailure;
  }
}
