// Hopper attention's shared-memory layout (backend/cuda/sm90/attention_sm90_layout.h) against
// CuTe's canonical GMMA layouts, on the host (no GPU): every element's byte offset in a K tile
// (K-major) and a V tile (MN-major) against CuTe's SW32 atoms tiled to the same shape, and the
// descriptors' leading and stride offsets and layout type against make_gmma_desc's for one
// k-step's slice. The kernel streams K and V into exactly these offsets and hands wgmma exactly
// these descriptors, so a mismatch here is a wrong product on the device.
#include <gtest/gtest.h>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

#include "backend/cuda/sm90/attention_sm90_layout.h"

namespace {

using namespace cute;
namespace layout = hyrt::backend::cuda::sm90_layout;

// Offsets of the kernel's formula: chunk c of row r, then the half within the chunk.
int kernel_offset(int row, int col, int rows) {
  return static_cast<int>(layout::sw32_offset(row, col / 8, rows)) + (col % 8) * 2;
}

template <int kRows, int kCols>
void check_tiles() {
  SCOPED_TRACE(testing::Message() << kRows << " keys x " << kCols << " head columns");
  alignas(1024) static half_t buf[kRows * kCols];
  // K: rows = keys (wgmma's N), cols = head dim (K), head dim contiguous; CuTe's default tile
  // order (atoms down the keys first) is the kernel's column blocks.
  Tensor k = make_tensor(make_smem_ptr(buf), tile_to_shape(GMMA::Layout_K_SW32_Atom<half_t>{},
                                                           Shape<Int<kRows>, Int<kCols>>{}));
  // V: (head dim = N, keys = K), head dim contiguous, atoms down the keys first.
  Tensor v = make_tensor(make_smem_ptr(buf),
                         tile_to_shape(GMMA::Layout_MN_SW32_Atom<half_t>{},
                                       Shape<Int<kCols>, Int<kRows>>{}, Step<_2, _1>{}));
  int bad = 0;
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      const int want_k =
          static_cast<int>(reinterpret_cast<char*>(&k(r, c)) - reinterpret_cast<char*>(buf));
      const int want_v =
          static_cast<int>(reinterpret_cast<char*>(&v(c, r)) - reinterpret_cast<char*>(buf));
      const int got = kernel_offset(r, c, kRows);
      if ((got != want_k || got != want_v) && ++bad <= 5)
        ADD_FAILURE() << "key " << r << " column " << c << ": kernel " << got << ", CuTe K "
                      << want_k << ", V " << want_v;
    }
  }
  EXPECT_EQ(bad, 0);
  // One k-step's slice of each: K is (keys x 16 head columns) at column block 1, V is (head
  // columns x 16 keys) at keys 16..31. make_gmma_desc reads their layouts.
  auto k_slice = local_tile(k, Shape<Int<kRows>, _16>{}, make_coord(0, 1));
  auto v_slice = local_tile(v, Shape<Int<kCols>, _16>{}, make_coord(0, 1));
  const GmmaDescriptor kd = GMMA::make_gmma_desc<GMMA::Major::K>(k_slice);
  const GmmaDescriptor vd = GMMA::make_gmma_desc<GMMA::Major::MN>(v_slice);
  const uint64_t ours_k =
      layout::sw32_desc(0, layout::k_desc_offsets(kRows).lbo, layout::k_desc_offsets(kRows).sbo);
  const uint64_t ours_v =
      layout::sw32_desc(0, layout::v_desc_offsets(kRows).lbo, layout::v_desc_offsets(kRows).sbo);
  // Compare everything but the start address (CuTe cannot take a shared address on the host).
  constexpr uint64_t kNoStart = ~uint64_t{0x3FFF};
  EXPECT_EQ(kd.desc_ & kNoStart, ours_k & kNoStart) << "K descriptor";
  EXPECT_EQ(vd.desc_ & kNoStart, ours_v & kNoStart) << "V descriptor";
  // The k-step advances: where the slices start.
  EXPECT_EQ(reinterpret_cast<char*>(&k_slice(0, 0)) - reinterpret_cast<char*>(buf),
            layout::k_step_bytes(kRows));
  EXPECT_EQ(reinterpret_cast<char*>(&v_slice(0, 0)) - reinterpret_cast<char*>(buf),
            layout::kVStepBytes);
}

TEST(Sm90AttentionLayout, MatchesCuteSw32) {
  check_tiles<64, 48>();  // head dim 40: q·kᵀ over 48 (k-steps of 16), V with the ones column
  check_tiles<64, 64>();
  check_tiles<64, 80>();
  check_tiles<128, 48>();
  check_tiles<128, 64>();
  check_tiles<128, 80>();
}

// The swizzle itself: rows 4-7 of every 8 hold their two chunks the other way round, and an
// unswizzled formula would not pass the test above (the check can fail).
TEST(Sm90AttentionLayout, SwizzleSwapsTheUpperRows) {
  EXPECT_EQ(layout::sw32_offset(0, 0, 64), 0u);
  EXPECT_EQ(layout::sw32_offset(0, 1, 64), 16u);
  EXPECT_EQ(layout::sw32_offset(4, 0, 64), 4u * 32 + 16);
  EXPECT_EQ(layout::sw32_offset(4, 1, 64), 4u * 32);
  EXPECT_EQ(layout::sw32_offset(9, 2, 64), 64u * 32 + 9 * 32);
}

}  // namespace
