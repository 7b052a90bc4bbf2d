// A stack of RGB frames: the unit every renderer produces and every sink consumes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace beatfarm {

struct FrameStack {
  int count = 0;             // T
  int height = 0;            // H
  int width = 0;             // W
  std::vector<uint8_t> rgb;  // [T, H, W, 3], row-major, interleaved RGB

  FrameStack() = default;
  FrameStack(int t, int h, int w)
      : count(t), height(h), width(w), rgb(static_cast<size_t>(t) * h * w * 3, 0) {}

  size_t frame_bytes() const { return static_cast<size_t>(height) * width * 3; }
  uint8_t* frame(int t) { return rgb.data() + frame_bytes() * t; }
  const uint8_t* frame(int t) const { return rgb.data() + frame_bytes() * t; }
};

// One RGB frame, [H, W, 3].
struct Frame {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> rgb;
};

}  // namespace beatfarm
