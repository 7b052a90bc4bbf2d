// Rendering a planned job over the MPI ranks, and assembling the result on rank 0.
#pragma once

#include <string>
#include <vector>

#include "audio/audio.h"
#include "farm/mpi_world.h"
#include "farm/work_dir.h"
#include "plan/timeline.h"
#include "render/backend.h"
#include "store/task_file.h"

namespace beatfarm::farm {

struct TaskRecord {
  int task = -1;
  int rank = -1;
  std::string host;
  double seconds = 0.0;  // render + write
  bool resumed = false;  // found complete on disk
};

// What makes a task file valid for this plan: complete, and made for this task (kind, index,
// seed, backend, frame shape).
bool task_file_matches(const WorkDir& work, const plan::Timeline& timeline, const plan::Task& task,
                       const std::string& backend, std::string* why);

// Renders one task into work/NAME.h5 (+ NAME.mp4 for a quick look). Returns seconds taken.
double render_task(const plan::Timeline& timeline, const plan::Task& task, const WorkDir& work,
                   render::Backend& backend, int rank, const std::string& host);

// All ranks call this. Rank 0 hands tasks out (on a thread) and renders too; the others ask
// for work until there is none. Returns the records (rank 0; empty elsewhere).
std::vector<TaskRecord> run_farm(const MpiWorld& world, const plan::Timeline& timeline,
                                 const WorkDir& work, render::Backend& backend,
                                 const std::vector<bool>& already_done);

struct AssembleOptions {
  std::string output;
  int crf = 18;
  std::string preset = "medium";
  int threads = 0;
};

// Rank 0: reads the task files, retimes/trims to the planned frames, writes the segment
// manifest in segments_processed/, and encodes output with the audio.
void assemble(const plan::Timeline& timeline, const WorkDir& work, const audio::Pcm& audio,
              const AssembleOptions& options);

}  // namespace beatfarm::farm
