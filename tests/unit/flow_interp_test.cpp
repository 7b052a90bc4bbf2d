// The weight-free interpolator: flow accuracy on known shifts, interpolation quality against a
// cross-fade, and the edge cases (identical frames, tiny and odd sizes, counts 0 and 1, bad
// input).
#include "interp/flow_interp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"

namespace beatfarm::interp {
namespace {

// A smooth, non-periodic colour texture sampled at (x - shift_x, y - shift_y): the same
// picture moved by (shift_x, shift_y), exactly, also for sub-pixel shifts.
Frame textured(int width, int height, float shift_x = 0.0f, float shift_y = 0.0f) {
  // Incommensurate frequencies and directions, so that no patch is ambiguous.
  struct Wave {
    float fx, fy, phase, amplitude;
  };
  const Wave waves[] = {{0.21f, 0.07f, 0.3f, 40.0f},
                        {-0.05f, 0.23f, 1.1f, 35.0f},
                        {0.13f, -0.17f, 2.0f, 30.0f},
                        {0.37f, 0.31f, 0.7f, 15.0f},
                        {-0.29f, 0.11f, 2.9f, 15.0f}};
  Frame frame;
  frame.width = width;
  frame.height = height;
  frame.rgb.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      float sx = x - shift_x, sy = y - shift_y;
      for (int c = 0; c < 3; ++c) {
        float value = 128.0f;
        for (int k = 0; k < 5; ++k) {
          const Wave& w = waves[k];
          value += w.amplitude * std::sin(w.fx * sx + w.fy * sy + w.phase + 0.9f * c * (k + 1));
        }
        frame.rgb[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp(value + 0.5f, 0.0f, 255.0f));
      }
    }
  }
  return frame;
}

Frame frame_from(const FrameStack& stack, int index) {
  Frame frame;
  frame.width = stack.width;
  frame.height = stack.height;
  frame.rgb.assign(stack.frame(index), stack.frame(index) + stack.frame_bytes());
  return frame;
}

// PSNR over the pixels at least `margin` from the border (RGB).
double psnr(const Frame& a, const Frame& b, int margin = 0) {
  double sum = 0;
  size_t n = 0;
  for (int y = margin; y < a.height - margin; ++y)
    for (int x = margin; x < a.width - margin; ++x)
      for (int c = 0; c < 3; ++c) {
        size_t i = (static_cast<size_t>(y) * a.width + x) * 3 + c;
        double d = double(a.rgb[i]) - b.rgb[i];
        sum += d * d;
        ++n;
      }
  double mse = sum / n;
  return mse < 1e-12 ? 100.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

// The `band` leftmost and `band` rightmost columns side by side.
Frame side_columns(const Frame& frame, int band) {
  Frame out;
  out.width = 2 * band;
  out.height = frame.height;
  for (int y = 0; y < frame.height; ++y)
    for (int k = 0; k < 2 * band; ++k) {
      int x = k < band ? k : frame.width - 2 * band + k;
      for (int c = 0; c < 3; ++c)
        out.rgb.push_back(frame.rgb[(static_cast<size_t>(y) * frame.width + x) * 3 + c]);
    }
  return out;
}

// Mean flow error against a constant (dx, dy) over pixels at least `margin` from the border.
double mean_flow_error(const FlowField& flow, float dx, float dy, int margin) {
  double sum = 0;
  int n = 0;
  for (int y = margin; y < flow.height - margin; ++y)
    for (int x = margin; x < flow.width - margin; ++x) {
      sum += std::hypot(flow.dx(y, x) - dx, flow.dy(y, x) - dy);
      ++n;
    }
  return sum / n;
}

TEST(FlowInterp, IntegerShiftGivesThatFlow) {
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 3.0f, -2.0f);  // to(x) = from(x - d): from(x) moves to x + d
  FlowOptions full;
  full.finest_level = 0;
  EXPECT_LT(mean_flow_error(estimate_flow(from, to, full), 3.0f, -2.0f, 8), 0.1);
  // Default options: estimated at quarter size and upsampled.
  EXPECT_LT(mean_flow_error(estimate_flow(from, to), 3.0f, -2.0f, 8), 0.25);
  // The other way round.
  EXPECT_LT(mean_flow_error(estimate_flow(to, from, full), -3.0f, 2.0f, 8), 0.1);
}

TEST(FlowInterp, SubPixelShiftGivesThatFlow) {
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 1.5f, 0.75f);
  FlowOptions full;
  full.finest_level = 0;
  EXPECT_LT(mean_flow_error(estimate_flow(from, to, full), 1.5f, 0.75f, 8), 0.1);
  EXPECT_LT(mean_flow_error(estimate_flow(from, to), 1.5f, 0.75f, 8), 0.25);
}

TEST(FlowInterp, LargerShiftFoundCoarseToFine) {
  // 12 px: more than a patch, so only the pyramid finds it.
  Frame from = textured(128, 96);
  Frame to = textured(128, 96, 12.0f, 5.0f);
  EXPECT_LT(mean_flow_error(estimate_flow(from, to), 12.0f, 5.0f, 16), 0.3);
}

TEST(FlowInterp, WarpWithTrueFlowRecoversSource) {
  Frame from = textured(64, 48);
  Frame to = textured(64, 48, 2.5f, 1.0f);
  FlowField flow(48, 64);
  for (size_t i = 0; i < flow.uv.size(); i += 2) {
    flow.uv[i] = 2.5f;
    flow.uv[i + 1] = 1.0f;
  }
  // from(x) = to(x + d), up to bilinear interpolation of the texture.
  EXPECT_GT(psnr(warp_backward(to, flow), from, 4), 35.0);
  EXPECT_LT(psnr(to, from, 4), 25.0);  // the check above is not trivial
}

TEST(FlowInterp, ConsistencyErrorSmallInsideLargeWhereMotionLeavesPicture) {
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 4.0f, 0.0f);
  FlowOptions full;
  full.finest_level = 0;
  FlowField forward = estimate_flow(from, to, full);
  FlowField backward = estimate_flow(to, from, full);
  std::vector<float> err = consistency_error(forward, backward);
  double inside = 0;
  int n = 0;
  for (int y = 8; y < 56; ++y)
    for (int x = 8; x < 80; ++x, ++n) inside += err[y * 96 + x];
  EXPECT_LT(inside / n, 0.2);
  // The last columns move out of the picture: no match in `to`.
  for (int y = 0; y < 64; ++y) EXPECT_GT(err[y * 96 + 95], 100.0f) << "row " << y;
}

TEST(FlowInterp, MidpointOfTranslationBeatsCrossfade) {
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 6.0f, 2.0f);
  Frame truth = textured(96, 64, 3.0f, 1.0f);
  FrameStack flow = interpolate_flow(from, to, 1);
  FrameStack fade = interpolate_crossfade(from, to, 1);
  double flow_psnr = psnr(frame_from(flow, 0), truth, 4);
  double fade_psnr = psnr(frame_from(fade, 0), truth, 4);
  EXPECT_GT(flow_psnr, fade_psnr + 8.0)
      << "flow " << flow_psnr << " dB, cross-fade " << fade_psnr << " dB";
  EXPECT_GT(flow_psnr, 32.0);
}

TEST(FlowInterp, ThreeFramesFollowTheMotion) {
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 8.0f, 0.0f);
  FrameStack frames = interpolate_flow(from, to, 3);
  ASSERT_EQ(frames.count, 3);
  for (int k = 0; k < 3; ++k) {
    Frame truth = textured(96, 64, 2.0f * (k + 1), 0.0f);  // t = 1/4, 2/4, 3/4
    EXPECT_GT(psnr(frame_from(frames, k), truth, 6), 30.0) << "frame " << k;
  }
}

TEST(FlowInterp, ContentEnteringAtTheBorderComesFromTheFrameThatHasIt) {
  // A pan by 12 px: at t = 0.5 the leftmost 6 columns show content that only `to` has
  // (from's sample lies outside the picture) and the rightmost 6 content only `from` has.
  Frame from = textured(96, 64);
  Frame to = textured(96, 64, 12.0f, 0.0f);
  Frame truth = textured(96, 64, 6.0f, 0.0f);
  auto border_psnr = [&](const Frame& got) {
    return psnr(side_columns(got, 6), side_columns(truth, 6));
  };
  FlowOptions plain;
  plain.occlusion_aware = false;
  double aware = border_psnr(frame_from(interpolate_flow(from, to, 1), 0));
  double unaware = border_psnr(frame_from(interpolate_flow(from, to, 1, plain), 0));
  EXPECT_GT(aware, 28.0);
  EXPECT_GT(aware, unaware + 5.0) << "occlusion-aware " << aware << " dB, plain " << unaware;
}

TEST(FlowInterp, IdenticalFramesGiveTheFrame) {
  Frame frame = textured(40, 30);
  FrameStack frames = interpolate_flow(frame, frame, 3);
  ASSERT_EQ(frames.count, 3);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(frame_from(frames, k).rgb, frame.rgb) << "frame " << k;
}

TEST(FlowInterp, EndpointsApproachTheirFrames) {
  Frame from = textured(64, 48);
  Frame to = textured(64, 48, 5.0f, -3.0f);
  FlowField forward = estimate_flow(from, to);
  FlowField backward = estimate_flow(to, from);
  Frame near_from = synthesize_frame(from, to, forward, backward, 0.02f);
  Frame near_to = synthesize_frame(from, to, forward, backward, 0.98f);
  EXPECT_GT(psnr(near_from, from), 35.0);
  EXPECT_GT(psnr(near_to, to), 35.0);
  Frame at_zero = synthesize_frame(from, to, forward, backward, 0.0f);
  EXPECT_GT(psnr(at_zero, from), 40.0);
  EXPECT_THROW(synthesize_frame(from, to, forward, backward, 1.5f), InputError);
}

TEST(FlowInterp, OddAndTinySizes) {
  for (auto [w, h] : {std::pair{33, 17}, std::pair{8, 8}, std::pair{5, 3}, std::pair{1, 1}}) {
    Frame from = textured(w, h);
    Frame to = textured(w, h, 1.0f, 0.0f);
    FrameStack frames = interpolate_flow(from, to, 2);
    ASSERT_EQ(frames.count, 2);
    EXPECT_EQ(frames.width, w);
    EXPECT_EQ(frames.height, h);
    ASSERT_EQ(frames.rgb.size(), static_cast<size_t>(w) * h * 3 * 2);
    // Odd and tiny sizes still give a sane in-between frame: close to the cross-fade of
    // these nearly static inputs.
    FrameStack fade = interpolate_crossfade(from, to, 2);
    EXPECT_GT(psnr(frame_from(frames, 0), frame_from(fade, 0)), 20.0) << w << "x" << h;
  }
  // 33x17 moving by 2 px: the in-between frame follows the motion in the interior.
  Frame from = textured(33, 17);
  Frame to = textured(33, 17, 2.0f, 0.0f);
  Frame truth = textured(33, 17, 1.0f, 0.0f);
  FrameStack mid = interpolate_flow(from, to, 1);
  FrameStack fade = interpolate_crossfade(from, to, 1);
  EXPECT_GT(psnr(frame_from(mid, 0), truth, 3), psnr(frame_from(fade, 0), truth, 3) + 3.0);
}

TEST(FlowInterp, CountZeroAndOne) {
  Frame from = textured(32, 24);
  Frame to = textured(32, 24, 2.0f, 2.0f);
  FrameStack none = interpolate_flow(from, to, 0);
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.width, 32);
  EXPECT_EQ(none.height, 24);
  EXPECT_TRUE(none.rgb.empty());
  EXPECT_EQ(interpolate_crossfade(from, to, 0).count, 0);
  FrameStack one = interpolate_flow(from, to, 1);
  ASSERT_EQ(one.count, 1);
  // The single frame is the midpoint: synthesize_frame at t = 0.5 gives the same.
  Frame mid = synthesize_frame(from, to, estimate_flow(from, to), estimate_flow(to, from), 0.5f);
  EXPECT_EQ(frame_from(one, 0).rgb, mid.rgb);
}

TEST(FlowInterp, CrossfadeValues) {
  Frame black, grey;
  black.width = grey.width = 2;
  black.height = grey.height = 1;
  black.rgb.assign(6, 0);
  grey.rgb.assign(6, 200);
  FrameStack fade = interpolate_crossfade(black, grey, 3);  // t = 0.25, 0.5, 0.75
  ASSERT_EQ(fade.count, 3);
  EXPECT_EQ(fade.frame(0)[0], 50);
  EXPECT_EQ(fade.frame(1)[4], 100);
  EXPECT_EQ(fade.frame(2)[5], 150);
}

TEST(FlowInterp, BadInputIsRejectedWithAClearMessage) {
  Frame a = textured(32, 24);
  Frame b = textured(30, 24);
  try {
    interpolate_flow(a, b, 1);
    FAIL() << "size mismatch accepted";
  } catch (const InputError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("32x24"), std::string::npos) << message;
    EXPECT_NE(message.find("30x24"), std::string::npos) << message;
  }
  EXPECT_THROW(interpolate_crossfade(a, b, 1), InputError);
  EXPECT_THROW(estimate_flow(a, b), InputError);
  EXPECT_THROW(interpolate_flow(a, a, -1), InputError);
  Frame truncated = a;
  truncated.rgb.pop_back();
  EXPECT_THROW(interpolate_flow(a, truncated, 1), InputError);
  Frame empty;
  EXPECT_THROW(interpolate_flow(empty, empty, 1), InputError);
  EXPECT_THROW(warp_backward(a, FlowField(24, 30)), InputError);
  FlowOptions bad;
  bad.patch_size = 0;
  EXPECT_THROW(interpolate_flow(a, a, 1, bad), InputError);
}

}  // namespace
}  // namespace beatfarm::interp
