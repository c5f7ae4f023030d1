// What keeps generate's resident memory small: executables sharing one scratch arena,
// mapped weight pages dropped once a backend packed them, and stages released.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "backend/cpu/cpu_backend.h"
#include "exec/engine.h"
#include "exec/executable.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

namespace fs = std::filesystem;
using ir::OpKind;

// y = x · wᵀ for x [m, k], w [n, k]; weights in `w`.
std::shared_ptr<ir::Graph> linear_graph(int64_t m, int64_t k, int64_t n, const std::string& name) {
  auto g = std::make_shared<ir::Graph>();
  const ir::ValueId x = g->add_input("x", DType::kF32, {m, k});
  const ir::ValueId w = g->add_weight(name, DType::kF32, {n, k});
  const ir::ValueId h = g->add_node(OpKind::kLinear, {x, w});
  g->mark_output(g->add_node(OpKind::kSilu, {h}));
  return g;
}

std::vector<float> run_linear(exec::Executable& e, const Tensor& x) {
  std::memcpy(e.input(0).data, x.data(), x.bytes());
  e.run();
  const TensorView y = e.output(0);
  const float* p = static_cast<const float*>(y.data);
  return std::vector<float>(p, p + y.shape.numel());
}

// Two executables of different arena sizes share the engine's scratch; interleaved runs
// give the same results as executables with arenas of their own.
TEST(SharedScratch, InterleavedExecutablesMatchPrivateArenas) {
  weights::MemoryWeights w;
  w.add("small", test::random_tensor({24, 40}, 1));
  w.add("big", test::random_tensor({96, 40}, 2));
  const Tensor xs = test::random_tensor({8, 40}, 3), xb = test::random_tensor({300, 40}, 4);

  exec::EngineOptions own;
  own.share_scratch = false;
  exec::Engine separate(own);
  auto s0 = separate.compile(linear_graph(8, 40, 24, "small"), w);
  auto b0 = separate.compile(linear_graph(300, 40, 96, "big"), w);
  const auto want_s = run_linear(*s0, xs), want_b = run_linear(*b0, xb);

  exec::Engine shared;  // share_scratch defaults to on
  auto s = shared.compile(linear_graph(8, 40, 24, "small"), w);
  EXPECT_EQ(run_linear(*s, xs), want_s);
  auto b = shared.compile(linear_graph(300, 40, 96, "big"), w);  // grows the shared arena
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(run_linear(*b, xb), want_b) << round;
    EXPECT_EQ(run_linear(*s, xs), want_s) << round;  // rebinds to the moved arena
  }
}

// Dropping a tensor's pages keeps its view readable, with the same bytes.
TEST(SafetensorsDropPages, ViewsStayValidAndTheBytesComeBack) {
  const fs::path path = fs::temp_directory_path() / ("hyrt_drop_" + std::to_string(::getpid()));
  const long page = ::sysconf(_SC_PAGESIZE);
  const Tensor big = test::random_tensor({4 * page}, 9);  // 4 pages of floats = 16 pages
  const Tensor small = test::random_tensor({3}, 10);
  weights::write_safetensors(path, {{"big", big.view()}, {"small", small.view()}});
  auto f = weights::SafetensorsFile::open(path);
  const TensorView v = f->view("big");
  ASSERT_EQ(std::memcmp(v.data, big.data(), big.bytes()), 0);  // faults every page in
  const size_t dropped = f->drop_pages(*f->find("big"));
  EXPECT_GE(dropped, static_cast<size_t>(14 * page));  // all whole pages inside the tensor
  EXPECT_EQ(dropped % static_cast<size_t>(page), 0u);
  EXPECT_EQ(f->drop_pages(*f->find("small")), 0u);  // 12 bytes: no whole page inside
  EXPECT_EQ(std::memcmp(v.data, big.data(), big.bytes()), 0);
  EXPECT_EQ(std::memcmp(f->view("small").data, small.data(), small.bytes()), 0);
  fs::remove(path);
}

}  // namespace
}  // namespace hyrt
