#include "ir/graph.h"

#include <sstream>

#include "core/error.h"

namespace hyrt::ir {

namespace {

[[noreturn]] void bad(std::string_view node, OpKind op, const std::string& what) {
  fail(ErrorCode::kInvalidArgument, "node '", node, "' (", op_name(op), "): ", what);
}

// True if `b` broadcasts onto `a` (numpy rules, right-aligned, b's rank <= a's rank).
bool broadcastable(const Shape& a, const Shape& b) {
  if (b.rank() > a.rank()) return false;
  for (int i = 1; i <= b.rank(); ++i) {
    const int64_t bd = b.dim(-i), ad = a.dim(-i);
    if (bd != 1 && bd != ad) return false;
  }
  return true;
}

}  // namespace

std::vector<ValueId> add_inputs_and_weights(const Graph& from, Graph& to) {
  std::vector<ValueId> map(from.values().size(), kNone);
  for (const Value& v : from.values()) {
    if (v.kind == ValueKind::kInput) {
      map[v.id] = to.add_input(v.name, v.dtype, v.shape);
      if (v.run_invariant) to.set_run_invariant(map[v.id]);
    }
    if (v.kind == ValueKind::kWeight) map[v.id] = to.add_weight(v.name, v.dtype, v.shape);
    if (map[v.id] != kNone && v.wide_range) to.set_wide_range(map[v.id]);
  }
  return map;
}

InferredType infer_output(const Graph& g, OpKind op, const std::vector<ValueId>& inputs,
                          const Attrs& attrs, std::string_view name) {
  auto in = [&](size_t i) -> const Value& { return g.value(inputs[i]); };
  auto need_inputs = [&](size_t lo, size_t hi) {
    if (inputs.size() < lo || inputs.size() > hi)
      bad(name, op,
          str_cat("expects ", lo, lo == hi ? "" : str_cat("-", hi), " inputs, got ",
                  inputs.size()));
  };
  auto need_attrs = [&]<class A>(A*) -> const A& {
    if (!std::holds_alternative<A>(attrs)) bad(name, op, "missing or wrong attributes");
    return std::get<A>(attrs);
  };
  auto need_rank = [&](size_t i, int lo, int hi) {
    const int r = in(i).shape.rank();
    if (r < lo || r > hi)
      bad(name, op,
          str_cat("input ", i, " has rank ", r, " (shape ", in(i).shape.to_string(), "), expected ",
                  lo, lo == hi ? "" : str_cat("..", hi)));
  };
  auto need_vec = [&](size_t i, int64_t n, const char* what) {
    if (in(i).shape != Shape{n})
      bad(name, op, str_cat(what, " has shape ", in(i).shape.to_string(), ", expected [", n, "]"));
  };
  auto need_float = [&](size_t i) {
    if (!dtype_is_float(in(i).dtype))
      bad(name, op,
          str_cat("input ", i, " has dtype ", dtype_name(in(i).dtype), ", expected a float type"));
  };

  // A fused epilogue's residual (the last input) has exactly the output's shape and dtype.
  auto need_residual = [&](const GemmEpilogue& e, const Shape& out, DType dtype) {
    if (!e.residual) return;
    const Value& r = in(inputs.size() - 1);
    if (r.shape != out || r.dtype != dtype)
      bad(name, op,
          str_cat("residual ", dtype_name(r.dtype), r.shape.to_string(), " does not match output ",
                  dtype_name(dtype), out.to_string()));
  };

  for (ValueId v : inputs)
    if (v < 0 || static_cast<size_t>(v) >= g.values().size())
      bad(name, op, str_cat("input value id ", v, " does not exist"));
  // A quantized activation (s8rows) is only ever a linear's or a conv's x.
  for (size_t i = 0; i < inputs.size(); ++i)
    if (in(i).dtype == DType::kS8Rows &&
        ((op != OpKind::kLinear && op != OpKind::kConv2d) || i != 0))
      bad(name, op,
          str_cat("input ", i,
                  " is s8rows (a quantized activation): only a linear's "
                  "or a conv's x may be"));

  switch (op) {
    case OpKind::kLinear: {
      if (!std::holds_alternative<std::monostate>(attrs) &&
          !std::holds_alternative<LinearAttrs>(attrs))
        bad(name, op, "wrong attributes");
      const GemmEpilogue e = gemm_epilogue(attrs);
      const int stacked = gemm_weights(attrs);
      if (stacked > 1) {  // x, w_1, ..., w_stacked: no bias, no epilogue
        if (!e.empty()) bad(name, op, "stacked weights take no fused epilogue");
        need_inputs(1 + static_cast<size_t>(stacked), 1 + static_cast<size_t>(stacked));
        need_rank(0, 1, Shape::kMaxRank);
        const Shape& x = in(0).shape;
        int64_t n = 0;
        for (size_t i = 1; i <= static_cast<size_t>(stacked); ++i) {
          need_rank(i, 2, 2);
          const Value& w = in(i);
          if (w.kind != ValueKind::kWeight || w.dtype != in(1).dtype || w.shape[1] != x.dim(-1))
            bad(name, op,
                str_cat("stacked weight ", i, " (", dtype_name(w.dtype), w.shape.to_string(),
                        ") is not a graph weight [out, ", x.dim(-1), "] of the first one's dtype"));
          n += w.shape[0];
        }
        Shape out = x;
        out[out.rank() - 1] = n;
        return {in(0).dtype == DType::kS8Rows ? g.activation_dtype() : in(0).dtype, out};
      }
      if (stacked < 1) bad(name, op, str_cat("a linear takes 1 or more weights, not ", stacked));
      const size_t extra = (e.residual ? 1 : 0) + (e.low_rank ? 2 : 0);
      const size_t gemm_inputs = inputs.size() - extra;
      need_inputs(2 + extra, 3 + extra);
      need_rank(0, 1, Shape::kMaxRank);
      need_rank(1, 2, 2);
      const Shape& x = in(0).shape;
      const Shape& w = in(1).shape;
      if (x.dim(-1) != w[1])
        bad(name, op,
            str_cat("input ", x.to_string(), " does not match weight ", w.to_string(),
                    " (weight is [out, in])"));
      if (gemm_inputs == 3) need_vec(2, w[0], "bias");
      Shape out = x;
      out[out.rank() - 1] = w[0];
      if (e.geglu) {
        if (e.activation != Activation::kNone || e.residual)
          bad(name, op, "a GEGLU epilogue takes no activation or residual");
        if (w[0] % 2 != 0)
          bad(name, op, str_cat("a GEGLU epilogue needs an even output width, not ", w[0]));
        out[out.rank() - 1] = w[0] / 2;
      }
      if (e.low_rank) {  // down [R, K], up [N, R]
        const Value& down = in(gemm_inputs);
        const Value& up = in(gemm_inputs + 1);
        if (down.shape.rank() != 2 || up.shape.rank() != 2 || down.shape[1] != w[1] ||
            up.shape[0] != w[0] || up.shape[1] != down.shape[0])
          bad(name, op,
              str_cat("low-rank term down ", down.shape.to_string(), ", up ", up.shape.to_string(),
                      " does not fit weight ", w.to_string()));
      }
      // On a quantized x the output is in the graph's float activation dtype.
      const DType out_dtype = in(0).dtype == DType::kS8Rows ? g.activation_dtype() : in(0).dtype;
      if (in(0).dtype == DType::kS8Rows && (e.low_rank || in(0).shape.rank() < 2))
        bad(name, op, "an s8rows x needs rank >= 2 and no low-rank term (which reads x in float)");
      need_residual(e, out, out_dtype);
      return {out_dtype, out};
    }
    case OpKind::kConv2d: {
      const auto& a = need_attrs(static_cast<Conv2dAttrs*>(nullptr));
      if (a.epilogue.low_rank || a.epilogue.geglu)
        bad(name, op, "low-rank and GEGLU epilogues are for linear only");
      const size_t gemm_inputs = inputs.size() - (a.epilogue.residual ? 1 : 0);
      need_inputs(a.epilogue.residual ? 3 : 2, a.epilogue.residual ? 4 : 3);
      need_rank(0, 4, 4);
      need_rank(1, 4, 4);
      const Shape& x = in(0).shape;  // NHWC
      const Shape& w = in(1).shape;  // OIHW
      if (x[3] != w[1])
        bad(name, op,
            str_cat("input channels ", x[3], " (NHWC ", x.to_string(), ") do not match weight ",
                    w.to_string(), " (OIHW)"));
      if (a.stride < 1 || a.padding < 0) bad(name, op, "stride must be >= 1 and padding >= 0");
      const int64_t ho = (x[1] + 2 * a.padding - w[2]) / a.stride + 1;
      const int64_t wo = (x[2] + 2 * a.padding - w[3]) / a.stride + 1;
      if (ho < 1 || wo < 1)
        bad(name, op, str_cat("input ", x.to_string(), " too small for kernel"));
      if (gemm_inputs == 3) need_vec(2, w[0], "bias");
      const Shape out{x[0], ho, wo, w[0]};
      // On a quantized x the output is in the graph's float activation dtype.
      const DType out_dtype = in(0).dtype == DType::kS8Rows ? g.activation_dtype() : in(0).dtype;
      need_residual(a.epilogue, out, out_dtype);
      return {out_dtype, out};
    }
    case OpKind::kGroupNorm:
    case OpKind::kLayerNorm: {
      need_inputs(3, 3);
      need_rank(0, op == OpKind::kGroupNorm ? 2 : 1, Shape::kMaxRank);
      const auto& a = need_attrs(static_cast<NormAttrs*>(nullptr));
      const int64_t c = in(0).shape.dim(-1);
      need_vec(1, c, "gamma");
      need_vec(2, c, "beta");
      if (op == OpKind::kGroupNorm && (a.groups < 1 || c % a.groups != 0))
        bad(name, op, str_cat(c, " channels do not split into ", a.groups, " groups"));
      if (a.quantize_output) {
        need_float(0);
        return {DType::kS8Rows, in(0).shape};
      }
      return {in(0).dtype, in(0).shape};
    }
    case OpKind::kAttention: {
      if (packed_qkv(attrs)) {  // qkv [B, T, 3·heads·D] -> [B, T, heads·D]
        need_inputs(1, 1);
        need_rank(0, 3, 3);
        const auto& a = need_attrs(static_cast<AttentionAttrs*>(nullptr));
        const Shape& qkv = in(0).shape;
        if (a.heads < 1 || qkv[2] % (3 * static_cast<int64_t>(a.heads)) != 0)
          bad(name, op,
              str_cat("packed width ", qkv[2], " does not split into q, k, v of ", a.heads,
                      " heads"));
        if (a.causal) bad(name, op, "a packed qkv attention takes no causal mask");
        return {in(0).dtype, Shape{qkv[0], qkv[1], qkv[2] / 3}};
      }
      need_inputs(3, 3);
      for (size_t i = 0; i < 3; ++i)
        need_rank(i, 3, 3);
      const auto& a = need_attrs(static_cast<AttentionAttrs*>(nullptr));
      const Shape &q = in(0).shape, &k = in(1).shape, &v = in(2).shape;
      if (q[0] != k[0] || q[0] != v[0] || k[1] != v[1] || q[2] != k[2])
        bad(name, op,
            str_cat("q ", q.to_string(), ", k ", k.to_string(), ", v ", v.to_string(),
                    " are inconsistent"));
      if (a.heads < 1 || q[2] % a.heads != 0 || v[2] % a.heads != 0)
        bad(name, op,
            str_cat("width ", q[2], "/", v[2], " does not split into ", a.heads, " heads"));
      if (a.causal && q[1] != k[1]) bad(name, op, "a causal mask needs as many queries as keys");
      return {in(0).dtype, Shape{q[0], q[1], v[2]}};
    }
    case OpKind::kSoftmax:
    case OpKind::kGelu:
    case OpKind::kQuickGelu:
    case OpKind::kSilu:
    case OpKind::kRelu:
    case OpKind::kTanh:
      need_inputs(1, 1);
      need_float(0);
      return {in(0).dtype, in(0).shape};
    case OpKind::kScale:
      need_inputs(1, 1);
      need_float(0);
      need_attrs(static_cast<ScaleAttrs*>(nullptr));
      return {in(0).dtype, in(0).shape};
    case OpKind::kGeglu: {
      need_inputs(1, 1);
      need_rank(0, 1, Shape::kMaxRank);
      Shape out = in(0).shape;
      if (out.dim(-1) % 2 != 0) bad(name, op, "last dimension must be even");
      out[out.rank() - 1] /= 2;
      if (!std::holds_alternative<std::monostate>(attrs) &&
          !std::holds_alternative<GegluAttrs>(attrs))
        bad(name, op, "wrong attributes");
      if (quantizes_output(attrs)) {
        need_float(0);
        return {DType::kS8Rows, out};
      }
      return {in(0).dtype, out};
    }
    case OpKind::kAdd:
    case OpKind::kMul:
      need_inputs(2, 2);
      if (in(0).dtype != in(1).dtype)
        bad(name, op,
            str_cat("dtypes differ: ", dtype_name(in(0).dtype), " and ", dtype_name(in(1).dtype)));
      if (!broadcastable(in(0).shape, in(1).shape))
        bad(name, op,
            str_cat(in(1).shape.to_string(), " does not broadcast onto ", in(0).shape.to_string()));
      return {in(0).dtype, in(0).shape};
    case OpKind::kConcat: {
      if (inputs.empty()) bad(name, op, "needs at least one input");
      const auto& a = need_attrs(static_cast<ConcatAttrs*>(nullptr));
      const Shape& s0 = in(0).shape;
      const int axis = a.axis < 0 ? a.axis + s0.rank() : a.axis;
      if (axis < 0 || axis >= s0.rank()) bad(name, op, str_cat("axis ", a.axis, " out of range"));
      Shape out = s0;
      for (size_t i = 1; i < inputs.size(); ++i) {
        const Shape& s = in(i).shape;
        bool ok = s.rank() == s0.rank() && in(i).dtype == in(0).dtype;
        for (int d = 0; ok && d < s0.rank(); ++d)
          ok = d == axis || s[d] == s0[d];
        if (!ok)
          bad(name, op,
              str_cat("input ", i, " ", s.to_string(), " cannot be concatenated with ",
                      s0.to_string(), " on axis ", axis));
        out[axis] += s[axis];
      }
      return {in(0).dtype, out};
    }
    case OpKind::kSlice: {
      need_inputs(1, 1);
      const auto& a = need_attrs(static_cast<SliceAttrs*>(nullptr));
      const Shape& s = in(0).shape;
      const int axis = a.axis < 0 ? a.axis + s.rank() : a.axis;
      if (axis < 0 || axis >= s.rank()) bad(name, op, str_cat("axis ", a.axis, " out of range"));
      if (a.start < 0 || a.length < 1 || a.start + a.length > s[axis])
        bad(name, op,
            str_cat("[", a.start, ", ", a.start + a.length, ") is not within axis ", axis, " of ",
                    s.to_string()));
      Shape out = s;
      out[axis] = a.length;
      return {in(0).dtype, out};
    }
    case OpKind::kUpsampleNearest: {
      need_inputs(1, 1);
      need_rank(0, 4, 4);
      const Shape& x = in(0).shape;
      const auto* a = std::get_if<UpsampleAttrs>(&attrs);
      if (!a && !std::holds_alternative<std::monostate>(attrs)) bad(name, op, "wrong attributes");
      const int64_t oh = a && a->out_height ? a->out_height : 2 * x[1];
      const int64_t ow = a && a->out_width ? a->out_width : 2 * x[2];
      if (oh < 1 || ow < 1 || oh > 64 * x[1] || ow > 64 * x[2])
        bad(name, op,
            str_cat("output size ", oh, "x", ow, " out of range for input ", x.to_string()));
      return {in(0).dtype, Shape{x[0], oh, ow, x[3]}};
    }
    case OpKind::kTimestepEmbedding: {
      need_inputs(1, 1);
      need_rank(0, 1, 1);
      const auto& a = need_attrs(static_cast<TimestepAttrs*>(nullptr));
      if (in(0).dtype != DType::kF32) bad(name, op, "timesteps must be f32");
      if (a.dim < 2 || a.dim % 2 != 0) bad(name, op, "dim must be even and >= 2");
      return {g.activation_dtype(), Shape{in(0).shape[0], a.dim}};
    }
    case OpKind::kEmbedding: {
      need_inputs(2, 2);
      need_rank(1, 2, 2);
      if (in(0).dtype != DType::kS32) bad(name, op, "ids must be s32");
      Shape out = in(0).shape;
      out.push_back(in(1).shape[1]);
      return {g.activation_dtype(), out};
    }
    case OpKind::kReshape: {
      need_inputs(1, 1);
      const auto& a = need_attrs(static_cast<ReshapeAttrs*>(nullptr));
      Shape out = a.shape;
      int infer_at = -1;
      int64_t known = 1;
      for (int i = 0; i < out.rank(); ++i) {
        if (out[i] == -1) {
          if (infer_at >= 0) bad(name, op, "more than one -1 in the target shape");
          infer_at = i;
        } else {
          known = checked_mul(known, out[i]);
        }
      }
      const int64_t n = in(0).shape.numel();
      if (infer_at >= 0) {
        if (known == 0 || n % known != 0)
          bad(name, op,
              str_cat("cannot reshape ", in(0).shape.to_string(), " to ", out.to_string()));
        out[infer_at] = n / known;
      }
      if (out.numel() != n)
        bad(name, op, str_cat("cannot reshape ", in(0).shape.to_string(), " to ", out.to_string()));
      return {in(0).dtype, out};
    }
    case OpKind::kPermute: {
      need_inputs(1, 1);
      const auto& a = need_attrs(static_cast<PermuteAttrs*>(nullptr));
      const Shape& x = in(0).shape;
      if (a.perm.rank() != x.rank()) bad(name, op, "permutation rank differs from input rank");
      Shape out;
      uint32_t seen = 0;
      for (int i = 0; i < x.rank(); ++i) {
        const int64_t p = a.perm[i];
        if (p < 0 || p >= x.rank() || (seen >> p) & 1u)
          bad(name, op, str_cat(a.perm.to_string(), " is not a permutation"));
        seen |= 1u << p;
        out.push_back(x[static_cast<int>(p)]);
      }
      return {in(0).dtype, out};
    }
  }
  bad(name, op, "unknown op");
}

ValueId Graph::add_input(std::string name, DType dtype, Shape shape) {
  Value v;
  v.id = static_cast<ValueId>(values_.size());
  v.kind = ValueKind::kInput;
  v.dtype = dtype;
  v.shape = shape;
  v.name = std::move(name);
  shape.numel();  // validates
  values_.push_back(std::move(v));
  inputs_.push_back(values_.back().id);
  return values_.back().id;
}

ValueId Graph::add_weight(std::string name, DType dtype, Shape shape) {
  Value v;
  v.id = static_cast<ValueId>(values_.size());
  v.kind = ValueKind::kWeight;
  v.dtype = dtype;
  v.shape = shape;
  v.name = std::move(name);
  shape.numel();
  values_.push_back(std::move(v));
  return values_.back().id;
}

ValueId Graph::add_node(OpKind op, std::vector<ValueId> inputs, Attrs attrs, std::string name) {
  if (name.empty()) name = str_cat(op_name(op), "_", nodes_.size());
  const InferredType t = infer_output(*this, op, inputs, attrs, name);
  Node n;
  n.id = static_cast<NodeId>(nodes_.size());
  n.op = op;
  n.inputs = std::move(inputs);
  n.attrs = std::move(attrs);
  n.name = std::move(name);
  Value out;
  out.id = static_cast<ValueId>(values_.size());
  out.kind = ValueKind::kIntermediate;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.name = n.name;
  out.producer = n.id;
  n.output = out.id;
  values_.push_back(std::move(out));
  nodes_.push_back(std::move(n));
  return values_.back().id;
}

void Graph::set_wide_range(ValueId v, bool wide) {
  HYRT_CHECK(v >= 0 && static_cast<size_t>(v) < values_.size(), kInvalidArgument,
             "set_wide_range: no value ", v);
  values_[static_cast<size_t>(v)].wide_range = wide;
}

void Graph::set_run_invariant(ValueId v, bool invariant) {
  HYRT_CHECK(v >= 0 && static_cast<size_t>(v) < values_.size() &&
                 values_[static_cast<size_t>(v)].kind == ValueKind::kInput,
             kInvalidArgument, "set_run_invariant: value ", v, " is not a graph input");
  values_[static_cast<size_t>(v)].run_invariant = invariant;
}

void Graph::mark_output(ValueId v) {
  HYRT_CHECK(v >= 0 && static_cast<size_t>(v) < values_.size(), kInvalidArgument,
             "mark_output: no value ", v);
  if (!values_[v].is_output) {
    values_[v].is_output = true;
    outputs_.push_back(v);
  }
}

void Graph::verify() const {
  std::ostringstream problems;
  std::vector<int> uses(values_.size(), 0);
  for (const Node& n : nodes_) {
    for (ValueId v : n.inputs) {
      if (v < 0 || static_cast<size_t>(v) >= values_.size()) {
        problems << "\n  node '" << n.name << "' reads value " << v << " which does not exist";
        continue;
      }
      ++uses[v];
      const Value& in = values_[v];
      if (in.kind == ValueKind::kIntermediate && in.producer >= n.id)
        problems << "\n  node '" << n.name << "' reads '" << in.name << "' before it is computed";
    }
    if (n.output < 0 || static_cast<size_t>(n.output) >= values_.size() ||
        values_[n.output].producer != n.id) {
      problems << "\n  node '" << n.name << "' has a broken output link";
      continue;
    }
    try {
      const InferredType t = infer_output(*this, n.op, n.inputs, n.attrs, n.name);
      const Value& out = values_[n.output];
      if (t.dtype != out.dtype || t.shape != out.shape)
        problems << "\n  node '" << n.name << "' output is " << dtype_name(out.dtype)
                 << out.shape.to_string() << " but infers as " << dtype_name(t.dtype)
                 << t.shape.to_string();
    } catch (const Error& e) {
      problems << "\n  " << e.what();
    }
  }
  for (const Value& v : values_) {
    if (v.kind == ValueKind::kIntermediate && uses[v.id] == 0 && !v.is_output)
      problems << "\n  value '" << v.name << "' is computed but never used (dangling)";
    if (v.kind == ValueKind::kWeight && uses[v.id] == 0)
      problems << "\n  weight '" << v.name << "' is never used";
  }
  if (outputs_.empty()) problems << "\n  graph has no outputs";
  const std::string p = problems.str();
  HYRT_CHECK(p.empty(), kInternal, "graph verification failed:", p);
}

std::string Graph::dump() const {
  std::ostringstream os;
  auto val = [&](ValueId id) {
    const Value& v = values_[id];
    return str_cat("%", id, ":", dtype_name(v.dtype), v.shape.to_string());
  };
  for (ValueId id : inputs_)
    os << "input  " << val(id) << " " << values_[id].name << "\n";
  for (const Value& v : values_)
    if (v.kind == ValueKind::kWeight) os << "weight " << val(v.id) << " " << v.name << "\n";
  for (const Node& n : nodes_) {
    os << val(n.output) << " = " << op_name(n.op) << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i)
      os << (i ? ", " : "") << "%" << n.inputs[i];
    os << ")";
    std::visit(
        [&](const auto& a) {
          using A = std::decay_t<decltype(a)>;
          auto epilogue = [&](const GemmEpilogue& e) {
            if (e.activation != Activation::kNone) os << " +" << activation_name(e.activation);
            if (e.low_rank) os << " +low_rank";
            if (e.geglu) os << " +geglu";
            if (e.residual) os << " +residual";
          };
          if constexpr (std::is_same_v<A, Conv2dAttrs>) {
            os << " stride=" << a.stride << " pad=" << a.padding;
            epilogue(a.epilogue);
          } else if constexpr (std::is_same_v<A, LinearAttrs>) {
            epilogue(a.epilogue);
            if (a.weights != 1) os << " stacked=" << a.weights;
          }
          if constexpr (std::is_same_v<A, GegluAttrs>)
            os << (a.quantize_output ? " ->s8rows" : "");
          else if constexpr (std::is_same_v<A, NormAttrs>)
            os << " groups=" << a.groups << " eps=" << a.eps << (a.fuse_silu ? " +silu" : "")
               << (a.quantize_output ? " ->s8rows" : "");
          else if constexpr (std::is_same_v<A, AttentionAttrs>)
            os << " heads=" << a.heads << (a.causal ? " causal" : "")
               << (a.packed_qkv ? " packed_qkv" : "");
          else if constexpr (std::is_same_v<A, ScaleAttrs>)
            os << " alpha=" << a.alpha << " beta=" << a.beta;
          else if constexpr (std::is_same_v<A, ConcatAttrs>)
            os << " axis=" << a.axis;
          else if constexpr (std::is_same_v<A, TimestepAttrs>)
            os << " dim=" << a.dim;
          else if constexpr (std::is_same_v<A, UpsampleAttrs>)
            os << " size=" << a.out_height << "x" << a.out_width;
          else if constexpr (std::is_same_v<A, ReshapeAttrs>)
            os << " shape=" << a.shape.to_string();
          else if constexpr (std::is_same_v<A, PermuteAttrs>)
            os << " perm=" << a.perm.to_string();
          else if constexpr (std::is_same_v<A, SliceAttrs>)
            os << " axis=" << a.axis << " start=" << a.start << " length=" << a.length;
        },
        n.attrs);
    os << "  # " << n.name << (values_[n.output].is_output ? " [output]" : "") << "\n";
  }
  return os.str();
}

size_t Graph::weight_bytes() const {
  size_t b = 0;
  for (const Value& v : values_)
    if (v.kind == ValueKind::kWeight) b += v.bytes();
  return b;
}

int64_t Graph::weight_params() const {
  int64_t n = 0;
  for (const Value& v : values_)
    if (v.kind == ValueKind::kWeight) n += v.shape.numel();
  return n;
}

}  // namespace hyrt::ir
