#include "video/reader.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "common/av_handles.h"
#include "common/error.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace beatfarm::video {
namespace {

using namespace beatfarm::av;  // the owning libav handle types

std::string label(const std::string& path) {
  return "video file '" + path + "'";
}

InputPtr open_input(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError(label(path) + " does not exist");
  AVFormatContext* raw = nullptr;
  int err = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (err < 0) throw InputError(str(label(path), " could not be opened: ", av::error_string(err)));
  InputPtr format(raw);
  err = avformat_find_stream_info(raw, nullptr);
  if (err < 0) throw InputError(str(label(path), " could not be read: ", av::error_string(err)));
  return format;
}

// True when the top-level 'moov' box comes before 'mdat' (playback can start before
// the whole file has arrived). Non-MP4 files have neither and give false.
bool moov_before_mdat(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  uint64_t offset = 0;
  for (int boxes = 0; boxes < 10000; ++boxes) {
    unsigned char header[16];
    in.seekg(static_cast<std::streamoff>(offset));
    if (!in.read(reinterpret_cast<char*>(header), 8)) return false;
    uint64_t size = (uint64_t(header[0]) << 24) | (uint64_t(header[1]) << 16) |
                    (uint64_t(header[2]) << 8) | uint64_t(header[3]);
    std::string type(reinterpret_cast<char*>(header) + 4, 4);
    if (type == "moov") return true;
    if (type == "mdat") return false;
    if (size == 1) {  // 64-bit size follows the type
      if (!in.read(reinterpret_cast<char*>(header) + 8, 8)) return false;
      size = 0;
      for (int i = 8; i < 16; ++i) size = (size << 8) | header[i];
      if (size < 16) return false;
    } else if (size == 0 || size < 8) {
      return false;  // box runs to the end of the file, or a corrupt size
    }
    offset += size;
  }
  return false;
}

double seconds(int64_t ts, AVRational time_base) {
  return ts * av_q2d(time_base);
}

}  // namespace

MediaInfo probe_media(const std::string& path) {
  InputPtr format = open_input(path);
  MediaInfo info;
  info.container = format->iformat->name;
  if (format->duration != AV_NOPTS_VALUE) {
    info.duration_seconds = double(format->duration) / AV_TIME_BASE;
  }
  info.faststart = moov_before_mdat(path);

  int video_index = av_find_best_stream(format.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  int audio_index = av_find_best_stream(format.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
  AVStream* video = video_index >= 0 ? format->streams[video_index] : nullptr;
  AVStream* audio = audio_index >= 0 ? format->streams[audio_index] : nullptr;

  if (video) {
    const AVCodecParameters* par = video->codecpar;
    info.video_codec = avcodec_get_name(par->codec_id);
    const char* pix = av_get_pix_fmt_name(static_cast<AVPixelFormat>(par->format));
    info.pixel_format = pix ? pix : "";
    info.width = par->width;
    info.height = par->height;
    AVRational rate = video->avg_frame_rate.num > 0 ? video->avg_frame_rate : video->r_frame_rate;
    info.fps = rate.den > 0 ? av_q2d(rate) : 0.0;
  }
  if (audio) {
    const AVCodecParameters* par = audio->codecpar;
    info.audio_codec = avcodec_get_name(par->codec_id);
    info.audio_sample_rate = par->sample_rate;
    info.audio_channels = par->ch_layout.nb_channels;
  }

  // Count video packets; note where the audio packets end in case the header is silent.
  PacketPtr packet(av_packet_alloc());
  if (!packet) throw Error("out of memory probing " + label(path));
  int64_t audio_first = AV_NOPTS_VALUE;
  int64_t audio_end = AV_NOPTS_VALUE;
  int err;
  while ((err = av_read_frame(format.get(), packet.get())) >= 0) {
    if (video && packet->stream_index == video->index) {
      ++info.video_frames;
    } else if (audio && packet->stream_index == audio->index && packet->pts != AV_NOPTS_VALUE) {
      if (audio_first == AV_NOPTS_VALUE || packet->pts < audio_first) audio_first = packet->pts;
      int64_t end = packet->pts + packet->duration;
      if (audio_end == AV_NOPTS_VALUE || end > audio_end) audio_end = end;
    }
    av_packet_unref(packet.get());
  }
  if (err != AVERROR_EOF) {
    throw InputError(str(label(path), " could not be read: ", av::error_string(err)));
  }

  if (video) {
    if (video->duration != AV_NOPTS_VALUE && video->duration > 0) {
      info.video_duration = seconds(video->duration, video->time_base);
    } else if (info.fps > 0.0) {
      info.video_duration = info.video_frames / info.fps;
    }
  }
  if (audio) {
    if (audio->duration != AV_NOPTS_VALUE && audio->duration > 0) {
      info.audio_duration = seconds(audio->duration, audio->time_base);
    } else if (audio_end != AV_NOPTS_VALUE) {
      info.audio_duration = seconds(audio_end - audio_first, audio->time_base);
    }
  }
  return info;
}

FrameStack read_video_frames(const std::string& path) {
  InputPtr format = open_input(path);
  const AVCodec* decoder = nullptr;
  int index = av_find_best_stream(format.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &decoder, 0);
  if (index < 0 || !decoder) throw InputError(label(path) + " has no decodable video stream");
  AVStream* stream = format->streams[index];
  for (unsigned i = 0; i < format->nb_streams; ++i) {
    if (static_cast<int>(i) != index) format->streams[i]->discard = AVDISCARD_ALL;
  }

  CodecPtr codec(avcodec_alloc_context3(decoder));
  if (!codec) throw Error("out of memory decoding " + label(path));
  int err = avcodec_parameters_to_context(codec.get(), stream->codecpar);
  if (err >= 0) {
    codec->pkt_timebase = stream->time_base;
    codec->thread_count = 0;  // let the decoder pick
    err = avcodec_open2(codec.get(), decoder, nullptr);
  }
  if (err < 0) throw InputError(str(label(path), " could not be decoded: ", av::error_string(err)));

  FrameStack stack;
  PacketPtr packet(av_packet_alloc());
  FramePtr frame(av_frame_alloc());
  if (!packet || !frame) throw Error("out of memory decoding " + label(path));
  SwsPtr sws;
  int sws_width = 0, sws_height = 0, sws_format = -1;

  auto convert = [&](const AVFrame* f) {
    if (stack.count == 0) {
      stack.width = f->width;
      stack.height = f->height;
    } else if (f->width != stack.width || f->height != stack.height) {
      throw InputError(str(label(path), " changes frame size mid-stream"));
    }
    if (!sws || f->width != sws_width || f->height != sws_height || f->format != sws_format) {
      sws.reset(sws_getContext(f->width, f->height, static_cast<AVPixelFormat>(f->format), f->width,
                               f->height, AV_PIX_FMT_RGB24,
                               SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr,
                               nullptr, nullptr));
      if (!sws) throw Error(str(label(path), ": cannot convert its pixel format to RGB"));
      // Honour the stream's matrix and range (default BT.601 limited, as we write).
      int space = SWS_CS_ITU601;
      if (f->colorspace == AVCOL_SPC_BT709) space = SWS_CS_ITU709;
      if (f->colorspace == AVCOL_SPC_BT2020_NCL || f->colorspace == AVCOL_SPC_BT2020_CL) {
        space = SWS_CS_BT2020;
      }
      const int* coefficients = sws_getCoefficients(space);
      int full_range = f->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
      sws_setColorspaceDetails(sws.get(), coefficients, full_range,
                               sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
      sws_width = f->width;
      sws_height = f->height;
      sws_format = f->format;
    }
    stack.rgb.resize(stack.rgb.size() + stack.frame_bytes());
    uint8_t* dst[1] = {stack.rgb.data() + stack.frame_bytes() * stack.count};
    int dst_stride[1] = {stack.width * 3};
    sws_scale(sws.get(), f->data, f->linesize, 0, f->height, dst, dst_stride);
    ++stack.count;
  };

  auto drain = [&]() {
    int e;
    while ((e = avcodec_receive_frame(codec.get(), frame.get())) >= 0) {
      convert(frame.get());
      av_frame_unref(frame.get());
    }
    if (e != AVERROR(EAGAIN) && e != AVERROR_EOF) {
      throw InputError(str(label(path), " could not be decoded: ", av::error_string(e)));
    }
  };

  while ((err = av_read_frame(format.get(), packet.get())) >= 0) {
    if (packet->stream_index == index) {
      err = avcodec_send_packet(codec.get(), packet.get());
      av_packet_unref(packet.get());
      if (err < 0)
        throw InputError(str(label(path), " could not be decoded: ", av::error_string(err)));
      drain();
    } else {
      av_packet_unref(packet.get());
    }
  }
  if (err != AVERROR_EOF)
    throw InputError(str(label(path), " could not be read: ", av::error_string(err)));
  avcodec_send_packet(codec.get(), nullptr);
  drain();
  return stack;
}

}  // namespace beatfarm::video
