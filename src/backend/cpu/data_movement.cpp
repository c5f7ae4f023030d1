// Ops that move or generate data without arithmetic worth the name: concat, slice, nearest 2x
// upsample, permute, reshape, embedding lookup and the sinusoidal timestep embedding.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

constexpr int64_t kGrainBytes = 64 * 1024;

// Concat along `axis`: every input is [outer, extent_i · inner]; output row r is the
// inputs' rows r laid side by side.
class ConcatKernel final : public Kernel {
 public:
  explicit ConcatKernel(const PrepareContext& ctx) : inputs_(ctx) {
    const Shape& out = ctx.output().shape;
    int axis = ctx.node.attr<ir::ConcatAttrs>().axis;
    if (axis < 0) axis += out.rank();
    outer_ = out.numel(0, axis);
    const int64_t inner = out.numel(axis + 1, out.rank());
    for (size_t i = 0; i < ctx.node.inputs.size(); ++i)
      row_elems_.push_back(ctx.input(i).shape[axis] * inner);
    out_row_elems_ = out.numel(axis, out.rank());
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    float* y = output.as<float>();
    std::vector<const float*> src(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      src[i] = inputs_.get(inputs, i);
    const int64_t grain =
        std::max<int64_t>(1, kGrainBytes / 4 / std::max<int64_t>(1, out_row_elems_));
    parallel_for(outer_, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* dst = y + r * out_row_elems_;
        for (size_t i = 0; i < src.size(); ++i) {
          std::memcpy(dst, src[i] + r * row_elems_[i], row_elems_[i] * sizeof(float));
          dst += row_elems_[i];
        }
      }
    });
  }

 private:
  F32Inputs inputs_;  // a concat input may be a weight (e.g. a learned token)
  int64_t outer_, out_row_elems_;
  std::vector<int64_t> row_elems_;
};

// Slice along `axis`: x is [outer, extent · inner], y [outer, length · inner]; output row r
// is input row r from element start · inner on.
class SliceKernel final : public Kernel {
 public:
  explicit SliceKernel(const PrepareContext& ctx) {
    const Shape& x = ctx.input(0).shape;
    const auto& a = ctx.node.attr<ir::SliceAttrs>();
    const int axis = a.axis < 0 ? a.axis + x.rank() : a.axis;
    const int64_t inner = x.numel(axis + 1, x.rank());
    outer_ = x.numel(0, axis);
    in_row_elems_ = x[axis] * inner;
    offset_elems_ = a.start * inner;
    out_row_elems_ = a.length * inner;
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<float>();
    float* y = output.as<float>();
    const int64_t grain =
        std::max<int64_t>(1, kGrainBytes / 4 / std::max<int64_t>(1, out_row_elems_));
    parallel_for(outer_, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(y + r * out_row_elems_, x + r * in_row_elems_ + offset_elems_,
                    out_row_elems_ * sizeof(float));
    });
  }

 private:
  int64_t outer_, in_row_elems_, offset_elems_, out_row_elems_;
};

// x [B, H, W, C] -> y [B, Ho, Wo, C]; y[b, i, j] = x[b, src(i), src(j)] with PyTorch's
// "nearest" rule src(i) = min(floor(i · (in/out as float)), in − 1) — exactly i/2 for 2x.
class UpsampleNearestKernel final : public Kernel {
 public:
  UpsampleNearestKernel(const Shape& x, const Shape& y)
      : b_(x[0]), h_(x[1]), w_(x[2]), c_(x[3]), oh_(y[1]), ow_(y[2]) {
    auto table = [](int64_t in, int64_t out) {
      std::vector<int64_t> t(static_cast<size_t>(out));
      const float scale = static_cast<float>(in) / static_cast<float>(out);
      for (int64_t i = 0; i < out; ++i)
        t[i] = std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<float>(i) * scale)),
                                 in - 1);
      return t;
    };
    src_row_ = table(h_, oh_);
    src_col_ = table(w_, ow_);
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    float* y = output.as<float>();
    const int64_t c = c_;
    const size_t pixel_bytes = static_cast<size_t>(c) * sizeof(float);
    parallel_for(b_ * oh_, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / oh_, i = r % oh_;
        const float* src = x + (b * h_ + src_row_[i]) * w_ * c;  // [W, C]
        float* dst = y + r * ow_ * c;                            // [Wo, C]
        for (int64_t j = 0; j < ow_; ++j)
          std::memcpy(dst + j * c, src + src_col_[j] * c, pixel_bytes);
      }
    });
  }

 private:
  int64_t b_, h_, w_, c_, oh_, ow_;
  std::vector<int64_t> src_row_, src_col_;
};

// General permute (rank <= 8): output dim i is input dim perm[i]. Walks the output in
// order, reading the input with permuted strides; when the innermost axis stays
// innermost the inner run is a memcpy.
class PermuteKernel final : public Kernel {
 public:
  explicit PermuteKernel(const PrepareContext& ctx) {
    const Shape& x = ctx.input(0).shape;
    const Shape& perm = ctx.node.attr<ir::PermuteAttrs>().perm;
    rank_ = x.rank();
    std::vector<int64_t> in_stride(rank_, 1);
    for (int i = rank_ - 2; i >= 0; --i)
      in_stride[i] = in_stride[i + 1] * x[i + 1];
    for (int i = 0; i < rank_; ++i) {
      out_extent_.push_back(x[static_cast<int>(perm[i])]);
      src_stride_.push_back(in_stride[perm[i]]);
    }
    if (rank_ == 0) {
      out_extent_.push_back(1);
      src_stride_.push_back(1);
      rank_ = 1;
    }
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    float* y = output.as<float>();
    const int64_t inner = out_extent_.back();
    const int64_t inner_stride = src_stride_.back();
    int64_t rows = 1;
    for (int d = 0; d + 1 < rank_; ++d)
      rows *= out_extent_[d];
    parallel_for(rows, std::max<int64_t>(1, kGrainBytes / 4 / std::max<int64_t>(1, inner)),
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t r = r0; r < r1; ++r) {
                     int64_t src = 0, rem = r;
                     for (int d = rank_ - 2; d >= 0; --d) {
                       src += rem % out_extent_[d] * src_stride_[d];
                       rem /= out_extent_[d];
                     }
                     float* dst = y + r * inner;
                     if (inner_stride == 1) {
                       std::memcpy(dst, x + src, inner * sizeof(float));
                     } else {
                       for (int64_t j = 0; j < inner; ++j)
                         dst[j] = x[src + j * inner_stride];
                     }
                   }
                 });
  }

 private:
  int rank_;
  std::vector<int64_t> out_extent_, src_stride_;
};

// A reshape is a view; the planner normally aliases its output to its input and the
// kernel does nothing. If it placed them apart, copy.
class ReshapeKernel final : public Kernel {
 public:
  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    if (output.data == inputs[0].data) return;
    const size_t bytes = output.bytes();
    const char* src = inputs[0].as<const char>();
    char* dst = output.as<char>();
    parallel_for(static_cast<int64_t>(bytes), kGrainBytes, [&](int64_t b0, int64_t b1) {
      std::memcpy(dst + b0, src + b0, static_cast<size_t>(b1 - b0));
    });
  }
};

// ids [...] (s32) -> rows of table [V, C]. Every id is checked before anything is
// written, so a bad id leaves the output untouched and throws from the calling thread.
class EmbeddingKernel final : public Kernel {
 public:
  explicit EmbeddingKernel(const PrepareContext& ctx)
      : table_(shared_weight_f32(ctx, 1)),
        vocab_(ctx.input(1).shape[0]),
        width_(ctx.input(1).shape[1]),
        name_(ctx.node.name) {}

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const int32_t* ids = inputs[0].as<const int32_t>();
    const int64_t n = inputs[0].numel();
    for (int64_t i = 0; i < n; ++i)
      HYRT_CHECK(ids[i] >= 0 && ids[i] < vocab_, kInvalidArgument, "node '", name_, "': id ",
                 ids[i], " at position ", i, " is outside the table of ", vocab_, " rows");
    const float* table = table_->as<float>();
    float* y = output.as<float>();
    const int64_t c = width_;
    parallel_for(n, std::max<int64_t>(1, kGrainBytes / 4 / c), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        std::memcpy(y + i * c, table + static_cast<int64_t>(ids[i]) * c, c * sizeof(float));
    });
  }

  // held_bytes(): 0 — the table is the WeightCache's (shared with other shapes' kernels).

 private:
  SharedBuffer table_;  // [V, C] f32
  int64_t vocab_, width_;
  std::string name_;
};

// t [B] -> [B, dim], as diffusers' get_timestep_embedding (scale = 1):
//   exponent[i] = −ln(max_period) · i / (half − downscale_freq_shift), i < half = dim/2
//   emb[b, i]   = t[b] · exp(exponent[i]);  out = [sin(emb), cos(emb)] ([cos, sin] flipped)
// The frequencies and arguments are rounded to f32 exactly where torch computes in f32
// (so results follow the golden data: an argument near 1000 carries an f32 rounding of
// ~6e-5 that a double computation would not reproduce); sin/cos are then evaluated in
// double and rounded once.
class TimestepEmbeddingKernel final : public Kernel {
 public:
  explicit TimestepEmbeddingKernel(const PrepareContext& ctx)
      : batch_(ctx.input(0).shape[0]), attrs_(ctx.node.attr<ir::TimestepAttrs>()) {
    const int64_t half = attrs_.dim / 2;
    const float log_period = static_cast<float>(std::log(static_cast<double>(attrs_.max_period)));
    const float denom = static_cast<float>(half) - attrs_.downscale_freq_shift;
    for (int64_t i = 0; i < half; ++i) {
      const float exponent = (-log_period * static_cast<float>(i)) / denom;
      freqs_.push_back(static_cast<float>(std::exp(static_cast<double>(exponent))));
    }
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* t = inputs[0].as<const float>();
    float* y = output.as<float>();
    const int64_t half = static_cast<int64_t>(freqs_.size());
    const int64_t sin_at = attrs_.flip_sin_to_cos ? half : 0;
    const int64_t cos_at = attrs_.flip_sin_to_cos ? 0 : half;
    for (int64_t b = 0; b < batch_; ++b) {
      float* row = y + b * 2 * half;
      for (int64_t i = 0; i < half; ++i) {
        const double arg = static_cast<double>(t[b] * freqs_[i]);  // f32 product, as torch
        row[sin_at + i] = static_cast<float>(std::sin(arg));
        row[cos_at + i] = static_cast<float>(std::cos(arg));
      }
    }
  }

 private:
  int64_t batch_;
  ir::TimestepAttrs attrs_;
  std::vector<float> freqs_;
};

}  // namespace

std::unique_ptr<Kernel> make_data_movement_kernel(const PrepareContext& ctx) {
  switch (ctx.node.op) {
    case ir::OpKind::kConcat:
      return std::make_unique<ConcatKernel>(ctx);
    case ir::OpKind::kUpsampleNearest:
      return std::make_unique<UpsampleNearestKernel>(ctx.input(0).shape, ctx.output().shape);
    case ir::OpKind::kPermute:
      return std::make_unique<PermuteKernel>(ctx);
    case ir::OpKind::kSlice:
      return std::make_unique<SliceKernel>(ctx);
    case ir::OpKind::kReshape:
      return std::make_unique<ReshapeKernel>();
    case ir::OpKind::kEmbedding:
      return std::make_unique<EmbeddingKernel>(ctx);
    case ir::OpKind::kTimestepEmbedding:
      return std::make_unique<TimestepEmbeddingKernel>(ctx);
    default:
      fail(ErrorCode::kInternal, "make_data_movement_kernel: unexpected op ",
           ir::op_name(ctx.node.op));
  }
}

}  // namespace hyrt::backend::cpu
