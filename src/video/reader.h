// Reading encoded video back: used by tests and tools to check what the farm wrote.
#pragma once

#include <string>
#include <vector>

#include "common/frames.h"

namespace beatfarm::video {

struct MediaInfo {
  std::string container;          // e.g. "mov,mp4,m4a,3gp,3g2,mj2"
  double duration_seconds = 0.0;  // container duration
  bool faststart = false;         // moov atom before mdat
  // video stream
  std::string video_codec;   // "h264"
  std::string pixel_format;  // "yuv420p"
  int width = 0;
  int height = 0;
  double fps = 0.0;             // avg_frame_rate
  long long video_frames = 0;   // counted by demuxing every packet
  double video_duration = 0.0;  // seconds
  // audio stream (empty codec if none)
  std::string audio_codec;  // "aac"
  int audio_sample_rate = 0;
  int audio_channels = 0;
  double audio_duration = 0.0;
};

// Throws beatfarm::InputError naming the file if it cannot be opened.
MediaInfo probe_media(const std::string& path);

// Decodes every video frame to RGB24.
FrameStack read_video_frames(const std::string& path);

}  // namespace beatfarm::video
