// One background thread for work that must stay off the foreground's first steps.
//
// Why: a library's programs can be prepared off the calling thread while the runtime runs a
// fallback (backend::Kernel::settled) — cuDNN's attention plans take 50-100 ms each, and the
// first of them loads cuDNN's engine libraries (0.1-0.7 s). Run beside the foreground they
// slowed what the runtime promises to keep short: a process's first step and the first step
// at a new size (bench/results/cudnn_background_plans_h100.json). So such jobs queue here and
// run one at a time, each only once the foreground has been quiet for `quiet` — no
// note_busy() in that long: a backend notes busy while it prepares kernels, runs them one by
// one or records a graph, never while it replays one, so the jobs run during the steady
// replays that follow a first step. A job already running is not interrupted (the foreground
// waits for nothing: it keeps its fallback meanwhile). While a Hurry lives, jobs run at once
// whatever the foreground does (settle(): benchmarks of the steady state, tests).
//
// Thread safety: every member may be called from any thread. Jobs run on the worker's thread,
// in submission order. The destructor drops the jobs not started (destroying them, and so what
// they captured) and waits for the one running.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace hyrt {

class QuietWorker {
 public:
  // `quiet` 0 runs jobs as soon as they are queued (no gate).
  explicit QuietWorker(std::chrono::milliseconds quiet);
  ~QuietWorker();
  QuietWorker(const QuietWorker&) = delete;
  QuietWorker& operator=(const QuietWorker&) = delete;

  // Queues `job` (must not throw: it reports its own failure). Starts the thread on first use.
  void submit(std::function<void()> job);

  // The foreground is doing work jobs must not compete with, now. Lock-free (a clock read and
  // an atomic store): cheap enough for every kernel launch outside a replay.
  void note_busy();

  // Jobs run regardless of the foreground while one of these lives.
  class Hurry {
   public:
    explicit Hurry(QuietWorker& w);
    ~Hurry();
    Hurry(const Hurry&) = delete;
    Hurry& operator=(const Hurry&) = delete;

   private:
    QuietWorker& w_;
  };

  // Jobs queued and not yet started (tests).
  size_t queued() const;

 private:
  void loop();
  // Milliseconds the foreground must still stay quiet before a job may start (0: may start).
  int64_t wait_left_ms() const;

  const std::chrono::milliseconds quiet_;
  std::atomic<int64_t> busy_ns_{INT64_MIN / 2};  // steady_clock of the last note_busy()
  std::atomic<int> hurries_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

// The process's worker for backends' background builds: quiet period HYRT_BACKGROUND_QUIET_MS
// (default 30 ms; 0 turns the gate off), read once.
QuietWorker& background_builds();

}  // namespace hyrt
