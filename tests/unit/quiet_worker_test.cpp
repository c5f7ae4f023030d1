// core/quiet_worker.h: background jobs wait for a quiet foreground, one at a time, in order; a
// Hurry lets them through; the destructor drops what has not started.
#include "core/quiet_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

namespace hyrt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

TEST(QuietWorker, RunsJobsInOrderWhenTheForegroundIsQuiet) {
  QuietWorker w(milliseconds(5));
  std::vector<int> ran;
  std::promise<void> done;
  for (int i = 0; i < 5; ++i)
    w.submit([&ran, i] { ran.push_back(i); });
  w.submit([&] { done.set_value(); });
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(w.queued(), 0u);
}

// Busy notes every 2 ms for 0.4 s hold a job back; it runs once they stop and the quiet period
// (0.3 s: far beyond a scheduler's hiccup, so the test does not flake on a loaded machine) has
// passed.
TEST(QuietWorker, HoldsJobsWhileTheForegroundIsBusy) {
  QuietWorker w(milliseconds(300));
  w.note_busy();
  std::atomic<int64_t> ran_at{0};
  std::promise<void> done;
  w.submit([&] {
    ran_at = Clock::now().time_since_epoch().count();
    done.set_value();
  });
  const auto until = Clock::now() + milliseconds(400);
  while (Clock::now() < until) {
    w.note_busy();
    std::this_thread::sleep_for(milliseconds(2));
  }
  const auto last_note = Clock::now();
  w.note_busy();
  EXPECT_EQ(w.queued(), 1u) << "the job ran while the foreground was busy";
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_GE(ran_at.load(), (last_note + milliseconds(250)).time_since_epoch().count())
      << "the job did not wait for the quiet period after the last note";
}

TEST(QuietWorker, HurryRunsJobsWhateverTheForegroundDoes) {
  QuietWorker w(std::chrono::hours(1));
  w.note_busy();
  std::promise<void> done;
  std::future<void> f = done.get_future();
  w.submit([&] { done.set_value(); });
  EXPECT_EQ(f.wait_for(milliseconds(50)), std::future_status::timeout);
  {
    QuietWorker::Hurry hurry(w);
    w.note_busy();
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
}

TEST(QuietWorker, ZeroQuietRunsAtOnce) {
  QuietWorker w(milliseconds(0));
  w.note_busy();
  std::promise<void> done;
  w.submit([&] { done.set_value(); });
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

// A worker destroyed with jobs queued (its foreground busy) returns at once and breaks their
// promises; none of them runs.
TEST(QuietWorker, DestructorDropsJobsNotStarted) {
  std::future<void> f;
  std::atomic<bool> ran{false};
  const auto t0 = Clock::now();
  {
    QuietWorker w(std::chrono::hours(1));
    w.note_busy();
    auto p = std::make_shared<std::promise<void>>();
    f = p->get_future();
    w.submit([p, &ran] {
      ran = true;
      p->set_value();
    });
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_FALSE(ran.load());
  EXPECT_THROW(f.get(), std::future_error);
}

}  // namespace
}  // namespace hyrt
