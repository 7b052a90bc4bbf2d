// Frame interpolation benchmark: drops frames from a ground-truth sequence and rebuilds them
// from the kept ones with the flow interpolator and with a cross-fade (and scores a third
// method's frames, e.g. FFmpeg's minterpolate, given as a file aligned with the ground truth).
// tools/bench_interp.sh makes the sequences and the minterpolate output.
//
//   bench_interp GT.rgb WxH GAP [OTHER.rgb] [--runs N] [--label NAME] [--other-name NAME]
//                [--other-ms MS_PER_FRAME] [--other-cpu-ms MS] [--threads N] [--write OURS.rgb]
//                [FlowOptions: --patch-size N
//                --patch-stride N --iterations N --finest-level N --no-occlusion --fallback DIFF
//                --search R]
//
// GT.rgb: raw rgb24 frames. Kept frames: 0, GAP+1, 2*(GAP+1), ...; the GAP frames between two
// kept ones are scored. OTHER.rgb: raw rgb24 frames where frame i stands for ground-truth frame
// i (its kept frames are scored too, as an alignment check: they should match almost exactly).
// Scores: PSNR and SSIM (Gaussian 11x11, sigma 1.5) on BT.601 luma, PSNR on RGB; means over the
// scored frames. Time: interpolate_flow per interpolated frame (both flows included), best of
// N runs: wall time with ATen's threads, wall and CPU time with one thread (CPU time is the
// steadier number on a shared machine).
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/frames.h"
#include "interp/flow_interp.h"

using namespace beatfarm;
using Clock = std::chrono::steady_clock;

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

namespace {

FrameStack read_raw(const std::string& path, int width, int height, int max_frames) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(str("cannot open ", path));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  size_t frame_bytes = static_cast<size_t>(width) * height * 3;
  int frames = static_cast<int>(bytes.size() / frame_bytes);
  if (max_frames > 0) frames = std::min(frames, max_frames);
  if (frames == 0) throw InputError(str(path, " holds no whole ", width, "x", height, " frame"));
  FrameStack stack(frames, height, width);
  std::copy(bytes.begin(), bytes.begin() + frame_bytes * frames, stack.rgb.begin());
  return stack;
}

Frame frame_of(const FrameStack& stack, int index) {
  Frame frame;
  frame.width = stack.width;
  frame.height = stack.height;
  frame.rgb.assign(stack.frame(index), stack.frame(index) + stack.frame_bytes());
  return frame;
}

std::vector<double> luma(const uint8_t* rgb, int pixels) {
  std::vector<double> y(pixels);
  for (int i = 0; i < pixels; ++i)
    y[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
  return y;
}

double psnr_from_mse(double mse) {
  return mse <= 1e-10 ? 100.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

double psnr_y(const uint8_t* a, const uint8_t* b, int pixels) {
  std::vector<double> ya = luma(a, pixels), yb = luma(b, pixels);
  double mse = 0;
  for (int i = 0; i < pixels; ++i) mse += (ya[i] - yb[i]) * (ya[i] - yb[i]);
  return psnr_from_mse(mse / pixels);
}

double psnr_rgb(const uint8_t* a, const uint8_t* b, int pixels) {
  double mse = 0;
  for (int i = 0; i < pixels * 3; ++i) mse += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return psnr_from_mse(mse / (pixels * 3.0));
}

// Separable Gaussian blur, 11 taps, sigma 1.5, edges repeated.
std::vector<double> blur(const std::vector<double>& in, int w, int h) {
  double taps[11], sum = 0;
  for (int k = 0; k < 11; ++k) sum += taps[k] = std::exp(-((k - 5) * (k - 5)) / (2 * 1.5 * 1.5));
  for (double& t : taps) t /= sum;
  std::vector<double> tmp(in.size()), out(in.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double acc = 0;
      for (int k = 0; k < 11; ++k) acc += taps[k] * in[y * w + std::clamp(x + k - 5, 0, w - 1)];
      tmp[y * w + x] = acc;
    }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double acc = 0;
      for (int k = 0; k < 11; ++k) acc += taps[k] * tmp[std::clamp(y + k - 5, 0, h - 1) * w + x];
      out[y * w + x] = acc;
    }
  return out;
}

// SSIM (Wang et al. 2004) on luma, mean over the picture.
double ssim_y(const uint8_t* a, const uint8_t* b, int w, int h) {
  int n = w * h;
  std::vector<double> x = luma(a, n), y = luma(b, n), xx(n), yy(n), xy(n);
  for (int i = 0; i < n; ++i) {
    xx[i] = x[i] * x[i];
    yy[i] = y[i] * y[i];
    xy[i] = x[i] * y[i];
  }
  std::vector<double> mx = blur(x, w, h), my = blur(y, w, h), sxx = blur(xx, w, h),
                      syy = blur(yy, w, h), sxy = blur(xy, w, h);
  const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
  double total = 0;
  for (int i = 0; i < n; ++i) {
    double vx = sxx[i] - mx[i] * mx[i], vy = syy[i] - my[i] * my[i], cv = sxy[i] - mx[i] * my[i];
    total += ((2 * mx[i] * my[i] + c1) * (2 * cv + c2)) /
             ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
  }
  return total / n;
}

struct Scores {
  double psnr_y = 0, psnr_rgb = 0, ssim = 0;
  int frames = 0;
  void add(const uint8_t* got, const uint8_t* truth, int w, int h) {
    psnr_y += ::psnr_y(got, truth, w * h);
    psnr_rgb += ::psnr_rgb(got, truth, w * h);
    ssim += ssim_y(got, truth, w, h);
    ++frames;
  }
  void print(const char* label, const char* method, double ms_per_frame, double ms_single,
             double cpu_ms_single) const {
    std::printf("%-14s %-13s %8.2f %9.2f %7.4f %10.2f %10.2f %10.2f\n", label, method,
                psnr_y / frames, psnr_rgb / frames, ssim / frames, ms_per_frame, ms_single,
                cpu_ms_single);
  }
};

// Runs the flow interpolator over every kept pair; returns seconds, fills `out` (aligned with gt).
double run_flow(const FrameStack& gt, int gap, int pairs, const interp::FlowOptions& options,
                FrameStack& out) {
  auto start = Clock::now();
  for (int p = 0; p < pairs; ++p) {
    int a = p * (gap + 1), b = a + gap + 1;
    FrameStack mid = interp::interpolate_flow(frame_of(gt, a), frame_of(gt, b), gap, options);
    for (int k = 0; k < gap; ++k)
      std::copy(mid.frame(k), mid.frame(k) + gt.frame_bytes(), out.frame(a + 1 + k));
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int runs = 3;
  std::string label = "sequence";
  std::string other_name = "other";
  double other_ms = 0, other_cpu_ms = 0;  // the other method's time per frame, measured outside
  std::string write_path;                 // our frames (kept ones copied), raw rgb24, to look at
  interp::FlowOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc)
      runs = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--label" && i + 1 < argc)
      label = argv[++i];
    else if (arg == "--other-name" && i + 1 < argc)
      other_name = argv[++i];
    else if (arg == "--other-ms" && i + 1 < argc)
      other_ms = std::atof(argv[++i]);
    else if (arg == "--other-cpu-ms" && i + 1 < argc)
      other_cpu_ms = std::atof(argv[++i]);
    else if (arg == "--write" && i + 1 < argc)
      write_path = argv[++i];
    else if (arg == "--threads" && i + 1 < argc)
      at::set_num_threads(std::max(1, std::atoi(argv[++i])));
    else if (arg == "--patch-size" && i + 1 < argc)
      options.patch_size = std::atoi(argv[++i]);
    else if (arg == "--patch-stride" && i + 1 < argc)
      options.patch_stride = std::atoi(argv[++i]);
    else if (arg == "--iterations" && i + 1 < argc)
      options.patch_iterations = std::atoi(argv[++i]);
    else if (arg == "--finest-level" && i + 1 < argc)
      options.finest_level = std::atoi(argv[++i]);
    else if (arg == "--fallback" && i + 1 < argc)
      options.fallback_color_diff = std::atof(argv[++i]);
    else if (arg == "--no-occlusion")
      options.occlusion_aware = false;
    else if (arg == "--search" && i + 1 < argc)
      options.coarse_search_radius = std::atoi(argv[++i]);
    else
      positional.push_back(arg);
  }
  if (positional.size() < 3) {
    std::fprintf(
        stderr,
        "usage: bench_interp GT.rgb WxH GAP [OTHER.rgb] [--runs N] [--label NAME] "
        "[--other-name NAME] [--other-ms MS] [--write OURS.rgb] [flow options, see source]\n");
    return 2;
  }
  try {
    int width = 0, height = 0;
    if (std::sscanf(positional[1].c_str(), "%dx%d", &width, &height) != 2 || width <= 0 ||
        height <= 0)
      throw InputError(str("size '", positional[1], "' is not WxH"));
    int gap = std::atoi(positional[2].c_str());
    if (gap < 1) throw InputError(str("gap '", positional[2], "' must be >= 1"));
    FrameStack gt = read_raw(positional[0], width, height, 0);
    int pairs = (gt.count - 1) / (gap + 1);
    if (pairs < 1) throw InputError(str(positional[0], ": too few frames for gap ", gap));
    int scored_end = pairs * (gap + 1);  // last kept frame

    FrameStack ours(gt.count, height, width);
    double best_all = 1e30, best_single = 1e30, best_cpu = 1e30;
    int threads = at::get_num_threads();
    for (int r = 0; r < runs; ++r)
      best_all = std::min(best_all, run_flow(gt, gap, pairs, options, ours));
    at::set_num_threads(1);
    for (int r = 0; r < runs; ++r) {
      double cpu_start = process_cpu_seconds();
      best_single = std::min(best_single, run_flow(gt, gap, pairs, options, ours));
      best_cpu = std::min(best_cpu, process_cpu_seconds() - cpu_start);
    }
    at::set_num_threads(threads);
    int interpolated = pairs * gap;

    Scores flow_scores, fade_scores, other_scores;
    double other_kept_psnr = 0;
    int other_kept = 0;
    FrameStack other;
    if (positional.size() > 3) other = read_raw(positional[3], width, height, gt.count);
    if (positional.size() > 3 && other.count < scored_end + 1)
      throw InputError(
          str(positional[3], " holds ", other.count, " frames, need ", scored_end + 1));
    for (int p = 0; p < pairs; ++p) {
      int a = p * (gap + 1), b = a + gap + 1;
      FrameStack fade = interp::interpolate_crossfade(frame_of(gt, a), frame_of(gt, b), gap);
      for (int k = 0; k < gap; ++k) {
        int i = a + 1 + k;
        flow_scores.add(ours.frame(i), gt.frame(i), width, height);
        fade_scores.add(fade.frame(k), gt.frame(i), width, height);
        if (other.count > 0) other_scores.add(other.frame(i), gt.frame(i), width, height);
      }
      if (other.count > 0) {
        other_kept_psnr += psnr_y(other.frame(a), gt.frame(a), width * height);
        ++other_kept;
      }
    }
    if (!write_path.empty()) {
      for (int p = 0; p <= pairs; ++p)
        std::copy(gt.frame(p * (gap + 1)), gt.frame(p * (gap + 1)) + gt.frame_bytes(),
                  ours.frame(p * (gap + 1)));
      std::ofstream out(write_path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(ours.rgb.data()),
                static_cast<std::streamsize>(ours.frame_bytes() * (scored_end + 1)));
      if (!out) throw Error(str("cannot write ", write_path));
    }
    std::printf("# %s: %dx%d, %d frames, gap %d: %d pairs, %d interpolated frames; %d threads\n",
                label.c_str(), width, height, gt.count, gap, pairs, interpolated, threads);
    std::printf("%-14s %-13s %8s %9s %7s %10s %10s %10s\n", "sequence", "method", "PSNR-Y",
                "PSNR-RGB", "SSIM-Y", "ms/frame", "ms/frame@1", "cpu_ms@1");
    flow_scores.print(label.c_str(), "flow", 1000.0 * best_all / interpolated,
                      1000.0 * best_single / interpolated, 1000.0 * best_cpu / interpolated);
    fade_scores.print(label.c_str(), "crossfade", 0, 0, 0);
    if (other.count > 0) {
      other_scores.print(label.c_str(), other_name.c_str(), other_ms, other_ms, other_cpu_ms);
      std::printf("# %s: PSNR-Y of its kept frames vs ground truth (alignment check): %.2f\n",
                  other_name.c_str(), other_kept_psnr / other_kept);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_interp: %s\n", e.what());
    return 2;
  }
  return 0;
}
