// One job per work dir: rank 0 holds WORK/beatfarm.lock (host, pid, Slurm job id, start time)
// while the job runs. A second job on the same work dir is refused with the owner named. A
// lock is stale, and taken over with a warning, when its pid is gone on this host or it
// belongs to this same Slurm job (a requeue); --break-lock takes over any lock.
#pragma once

#include <string>

namespace beatfarm::farm {

struct LockOwner {
  std::string host;
  long pid = 0;
  std::string slurm_job;  // SLURM_JOB_ID (array jobs: the element's own id), or ""
  std::string since;      // local time the lock was taken
};

// This process, as a lock owner.
LockOwner current_lock_owner();
// "job 1234 (pid 42 on node7, since 2025-01-02 10:00:00)"
std::string describe(const LockOwner& owner);

class WorkDirLock {
 public:
  // Takes the lock on work_dir (which must exist). Throws InputError naming the owner when
  // another live job holds it, unless break_lock.
  WorkDirLock(const std::string& work_dir, bool break_lock);
  ~WorkDirLock();
  WorkDirLock(const WorkDirLock&) = delete;
  WorkDirLock& operator=(const WorkDirLock&) = delete;

  const std::string& path() const { return path_; }
  // Removes the lock file if it is still ours.
  void release();

 private:
  std::string path_;
  bool held_ = false;
};

// True when process pid (on this host) has ended: gone, or a zombie nobody reaped.
bool process_has_ended(long pid);

// Why the recorded owner is not running any more, or "" when it may still be.
std::string stale_reason(const LockOwner& owner, const LockOwner& me);

}  // namespace beatfarm::farm
