#include "serve/job_queue.h"

#include <algorithm>

namespace hyrt::serve {

JobQueue::JobQueue(size_t capacity, Run run, size_t workers)
    : capacity_(capacity), run_(std::move(run)) {
  for (size_t i = 0; i < std::max<size_t>(1, workers); ++i)
    workers_.emplace_back([this] { loop(); });
}

JobQueue::~JobQueue() {
  shutdown();
  for (std::thread& t : workers_)
    t.join();
}

bool JobQueue::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || waiting_.size() >= capacity_) return false;
    waiting_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return true;
}

bool JobQueue::wait(const Job& job, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return done_cv_.wait_for(lock, timeout, [&] { return job.done_; });
}

void JobQueue::withdraw(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(waiting_.begin(), waiting_.end(), job);
  if (it != waiting_.end()) {
    waiting_.erase(it);
    job->interrupted = true;
    job->done_ = true;
    done_cv_.notify_all();
  } else if (std::find(running_.begin(), running_.end(), job) != running_.end()) {
    job->cancel.cancel();
  }
}

bool JobQueue::interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& job : running_)
    job->cancel.cancel();
  return !running_.empty();
}

void JobQueue::shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  for (auto& job : running_)
    job->cancel.cancel();
  for (auto& job : waiting_) {
    job->interrupted = true;
    job->done_ = true;
  }
  waiting_.clear();
  done_cv_.notify_all();
  work_cv_.notify_all();
}

size_t JobQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size();
}

size_t JobQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_.size();
}

void JobQueue::loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (stopping_) return;  // shutdown() finished the waiting jobs
      job = waiting_.front();
      waiting_.pop_front();
      running_.push_back(job);
    }
    // A token cancelled while the job waited (withdraw raced with the pop) ends the run at
    // its first step: nothing special to do here.
    try {
      run_(*job);
    } catch (const Cancelled&) {
      job->interrupted = true;
    } catch (const ApiError& e) {
      job->error_status = e.status();
      job->error_field = e.field();
      job->error_message = e.what();
    } catch (const Error& e) {
      const bool caller =
          e.code() == ErrorCode::kInvalidArgument || e.code() == ErrorCode::kUnsupported;
      job->error_status = caller ? 422 : 500;
      job->error_message = e.what();
    } catch (const std::exception& e) {
      job->error_status = 500;
      job->error_message = e.what();
    }
    finish(job);
  }
}

void JobQueue::finish(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  job->done_ = true;
  running_.erase(std::find(running_.begin(), running_.end(), job));
  done_cv_.notify_all();
}

}  // namespace hyrt::serve
