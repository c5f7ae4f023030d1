#include "progress.h"

#include <unistd.h>

#include <cstdio>

namespace hyrt::cli {

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), start_(std::chrono::steady_clock::now()), tty_(isatty(2) != 0) {}

void ProgressBar::update(int done, int total) {
  if (!tty_ || total <= 0) return;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = s > 0 ? done / s : 0;
  const double eta = rate > 0 ? (total - done) / rate : 0;
  constexpr int kWidth = 30;
  const int fill = done * kWidth / total;
  std::string bar(static_cast<size_t>(kWidth), ' ');
  for (int i = 0; i < fill; ++i)
    bar[static_cast<size_t>(i)] = '=';
  if (fill < kWidth) bar[static_cast<size_t>(fill)] = '>';
  if (rate >= 1 || rate == 0)
    std::fprintf(stderr, "\r%s %d/%d [%s] %.2f it/s ETA %.1fs ", label_.c_str(), done, total,
                 bar.c_str(), rate, eta);
  else
    std::fprintf(stderr, "\r%s %d/%d [%s] %.2f s/it ETA %.1fs ", label_.c_str(), done, total,
                 bar.c_str(), 1 / rate, eta);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

}  // namespace hyrt::cli
