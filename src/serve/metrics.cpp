#include "serve/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace hyrt::serve {

namespace {

// Counters with their help text; count() with another name is a bug caught in debug builds
// by the lookup below rendering it without help.
const std::map<std::string, std::string>& counter_help() {
  static const std::map<std::string, std::string> help = {
      {"hyrt_images_generated_total", "Images generated"},
      {"hyrt_jobs_completed_total", "txt2img and img2img jobs that ran to the end"},
      {"hyrt_jobs_interrupted_total", "txt2img and img2img jobs stopped by /sdapi/v1/interrupt"},
      {"hyrt_jobs_failed_total", "txt2img and img2img jobs that failed while running"},
      {"hyrt_jobs_abandoned_total",
       "txt2img and img2img jobs dropped or cancelled because their client disconnected"},
      {"hyrt_queue_rejected_total",
       "txt2img and img2img requests refused with 503 because the queue was full"},
      {"hyrt_model_loads_total", "Models loaded"},
  };
  return help;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[i];
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  os << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    os << name << "_bucket{le=\"" << le << "\"} " << cumulative << "\n";
  }
  os << name << "_sum " << number(sum_) << "\n" << name << "_count " << count_ << "\n";
  return os.str();
}

double Histogram::quantile(double q) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ == 0) return 0;
  const double target = q * count_;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    if (cumulative >= target) return bounds_[i];
  }
  return bounds_.empty() ? 0 : bounds_.back();
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

double Histogram::sum() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sum_;
}

// Request latency spans a 64x64 image on the bundled model (tens of ms) to an SDXL batch on
// two cores (minutes); steps span a GPU step (ms) to a host step at 1024 (tens of s).
Metrics::Metrics()
    : request_seconds_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}),
      queue_wait_seconds_({0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300}),
      step_seconds_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}) {}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
}

void Metrics::count(const std::string& counter, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_[counter] += n;
}

uint64_t Metrics::counter(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find(name);
  return it == counters_.end() ? 0 : it->second;
}

std::string Metrics::render(const Values& gauges, const Values& counters) const {
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lock(mu_);
    os << "# HELP hyrt_http_requests_total HTTP requests answered, by route and status\n"
          "# TYPE hyrt_http_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      os << "hyrt_http_requests_total{route=\"" << key.first << "\",code=\"" << key.second << "\"} "
         << n << "\n";
    for (const auto& [name, help] : counter_help()) {
      auto it = counters_.find(name);
      os << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n"
         << name << " " << (it == counters_.end() ? 0 : it->second) << "\n";
    }
  }
  os << request_seconds_.render("hyrt_txt2img_request_seconds",
                                "txt2img and img2img latency from request to response");
  os << queue_wait_seconds_.render(
      "hyrt_txt2img_queue_wait_seconds",
      "Time a txt2img or img2img job waited in the queue before it ran");
  os << step_seconds_.render("hyrt_denoise_step_seconds", "Duration of one denoising step");
  for (const auto& [name, c] : counters)
    os << "# HELP " << name << " " << c.first << "\n# TYPE " << name << " counter\n"
       << name << " " << number(c.second) << "\n";
  for (const auto& [name, g] : gauges)
    os << "# HELP " << name << " " << g.first << "\n# TYPE " << name << " gauge\n"
       << name << " " << number(g.second) << "\n";
  return os.str();
}

}  // namespace hyrt::serve
