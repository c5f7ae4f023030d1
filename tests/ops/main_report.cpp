// Prints the worst relative error per op family when the op tests finish.
#include <cstdio>

#include "op_case.h"

namespace {

class WorstErrorReport : public ::testing::Environment {
 public:
  void TearDown() override {
    std::printf("\nworst relative L2 error per op family (tolerance %.0e):\n",
                hyrt::test::kTolerance);
    for (const auto& [family, err] : hyrt::test::worst_errors())
      std::printf("  %-20s %.3e\n", family.c_str(), err);
  }
};

const auto* const kReport = ::testing::AddGlobalTestEnvironment(new WorstErrorReport);

}  // namespace
