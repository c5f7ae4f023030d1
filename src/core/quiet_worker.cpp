// One background thread whose jobs wait for a quiet foreground (quiet_worker.h).
#include "core/quiet_worker.h"

#include <algorithm>
#include <cstdlib>

namespace hyrt {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

QuietWorker::QuietWorker(std::chrono::milliseconds quiet) : quiet_(quiet) {}

QuietWorker::~QuietWorker() {
  std::unique_lock<std::mutex> lock(mu_);
  stop_ = true;
  jobs_.clear();
  lock.unlock();
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void QuietWorker::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_all();
}

void QuietWorker::note_busy() {
  busy_ns_.store(now_ns(), std::memory_order_relaxed);
}

QuietWorker::Hurry::Hurry(QuietWorker& w) : w_(w) {
  {
    // Under the lock, so that the worker cannot miss the change between its check and its wait.
    std::lock_guard<std::mutex> lock(w_.mu_);
    w_.hurries_.fetch_add(1);
  }
  w_.cv_.notify_all();
}

QuietWorker::Hurry::~Hurry() {
  w_.hurries_.fetch_sub(1);
}

size_t QuietWorker::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

int64_t QuietWorker::wait_left_ms() const {
  if (quiet_.count() <= 0 || hurries_.load() > 0) return 0;
  const int64_t quiet_ns = std::chrono::nanoseconds(quiet_).count();
  const int64_t left = busy_ns_.load(std::memory_order_relaxed) + quiet_ns - now_ns();
  return left <= 0 ? 0 : (left + 999999) / 1000000;
}

void QuietWorker::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    // Sleep until the foreground has been quiet long enough (each note_busy() pushes it back;
    // a Hurry or the destructor wakes the wait).
    for (int64_t left = wait_left_ms(); left > 0 && !stop_; left = wait_left_ms())
      cv_.wait_for(lock, std::chrono::milliseconds(left));
    if (stop_) return;
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();
    job = nullptr;  // its captures die off the lock
    lock.lock();
  }
}

QuietWorker& background_builds() {
  static QuietWorker worker([] {
    const char* v = std::getenv("HYRT_BACKGROUND_QUIET_MS");
    return std::chrono::milliseconds(v && *v ? std::max(0L, std::strtol(v, nullptr, 10)) : 30);
  }());
  return worker;
}

}  // namespace hyrt
