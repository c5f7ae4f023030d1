// Kernel classes for the non-GEMM ops on CUDA (cuda_ops.h): prepare uploads weights and fixes
// the launch parameters; run checks the bound views and enqueues the launches of op_kernels.h.
#include "backend/cuda/cuda_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/op_kernels.h"
#include "core/buffer.h"
#include "core/env.h"
#include "core/error.h"
#include "core/half.h"

namespace hyrt::backend::cuda {
namespace {

using ir::OpKind;

// --- estimate constants ----------------------------------------------------------------------
// Bandwidth a streaming kernel reaches on an H100 (a device-to-device copy moved ~3.0 TB/s;
// these kernels do a little less), and the cost of one launch with its tail.
constexpr double kBytesPerSecond = 2.5e12;
constexpr double kLaunchUs = 3.0;

FloatType float_type(DType t) {
  return t == DType::kF16 ? FloatType::kF16 : FloatType::kF32;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// The dtype the kernel holds input `i` in: its storage dtype, except an embedding table, which
// is kept in its output's (the lookup copies rows as they are).
DType input_storage(const ir::Graph& graph, const ir::Node& node, size_t i) {
  if (node.op == OpKind::kEmbedding && i == 1)
    return device_storage_dtype(graph.value(node.output));
  return device_storage_dtype(graph.value(node.inputs[i]));
}

// Whether group norms may write their output quantized for the implicit-GEMM convolutions
// (ir::NormAttrs::quantize_output, launch_group_norm_quantize): $HYRT_CUDA_GN_QUANTIZE=1.
// Off by default until it has run on a GPU (written 2026-12-08 without one): its tests are
// CudaQuantizedActivation.GroupNormQuantize* and .ConvsOnAQuantizedGroupNorm*.
bool group_norm_quantize_enabled() {
  return env_int("HYRT_CUDA_GN_QUANTIZE", 0, 1).value_or(0) == 1;
}

int normalized_axis(int axis, int rank) {
  return axis < 0 ? axis + rank : axis;
}

}  // namespace

std::string device_op_unsupported_reason(const ir::Graph& graph, const ir::Node& node) {
  switch (node.op) {
    case OpKind::kLinear:
    case OpKind::kConv2d:
    case OpKind::kAttention:
      return str_cat(ir::op_name(node.op), " is a GEMM-class op (run by the GEMM programs)");
    default:
      break;
  }
  const ir::Value& out = graph.value(node.output);
  if (ir::quantizes_output(node.attrs)) {
    // The quantizing forms (launch_layer_norm_quantize, launch_group_norm_quantize,
    // launch_geglu_quantize) read an f16 activation in rows of 8-wide vectors; the inputs and the
    // op's own limits are then checked as for the float form, below.
    const ir::Value& x = graph.value(node.inputs[0]);
    if (x.kind == ir::ValueKind::kWeight || device_storage_dtype(x) != DType::kF16)
      return str_cat("a quantizing ", ir::op_name(node.op), " reads an f16 activation");
    const int64_t c = x.shape.dim(-1);
    switch (node.op) {
      case OpKind::kLayerNorm:
        if (!layer_norm_quantize_supported(c))
          return str_cat("a quantizing layer norm over ", c,
                         " channels (a multiple of 8, up to 2048)");
        break;
      case OpKind::kGroupNorm:
        if (!group_norm_quantize_enabled())
          return "quantizing group norms are off (HYRT_CUDA_GN_QUANTIZE=1 turns them on)";
        if (!group_norm_quantize_supported(c, node.attr<ir::NormAttrs>().groups))
          return str_cat("a quantizing group norm over ", c,
                         " channels (a multiple of 8 the group norm takes)");
        break;
      case OpKind::kGeglu:
        if (!geglu_quantize_supported(c / 2))
          return str_cat("a quantizing GEGLU to ", c / 2,
                         " values a row (a multiple of 8, up to 32768)");
        break;
      default:
        return str_cat("no quantizing form of ", ir::op_name(node.op));
    }
  } else if (!dtype_is_float(out.dtype)) {
    return str_cat("output dtype ", dtype_name(out.dtype), " (float outputs only)");
  }
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const ir::Value& v = graph.value(node.inputs[i]);
    const bool ids = node.op == OpKind::kEmbedding && i == 0;
    if (ids) {
      if (v.dtype != DType::kS32) return str_cat("ids are ", dtype_name(v.dtype), ", not s32");
    } else if (!dtype_is_float(v.dtype)) {
      return str_cat(
          "input ", i, " ('", v.name, "') is ", dtype_name(v.dtype),
          v.dtype == DType::kS8 ? " (8-bit S weights only feed GEMMs)" : " (float inputs only)");
    }
  }
  switch (node.op) {
    case OpKind::kGroupNorm: {
      const Shape& x = graph.value(node.inputs[0]).shape;
      const int groups = node.attr<ir::NormAttrs>().groups;
      if (!group_norm_supported(x.dim(-1), groups))
        return str_cat("group norm over ", x.dim(-1), " channels in ", groups,
                       " groups (the kernel takes up to 4096 channels, up to 1024 when the "
                       "count is odd)");
      if (x[0] > 65535) return str_cat("group norm batch ", x[0], " (up to 65535)");
      break;
    }
    case OpKind::kEmbedding: {
      const ir::Value& table = graph.value(node.inputs[1]);
      if (table.kind != ir::ValueKind::kWeight &&
          device_storage_dtype(table) != device_storage_dtype(out))
        return "an embedding table bound as an activation must have its output's storage dtype";
      break;
    }
    default:
      break;
  }
  return {};
}

bool supports_device_op(const ir::Graph& graph, const ir::Node& node) {
  return device_op_unsupported_reason(graph, node).empty();
}

double estimate_device_op_us(const ir::Graph& graph, const ir::Node& node) {
  if (!supports_device_op(graph, node)) return std::numeric_limits<double>::infinity();
  auto bytes_of = [](const ir::Value& v, DType storage) {
    return static_cast<double>(v.shape.numel()) * static_cast<double>(dtype_size(storage));
  };
  const ir::Value& out = graph.value(node.output);
  const double out_bytes = bytes_of(out, device_storage_dtype(out));
  if (node.op == OpKind::kReshape) {
    const ir::Value& x = graph.value(node.inputs[0]);
    if (device_storage_dtype(x) == device_storage_dtype(out)) return 0.0;  // a view
    return 1e6 * (bytes_of(x, device_storage_dtype(x)) + out_bytes) / kBytesPerSecond + kLaunchUs;
  }
  double bytes = out_bytes;
  int launches = 1;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const ir::Value& v = graph.value(node.inputs[i]);
    if (node.op == OpKind::kEmbedding && i == 1) {
      bytes += out_bytes;  // only the rows looked up are read
      continue;
    }
    bytes += bytes_of(v, input_storage(graph, node, i));
  }
  if (node.op == OpKind::kGroupNorm) {  // statistics pass, then the normalising pass
    const ir::Value& x = graph.value(node.inputs[0]);
    bytes += bytes_of(x, device_storage_dtype(x));
    launches = 2;
  }
  if (node.op == OpKind::kConcat) launches = static_cast<int>((node.inputs.size() + 7) / 8);
  return 1e6 * bytes / kBytesPerSecond + kLaunchUs * launches;
}

DeviceBuffer upload_weight(const CudaContext& ctx, const weights::WeightSource& weights,
                           const ir::Value& v, DType storage, const std::string& node_name) {
  const TensorView stored = weights.get(v.name);
  HYRT_CHECK(stored.shape == v.shape && stored.dtype == v.dtype, kInvalidModel, "weight '", v.name,
             "' is stored as ", dtype_name(stored.dtype), stored.shape.to_string(), " but node '",
             node_name, "' expects ", dtype_name(v.dtype), v.shape.to_string());
  const size_t n = static_cast<size_t>(v.shape.numel());
  const size_t bytes = n * dtype_size(storage);
  DeviceBuffer buf(std::max<size_t>(bytes, 16), str_cat(v.name, " (", dtype_name(storage), ")"));
  if (stored.dtype == storage) {
    // The view may be an unaligned file mapping: stage through aligned host memory.
    AlignedBuffer staging(std::max<size_t>(bytes, 16), v.name + " staging");
    std::memcpy(staging.data(), stored.data, bytes);
    ctx.upload(buf.data(), staging.data(), bytes);
  } else {
    HYRT_CHECK(dtype_is_float(stored.dtype) && dtype_is_float(storage), kUnsupported, "weight '",
               v.name, "' of node '", node_name, "' is ", dtype_name(stored.dtype),
               ": cannot hold it as ", dtype_name(storage));
    AlignedBuffer f32(std::max<size_t>(n, 4) * 4, v.name + " staging");
    convert_to_f32(stored.dtype, stored.data, f32.as<float>(), n);
    if (storage == DType::kF32) {
      ctx.upload(buf.data(), f32.data(), bytes);
    } else {
      AlignedBuffer narrow(std::max<size_t>(bytes, 16), v.name + " staging");
      convert_from_f32(f32.as<float>(), storage, narrow.data(), n);
      ctx.upload(buf.data(), narrow.data(), bytes);
    }
  }
  return buf;
}

namespace {

// What every op kernel shares: the node's inputs as the kernel reads them (uploaded weights or
// bound activations), and the checks of the bound views.
class OpKernel : public Kernel {
 public:
  OpKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
           const weights::WeightSource& weights)
      : ctx_(ctx), name_(node.name), op_(node.op) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const ir::Value& v = graph.value(node.inputs[i]);
      Input in;
      in.storage = input_storage(graph, node, i);
      in.numel = v.shape.numel();
      in.weight = v.kind == ir::ValueKind::kWeight;
      if (in.weight)
        in.uploaded =
            ctx.resident(weights.generation_of(v.name), v.name, std::string(dtype_name(in.storage)),
                         [&] { return upload_weight(ctx, weights, v, in.storage, name_); });
      inputs_.push_back(std::move(in));
    }
    const ir::Value& out = graph.value(node.output);
    out_storage_ = device_storage_dtype(out);
    out_numel_ = out.shape.numel();
  }

 protected:
  struct Input {
    DType storage = DType::kF16;
    int64_t numel = 0;
    bool weight = false;
    std::shared_ptr<const DeviceBuffer> uploaded;  // weights only (resident, shared)
  };

  // Checks what run() received against what prepare planned.
  void check(std::span<const TensorView> views, const TensorView& output) const {
    HYRT_CHECK(views.size() == inputs_.size(), kInvalidArgument, "node '", name_, "' (",
               ir::op_name(op_), "): ", views.size(), " inputs bound, ", inputs_.size(),
               " expected");
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const Input& in = inputs_[i];
      if (in.weight) continue;
      const TensorView& v = views[i];
      HYRT_CHECK(v.dtype == in.storage && v.numel() == in.numel, kInvalidArgument, "node '", name_,
                 "' (", ir::op_name(op_), "): input ", i, " bound as ", dtype_name(v.dtype),
                 v.shape.to_string(), ", the CUDA kernel reads ", in.numel, " ",
                 dtype_name(in.storage), " values (device storage dtype)");
      HYRT_CHECK(in.numel == 0 || aligned16(v.data), kInvalidArgument, "node '", name_, "': input ",
                 i, " is not 16-byte aligned device memory");
    }
    HYRT_CHECK(output.dtype == out_storage_ && output.numel() == out_numel_, kInvalidArgument,
               "node '", name_, "' (", ir::op_name(op_), "): output bound as ",
               dtype_name(output.dtype), output.shape.to_string(), ", the CUDA kernel writes ",
               out_numel_, " ", dtype_name(out_storage_), " values");
    HYRT_CHECK(out_numel_ == 0 || aligned16(output.data), kInvalidArgument, "node '", name_,
               "': output is not 16-byte aligned device memory");
  }

  // Input i as the kernel reads it.
  const void* in(std::span<const TensorView> views, size_t i) const {
    return inputs_[i].weight ? inputs_[i].uploaded->data() : views[i].data;
  }
  const float* in_f32(std::span<const TensorView> views, size_t i) const {
    HYRT_ASSERT(inputs_[i].storage == DType::kF32, "input ", i, " of '", name_, "' is not f32");
    return static_cast<const float*>(in(views, i));
  }
  FloatType in_type(size_t i) const { return float_type(inputs_[i].storage); }
  FloatType out_type() const { return float_type(out_storage_); }
  cudaStream_t stream() const { return ctx_.stream(); }
  // Wraps a launch_* status: names the node in the error.
  void checked(cudaError_t st, const char* what) const {
    if (st != cudaSuccess)
      throw_cuda_error(st, str_cat(what, " for node '", name_, "'").c_str(), __FILE__, __LINE__);
  }

  CudaContext& ctx_;
  std::string name_;
  OpKind op_;
  std::vector<Input> inputs_;
  DType out_storage_ = DType::kF16;
  int64_t out_numel_ = 0;
};

// --- norms -------------------------------------------------------------------------------------

class GroupNormKernel final : public OpKernel {
 public:
  GroupNormKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                  const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& x = graph.value(node.inputs[0]).shape;
    const auto& attrs = node.attr<ir::NormAttrs>();
    shape_.batch = x[0];
    shape_.channels = x.dim(-1);
    shape_.positions = x.numel() / std::max<int64_t>(1, shape_.batch * shape_.channels);
    shape_.groups = attrs.groups;
    shape_.eps = attrs.eps;
    shape_.silu = attrs.fuse_silu;
    quantize_ = attrs.quantize_output;
    sms_ = std::max(1, ctx.device().multiprocessors);
    const size_t bytes = quantize_ ? group_norm_quantize_workspace_bytes(shape_, sms_)
                                   : group_norm_workspace_bytes(shape_, sms_);
    workspace_ = DeviceBuffer(bytes, str_cat(name_, " (group norm workspace)"));
    HYRT_CUDA_CHECK(cudaMemsetAsync(workspace_.data(), 0, bytes, ctx.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    if (quantize_) {  // s8rows: the values, then each row's scale (its sample's)
      checked(launch_group_norm_quantize(in(views, 0), shape_, in_f32(views, 1), in_f32(views, 2),
                                         output.as<int8_t>(), s8rows_scales(output),
                                         workspace_.data(), sms_, stream()),
              "launch_group_norm_quantize");
      return;
    }
    checked(launch_group_norm(in(views, 0), output.data, in_type(0), shape_, in_f32(views, 1),
                              in_f32(views, 2), workspace_.data(), sms_, stream()),
            "launch_group_norm");
  }

 private:
  GroupNormShape shape_;
  bool quantize_ = false;  // the output is s8rows, one scale per sample (ir::NormAttrs)
  int sms_ = 1;
  DeviceBuffer workspace_;
};

class LayerNormKernel final : public OpKernel {
 public:
  LayerNormKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                  const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& x = graph.value(node.inputs[0]).shape;
    channels_ = x.dim(-1);
    rows_ = channels_ > 0 ? x.numel() / channels_ : 0;
    eps_ = node.attr<ir::NormAttrs>().eps;
    quantize_ = node.attr<ir::NormAttrs>().quantize_output;
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    if (quantize_) {  // s8rows: the values, then the row scales (core/dtype.h)
      checked(launch_layer_norm_quantize(in(views, 0), in_type(0), rows_, channels_, eps_,
                                         in_f32(views, 1), in_f32(views, 2), output.as<int8_t>(),
                                         s8rows_scales(output), stream()),
              "launch_layer_norm_quantize");
      return;
    }
    checked(launch_layer_norm(in(views, 0), output.data, in_type(0), rows_, channels_, eps_,
                              in_f32(views, 1), in_f32(views, 2), stream()),
            "launch_layer_norm");
  }

 private:
  int64_t rows_ = 0, channels_ = 0;
  float eps_ = 1e-5f;
  bool quantize_ = false;  // the output is s8rows (ir::NormAttrs::quantize_output)
};

// --- elementwise -------------------------------------------------------------------------------

class SoftmaxKernel final : public OpKernel {
 public:
  SoftmaxKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& x = graph.value(node.inputs[0]).shape;
    cols_ = x.rank() > 0 ? x.dim(-1) : 1;
    rows_ = cols_ > 0 ? x.numel() / cols_ : 0;
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_softmax(in(views, 0), output.data, in_type(0), rows_, cols_, stream()),
            "launch_softmax");
  }

 private:
  int64_t rows_ = 0, cols_ = 0;
};

class UnaryKernel final : public OpKernel {
 public:
  UnaryKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
              const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    switch (node.op) {
      case OpKind::kGelu:
        op_kind_ = UnaryOp::kGelu;
        break;
      case OpKind::kQuickGelu:
        op_kind_ = UnaryOp::kQuickGelu;
        break;
      case OpKind::kSilu:
        op_kind_ = UnaryOp::kSilu;
        break;
      case OpKind::kRelu:
        op_kind_ = UnaryOp::kRelu;
        break;
      case OpKind::kTanh:
        op_kind_ = UnaryOp::kTanh;
        break;
      default: {
        op_kind_ = UnaryOp::kScale;
        const auto& a = node.attr<ir::ScaleAttrs>();
        alpha_ = a.alpha;
        beta_ = a.beta;
      }
    }
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_unary(op_kind_, in(views, 0), output.data, in_type(0), out_numel_, alpha_, beta_,
                         stream()),
            "launch_unary");
  }

 private:
  UnaryOp op_kind_ = UnaryOp::kGelu;
  float alpha_ = 1.0f, beta_ = 0.0f;
};

class GegluKernel final : public OpKernel {
 public:
  GegluKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
              const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& x = graph.value(node.inputs[0]).shape;
    half_ = x.dim(-1) / 2;
    rows_ = half_ > 0 ? x.numel() / (2 * half_) : 0;
    quantize_ = ir::quantizes_output(node.attrs);
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    if (quantize_) {  // s8rows: the values, then the row scales (core/dtype.h)
      checked(launch_geglu_quantize(in(views, 0), in_type(0), rows_, half_, output.as<int8_t>(),
                                    s8rows_scales(output), stream()),
              "launch_geglu_quantize");
      return;
    }
    checked(launch_geglu(in(views, 0), output.data, in_type(0), rows_, half_, stream()),
            "launch_geglu");
  }

 private:
  int64_t rows_ = 0, half_ = 0;
  bool quantize_ = false;  // the output is s8rows (ir::GegluAttrs::quantize_output)
};

// b's shape right-aligned against a's; adjacent dims that are both broadcast or both not merge
// into one (the CPU backend's plan_broadcast), so [C] over [B, T, C] is [(B·T, 0), (C, 1)] and
// [B, 1, 1, C] over NHWC [(B, C), (H·W, 0), (C, 1)].
BroadcastDims plan_broadcast(const Shape& a, const Shape& b) {
  std::vector<int64_t> extent;
  std::vector<bool> bcast;
  for (int i = 0; i < a.rank(); ++i) {
    const int bi = i - (a.rank() - b.rank());
    const int64_t bd = bi >= 0 ? b[bi] : 1;
    if (a[i] == 1) continue;
    const bool broadcast = bd == 1;
    if (!extent.empty() && bcast.back() == broadcast) {
      extent.back() *= a[i];
    } else {
      extent.push_back(a[i]);
      bcast.push_back(broadcast);
    }
  }
  if (extent.empty()) {
    extent.push_back(1);
    bcast.push_back(false);
  }
  HYRT_ASSERT(static_cast<int>(extent.size()) <= kMaxOpDims, "broadcast plan too deep");
  BroadcastDims d;
  d.rank = static_cast<int>(extent.size());
  int64_t stride = 1;
  for (int i = d.rank - 1; i >= 0; --i) {
    d.extent[i] = extent[i];
    d.b_stride[i] = bcast[i] ? 0 : stride;
    if (!bcast[i]) stride *= extent[i];
  }
  return d;
}

class BinaryKernel final : public OpKernel {
 public:
  BinaryKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
               const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights),
        op_kind_(node.op == OpKind::kMul ? BinaryOp::kMul : BinaryOp::kAdd),
        dims_(
            plan_broadcast(graph.value(node.inputs[0]).shape, graph.value(node.inputs[1]).shape)) {}

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_binary(op_kind_, in(views, 0), in(views, 1), in_type(1), output.data, in_type(0),
                          dims_, stream()),
            "launch_binary");
  }

 private:
  BinaryOp op_kind_;
  BroadcastDims dims_;
};

// --- data movement -----------------------------------------------------------------------------

class ConcatKernel final : public OpKernel {
 public:
  ConcatKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
               const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& out = graph.value(node.output).shape;
    const int axis = normalized_axis(node.attr<ir::ConcatAttrs>().axis, out.rank());
    outer_ = out.numel(0, axis);
    const int64_t inner = out.numel(axis + 1, out.rank());
    const auto elem = static_cast<int64_t>(dtype_size(out_storage_));
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      HYRT_ASSERT(inputs_[i].storage == out_storage_, "concat input ", i, " of '", name_,
                  "' is stored differently from the output");
      row_bytes_.push_back(graph.value(node.inputs[i]).shape[axis] * inner * elem);
    }
    pointers_.resize(node.inputs.size());
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    for (size_t i = 0; i < pointers_.size(); ++i)
      pointers_[i] = in(views, i);
    checked(launch_concat(pointers_.data(), row_bytes_.data(), static_cast<int>(pointers_.size()),
                          outer_, output.data, stream()),
            "launch_concat");
  }

 private:
  int64_t outer_ = 0;
  std::vector<int64_t> row_bytes_;
  std::vector<const void*> pointers_;
};

class UpsampleKernel final : public OpKernel {
 public:
  UpsampleKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                 const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights),
        x_(graph.value(node.inputs[0]).shape),
        y_(graph.value(node.output).shape) {}

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_upsample_nearest(in(views, 0), output.data,
                                    static_cast<int>(dtype_size(out_storage_)), x_[0], x_[1], x_[2],
                                    x_[3], y_[1], y_[2], stream()),
            "launch_upsample_nearest");
  }

 private:
  Shape x_, y_;
};

// Output dim i is input dim perm[i]. Size-1 dims are dropped and output dims that stay adjacent
// and in order in the input merge, so NHWC -> NCHW becomes a batch of [HW, C] -> [C, HW]
// transposes and a permute that keeps the innermost dim becomes a row gather.
PermuteDims plan_permute(const Shape& x, const Shape& perm) {
  const int rank = x.rank();
  std::vector<int64_t> in_stride(static_cast<size_t>(rank), 1);
  for (int i = rank - 2; i >= 0; --i)
    in_stride[i] = in_stride[i + 1] * x[i + 1];
  std::vector<int64_t> extent, stride;
  for (int i = 0; i < rank; ++i) {
    const int src = static_cast<int>(perm[i]);
    if (x[src] == 1) continue;
    if (!extent.empty() && stride.back() == in_stride[src] * x[src]) {
      extent.back() *= x[src];  // dim src follows the previous one in the input too
      stride.back() = in_stride[src];
    } else {
      extent.push_back(x[src]);
      stride.push_back(in_stride[src]);
    }
  }
  if (extent.empty()) {
    extent.push_back(1);
    stride.push_back(1);
  }
  PermuteDims d;
  d.rank = static_cast<int>(extent.size());
  for (int i = 0; i < d.rank; ++i) {
    d.extent[i] = extent[i];
    d.src_stride[i] = stride[i];
  }
  return d;
}

class PermuteKernel final : public OpKernel {
 public:
  PermuteKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights),
        dims_(plan_permute(graph.value(node.inputs[0]).shape, node.attr<ir::PermuteAttrs>().perm)) {
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_permute(in(views, 0), output.data, static_cast<int>(dtype_size(out_storage_)),
                           dims_, stream()),
            "launch_permute");
  }

 private:
  PermuteDims dims_;
};

// A strided copy: rows of the input ([outer, extent · inner]) from `start · inner` on, one
// cudaMemcpy2D (the copy engine's own striding; no kernel needed).
class SliceKernel final : public OpKernel {
 public:
  SliceKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
              const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& x = graph.value(node.inputs[0]).shape;
    const auto& a = node.attr<ir::SliceAttrs>();
    const int axis = normalized_axis(a.axis, x.rank());
    const auto elem = static_cast<int64_t>(dtype_size(out_storage_));
    HYRT_ASSERT(inputs_[0].storage == out_storage_, "slice input of '", name_,
                "' is stored differently from the output");
    const int64_t inner = x.numel(axis + 1, x.rank());
    rows_ = x.numel(0, axis);
    in_row_bytes_ = x[axis] * inner * elem;
    offset_bytes_ = a.start * inner * elem;
    out_row_bytes_ = a.length * inner * elem;
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(
        cudaMemcpy2DAsync(output.data, static_cast<size_t>(out_row_bytes_),
                          static_cast<const uint8_t*>(in(views, 0)) + offset_bytes_,
                          static_cast<size_t>(in_row_bytes_), static_cast<size_t>(out_row_bytes_),
                          static_cast<size_t>(rows_), cudaMemcpyDeviceToDevice, stream()),
        "cudaMemcpy2DAsync (slice)");
  }

 private:
  int64_t rows_ = 0, in_row_bytes_ = 0, offset_bytes_ = 0, out_row_bytes_ = 0;
};

// A view where the storage dtypes agree (the planner aliases it: nothing to do; a copy if it did
// not); a conversion where a rank ≤ 1 value meets a rank ≥ 2 one (f32 <-> f16 storage).
class ReshapeKernel final : public OpKernel {
 public:
  ReshapeKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {}

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    const void* x = in(views, 0);
    if (inputs_[0].storage == out_storage_ && x == output.data) return;
    HYRT_CHECK(x != output.data, kInvalidArgument, "node '", name_, "' (reshape) converts ",
               dtype_name(inputs_[0].storage), " to ", dtype_name(out_storage_),
               " storage and cannot alias its input");
    checked(launch_convert(x, in_type(0), output.data, out_type(), out_numel_, stream()),
            "launch_convert");
  }
};

// t [B] -> [B, dim], frequencies as the CPU backend rounds them (cpu/data_movement.cpp).
class TimestepKernel final : public OpKernel {
 public:
  TimestepKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                 const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights), attrs_(node.attr<ir::TimestepAttrs>()) {
    batch_ = graph.value(node.inputs[0]).shape[0];
    half_ = attrs_.dim / 2;
    const float log_period = static_cast<float>(std::log(static_cast<double>(attrs_.max_period)));
    const float denom = static_cast<float>(half_) - attrs_.downscale_freq_shift;
    std::vector<float> freqs(static_cast<size_t>(std::max<int64_t>(half_, 1)));
    for (int64_t i = 0; i < half_; ++i) {
      const float exponent = (-log_period * static_cast<float>(i)) / denom;
      freqs[i] = static_cast<float>(std::exp(static_cast<double>(exponent)));
    }
    freqs_ = DeviceBuffer(freqs.size() * sizeof(float), str_cat(name_, " (frequencies)"));
    ctx.upload(freqs_.data(), freqs.data(), freqs.size() * sizeof(float));
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    HYRT_ASSERT(inputs_[0].storage == DType::kF32, "timesteps of '", name_, "' are not f32");
    checked(launch_timestep_embedding(in_f32(views, 0), freqs_.as<float>(), batch_, half_,
                                      attrs_.flip_sin_to_cos, output.data, out_type(), stream()),
            "launch_timestep_embedding");
  }

 private:
  ir::TimestepAttrs attrs_;
  int64_t batch_ = 0, half_ = 0;
  DeviceBuffer freqs_;
};

class EmbeddingKernel final : public OpKernel {
 public:
  EmbeddingKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node,
                  const weights::WeightSource& weights)
      : OpKernel(ctx, graph, node, weights) {
    const Shape& table = graph.value(node.inputs[1]).shape;
    vocab_ = table[0];
    width_ = table[1];
  }

  void run(std::span<const TensorView> views, const TensorView& output) override {
    check(views, output);
    checked(launch_embedding(static_cast<const int32_t*>(in(views, 0)), inputs_[0].numel,
                             in(views, 1), vocab_, width_, output.data, out_type(), stream()),
            "launch_embedding");
  }

 private:
  int64_t vocab_ = 0, width_ = 0;
};

}  // namespace

std::unique_ptr<Kernel> make_device_op_kernel(CudaContext& ctx, const ir::Graph& graph,
                                              const ir::Node& node,
                                              const weights::WeightSource& weights) {
  const std::string why = device_op_unsupported_reason(graph, node);
  HYRT_CHECK(why.empty(), kUnsupported, "cuda backend cannot run node '", node.name, "' (",
             ir::op_name(node.op), "): ", why);
  ctx.make_current();
  switch (node.op) {
    case OpKind::kGroupNorm:
      return std::make_unique<GroupNormKernel>(ctx, graph, node, weights);
    case OpKind::kLayerNorm:
      return std::make_unique<LayerNormKernel>(ctx, graph, node, weights);
    case OpKind::kSoftmax:
      return std::make_unique<SoftmaxKernel>(ctx, graph, node, weights);
    case OpKind::kGelu:
    case OpKind::kQuickGelu:
    case OpKind::kSilu:
    case OpKind::kRelu:
    case OpKind::kTanh:
    case OpKind::kScale:
      return std::make_unique<UnaryKernel>(ctx, graph, node, weights);
    case OpKind::kGeglu:
      return std::make_unique<GegluKernel>(ctx, graph, node, weights);
    case OpKind::kAdd:
    case OpKind::kMul:
      return std::make_unique<BinaryKernel>(ctx, graph, node, weights);
    case OpKind::kConcat:
      return std::make_unique<ConcatKernel>(ctx, graph, node, weights);
    case OpKind::kUpsampleNearest:
      return std::make_unique<UpsampleKernel>(ctx, graph, node, weights);
    case OpKind::kPermute:
      return std::make_unique<PermuteKernel>(ctx, graph, node, weights);
    case OpKind::kSlice:
      return std::make_unique<SliceKernel>(ctx, graph, node, weights);
    case OpKind::kReshape:
      return std::make_unique<ReshapeKernel>(ctx, graph, node, weights);
    case OpKind::kTimestepEmbedding:
      return std::make_unique<TimestepKernel>(ctx, graph, node, weights);
    case OpKind::kEmbedding:
      return std::make_unique<EmbeddingKernel>(ctx, graph, node, weights);
    case OpKind::kLinear:
    case OpKind::kConv2d:
    case OpKind::kAttention:
      break;
  }
  fail(ErrorCode::kUnsupported, "cuda backend: no device kernel for node '", node.name, "' (",
       ir::op_name(node.op), ")");
}

}  // namespace hyrt::backend::cuda
