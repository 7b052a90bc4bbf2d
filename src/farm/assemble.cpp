#include <list>
#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "farm/farm.h"
#include "video/mp4_writer.h"

namespace beatfarm::farm {
namespace {

// Whole task files held in memory while assembling; peak clips are read many times.
constexpr size_t kFrameCacheBytes = size_t(2) << 30;

class TaskFrameCache {
 public:
  TaskFrameCache(const plan::Timeline& timeline, const WorkDir& work) : timeline_(timeline), work_(work) {}

  const uint8_t* frame(int task, int index) {
    auto found = entries_.find(task);
    if (found == entries_.end()) {
      FrameStack frames = store::read_task_frames(work_.task_h5(timeline_.tasks.at(task)));
      bytes_ += frames.rgb.size();
      found = entries_.emplace(task, std::move(frames)).first;
      order_.push_front(task);
      evict(task);
    } else {
      order_.remove(task);
      order_.push_front(task);
    }
    const FrameStack& frames = found->second;
    if (index < 0 || index >= frames.count)
      throw Error(str(timeline_.tasks.at(task).name, ".h5 has ", frames.count, " frames; frame ",
                      index, " was asked for"));
    return frames.frame(index);
  }

 private:
  void evict(int keep) {
    while (bytes_ > kFrameCacheBytes && order_.size() > 1) {
      int victim = order_.back();
      if (victim == keep) break;
      order_.pop_back();
      bytes_ -= entries_.at(victim).rgb.size();
      entries_.erase(victim);
    }
  }

  const plan::Timeline& timeline_;
  const WorkDir& work_;
  std::map<int, FrameStack> entries_;
  std::list<int> order_;
  size_t bytes_ = 0;
};

}  // namespace

void assemble(const plan::Timeline& timeline, const WorkDir& work, const audio::Pcm& audio,
              const AssembleOptions& options) {
  const plan::PlanOptions& o = timeline.options;
  // The manifest of retimed segments: which source frame fills each output frame.
  nlohmann::json manifest = nlohmann::json::array();
  for (size_t s = 0; s < timeline.segments.size(); ++s) {
    const plan::Segment& segment = timeline.segments[s];
    const plan::Task& task = timeline.tasks.at(segment.task);
    std::vector<int> sources;
    for (int k = 0; k < segment.count; ++k) sources.push_back(plan::source_frame(segment, task, k));
    manifest.push_back({{"segment", s}, {"kind", segment.kind}, {"task", task.name},
                        {"out_start", segment.out_start}, {"count", segment.count},
                        {"t_start", o.audio_start + double(segment.out_start) / o.fps},
                        {"source_frames", sources}});
  }
  write_file_atomically(work.segments() + "/segments.json", manifest.dump(1) + "\n");

  video::EncodeOptions encode;
  encode.width = o.width;
  encode.height = o.height;
  encode.fps = o.fps;
  encode.crf = options.crf;
  encode.preset = options.preset;
  encode.threads = options.threads;
  video::Mp4Writer writer(options.output, encode, &audio);
  TaskFrameCache cache(timeline, work);
  int written = 0;
  for (const plan::Segment& segment : timeline.segments) {
    const plan::Task& task = timeline.tasks.at(segment.task);
    for (int k = 0; k < segment.count; ++k) {
      writer.write_frame(cache.frame(segment.task, plan::source_frame(segment, task, k)));
      ++written;
    }
  }
  if (written != timeline.total_frames)
    throw Error(str("assembly wrote ", written, " frames, the plan has ", timeline.total_frames));
  writer.finish();
}

}  // namespace beatfarm::farm
