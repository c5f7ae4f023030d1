// Prometheus text-format metrics (exposition format 0.0.4) for `hyrt serve`: counters and
// histograms kept in memory, rendered on GET /metrics.
//
// Thread safety: every member function may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace hyrt::serve {

// A histogram with fixed upper bounds (seconds), cumulative as Prometheus wants them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // `name`'s _bucket, _sum and _count lines, with HELP and TYPE.
  std::string render(const std::string& name, const std::string& help) const;
  // The approximate q-quantile (0..1) from the buckets: the upper bound of the bucket the
  // q-th observation falls in; 0 when empty.
  double quantile(double q) const;
  uint64_t count() const;
  double sum() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  // One finished HTTP request (route: the matched pattern, or "other").
  void count_request(const std::string& route, int status);
  void count(const std::string& counter, uint64_t n = 1);  // a named counter (see .cpp)
  Histogram& request_seconds() { return request_seconds_; }
  Histogram& queue_wait_seconds() { return queue_wait_seconds_; }
  Histogram& step_seconds() { return step_seconds_; }
  uint64_t counter(const std::string& name) const;

  // Everything, plus the gauges and counters kept elsewhere passed in (name -> {help, value}).
  using Values = std::map<std::string, std::pair<std::string, double>>;
  std::string render(const Values& gauges, const Values& counters = {}) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> counters_;
  Histogram request_seconds_;
  Histogram queue_wait_seconds_;
  Histogram step_seconds_;
};

}  // namespace hyrt::serve
