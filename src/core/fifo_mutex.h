// FifoMutex — a mutex that admits waiters in arrival order (a ticket lock on a condition
// variable). std::mutex makes no fairness promise: under steady load one thread can take it
// again and again while another waits. The public API's executor lock is one of these, so
// concurrent generate() calls run first come, first served.
//
// Meets the Lockable requirements (use std::lock_guard / std::unique_lock). Not recursive.
// Thread safety: all members may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace hyrt {

class FifoMutex {
 public:
  void lock() {
    std::unique_lock<std::mutex> guard(mutex_);
    const uint64_t ticket = next_ticket_++;
    turn_.wait(guard, [&] { return serving_ == ticket; });
  }
  bool try_lock() {
    std::lock_guard<std::mutex> guard(mutex_);
    if (serving_ != next_ticket_) return false;
    ++next_ticket_;
    return true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      ++serving_;
    }
    turn_.notify_all();
  }
  // Threads holding or waiting for the lock (a snapshot).
  uint64_t queued() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return next_ticket_ - serving_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable turn_;
  uint64_t next_ticket_ = 0;  // handed to the next thread that asks
  uint64_t serving_ = 0;      // the ticket that may hold the lock now
};

}  // namespace hyrt
