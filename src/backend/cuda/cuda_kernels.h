// hyrt's own CUDA kernels for the GEMM programs (cuda_kernels.cu): the activation quantizer,
// the int32 rescale epilogue, the per-layer weight dequantizer, f32 -> f16 conversion, and
// two helpers for timing (a random fill, a spin that keeps the launch queue full); and
// im2col (plain, and fused with the quantizer) for convolutions run as GEMMs, with the weight
// reorder that matches its column order (im2col.cu).
//
// Plain functions over device pointers, so that this header compiles as ordinary C++ and
// the .cu file includes no hyrt header. Each launch_* enqueues on `stream` and returns
// cudaGetLastError() right after the launch (the caller wraps it in HYRT_CUDA_CHECK, which
// names the wrapper in the error). Zero-sized work launches nothing. f16 data is passed as
// uint16_t (IEEE binary16 bits). Matrices are dense row-major with the given leading
// dimension (elements between row starts).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace hyrt::backend::cuda {

enum class FloatType : uint8_t { kF32, kF16 };

// Per-row symmetric int8 quantization of activations, the CPU backend's rule exactly
// (cpu/int8_common.h):
//   absmax = max |x[r, :]|; absmax == 0: scale = 0, q = 0;
//   else inv = 127 / absmax, scale = absmax / 127 (f32, IEEE division),
//        q = clamp(round_half_even(x · inv), -127, 127) with x · inv in f32.
// x [rows, cols] (ld = cols) f32 or f16 -> q s8 [rows, ld_q], columns cols..ld_q-1 set to 0
// (the K padding the int8 GEMM needs), scales f32 [rows].
cudaError_t launch_quantize_rows_s8(const void* x, FloatType x_type, int64_t rows, int64_t cols,
                                    int64_t ld_q, int8_t* q, float* scales, cudaStream_t stream);

// Per-image symmetric int8 quantization (the implicit-GEMM convolution's operand,
// gemm_s8_fused.h): the rule above with one absmax per image instead of per row.
// x [images, elems] (f32 or f16, dense) -> q s8 [images, elems]; image_absmax f32 [images]
// (written: each image's max |x|, the scale's source); row_scales f32 [images · rows_per_image]
// = each image's scale (absmax / 127) repeated over its rows (the GEMM's per-row scale vector;
// rows_per_image may be 0). Two kernels after a memset of image_absmax; `multiprocessors` sizes
// their grids. cudaErrorInvalidValue above 65535 images.
cudaError_t launch_quantize_images_s8(const void* x, FloatType x_type, int64_t images,
                                      int64_t elems, int8_t* q, float* image_absmax,
                                      int64_t rows_per_image, float* row_scales,
                                      int multiprocessors, cudaStream_t stream);

// A convolution with few output channels computed directly, without an im2col matrix
// (im2col.cu says why): y [B, Ho, Wo, N] = conv(x [B, H, W, C], w) (+ bias[n]) (+ residual),
// f32 sums over the kh·kw·C inputs (padding reads 0), one rounding to the output type. x, y and
// the residual (null: none; [B, Ho, Wo, N], may not be y) of `type`; w [N, kh·kw·C] in the im2col
// column order (launch_reorder_weight_rows), of `type`, staged whole in shared memory; bias f32
// [N] or null. conv_narrow_applies says which N and K it takes; cudaErrorInvalidValue for others
// or a bad geometry. `multiprocessors` sizes the grid.
inline constexpr int64_t kConvNarrowMaxWeightBytes = 48 << 10;
bool conv_narrow_applies(int64_t out_channels, int64_t k, FloatType type);
cudaError_t launch_conv_narrow(const void* x, FloatType type, int64_t batch, int64_t height,
                               int64_t width, int64_t channels, int kernel_h, int kernel_w,
                               int stride, int padding, int64_t out_h, int64_t out_w, const void* w,
                               int64_t out_channels, const float* bias, const void* residual,
                               void* y, int multiprocessors, cudaStream_t stream);

// A GEMM node's fused activation (ir::Activation, same order): SiLU and QuickGELU with the
// hardware exponential, GELU with erff — the device elementwise kernels' math (op_device.cuh).
enum class EpilogueActivation : uint8_t { kNone, kSilu, kGelu, kQuickGelu, kRelu };

// The W8A8 epilogue: acc s32 [rows, ld_acc] -> y [rows, cols] (ld = cols), f32 or f16:
//   y[r, c] = act(float(acc[r, c]) · (row_scale[r] · col_scale[c]) + bias[c]) + residual[r, c]
// bias (f32 [cols]) and residual ([rows, cols], ld = cols, y's type) may be null; residual may
// be y itself (each element is read before it is written).
cudaError_t launch_rescale_s32(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc,
                               const float* row_scale, const float* col_scale, const float* bias,
                               EpilogueActivation act, const void* residual, void* y,
                               FloatType y_type, cudaStream_t stream);

// In place over n elements of y (f32 or f16): y[i] = act(y[i]) + residual[i] (residual of y's
// type, may be null) — the f16 GEMM's activation epilogue, which cuBLASLt has no form of.
cudaError_t launch_activation_epilogue(void* y, const void* residual, int64_t n,
                                       EpilogueActivation act, FloatType type, cudaStream_t stream);

// One layer's "8-bit S" weights widened for the float GEMM: q s8 [rows, ld_q] ->
// w [rows, cols] (ld = cols) of w_type, w[r, c] = float(q[r, c]) · scale[r] (an f32 product,
// rounded to nearest even for f16).
cudaError_t launch_dequantize_rows(const int8_t* q, int64_t rows, int64_t cols, int64_t ld_q,
                                   const float* scale, void* w, FloatType w_type,
                                   cudaStream_t stream);

// y[i] = f16(x[i]) for n elements, rounded to nearest even.
cudaError_t launch_f32_to_f16(const float* x, int64_t n, uint16_t* y, cudaStream_t stream);

// data[i] = uniform value in [-scale, scale] from a hash of (seed, i): deterministic, never
// all zeros — for timing runs, which must not run on zeros.
cudaError_t launch_fill_random(void* data, FloatType type, int64_t n, uint64_t seed, float scale,
                               cudaStream_t stream);

// im2col of an NHWC input for a convolution run as a GEMM, for rows [row_begin, row_begin + rows)
// of the matrix (all of them: row_begin 0, rows B·Ho·Wo):
//   x [B, H, W, C] -> col [B·Ho·Wo, kh·kw·C], row (b, oh, ow), column (i, j, c) in that order
//   (the weights are reordered to [Cout, kh, kw, C] to match), with
//   col[(b, oh, ow), (i, j, c)] = x[b, oh·stride − padding + i, ow·stride − padding + j, c],
//   0 where that position falls outside the input (zero padding, the same amount on every
//   side: oneDNN's and PyTorch's symmetric padding; Ho = (H + 2·padding − kh) / stride + 1).
// A GEMM run in row chunks gathers one chunk per launch: col [rows, kh·kw·C] holds them from its
// first row, i.e.
//   col[r, (i, j, c)] = the whole matrix's [row_begin + r, (i, j, c)],
// where row m = (b·Ho + oh)·Wo + ow counts over the whole batch (a chunk may span images).
// x and col are of `type` (f16, or f32 for wide-range activations); 16-byte accesses when
// 16 bytes of channels divide C and both pointers are 16-byte aligned.
// cudaErrorInvalidValue unless 0 <= row_begin and row_begin + rows <= B·Ho·Wo.
cudaError_t launch_im2col(const void* x, FloatType type, int64_t batch, int64_t height,
                          int64_t width, int64_t channels, int kernel_h, int kernel_w, int stride,
                          int padding, int64_t out_h, int64_t out_w, int64_t row_begin,
                          int64_t rows, void* col, cudaStream_t stream);

// The W8A8 prologue of such a convolution in one pass: the im2col matrix above, never written
// out, quantized per row exactly as launch_quantize_rows_s8 would quantize it, into
// q s8 [rows, ld_q] (columns kh·kw·C..ld_q-1 set to 0) and scales f32 [rows], for the rows
// [row_begin, row_begin + rows) of the matrix as launch_im2col takes them (q[r, :] and scales[r]
// are matrix row row_begin + r); x of `type`. cudaErrorInvalidValue unless 0 <= row_begin and
// row_begin + rows <= B·Ho·Wo. Rows of up to 16384 f16 (8192 f32) values with 16-byte channel
// groups are gathered once and held in registers, wider ones twice (im2col.cu);
// $HYRT_CUDA_QUANTIZE=twopass gathers every row twice (for measuring). The same bits either way.
cudaError_t launch_im2col_quantize_s8(const void* x, FloatType type, int64_t batch, int64_t height,
                                      int64_t width, int64_t channels, int kernel_h, int kernel_w,
                                      int stride, int padding, int64_t out_h, int64_t out_w,
                                      int64_t row_begin, int64_t rows, int64_t ld_q, int8_t* q,
                                      float* scales, cudaStream_t stream);

// A GEMM's weights rearranged into the im2col column order and zero-padded, on the device
// (uploaded as stored, so the host does no per-element work):
//   src [rows, groups·taps] dense, row r holding element (c, t) at c·taps + t — a conv's OIHW
//   weight, row o = [Cin][kh·kw] — -> dst [dst_rows, ld_dst] with
//   dst[r, t·groups + c] = src[r, c·taps + t] for r < rows, c < groups, t < taps,
//   and 0 in columns groups·taps..ld_dst-1 and rows rows..dst_rows-1.
// taps = 1 only pads. Elements of elem_bytes 1 (s8), 2 (f16) or 4 (f32), copied as bits.
// cudaErrorInvalidValue for another size, taps < 1, dst_rows < rows or ld_dst < groups·taps.
cudaError_t launch_reorder_weight_rows(const void* src, int elem_bytes, int64_t rows,
                                       int64_t groups, int64_t taps, int64_t dst_rows,
                                       int64_t ld_dst, void* dst, cudaStream_t stream);

// A one-thread kernel that busy-waits `microseconds` of GPU time. Enqueued before a timed
// sequence, it lets the host queue every timed launch before the GPU reaches them, so that
// events between launches measure GPU time rather than host launch overhead.
cudaError_t launch_spin(double microseconds, cudaStream_t stream);

}  // namespace hyrt::backend::cuda
