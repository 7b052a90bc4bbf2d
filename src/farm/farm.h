// Rendering a planned job over the MPI ranks, and assembling the result on rank 0.
#pragma once

#include <functional>
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

// What a task needs besides the plan.
struct TaskInputs {
  // A transition's boundary frames when they do not come from the work dir (rank 0 sent
  // them: --gather mpi); null: read from work's task files.
  const Frame* from = nullptr;
  const Frame* to = nullptr;
  // Called between frames / denoising steps; may throw (TaskAbandoned) to stop the task.
  std::function<void()> between_steps;
};

// The frames of one task from the backend (what render_task writes), checked against the plan.
FrameStack render_task_frames(const plan::Timeline& timeline, const plan::Task& task,
                              const WorkDir& work, render::Backend& backend,
                              const TaskInputs& inputs = {});

// Renders one task into work/NAME.h5 (+ NAME.mp4 for a quick look). Returns seconds taken.
// On an exception nothing of the task is left but possibly a complete quick look.
double render_task(const plan::Timeline& timeline, const plan::Task& task, const WorkDir& work,
                   render::Backend& backend, int rank, const std::string& host,
                   const TaskInputs& inputs = {});

struct FarmOptions {
  int max_retries = 2;       // a failing task is tried 1 + max_retries times
  double stop_timeout = 60;  // after a stop request, seconds before the task in flight is abandoned
  // Per rank: it renders into its scratch dir and sends the files to rank 0 (rank 0: never).
  std::vector<bool> gathering;
  std::string scratch_dir;  // this rank's scratch dir when it gathers
  // Tensor-parallel groups: per world rank, the world rank of its group's leader (empty: every
  // rank renders alone). Rank 0 hands tasks to leaders only; a leader passes each task to its
  // group over `group`, all of the group render it together (the backend's collectives), and
  // only the leader writes the task file and reports. A stop is agreed between frames/steps
  // (the leader decides, the group follows); any other error in a group ends the job, since
  // the other ranks of the group would wait in a collective for ever.
  std::vector<int> leaders;
  MPI_Comm group = MPI_COMM_NULL;  // this rank's group when it has more than one rank
};

enum class FarmOutcome {
  Completed,  // every task is in the work dir
  Stopped,    // a stop was requested: finished tasks are on disk, the rest is not (exit 75)
  Failed,     // a task failed 1 + max_retries times (exit 1)
};

struct FarmResult {
  FarmOutcome outcome = FarmOutcome::Completed;
  std::vector<TaskRecord> records;     // rank 0: finished tasks (with the resumed ones)
  std::vector<std::string> abandoned;  // rank 0: tasks given up on a stop
  std::string failure;                 // rank 0: why the job failed, naming the task
};

// All ranks call this. Rank 0 hands tasks out (on a thread) and renders too; the others ask
// for work until there is none, a stop was requested, or a task failed for good. Rank 0
// records which rank renders what in work.inflight(rank) while it runs.
FarmResult run_farm(const MpiWorld& world, const plan::Timeline& timeline, const WorkDir& work,
                    render::Backend& backend, const std::vector<bool>& already_done,
                    const FarmOptions& options);

// The same with default options; throws Error unless the job completed. Returns the records
// (rank 0; empty elsewhere).
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
