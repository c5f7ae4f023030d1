// A terminal progress bar for long loops: "step 7/20 [=======>      ] 1.84 it/s ETA 7.1s".
// Redraws in place on a terminal; prints nothing when stderr is not one (logs stay clean).
#pragma once

#include <chrono>
#include <string>

namespace hyrt::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  void update(int done, int total);
  void finish();

 private:
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool tty_;
  bool drawn_ = false;
};

}  // namespace hyrt::cli
