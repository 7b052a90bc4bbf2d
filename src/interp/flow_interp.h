// Weight-free frame interpolation between the two boundary frames of a transition, for users
// without BiM-VFI weights.
//
//   dense optical flow both ways: Dense Inverse Search (Kroeger et al., ECCV 2016) on a gray
//     pyramid: per patch, inverse-compositional Gauss-Newton on mean-normalised intensities,
//     coarse to fine; patches densified with photometric weights
//   -> forward-backward consistency per pixel: a round trip that misses marks the pixel as
//      occluded in the other frame
//   -> per time t: both flows splatted to t (consistent pixels dominate), holes filled by
//      push-pull; backward warp of both frames; blend by time, dropping the frame whose sample
//      is hidden (occlusion) or outside the picture; cross-fade where both warps are unreliable
//      and disagree.
//
// Plain float buffers; rows are split over ATen's intra-op threads (set_compute_threads).
#pragma once

#include <functional>
#include <vector>

#include "common/frames.h"

namespace beatfarm::interp {

struct FlowOptions {
  // Dense Inverse Search patches: size and spacing in pixels of the pyramid level.
  int patch_size = 8;
  int patch_stride = 4;
  int patch_iterations = 8;  // Gauss-Newton steps per patch and level (stops early)
  // The flow is estimated from coarsest_level (-1: chosen from the image size) down to
  // finest_level (each level halves the size), and the motion at time t is splatted at that
  // resolution too; only the final warp runs at full size. 2 = quarter size. On the
  // benchmark (tools/bench_interp.sh, 416x240) 1 gains 1.1 dB and 0 gains 1.4 dB mean PSNR,
  // at about 1.6x and 4x the time per frame.
  int finest_level = 2;
  int coarsest_level = -1;
  // At the coarsest level every patch first searches integer offsets up to this radius
  // (exhaustively; 0: off), for motions beyond the reach of the pyramid alone.
  int coarse_search_radius = 4;
  // A pixel whose forward-backward round trip misses by more than
  // occlusion_px + occlusion_relative * |flow| counts as (fully, at twice that) hidden in the
  // other frame; in pixels of the level the flow is estimated at (finest_level).
  float occlusion_px = 1.0f;
  float occlusion_relative = 0.1f;
  bool occlusion_aware = true;  // false: every pixel blends both warps by time
  // Where both warps are unreliable and their colours differ by more than this (mean 0..255
  // over RGB), the pixel fades to the plain cross-fade.
  float fallback_color_diff = 24.0f;
};

// Motion of every pixel of one frame to its match in another, in pixels.
struct FlowField {
  int height = 0;
  int width = 0;
  std::vector<float> uv;  // [H, W, 2]: (dx, dy)

  FlowField() = default;
  FlowField(int h, int w) : height(h), width(w), uv(static_cast<size_t>(h) * w * 2, 0.0f) {}
  float dx(int y, int x) const { return uv[(static_cast<size_t>(y) * width + x) * 2]; }
  float dy(int y, int x) const { return uv[(static_cast<size_t>(y) * width + x) * 2 + 1]; }
};

// Flow from `from` to `to`: from(x) ~ to(x + flow(x)). Throws InputError when the frames differ
// in size or are empty or malformed.
FlowField estimate_flow(const Frame& from, const Frame& to, const FlowOptions& options = {});

// out(x) = image(x + flow(x)): bilinear, edge pixels repeated outside.
Frame warp_backward(const Frame& image, const FlowField& flow);

// |forward(x) + backward(x + forward(x))| per pixel of forward's source frame [H, W]; a large
// value (1e6) where x + forward(x) leaves the picture.
std::vector<float> consistency_error(const FlowField& forward, const FlowField& backward);

// The frame at time t in [0, 1] (0 = from) given both flows (forward: from -> to,
// backward: to -> from).
Frame synthesize_frame(const Frame& from, const Frame& to, const FlowField& forward,
                       const FlowField& backward, float t, const FlowOptions& options = {});

// The `count` frames strictly between `from` and `to`, at t = (k + 1) / (count + 1) for
// k = 0..count-1. count 0 gives an empty stack of the frames' size.
// `on_frame(done, count)` is called after each frame (it may throw to cancel).
FrameStack interpolate_flow(const Frame& from, const Frame& to, int count,
                            const FlowOptions& options = {},
                            const std::function<void(int, int)>& on_frame = {});

// The same times as a plain cross-fade: (1 - t) * from + t * to, rounded.
FrameStack interpolate_crossfade(const Frame& from, const Frame& to, int count);

}  // namespace beatfarm::interp
