#include <gtest/gtest.h>

#include "common/error.h"
#include "farm/scheduler.h"

namespace beatfarm::farm {
namespace {

std::vector<plan::Task> small_job() {
  // peak 0 (cost 10), peak 1 (cost 30), transition 2 (0 -> 1, cost 5), loop 3 (1 -> 0, cost 50)
  std::vector<plan::Task> tasks(4);
  for (int i = 0; i < 4; ++i) tasks[i].id = i;
  tasks[0].cost = 10;
  tasks[1].cost = 30;
  tasks[2].kind = plan::TaskKind::Transition;
  tasks[2].deps = {0, 1};
  tasks[2].cost = 5;
  tasks[3].kind = plan::TaskKind::Loop;
  tasks[3].deps = {1, 0};
  tasks[3].cost = 50;
  return tasks;
}

TEST(Scheduler, PeaksFirstLongestFirstThenTransitionsWhenReady) {
  auto tasks = small_job();
  Scheduler s(tasks, {});
  EXPECT_EQ(s.next(), 1);  // the costlier peak
  EXPECT_EQ(s.next(), 0);
  EXPECT_EQ(s.next(), std::nullopt);  // transitions wait for both peaks
  s.mark_done(1);
  EXPECT_EQ(s.next(), std::nullopt);
  s.mark_done(0);
  EXPECT_EQ(s.next(), 3);  // the loop costs more than the transition
  EXPECT_EQ(s.next(), 2);
  EXPECT_EQ(s.next(), std::nullopt);
  s.mark_done(2);
  s.mark_done(3);
  EXPECT_TRUE(s.all_done());
  EXPECT_DOUBLE_EQ(s.cost_done(), 95.0);
}

TEST(Scheduler, ResumeSkipsTasksOnDisk) {
  auto tasks = small_job();
  Scheduler s(tasks, {true, true, false, false});
  EXPECT_EQ(s.done(), 2);
  EXPECT_DOUBLE_EQ(s.cost_skipped(), 40.0);
  EXPECT_EQ(s.next(), 3);
  EXPECT_EQ(s.next(), 2);
}

TEST(Scheduler, DoneTwiceIsAnError) {
  auto tasks = small_job();
  Scheduler s(tasks, {});
  int first = *s.next();
  s.mark_done(first);
  EXPECT_THROW(s.mark_done(first), Error);
  EXPECT_THROW(s.mark_done(2), Error);  // never started
}

}  // namespace
}  // namespace beatfarm::farm
