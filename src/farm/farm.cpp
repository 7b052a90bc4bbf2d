#include "farm/farm.h"

#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "farm/scheduler.h"

namespace beatfarm::farm {
namespace {

constexpr int kTagRequest = 101;  // worker -> rank 0: "I finished X, give me work"
constexpr int kTagAssign = 102;   // rank 0 -> worker: task id, or kNoMoreWork
constexpr int kNoMoreWork = -1;

struct Request {
  int task;  // finished task, or -1 on the first request
  int rank;
  double seconds;
  char host[64];
};

std::string format_seconds(double s) {
  char buffer[32];
  if (s < 120)
    std::snprintf(buffer, sizeof buffer, "%.1f s", s);
  else
    std::snprintf(buffer, sizeof buffer, "%dm%02ds", int(s) / 60, int(s) % 60);
  return buffer;
}

// Seconds of rendering left: each task at the observed rate of its method, else by cost.
double estimate_left(const plan::Timeline& timeline, const std::vector<bool>& done,
                     const std::map<std::string, std::pair<double, double>>& rates,
                     double seconds_per_cost) {
  double left = 0.0;
  for (size_t t = 0; t < timeline.tasks.size(); ++t) {
    if (done[t]) continue;
    const plan::Task& task = timeline.tasks[t];
    auto rate = rates.find(task.method);
    if (rate != rates.end() && rate->second.second > 0)
      left += rate->second.first / rate->second.second * task.render_frames;
    else
      left += seconds_per_cost * task.cost;
  }
  return left;
}

// Rank 0's dispatcher: answers requests until every rank has been told to stop.
std::vector<TaskRecord> dispatch(const MpiWorld& world, const plan::Timeline& timeline,
                                 const std::vector<bool>& already_done) {
  Scheduler scheduler(timeline.tasks, already_done);
  std::vector<TaskRecord> records;
  for (size_t i = 0; i < already_done.size(); ++i)
    if (already_done[i]) records.push_back({int(i), -1, "", 0.0, true});
  const auto start = std::chrono::steady_clock::now();
  const int to_render = scheduler.total() - scheduler.done();
  int rendered = 0;
  // Observed seconds per rendered frame for each method, for the ETA.
  std::map<std::string, std::pair<double, double>> rates;
  double seconds_per_cost = 0.0, seconds_per_cost_total = 0.0, cost_done_total = 0.0;
  std::vector<bool> scheduler_done = already_done;
  scheduler_done.resize(timeline.tasks.size(), false);
  std::deque<int> idle;
  int active = world.size;
  while (active > 0) {
    Request request;
    MPI_Request handle;
    MPI_Status status;
    MPI_Irecv(&request, sizeof request, MPI_BYTE, MPI_ANY_SOURCE, kTagRequest, world.dispatch,
              &handle);
    wait_politely(&handle, &status);
    if (request.task >= 0) {
      scheduler.mark_done(request.task);
      scheduler_done[request.task] = true;
      ++rendered;
      request.host[sizeof request.host - 1] = '\0';
      records.push_back({request.task, status.MPI_SOURCE, request.host, request.seconds, false});
      double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const plan::Task& finished = timeline.tasks[request.task];
      rates[finished.method].first += request.seconds;
      rates[finished.method].second += finished.render_frames;
      seconds_per_cost =
          (seconds_per_cost_total += request.seconds) / (cost_done_total += finished.cost);
      double eta = estimate_left(timeline, scheduler_done, rates, seconds_per_cost) / world.size;
      log_info("done ", rendered, "/", to_render, " ", timeline.tasks[request.task].name, " (rank ",
               status.MPI_SOURCE, ", ", format_seconds(request.seconds), ") elapsed ",
               format_seconds(elapsed), " ETA ", format_seconds(eta));
    }
    idle.push_back(status.MPI_SOURCE);
    while (!idle.empty()) {
      std::optional<int> task = scheduler.next();
      if (task) {
        int assignment = *task;
        MPI_Send(&assignment, 1, MPI_INT, idle.front(), kTagAssign, world.dispatch);
        idle.pop_front();
        continue;
      }
      if (scheduler.all_done()) {
        for (int rank : idle) {
          int stop = kNoMoreWork;
          MPI_Send(&stop, 1, MPI_INT, rank, kTagAssign, world.dispatch);
          --active;
        }
        idle.clear();
      } else if (scheduler.running() == 0) {
        throw Error("scheduler: tasks remain but none can start (a dependency cycle in the plan)");
      }
      break;
    }
  }
  return records;
}

void work(const MpiWorld& world, const plan::Timeline& timeline, const WorkDir& work_dir,
          render::Backend& backend) {
  Request request{};
  request.task = -1;
  request.rank = world.rank;
  std::strncpy(request.host, world.host.c_str(), sizeof request.host - 1);
  for (;;) {
    MPI_Send(&request, sizeof request, MPI_BYTE, 0, kTagRequest, world.dispatch);
    int assignment = kNoMoreWork;
    MPI_Request handle;
    MPI_Irecv(&assignment, 1, MPI_INT, 0, kTagAssign, world.dispatch, &handle);
    wait_politely(&handle, nullptr);
    if (assignment == kNoMoreWork) return;
    const plan::Task& task = timeline.tasks.at(assignment);
    log_debug("rendering ", task.name, " (", task.method, ", ", task.render_frames, " frames)");
    try {
      request.seconds = render_task(timeline, task, work_dir, backend, world.rank, world.host);
    } catch (const std::exception& e) {
      throw Error(str("task ", task.name, " failed on rank ", world.rank, " (", world.host,
                      "): ", e.what()));
    }
    request.task = assignment;
  }
}

}  // namespace

std::vector<TaskRecord> run_farm(const MpiWorld& world, const plan::Timeline& timeline,
                                 const WorkDir& work_dir, render::Backend& backend,
                                 const std::vector<bool>& already_done) {
  std::vector<TaskRecord> records;
  std::thread dispatcher;
  if (world.rank == 0) {
    dispatcher = std::thread([&] {
      try {
        records = dispatch(world, timeline, already_done);
      } catch (const std::exception& e) {
        log_error(e.what());
        abort_job(kExitFailure);
      }
    });
  }
  try {
    work(world, timeline, work_dir, backend);
  } catch (const std::exception& e) {
    log_error(e.what());
    log_error("aborting the job; finished tasks stay in ", work_dir.root,
              " (continue with --resume ", work_dir.root, ")");
    abort_job(kExitFailure);
  }
  if (dispatcher.joinable()) dispatcher.join();
  return records;
}

}  // namespace beatfarm::farm
