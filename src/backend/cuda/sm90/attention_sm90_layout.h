// The shared-memory layout of Hopper's attention kernel's K and V tiles (attention_sm90.cu), as
// functions both the kernel and a host test (tests/sm90/attention_layout_test.cu, against
// CuTe's canonical GMMA layouts) use. No state; every function is constexpr.
//
// SW32: wgmma's 32-byte-swizzled canonical form. A tile of `rows` rows (keys) by 16-byte chunks
// (8 halves of the head dim each) is stored in column blocks of two chunks (one k-step of 16
// halves): block c/2 at 32·rows·(c/2), row r at 32·r within it, and chunk c%2 of the row swapped
// with the other where bit 2 of r is set (address bit 4 XOR bit 7, CuTe's Swizzle<1,4,3>; the
// pattern repeats every 256 bytes, so tiles start 256-byte aligned). K is the B operand of q·kᵀ
// read K-major (a k-step is a column block, its 8-row groups 256 bytes apart); V is the B
// operand of P·v read MN-major (head dim along N: swizzle atoms of 16 columns x 8 keys, a column
// block apart along N, 256 bytes apart along the keys).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HYRT_SM90_HOST_DEVICE __host__ __device__
#else
#define HYRT_SM90_HOST_DEVICE
#endif

namespace hyrt::backend::cuda::sm90_layout {

// Byte offset of 16-byte chunk c of row r in a tile of `rows` rows.
HYRT_SM90_HOST_DEVICE constexpr uint32_t sw32_offset(int r, int c, int rows) {
  return static_cast<uint32_t>((c >> 1) * rows * 32 + r * 32 + (((c & 1) ^ ((r >> 2) & 1)) << 4));
}

// A wgmma shared-memory descriptor for SW32 (layout type 3 in bits 62-63; the start address and
// the leading and stride byte offsets in bytes, stored in 16-byte units; base offset 0). The
// start address is the low 14-bit field, so a descriptor plus (bytes >> 4) describes the
// address that many bytes on (shared memory ends below 2^18 bytes: no carry out of the field).
HYRT_SM90_HOST_DEVICE constexpr uint64_t sw32_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr >> 4) & 0x3FFF) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo >> 4) & 0x3FFF) << 32 | uint64_t{3} << 62;
}

// The descriptors' byte offsets. K, K-major: the leading offset is unused by swizzled K-major
// layouts (1 unit, as CuTe writes it), the stride offset is between 8-row groups. V, MN-major:
// the leading offset is between 16-column atoms (a column block), the stride offset between
// 8-key groups.
struct DescOffsets {
  uint32_t lbo, sbo;
};
HYRT_SM90_HOST_DEVICE constexpr DescOffsets k_desc_offsets(int /*rows*/) {
  return {16, 256};
}
HYRT_SM90_HOST_DEVICE constexpr DescOffsets v_desc_offsets(int rows) {
  return {static_cast<uint32_t>(32 * rows), 256};
}
// Bytes from one k-step's operand to the next: K's next column block; V's next 16 keys.
HYRT_SM90_HOST_DEVICE constexpr uint32_t k_step_bytes(int rows) {
  return static_cast<uint32_t>(32 * rows);
}
constexpr uint32_t kVStepBytes = 512;

}  // namespace hyrt::backend::cuda::sm90_layout
