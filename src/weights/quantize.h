// "8-bit S" weight quantization (../shared/DESIGN.md, "Numbers and formats").
//
// A weight W with rows r = 0..R-1 (row = output channel = dim 0: a linear [N, K] has N
// rows of K, a conv [O, I, kh, kw] has O rows of I·kh·kw) is stored as
//   q  s8, same shape as W, every value in [-127, 127] (-128 is never produced, so
//      negation and symmetric int8 GEMM kernels need no special case)
//   s  f32 [R], one scale per row, no zero point
// and read back as W'[r, k] = s[r] · q[r, k].
//
// Fitting one row w (in f32, whatever the source dtype):
//   1. s₀ = max|w| / 127 and q = clamp(round(w / s₀), -127, 127)   (round half to even);
//   2. least-squares refit: for fixed q the s minimising Σ(w − s·q)² is Σw·q / Σq²; re-round
//      q at that s and repeat while the row's squared error Σ(w − s·q)² strictly falls, at
//      most `refit_iterations` times, keeping the best (s, q) seen.
// Each refit step cannot increase the error (the LS s is optimal for the old q; rounding is
// optimal for the new s), so the result is never worse than plain absmax/127 — and that
// is checked on the measured error, not assumed. Because a refit may shrink s below
// max|w|/127, the row's largest values can clip to ±127; every value with |w| ≤ 127·s is
// within s/2 of s·q.
//
// Special rows: a row of zeros gets s = 0 and q = 0 (dequantizes to exact zeros, no
// division by zero anywhere). NaN or ±Inf anywhere throws kInvalidArgument naming the row
// and column: such a weight is broken and quantizing it would hide that.
//
// Threading: quantize_per_row() splits rows across hyrt::parallel_for and is deterministic
// (the same input gives bit-identical output at any thread count). Pure functions otherwise;
// safe to call concurrently.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/shape.h"
#include "core/tensor.h"

namespace hyrt::weights {

inline constexpr int kDefaultRefitIterations = 8;

struct QuantizedTensor {
  Tensor q;      // s8, the source's shape
  Tensor scale;  // f32 [rows]
  // ‖W − W'‖₂ / ‖W‖₂ over the whole tensor (0 for an all-zero tensor).
  double rel_error = 0;
  // The same for the worst single row (rows of zeros count as 0).
  double worst_row_rel_error = 0;
};

// Quantizes `w` (f32, f16 or bf16; rank ≥ 2; any alignment) per row as described above.
// refit_iterations = 0 gives plain absmax/127. Throws kInvalidArgument for another dtype,
// rank < 2, refit_iterations < 0, or a non-finite value.
QuantizedTensor quantize_per_row(const TensorView& w,
                                 int refit_iterations = kDefaultRefitIterations);

// s · q as f32, the shape of `q`. `q` must be s8 of rank ≥ 2 and `scale` f32 [q.shape[0]]
// (kInvalidArgument otherwise). Either view may be unaligned (mmapped files).
Tensor dequantize_per_row(const TensorView& q, const TensorView& scale);

// Which weights of an SD 1.5 model hyrt stores as "8-bit S" (the rest keep their source
// dtype, 16 or 32-bit). Quantized: every linear and convolution weight — attention
// projections (q/k/v/out, self and cross), feed-forward and MLP linears, resnet 3x3 convs,
// 1x1 shortcut convs and proj_in/proj_out, time-embedding linears, down/up-sampler convs,
// VAE attention projections. Kept:
//   - every tensor not named `*.weight` (biases above all: they are added after the GEMM
//     at f32, tiny, and their error would not be relative to anything);
//   - rank < 2 (norm weights/biases, and any other vector);
//   - norms by name (`norm`, `layer_norm`, `group_norm`, `final_layer_norm`,
//     `conv_norm_out` …): they scale activations directly;
//   - embeddings (`embeddings.*`: the token table is a gather, not a GEMM, and the
//     position table is added to the input as is);
//   - layers touching pixel or latent space: a weight with ≤ 8 output rows or ≤ 8 input
//     channels (dim 1) — unet.conv_in/conv_out, vae quant_conv/post_quant_conv, the VAE's
//     conv_in/conv_out. Together they hold < 0.01% of SD 1.5's parameters (~0.1 MB of
//     ~1 GB saved if quantized), and every latent or pixel passes through them, so their
//     error reaches the output unaveraged. Their measured error is NOT what sets them
//     apart: on the golden tiny model (random weights) they would quantize to relative
//     errors 0.3–0.8%, like every other layer (0.58% median, 0.79% worst) — the rule is
//     "no saving, direct exposure", and the figures are printed by
//     tests/unit/quantize_test.cpp (QuantizePolicy.GoldenTinyModelErrors);
//   - layers whose rounding error reaches the output without averaging out, found by
//     measurement (`hyrt parity --int8 --keep PATTERN` on the golden model, UNet output
//     relative L2 vs f32): the time embedding (`time_embedding.linear_1/2` and every
//     resnet's `time_emb_proj`: their error is one offset per channel, added to every
//     pixel alike), and the 1x1 convolutions on the residual stream (`conv_shortcut`,
//     transformer `proj_in`/`proj_out`). Quantizing every layer gave W8 2.97e-2 and
//     W8A8 5.2e-2 (targets 2e-2 and 5e-2); keeping these gives 1.88e-2 and 3.8–4.2e-2.
//     Keeping any one family alone was not enough (conv_shortcut 2.41e-2, time_emb
//     2.93e-2, proj 2.63e-2, all resnets 2.2e-2 — see the int8 notes). In SD 1.5 they
//     hold ~76 M of the UNet's 860 M parameters (~9 %), stored 16-bit: +76 MB on disk.
bool should_quantize(std::string_view canonical_name, const Shape& shape);

// should_quantize() minus user exceptions: a tensor matching any `keep` pattern stays in its
// source dtype. A pattern with `*` (any run of characters, '.' included) or `?` (one
// character) must match the whole canonical name; a pattern without wildcards matches any
// name containing it ("attn2" keeps every cross-attention projection).
struct QuantizePolicy {
  std::vector<std::string> keep;
  bool quantize(std::string_view canonical_name, const Shape& shape) const;
};

// The matching rule of QuantizePolicy::keep (exposed for tests and the CLI's help).
bool name_matches_pattern(std::string_view pattern, std::string_view name);

}  // namespace hyrt::weights
