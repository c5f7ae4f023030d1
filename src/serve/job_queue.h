// A bounded first-in-first-out queue of txt2img and img2img jobs with `workers` worker threads.
//
// The Runtime runs its generate() calls in arrival order (hyrt.h), and calls that wait
// together may run as one UNet batch (RuntimeOptions::max_batch). With one worker, jobs run
// one after another; with N workers up to N jobs call generate() at once, so the Runtime can
// batch them. Either way jobs start in arrival order. The bound keeps a burst from piling up
// unbounded memory and latency: submit() refuses when `capacity` jobs already wait (the HTTP
// layer answers 503).
//
// Thread safety: every member function may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hyrt/hyrt.h"
#include "serve/a1111_api.h"

namespace hyrt::serve {

struct Job {
  Txt2ImgRequest request;
  std::string model;  // the server's name of the model to use (resolved at submit)
  uint64_t seed = 0;  // the first seed (-1 already resolved)
  CancelToken cancel;
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();

  // Written by the worker before the job is marked done; read after wait() returned true.
  std::vector<Image> images;
  bool interrupted = false;  // stopped by interrupt(), withdraw() or shutdown
  int error_status = 0;      // non-zero: the job failed (an HTTP status)
  std::string error_field;
  std::string error_message;

 private:
  friend class JobQueue;
  bool done_ = false;  // guarded by the JobQueue's mutex
};

class JobQueue {
 public:
  // `run` does one job on the worker thread. An exception it throws fails the job: ApiError
  // keeps its status, hyrt::Error with kInvalidArgument/kUnsupported becomes 422, anything else
  // 500; hyrt::Cancelled marks it interrupted.
  using Run = std::function<void(Job&)>;
  // `workers` (at least 1) threads each run one job at a time.
  JobQueue(size_t capacity, Run run, size_t workers = 1);
  // shutdown(), then joins the workers.
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Queues `job`; false (and nothing queued) when `capacity` jobs already wait or the
  // queue is shut down.
  bool submit(std::shared_ptr<Job> job);
  // Waits up to `timeout` for `job` to finish; true once it has.
  bool wait(const Job& job, std::chrono::milliseconds timeout);
  // The caller no longer wants `job` (its client went away): a waiting job is dropped
  // (marked interrupted and done), a running one is cancelled at its next step.
  void withdraw(const std::shared_ptr<Job>& job);
  // Cancels every running job, if any (A1111's interrupt); true if there was one. Waiting
  // jobs stay queued.
  bool interrupt();
  // Cancels the running jobs and drops the waiting ones (all finish as interrupted); later
  // submits are refused.
  void shutdown();

  size_t waiting() const;
  size_t running() const;
  bool busy() const { return running() > 0; }  // a job is running
  size_t capacity() const { return capacity_; }
  size_t workers() const { return workers_.size(); }

 private:
  void loop();
  void finish(const std::shared_ptr<Job>& job);

  const size_t capacity_;
  const Run run_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // the worker waits for jobs
  std::condition_variable done_cv_;  // callers wait for their job
  std::deque<std::shared_ptr<Job>> waiting_;
  std::vector<std::shared_ptr<Job>> running_;  // in the order they started
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace hyrt::serve
