// Linear and conv2d nodes as cuBLASLt GEMM programs with two candidates (cuda_backend.h,
// GemmCandidate). One runner, GemmKernel, serves both: a node becomes a GemmSpec (key, weights
// as [N, K], and for a conv that is not 1x1/s1/p0 the im2col geometry of its input), and
// everything after that — upload, staging, tuning, the candidates' stages — is shared.
//
// Layout. hyrt's row-major y [M, N] = x [M, K] · w [N, K]ᵀ is, read column-major, the cuBLASLt
// problem D [N, M] = op(A) · B with A = w stored K×N (ld K) and transposed, B = x stored K×M
// (ld K) as is, and D = y stored N×M (ld N): the "TN" layout, both operands K-contiguous —
// the one layout cuBLASLt's int8 kernels accept. They also want m (here N) and k to be
// multiples of 4, and so the leading dimensions: the s8 weights are uploaded zero-padded to
// [N4, K4], the activation quantizer writes rows of K4 with zeros after K, and the s32 result
// goes to a [M, N4] staging buffer that the epilogue reads back into the dense [M, N] output. The
// padding adds exact zeros to every dot product.
//
// Tuning (first use of a key). For each candidate: its staging kernels run once, then each of
// the cuBLASLt heuristic's top algorithms is timed alone (median of tune_reps runs), and
// with the fastest one the whole candidate is timed the same way. The faster whole candidate
// wins. Timing runs on the node's own uploaded weights and random activations (never zeros:
// they can run faster than real data), with a spin kernel queued first so that events measure
// GPU time, not the host's launch rate (per-call host overhead is CUDA graphs' business).
// A conv's whole-candidate timings include its im2col pass (or, W8A8, the fused
// im2col + quantize pass): part of what the node costs.
//
// Low-rank terms (a LoRA adapter on a linear, ir::GemmEpilogue::low_rank). The node runs the
// float candidate whatever the tuning chose: the weights it widens into staging at each run
// get up · down added by one more GEMM (GemmKernel::add_low_rank_term), so the layer's single
// product includes the adapter's. That GEMM is N x K x rank whatever M, where the adapter's own
// two GEMMs read and write [M, ·] activations: on an H100 the SD 1.5 step with a rank-32 LoRA
// on all 160 attention and feed-forward layers took x1.09-1.13 this way against x1.25-1.31
// (bench/results/lora_merged_h100.json). Tuning times the plain program (shared by key).
//
// Row chunks (cuda_gemm.h, gemm_chunking). A candidate whose staging for all M rows exceeds
// the budget runs chunk by chunk; chunk i covers GEMM rows [m0, m0 + rows), m0 = i · R (R the
// rows of a full chunk, the last chunk's rows the remainder). In row-major terms:
//   input  x [M, K] (a linear): the chunk's rows start at x + m0·K elements;
//          a conv's input stays whole: im2col gathers matrix rows [m0, m0 + rows);
//   output y [M, N]: the chunk's rows start at y + m0·N elements;
//   staging (im2col / converted / quantized operand, row scales, s32 result): chunk-local,
//          its row 0 is GEMM row m0, so every chunk reuses the same buffers from their start.
// Column-major for cuBLASLt: B = the operand, K×rows (ld K); D = y + m0·N, N×rows (ld N): only
// the column count (rows) changes, so a full chunk and the shorter last one each have their
// layouts. cuBLASLt's bias epilogue adds bias[N] down each column and the W8A8 epilogue reads
// chunk-local row scales: neither needs the offset. With R a multiple of 64, offsets of m0
// rows keep 16-byte alignment (64 · 2 bytes per element at least).
#include "backend/cuda/cuda_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/buffer.h"
#include "core/env.h"
#include "core/error.h"
#include "core/half.h"
#include "core/log.h"

namespace hyrt::backend::cuda {

const char* candidate_name(GemmCandidate c) {
  return c == GemmCandidate::kF16 ? "f16" : "w8a8";
}

// Which W8A8 convolutions run as implicit GEMMs (gemm_s8_fused.h, launch_implicit_s8_conv), by
// $HYRT_CUDA_CONV_IMPLICIT, read as each kernel is made: 1 (the default) those whose input a
// group norm has just normalized (a resnet's two convs: one scale per image loses little
// against the im2col form's per-row scales there, where the upsamplers' and downsamplers' raw
// hidden states keep theirs) and whose shape the rule gives a tile (implicit_s8_conv_auto_tile:
// about a wave of tiles); 0 none; 2 every conv the kernel takes, whatever its input and size
// (tests, measurements). $HYRT_CUDA_CONV_IMPLICIT_TILE_N=128|160 forces the tile width.
int implicit_conv_mode() {
  return static_cast<int>(env_int("HYRT_CUDA_CONV_IMPLICIT", 0, 2).value_or(1));
}

// Whether float convs with few output channels (conv_narrow_applies: the UNet's conv_out) run as
// launch_conv_narrow instead of im2col + GEMM (SD 1.5 1024²: 25.92 -> 25.68 ms a step on an
// H100; golden parity in device placement with it on, 2026-12-07). $HYRT_CUDA_CONV_NARROW=0 turns
// it off (for comparison); read as each kernel is made.
bool conv_narrow_enabled() {
  return env_int("HYRT_CUDA_CONV_NARROW", 0, 1).value_or(1) == 1;
}

int implicit_conv_forced_tile() {
  const long n = env_int("HYRT_CUDA_CONV_IMPLICIT_TILE_N", 128, 160).value_or(0);
  return n == 128 || n == 160 ? static_cast<int>(n) : 0;
}

// --- Roofline constants (gemm_roofline_us) ------------------------------------------------------
// Rates a UNet-sized GEMM can reach on an H100 SXM: cuBLASLt f16 ran at 862 TFLOP/s and s8 at
// 1455 TOPS on 8192³ (../shared/notes/cublaslt-h100.md); smaller shapes fall well short,
// which the per-program overhead below stands in for until measurements replace it.
constexpr double kF16FlopsPerSecond = 700e12;
// TF32 (the float candidate on f32 activations): half the f16 tensor-core rate.
constexpr double kTf32FlopsPerSecond = 350e12;
constexpr double kS8OpsPerSecond = 1200e12;
// Device memory: a device-to-device copy moved ~3.0 TB/s (read + write) on the H100s here.
constexpr double kBytesPerSecond = 3.0e12;
// Per program: the launches (1–3 kernels + cuBLASLt) and their tails; the smallest UNet
// GEMMs measured 8–10 µs.
constexpr double kOverheadUs = 6.0;
// Per launch that a chunked run adds (each further chunk repeats its staging, the matmul and,
// W8A8, the epilogue): the launch, and the gap and tail between dependent kernels.
constexpr double kChunkLaunchUs = 2.0;

namespace {

// The budget at start-up: kGemmStagingBudget, or $HYRT_CUDA_GEMM_STAGING_MB megabytes when set
// to a whole number in 1..65535 (a knob for measuring what the chunk size costs).
size_t initial_staging_budget() {
  if (const auto mb = env_int("HYRT_CUDA_GEMM_STAGING_MB", 1, 65535))
    return static_cast<size_t>(*mb) << 20;
  if (const char* v = std::getenv("HYRT_CUDA_GEMM_STAGING_MB"))
    HYRT_LOG(kWarning) << "HYRT_CUDA_GEMM_STAGING_MB='" << v
                       << "' is not a whole number of megabytes in 1..65535; ignored";
  return kGemmStagingBudget;
}

std::atomic<size_t> g_staging_budget{initial_staging_budget()};

// The float candidate's operand type for activations held as `a_type`: f16, or f32 (TF32
// tensor cores) for f32 activations — wide-range values, whose range f16 would not hold.
DType float_operand(DType a_type) {
  return a_type == DType::kF32 ? DType::kF32 : DType::kF16;
}

// GemmKey::w_type of a weight stored as `w` (its uploaded form): s8 for 8-bit S, else the
// float operand type.
DType float_operand_type(DType w, DType a_type) {
  return w == DType::kS8 ? DType::kS8 : float_operand(a_type);
}

int64_t round_up(int64_t v, int64_t multiple) {
  return (v + multiple - 1) / multiple * multiple;
}

int64_t round_up4(int64_t v) {
  return round_up(v, 4);
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

constexpr uint8_t bit(Epilogue e) {
  return static_cast<uint8_t>(e);
}
// GemmKey epilogue bits of a fused activation, and of everything our own passes around the
// matmul do (what gemm_program_key drops).
constexpr uint8_t kActivationBits =
    bit(Epilogue::kSilu) | bit(Epilogue::kGelu) | bit(Epilogue::kQuickGelu) | bit(Epilogue::kRelu);
constexpr uint8_t kFusedEpilogueBits = kActivationBits | bit(Epilogue::kResidualAdd);

// The GemmKey epilogue bits of a linear/conv2d node: bias, its fused activation and residual.
uint8_t epilogue_bits(const ir::Node& node) {
  uint8_t bits = node.gemm_bias() != ir::kNone ? bit(Epilogue::kBias) : 0;
  const ir::GemmEpilogue e = node.epilogue();
  switch (e.activation) {
    case ir::Activation::kSilu:
      bits |= bit(Epilogue::kSilu);
      break;
    case ir::Activation::kGelu:
      bits |= bit(Epilogue::kGelu);
      break;
    case ir::Activation::kQuickGelu:
      bits |= bit(Epilogue::kQuickGelu);
      break;
    case ir::Activation::kRelu:
      bits |= bit(Epilogue::kRelu);
      break;
    case ir::Activation::kNone:
      break;
  }
  if (e.residual) bits |= bit(Epilogue::kResidualAdd);
  return bits;
}

}  // namespace

GemmKey gemm_program_key(const GemmKey& key) {
  GemmKey k = key;
  k.epilogue &= static_cast<uint8_t>(~kFusedEpilogueBits);
  return k;
}

bool gemm_inputs_supported(const ir::Graph& graph, const ir::Node& node) {
  const ir::GemmEpilogue e = node.epilogue();
  // Stacked projections: x, then graph weights [N_i, K] of one dtype and no bias or epilogue
  // (ir::Graph checked the parts as the node was added) — one GEMM over their rows (GemmSpec::w).
  if (node.gemm_weights() != 1) return node.op == ir::OpKind::kLinear;
  const size_t extra = (e.residual ? 1 : 0) + (e.low_rank ? 2 : 0);
  if (node.inputs.size() < extra + 2) return false;
  const size_t gemm_inputs = node.inputs.size() - extra;
  if (gemm_inputs < 2 || gemm_inputs > 3) return false;
  if (e.low_rank) {
    // A linear's low-rank term: float down [R, K] and up [N, R] weights, x and y f16 on the
    // device (the term merges into f16 weights: GemmKernel::add_low_rank_term).
    const ir::Value &x = graph.value(node.inputs[0]), &w = graph.value(node.inputs[1]),
                    &y = graph.value(node.output);
    const ir::Value &down = graph.value(node.gemm_low_rank_down()),
                    &up = graph.value(node.gemm_low_rank_up());
    if (node.op != ir::OpKind::kLinear || w.shape.rank() != 2 ||
        device_storage_dtype(x) != DType::kF16 || device_storage_dtype(y) != DType::kF16)
      return false;
    for (const ir::Value* f : {&down, &up})
      if (f->kind != ir::ValueKind::kWeight || !dtype_is_float(f->dtype) || f->shape.rank() != 2)
        return false;
    const int64_t r = down.shape[0];
    if (r <= 0 || down.shape[1] != w.shape[1] || up.shape[0] != w.shape[0] || up.shape[1] != r)
      return false;
  }
  if (const ir::ValueId b = node.gemm_bias(); b != ir::kNone) {
    const ir::Value& bv = graph.value(b);
    if (bv.kind != ir::ValueKind::kWeight || !dtype_is_float(bv.dtype)) return false;
  }
  if (const ir::ValueId r = node.gemm_residual(); r != ir::kNone) {
    const ir::Value &rv = graph.value(r), &y = graph.value(node.output);
    if (rv.kind == ir::ValueKind::kWeight || rv.dtype != y.dtype || rv.shape != y.shape ||
        device_storage_dtype(rv) != device_storage_dtype(y))
      return false;
  }
  return true;
}

size_t gemm_staging_budget() {
  return g_staging_budget.load(std::memory_order_relaxed);
}

size_t set_gemm_staging_budget(size_t bytes) {
  return g_staging_budget.exchange(bytes, std::memory_order_relaxed);
}

bool default_fused_s8_gemm() {
  static const bool on = !env_is("HYRT_CUDA_FUSED_S8", "0");
  return on;
}

bool fused_s8_applies(const GemmKey& key, const CudaDeviceInfo& device, bool enabled) {
  return enabled && fused_s8_gemm_available(device.compute_major, device.compute_minor) &&
         key.w_type == DType::kS8 && key.a_type == DType::kF16 && key.out_type == DType::kF16 &&
         (key.epilogue & kActivationBits) == 0 &&
         fused_s8_gemm_shape_ok(key.m, key.n, key.k, round_up4(key.k), round_up4(key.k));
}

size_t gemm_staging_bytes_per_row(const GemmKey& key, GemmCandidate c, bool fused_s8) {
  // What GemmKernel::staging_layout stages per row, buffer by buffer.
  int64_t bytes = 0;
  if (c == GemmCandidate::kF16) {
    // kIm2col, in the operand type (f16, or f32 on f32 activations)
    if (key.epilogue & kIm2colOperand)
      bytes += key.k * static_cast<int64_t>(dtype_size(key.a_type));
  } else if (key.w_type == DType::kS8) {
    bytes = round_up4(key.k) + 4;                  // kActS8, kRowScales
    if (!fused_s8) bytes += round_up4(key.n) * 4;  // kAccS32
  }
  return static_cast<size_t>(bytes);
}

GemmChunking gemm_chunking(const GemmKey& key, GemmCandidate c, size_t budget, bool fused_s8) {
  GemmChunking ch;
  const int64_t m = key.m;
  const size_t per_row = gemm_staging_bytes_per_row(key, c, fused_s8);
  ch.rows = ch.tail_rows = m;
  ch.count = 1;
  ch.staging_bytes = static_cast<size_t>(m) * per_row;
  if (per_row == 0 || ch.staging_bytes <= budget) return ch;
  const auto fit = static_cast<int64_t>(budget / per_row);
  const int64_t max_rows =
      std::max(kGemmChunkRowAlign, fit / kGemmChunkRowAlign * kGemmChunkRowAlign);
  if (m <= max_rows) return ch;  // the one-block minimum covers M: over budget, one chunk
  // Balanced: as many chunks as max_rows needs, each about M / count rows (fewer rows of
  // scratch, and no short last GEMM of a few rows where M allows).
  const int64_t count = ceil_div(m, max_rows);
  ch.rows = round_up(ceil_div(m, count), kGemmChunkRowAlign);  // <= max_rows
  ch.count = ceil_div(m, ch.rows);                             // >= 2: rows <= max_rows < M
  ch.tail_rows = m - (ch.count - 1) * ch.rows;                 // 1..rows
  ch.staging_bytes = static_cast<size_t>(ch.rows) * per_row;
  return ch;
}

double gemm_roofline_us(const GemmKey& key, GemmCandidate c, bool fused_s8) {
  const double m = static_cast<double>(key.m), n = static_cast<double>(key.n),
               k = static_cast<double>(key.k);
  const double a = static_cast<double>(dtype_size(key.a_type));
  const double flops = 2.0 * m * n * k;
  // The float candidate's operands: f16, or f32 (TF32) on f32 activations.
  const double float_rate = key.a_type == DType::kF32 ? kTf32FlopsPerSecond : kF16FlopsPerSecond;
  // Activations in and out (a fused residual read once more). A conv through im2col gathers
  // its [M, K] operand from an input ~9 times smaller (3x3: each pixel feeds 9 rows; the
  // repeats come from L2), and the f16 candidate writes that matrix and reads it back; W8A8
  // never writes it (its quantizer gathers into the s8 operand, counted below).
  // $HYRT_CUDA_ROOFLINE=matrix counts a conv's input as the whole matrix read, and the matrix
  // once more for both candidates (the estimate before 2026-12-06; a knob for measuring).
  static const bool matrix_estimate = env_is("HYRT_CUDA_ROOFLINE", "matrix");
  double x_read = m * k * a, f16_matrix = 0.0, w8_matrix = 0.0;
  if ((key.epilogue & kIm2colOperand) && matrix_estimate) {
    f16_matrix = w8_matrix = m * k * a;
  } else if (key.epilogue & kIm2colOperand) {
    x_read = m * k * a / 9.0;
    f16_matrix = 2.0 * m * k * a;
  }
  const double io =
      x_read + m * n * a + ((key.epilogue & bit(Epilogue::kResidualAdd)) ? m * n * a : 0.0);
  // The candidate that runs (without 8-bit S weights, f16 whatever c says) and what its
  // further chunks add: f16 — its staging pass, if any, and the matmul; W8A8 — quantize,
  // matmul, rescale.
  const GemmCandidate runs = key.w_type == DType::kS8 ? c : GemmCandidate::kF16;
  fused_s8 = fused_s8 && runs == GemmCandidate::kW8A8;
  const GemmChunking chunks = gemm_chunking(key, runs, gemm_staging_budget(), fused_s8);
  // A fused activation costs the f16 candidate a pass of its own over y per chunk (W8A8
  // applies it in its rescale).
  const bool activation_pass = runs == GemmCandidate::kF16 && (key.epilogue & kActivationBits);
  const int64_t launches_per_chunk =
      runs == GemmCandidate::kW8A8
          ? (fused_s8 ? 2 : 3)
          : (gemm_staging_bytes_per_row(key, runs) > 0 ? 2 : 1) + (activation_pass ? 1 : 0);
  const double chunk_us =
      static_cast<double>((chunks.count - 1) * launches_per_chunk + (activation_pass ? 1 : 0)) *
      kChunkLaunchUs;
  const double f16_io = io + f16_matrix + (activation_pass ? 2.0 * m * n * a : 0.0);
  auto roofline = [&](double ops, double rate, double bytes) {
    return 1e6 * std::max(ops / rate, bytes / kBytesPerSecond) + kOverheadUs + chunk_us;
  };
  if (key.w_type != DType::kS8) return roofline(flops, float_rate, f16_io + n * k * a);
  if (c == GemmCandidate::kF16)
    return roofline(flops, float_rate, f16_io + n * k * (1.0 + 2.0 * a));
  // W8A8: the s8 operand written by the quantizer and read by the GEMM, the s32 result (unfused).
  return roofline(flops, kS8OpsPerSecond,
                  io + w8_matrix + n * k + m * k * 2.0 + (fused_s8 ? 0.0 : m * n * 8.0));
}

std::string GemmTuning::to_string() const {
  auto one = [](const char* name, const GemmCandidateStats& s) {
    if (!s.available) return str_cat(name, " n/a");
    if (!s.measured) return str_cat(name, " ", s.total_us, " us (estimated)");
    return str_cat(name, " ", s.total_us, " us (gemm ", s.gemm_us, " us, ", s.algos_timed,
                   " algos)");
  };
  return str_cat(key.to_string(), ": ", one("f16", f16), ", ", one("w8a8", w8a8), " -> ",
                 candidate_name(chosen));
}

GemmKey linear_gemm_key(const ir::Graph& graph, const ir::Node& node) {
  const ir::Value& x = graph.value(node.inputs.at(0));
  const ir::Value& w = graph.value(node.inputs.at(1));
  GemmKey key;
  key.n = 0;  // a stacked linear's weights side by side (ir::LinearAttrs::weights)
  for (int i = 1; i <= node.gemm_weights(); ++i)
    key.n += graph.value(node.inputs.at(static_cast<size_t>(i))).shape[0];
  key.k = w.shape[1];
  key.m = key.k > 0 ? x.shape.numel() / key.k : 0;
  key.batch = 1;
  // As the device holds it: f16, f32 for wide range; a quantized x (s8rows) is the operand the
  // W8A8 candidate would have made from the output's float type.
  key.a_type = x.dtype == DType::kS8Rows ? device_storage_dtype(graph.value(node.output))
                                         : device_storage_dtype(x);
  key.w_type = float_operand_type(w.dtype, key.a_type);
  key.out_type = key.a_type;
  key.w_transposed = true;
  key.epilogue = epilogue_bits(node);
  return key;
}

namespace {

// --- tuning records (ProgramCache::put_record / find_record) -------------------------------
// A tuned program as bytes, field by field: version, chosen candidate, per candidate
// (available, total_us, gemm_us, algos_timed, the cuBLASLt algorithm's 8 opaque words).
constexpr uint32_t kRecordVersion = 1;

template <class T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <class T>
bool take(std::string_view& in, T& v) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&v, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

std::string encode_program(const CudaGemmProgram& p) {
  std::string out;
  put(out, kRecordVersion);
  put(out, static_cast<uint8_t>(p.tuning.chosen));
  auto one = [&](const GemmCandidateStats& st, const cublasLtMatmulAlgo_t& algo) {
    put(out, static_cast<uint8_t>(st.available));
    put(out, st.total_us);
    put(out, st.gemm_us);
    put(out, static_cast<int32_t>(st.algos_timed));
    for (uint64_t w : algo.data)
      put(out, w);
  };
  one(p.tuning.f16, p.f16_algo);
  one(p.tuning.w8a8, p.s8_algo);
  return out;
}

// Null when the record is malformed or of another version (it is then rebuilt).
std::shared_ptr<CudaGemmProgram> decode_program(std::string_view in, const GemmKey& key) {
  auto p = std::make_shared<CudaGemmProgram>();
  p->tuning.key = key;
  uint32_t version = 0;
  uint8_t chosen = 0;
  if (!take(in, version) || version != kRecordVersion || !take(in, chosen) || chosen > 1)
    return nullptr;
  p->tuning.chosen = static_cast<GemmCandidate>(chosen);
  auto one = [&](GemmCandidateStats& st, cublasLtMatmulAlgo_t& algo) {
    uint8_t avail = 0;
    int32_t timed = 0;
    if (!take(in, avail) || !take(in, st.total_us) || !take(in, st.gemm_us) || !take(in, timed))
      return false;
    for (uint64_t& w : algo.data)
      if (!take(in, w)) return false;
    st.available = avail != 0;
    st.measured = st.available;
    st.algos_timed = timed;
    return avail <= 1 && (!st.available || std::isfinite(st.total_us));
  };
  if (!one(p->tuning.f16, p->f16_algo) || !one(p->tuning.w8a8, p->s8_algo) || !in.empty())
    return nullptr;
  if (!p->tuning.stats(p->tuning.chosen).available) return nullptr;
  return p;
}

FloatType float_type(DType t) {
  return t == DType::kF16 ? FloatType::kF16 : FloatType::kF32;
}

cudaDataType_t cuda_float_type(DType t) {
  return t == DType::kF16 ? CUDA_R_16F : CUDA_R_32F;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// --- cuBLASLt objects ------------------------------------------------------------------------

struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const { cublasLtMatmulDescDestroy(d); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const { cublasLtMatrixLayoutDestroy(l); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

template <class T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& value) {
  HYRT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}

template <class T>
void set_pref(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
              const T& value) {
  HYRT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)));
}

// One cuBLASLt matmul configuration: D [m, n] = op(A) · B, A stored k×m and transposed, B
// stored k×n, D m×n, all column-major and dense; optional bias epilogue (bias[m] added to
// every column of D).
struct LtGemm {
  MatmulDesc op;
  Layout a, b, d;
};

Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols) {
  cublasLtMatrixLayout_t l = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), rows));
  return Layout(l);
}

LtGemm make_lt_gemm(cublasComputeType_t compute, cudaDataType_t scale_type, cudaDataType_t ab_type,
                    cudaDataType_t d_type, int64_t m, int64_t n, int64_t k, const void* bias) {
  LtGemm g;
  cublasLtMatmulDesc_t op = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, scale_type));
  g.op.reset(op);
  set_attr(op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_attr(op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  if (bias) {
    set_attr(op, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_attr(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  g.a = make_layout(ab_type, k, m);
  g.b = make_layout(ab_type, k, n);
  g.d = make_layout(d_type, m, n);
  return g;
}

// One candidate's cuBLASLt configurations over its row chunks: `full` for chunks of
// chunking.rows GEMM rows (cuBLASLt's n), `tail` for a shorter last chunk (unset without one).
struct ChunkedGemm {
  GemmChunking chunking;
  LtGemm full, tail;
  bool has_tail() const { return chunking.tail_rows != chunking.rows; }
  const LtGemm& for_rows(int64_t rows) const { return rows == chunking.rows ? full : tail; }
};

// `make(rows)` makes the LtGemm of a chunk of `rows` rows.
template <class Make>
ChunkedGemm make_chunked_gemm(const GemmChunking& chunking, Make&& make) {
  ChunkedGemm g;
  g.chunking = chunking;
  g.full = make(chunking.rows);
  if (g.has_tail()) g.tail = make(chunking.tail_rows);
  return g;
}

// The pointer alignment the GEMMs promise cuBLASLt for B, C and D (heuristics):
// f16 — activations and output are 16-byte aligned (cuda_backend.h), and so is every chunk's
// offset into them; W8A8 — B and D are staging buffers, used from their start: cuBLASLt's
// default (256), which StagingLayout keeps for every buffer in a bound workspace.
constexpr uint32_t kF16MinAlign = 16;
constexpr uint32_t kS8MinAlign = 0;

// The heuristic's top `count` algorithms for `g` that fit the workspace. `min_align_bcd`:
// the pointer alignment promised for B, C and D (the rest stay at cuBLASLt's default 256).
// Empty when cuBLASLt supports no algorithm for the configuration.
std::vector<cublasLtMatmulHeuristicResult_t> heuristics(const CudaContext& ctx, const LtGemm& g,
                                                        int count, uint32_t min_align_bcd) {
  cublasLtMatmulPreference_t p = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
  Preference pref(p);
  set_pref(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           static_cast<uint64_t>(ctx.workspace_bytes()));
  if (min_align_bcd) {
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, min_align_bcd);
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, min_align_bcd);
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, min_align_bcd);
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(std::max(count, 1)));
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      ctx.lt(), g.op.get(), g.a.get(), g.b.get(), g.d.get(), g.d.get(), p,
      static_cast<int>(results.size()), results.data(), &returned);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return {};
  if (st != CUBLAS_STATUS_SUCCESS)
    throw_cublas_error(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  results.resize(static_cast<size_t>(returned));
  std::erase_if(results, [](const auto& r) { return r.state != CUBLAS_STATUS_SUCCESS; });
  return results;
}

// --- timing --------------------------------------------------------------------------------

class Events {
 public:
  explicit Events(int n) : ev_(static_cast<size_t>(n), nullptr) {
    for (cudaEvent_t& e : ev_)
      HYRT_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Events() {
    for (cudaEvent_t e : ev_)
      if (e) cudaEventDestroy(e);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  cudaEvent_t operator[](size_t i) const { return ev_[i]; }

 private:
  std::vector<cudaEvent_t> ev_;
};

// Median GPU microseconds of `reps` back-to-back runs of enqueue(), each between two events.
template <class F>
double median_us(const CudaContext& ctx, int reps, F&& enqueue) {
  reps = std::max(reps, 1);
  Events ev(reps + 1);
  // ~60 µs of host time per run is ample to enqueue it (a few launches) before the GPU gets there.
  HYRT_CUDA_CHECK(launch_spin(60.0 * reps, ctx.stream()));
  HYRT_CUDA_CHECK(cudaEventRecord(ev[0], ctx.stream()));
  for (int i = 0; i < reps; ++i) {
    enqueue();
    HYRT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(i) + 1], ctx.stream()));
  }
  HYRT_CUDA_CHECK(cudaEventSynchronize(ev[static_cast<size_t>(reps)]));
  std::vector<double> us(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    HYRT_CUDA_CHECK(
        cudaEventElapsedTime(&ms, ev[static_cast<size_t>(i)], ev[static_cast<size_t>(i) + 1]));
    us[static_cast<size_t>(i)] = 1000.0 * ms;
  }
  std::nth_element(us.begin(), us.begin() + reps / 2, us.end());
  return us[static_cast<size_t>(reps / 2)];
}

// --- the kernel -----------------------------------------------------------------------------

// How a kernel's bound input becomes the GEMM's activation operand a [M, K].
struct Im2colGeometry {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int kernel_h = 0, kernel_w = 0, stride = 1, padding = 0;
  int64_t out_h = 0, out_w = 0;
  std::string to_string() const {
    return str_cat("im2col b=", batch, " h=", height, " w=", width, " c=", channels,
                   " k=", kernel_h, "x", kernel_w, " s=", stride, " p=", padding);
  }
};

// Whether a conv's GEMM rows (output pixels) are its input's positions one to one (stride 1,
// the same height and width): then an s8rows input's row scales are the rows' scales.
bool quantized_rows_match(const Im2colGeometry& g) {
  return g.stride == 1 && g.out_h == g.height && g.out_w == g.width;
}

// A conv's implicit-GEMM form: its shape and tile width (kImplicitConvTileN).
struct ImplicitConv {
  ImplicitConvS8Shape shape;
  int tile = 0;
};

// The implicit-GEMM form a W8A8 conv over geometry g runs as, when its W8A8 is the fused kernel
// (`fused_s8`): by implicit_conv_mode, the tile rule (about a wave of tiles) and what the
// kernel takes; nullopt where it runs through im2col. One rule for the kernel and for
// CudaBackend::supports (which takes a quantized input only where this form reads it).
std::optional<ImplicitConv> implicit_conv_form(bool fused_s8, const Im2colGeometry& g, int64_t n,
                                               int64_t k4, bool input_group_normed,
                                               int multiprocessors) {
  const int implicit_mode = implicit_conv_mode();
  if (!fused_s8 || !(implicit_mode == 2 || (implicit_mode == 1 && input_group_normed)))
    return std::nullopt;
  const ImplicitConvS8Shape shape{g.batch,    g.height, g.width,   g.channels, n,      g.kernel_h,
                                  g.kernel_w, g.stride, g.padding, g.out_h,    g.out_w};
  // The rule's tile (0 below about a wave of tiles: im2col there), any tile under mode 2.
  int tile = implicit_s8_conv_auto_tile(shape, multiprocessors);
  if (!tile && implicit_mode == 2) tile = 128;
  if (const int forced = implicit_conv_forced_tile(); tile && forced) tile = forced;
  if (!tile || !implicit_s8_conv_shape_ok(shape, k4)) return std::nullopt;
  return ImplicitConv{shape, tile};
}

// Everything a GemmKernel is made from, in GEMM terms. The weights are [N, K] row-major in
// their stored dtype (s8 with per-row scales, or a float type); views may be unaligned.
struct GemmSpec {
  std::string name;  // the node's, for messages
  GemmKey key;
  std::optional<Im2colGeometry> im2col;  // none: the bound input is a [M, K] itself
  int64_t input_elems = 0;               // elements of the bound input
  int64_t output_elems = 0;              // M · N
  // GEMM rows per sample: M / the input's first dimension (1 for a [samples, K] linear input).
  // The untimed candidate choice depends on it, never on the batch (GemmKernel::choice_key).
  int64_t rows_per_sample = 1;
  uint64_t source = 0;  // WeightSource::generation() (identity of the resident weights)
  std::string w_name;   // the weight's name; a stacked linear's names joined by '+'
  // One stored weight: [N_i, K], or a conv's OIHW [N, Cin, taps] when conv_taps > 1, with its
  // f32 [N_i] row scales for s8.
  struct WeightPart {
    std::string name;
    TensorView w;
    std::optional<TensorView> scale;
  };
  // The GEMM's weight rows: one part, or a stacked linear's (ir::LinearAttrs::weights), whose
  // rows follow each other in N (uploaded into one device matrix: one GEMM).
  std::vector<WeightPart> w;
  // kh·kw and Cin of a conv whose weight needs reordering (on the device, at upload).
  int64_t conv_taps = 0, conv_cin = 0;
  std::string bias_name;
  std::optional<TensorView> bias;  // float [N]
  ir::GemmEpilogue epilogue;       // fused activation / residual (the residual is the last input)
  // A low-rank term (epilogue.low_rank, a LoRA adapter): its factors, resident in f16 —
  // down [R, K] and up [N, R] (make_linear_kernel uploads them).
  int64_t rank = 0;
  std::shared_ptr<const DeviceBuffer> down, up;
  // A linear or conv whose x is already quantized (s8rows; CudaBackend::supports takes it only
  // where fused_s8_applies — for a conv, where conv2d_reads_quantized_input): it runs the fused
  // W8A8 kernel (the implicit-GEMM conv) on x's values and row scales as bound, with no
  // quantize pass or staging.
  bool quantized_input = false;
  // A conv whose input is a group norm's output (implicit_conv_mode).
  bool input_group_normed = false;
};

GemmKey choice_key(GemmKey key, int64_t rows_per_sample) {
  key.m = 2 * std::max<int64_t>(rows_per_sample, 1);
  return key;
}

// One GEMM program's runner: y [M, N] = act(a [M, K] · w [N, K]ᵀ (+ bias)) (+ residual), a = the
// input or its im2col matrix. Linear and conv2d nodes differ only in their GemmSpec.
class GemmKernel final : public CudaGemmKernel {
 public:
  GemmKernel(CudaContext& ctx, const CudaBackendOptions& options, const GemmSpec& spec,
             ProgramCache& cache)
      : ctx_(ctx),
        options_(options),
        name_(spec.name),
        key_(spec.key),
        program_key_(gemm_program_key(spec.key)),
        choice_key_(choice_key(program_key_, spec.rows_per_sample)),
        im2col_(spec.im2col),
        input_elems_(spec.input_elems),
        output_elems_(spec.output_elems),
        residual_(spec.epilogue.residual),
        quantized_input_(spec.quantized_input),
        has_bias_(spec.bias.has_value()),
        activation_(static_cast<EpilogueActivation>(spec.epilogue.activation)) {
    static_assert(static_cast<int>(EpilogueActivation::kQuickGelu) ==
                      static_cast<int>(ir::Activation::kQuickGelu) &&
                  static_cast<int>(EpilogueActivation::kRelu) ==
                      static_cast<int>(ir::Activation::kRelu));
    n_ = key_.n, k_ = key_.k;
    n4_ = round_up4(n_), k4_ = round_up4(k_);
    a_dtype_ = key_.a_type;
    op_dtype_ = float_operand(a_dtype_);
    s8_ = key_.w_type == DType::kS8;
    HYRT_ASSERT(a_dtype_ == DType::kF16 || a_dtype_ == DType::kF32,
                "GEMM activations are f16 or f32 on the device");
    upload_weights(spec);
    if (spec.epilogue.low_rank) prepare_low_rank(spec, cache);
    // A low-rank node runs the float candidate (its merged weights): never the fused kernel.
    fused_s8_ = s8_ && !low_rank_ && fused_s8_applies(key_, ctx_.device(), options_.fused_s8_gemm);
    // The program's form: a node with a fused activation or residual shares the plain GEMM's
    // program (gemm_program_key), whose W8A8 timings are the fused kernel's where that applies
    // to the plain GEMM; the node itself then runs W8A8 unfused with the program's choice.
    program_fused_s8_ =
        s8_ && fused_s8_applies(program_key_, ctx_.device(), options_.fused_s8_gemm);
    // The kernels' shared-memory attributes, set here rather than inside a graph capture.
    if (program_fused_s8_) HYRT_CUDA_CHECK(fused_s8_gemm_prime());
    // A W8A8 conv the implicit-GEMM kernel takes runs as one, reading its input quantized per
    // image in place (no im2col rows, no chunks).
    if (im2col_)
      implicit_ = implicit_conv_form(fused_s8_, *im2col_, n_, k4_, spec.input_group_normed,
                                     ctx_.device().multiprocessors);
    if (implicit_) HYRT_CUDA_CHECK(implicit_s8_conv_prime());
    narrow_ = im2col_ && !s8_ && !low_rank_ && conv_narrow_enabled() &&
              conv_narrow_applies(n_, k_, float_type(op_dtype_));

    // Row chunks under the budget as it is now (cuda_gemm.h), and each chunk size's layouts.
    const size_t budget = gemm_staging_budget();
    // f16 operands accumulate in f32; f32 operands run on TF32 tensor cores (f16's mantissa,
    // f32's range), accumulating in f32.
    const cublasComputeType_t float_compute =
        op_dtype_ == DType::kF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    f16_ = make_chunked_gemm(gemm_chunking(key_, GemmCandidate::kF16, budget), [&](int64_t rows) {
      return make_lt_gemm(float_compute, CUDA_R_32F, cuda_float_type(op_dtype_),
                          cuda_float_type(a_dtype_), n_, rows, k_, bias_out_);
    });
    if (s8_)
      s8_gemm_ = make_chunked_gemm(gemm_chunking(key_, GemmCandidate::kW8A8, budget, fused_s8_),
                                   [&](int64_t rows) {
                                     return make_lt_gemm(CUBLAS_COMPUTE_32I, CUDA_R_32I, CUDA_R_8I,
                                                         CUDA_R_32I, n4_, rows, k4_, nullptr);
                                   });

    std::string cache_key = str_cat("cuda ", ctx_.device().name, " sm", ctx_.device().compute_major,
                                    ctx_.device().compute_minor, " ", program_key_.to_string());
    if (im2col_) cache_key += " " + im2col_->to_string();
    // The untimed choice follows the rows per sample: keys of one M but other samples differ.
    if (choice_key_.m != program_key_.m) cache_key += str_cat(" choice-m", choice_key_.m);
    // A chunked program's algorithms and timings are those of its chunk size (CudaGemmProgram);
    // unchunked keys stay as they were.
    cache_key += chunks_note();
    // Its W8A8 timings are the fused kernel's (records of the two forms must not mix).
    if (program_fused_s8_) cache_key += " fused-s8";
    if (implicit_) cache_key += str_cat(" implicit", implicit_->tile);
    if (narrow_) cache_key += " narrow";
    program_ = cache.get_or_create<CudaGemmProgram>(cache_key, [&] {
      // A tuned record (this process's or the disk store's) wins if its algorithms still
      // check out on this cuBLASLt; then tuning, or the untimed choice.
      if (std::optional<std::string> rec = cache.find_record(cache_key))
        if (std::shared_ptr<CudaGemmProgram> p = decode_program(*rec, program_key_);
            p && still_valid(*p) && derive_tail_algos(*p))
          return p;
      if (!options_.autotune) return untimed();
      std::shared_ptr<CudaGemmProgram> p = tune();
      cache.put_record(cache_key, encode_program(*p));
      return p;
    });

    switch (options_.gemm) {
      case GemmPolicy::kAuto:
        candidate_ = program_->tuning.chosen;
        break;
      case GemmPolicy::kF16:
        candidate_ = GemmCandidate::kF16;
        break;
      case GemmPolicy::kW8A8:
        candidate_ = s8_ ? GemmCandidate::kW8A8 : GemmCandidate::kF16;
        break;
    }
    // The term merges into the widened weights, which only the float candidate multiplies.
    if (low_rank_) candidate_ = GemmCandidate::kF16;
    // A quantized x is W8A8's operand already: the fused kernel is the only form that reads it
    // (for a conv, the implicit-GEMM one, whose rows are the input's: stride 1, same size).
    if (quantized_input_) {
      HYRT_CHECK(fused_s8_ && !low_rank_ && activation_ == EpilogueActivation::kNone, kUnsupported,
                 "node '", name_,
                 "': a GEMM on a quantized (s8rows) input runs the fused W8A8 "
                 "kernel only, which does not apply to ",
                 key_.to_string());
      HYRT_CHECK(!im2col_ || (implicit_ && quantized_rows_match(*im2col_)), kUnsupported, "node '",
                 name_,
                 "': a conv on a quantized (s8rows) input runs as the implicit-GEMM kernel "
                 "only, with as many output pixels as input ones; not ",
                 im2col_->to_string());
      candidate_ = GemmCandidate::kW8A8;
    }
    // Only the chosen candidate's buffers: nothing is reserved here (cuda_context.h, Scratch).
    layout_ = quantized_input_ ? StagingLayout{} : staging_layout(candidate_);
    HYRT_CHECK(program_->tuning.stats(candidate_).available, kUnsupported, "node '", name_,
               "': the ", candidate_name(candidate_),
               " GEMM candidate that the CUDA backend's "
               "policy asks for has no working cuBLASLt algorithm (",
               program_->tuning.to_string(), ")");
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    run_candidate(candidate_, inputs, output);
  }

  void run_candidate(GemmCandidate c, std::span<const TensorView> inputs,
                     const TensorView& output) override {
    HYRT_CHECK(!inputs.empty(), kInvalidArgument, "node '", name_, "': no input bound");
    const TensorView& x = inputs[0];
    const DType x_dtype = quantized_input_ ? DType::kS8Rows : a_dtype_;
    HYRT_CHECK(!quantized_input_ || c == GemmCandidate::kW8A8, kUnsupported, "node '", name_,
               "': a linear on a quantized input runs the W8A8 candidate only");
    HYRT_CHECK(x.dtype == x_dtype && x.numel() == input_elems_ && output.dtype == a_dtype_ &&
                   output.numel() == output_elems_,
               kInvalidArgument, "node '", name_, "': bound ", dtype_name(x.dtype),
               x.shape.to_string(), " -> ", dtype_name(output.dtype), output.shape.to_string(),
               ", the program computes ", key_.to_string(),
               im2col_ ? " on the " + im2col_->to_string() + " of its input" : "");
    HYRT_CHECK(aligned16(x.data) && aligned16(output.data), kInvalidArgument, "node '", name_,
               "': activation buffers must be 16-byte aligned device memory");
    HYRT_CHECK(program_->tuning.stats(c).available, kUnsupported, "node '", name_, "': the ",
               candidate_name(c), " candidate is not available (", program_->tuning.to_string(),
               ")");
    // W8A8 has no place for the low-rank term: it would silently leave the adapter out.
    HYRT_CHECK(!low_rank_ || c == GemmCandidate::kF16, kUnsupported, "node '", name_,
               "': a low-rank node runs the f16 candidate only");
    const void* residual = nullptr;
    if (residual_) {
      // x, w, [bias], residual: exactly the node's inputs, so that a missing residual is never
      // taken from the bias's view. (Without a residual only x is read: the weights are the
      // kernel's own uploaded copies.)
      const size_t want_inputs = 3 + (has_bias_ ? 1 : 0) + (low_rank_ ? 2 : 0);
      HYRT_CHECK(inputs.size() == want_inputs, kInvalidArgument, "node '", name_,
                 "': ", inputs.size(), " inputs bound, the node has ", want_inputs,
                 " (its fused residual last)");
      const TensorView& r = inputs.back();
      HYRT_CHECK(r.dtype == a_dtype_ && r.numel() == output_elems_ && aligned16(r.data),
                 kInvalidArgument, "node '", name_, "': bound residual ", dtype_name(r.dtype),
                 r.shape.to_string(), " does not match the output (", dtype_name(a_dtype_), ", ",
                 output_elems_, " elements, 16-byte aligned device memory)");
      residual = r.data;
    }
    if (quantized_input_) {
      run_quantized_input(x, output.data, residual);
      return;
    }
    enqueue(c, *program_, staging_for(c), x.data, output.data, {activation_, residual});
  }

  const GemmTuning& tuning() const override { return program_->tuning; }
  GemmCandidate candidate() const override { return candidate_; }
  bool fused_s8() const override { return fused_s8_; }

  // The chosen candidate's staging for one chunk (staging_layout): 0 when it stages nothing.
  size_t workspace_bytes() const override { return layout_.workspace_bytes(); }

  // Null unbinds (runs fall back to the context's slots again).
  void bind_workspace(void* workspace) override {
    bound_.reset();
    if (workspace && !layout_.empty()) bound_ = layout_.carve(workspace);
  }

 private:
  static size_t bytes(int64_t n) { return static_cast<size_t>(n); }

  // " rows/chunk f16 R w8a8 R" for a program that runs a candidate in chunks, else "".
  std::string chunks_note() const {
    if (!f16_.chunking.chunked() && !s8_gemm_.chunking.chunked()) return "";
    return str_cat(" rows/chunk f16 ", f16_.chunking.rows, " w8a8 ",
                   s8_ ? s8_gemm_.chunking.rows : 0);
  }

  // The staging buffers candidate `c` uses in one run, for one chunk of rows (unchunked, the
  // f16 candidate's im2col matrix would be M·K·2 bytes: 141 MB for a 960-channel 3x3 conv at
  // 64x64, batch 2); gemm_staging_bytes_per_row counts the same per row. Float: a conv's
  // im2col matrix [rows, K] and, for 8-bit S weights, the layer widened [N, K], both in the
  // operand type (f16, or f32 on f32 activations); W8A8: the quantized rows s8 [rows, K4],
  // their scales f32 [rows] and the s32 result [rows, N4].
  StagingLayout staging_layout(GemmCandidate c) const {
    StagingLayout l;
    if (c == GemmCandidate::kF16 && narrow_) {
      // Nothing: the narrow conv reads the input and the resident weights as they are.
    } else if (c == GemmCandidate::kF16) {
      const int64_t rows = f16_.chunking.rows;
      if (im2col_) l.add(Scratch::kIm2col, bytes(rows * k_) * op_size());
      if (s8_ || low_rank_) l.add(Scratch::kWeightWide, bytes(n_ * k_) * op_size());
    } else if (s8_ && implicit_) {
      // The input quantized whole (s8, its own shape), the per-row scales [M] and each image's
      // absmax [batch] after them.
      l.add(Scratch::kActS8, bytes(input_elems_));
      l.add(Scratch::kRowScales, bytes((key_.m + implicit_->shape.batch) * 4));
    } else if (s8_) {
      const int64_t rows = s8_gemm_.chunking.rows;
      l.add(Scratch::kActS8, bytes(rows * k4_));
      l.add(Scratch::kRowScales, bytes(rows * 4));
      if (!fused_s8_) l.add(Scratch::kAccS32, bytes(rows * n4_ * 4));
    }
    return l;
  }

  // Where a run of candidate `c` stages: the bound workspace for the chosen candidate, else
  // (no workspace bound, or another candidate: tests and benchmarks) the context's shared
  // slots, grown on first use — that run may allocate and synchronise.
  Staging staging_for(GemmCandidate c) const {
    if (c == candidate_) return bound_ ? *bound_ : layout_.reserve_in(ctx_);
    return staging_layout(c).reserve_in(ctx_);
  }

  void upload_weights(const GemmSpec& spec) {
    const std::string& wname = spec.w_name;
    int64_t parts_rows = 0;
    for (const GemmSpec::WeightPart& part : spec.w)
      parts_rows += part.w.shape[0];
    HYRT_ASSERT(!spec.w.empty() && parts_rows == n_, "node '", name_, "': weight rows ", parts_rows,
                " for N = ", n_);
    // Each part's rows into `d` [rows, ld] after the parts before it; the last part's call
    // zero-pads the rows after N (launch_reorder_weight_rows).
    auto upload_parts = [&](int elem, int64_t dst_rows, int64_t ld, DeviceBuffer& d,
                            auto&& rows_of) {
      int64_t row0 = 0;
      for (size_t i = 0; i < spec.w.size(); ++i) {
        const int64_t n = spec.w[i].w.shape[0];
        const int64_t pad = i + 1 == spec.w.size() ? dst_rows - n_ : 0;
        upload_weight_rows(spec, rows_of(i), elem, n, n + pad, ld,
                           static_cast<uint8_t*>(d.data()) + bytes(row0 * ld) * elem);
        row0 += n;
      }
    };
    if (s8_) {
      for (const GemmSpec::WeightPart& part : spec.w) {
        HYRT_CHECK(part.scale.has_value(), kInvalidModel, "8-bit S weight '", part.name,
                   "' of node '", name_, "' has no per-row scale");
        const TensorView& scale = *part.scale;
        const int64_t n = part.w.shape[0];
        HYRT_CHECK(scale.dtype == DType::kF32 && scale.shape.rank() == 1 && scale.shape[0] == n,
                   kInvalidModel, "8-bit S weight '", part.name, "' has scale ",
                   dtype_name(scale.dtype), scale.shape.to_string(), ", expected f32[", n,
                   "] (one per output row)");
      }
      // Zero-padded to [N4, K4].
      w_ = ctx_.resident(spec.source, wname, str_cat("s8 ", n4_, "x", k4_), [&] {
        DeviceBuffer d(bytes(n4_ * k4_), wname + " (s8 weights)");
        upload_parts(1, n4_, k4_, d, [&](size_t i) { return spec.w[i].w.data; });
        return d;
      });
      w_scale_ = ctx_.resident(spec.source, wname, str_cat("scale ", n4_), [&] {
        AlignedBuffer sc(bytes(n4_ * 4), wname + " scale");
        std::memset(sc.data(), 0, sc.size());
        int64_t row0 = 0;
        for (const GemmSpec::WeightPart& part : spec.w) {
          std::memcpy(sc.as<float>() + row0, part.scale->data, bytes(part.w.shape[0] * 4));
          row0 += part.w.shape[0];
        }
        DeviceBuffer d(sc.size(), wname + " (scales)");
        ctx_.upload(d.data(), sc.data(), sc.size());
        return d;
      });
    } else {
      // Float weights in the operand type: f16 [N, K], or f32 for f32 activations.
      const size_t count = bytes(n_ * k_);
      const int elem = static_cast<int>(op_size());
      const std::string_view type = dtype_name(op_dtype_);
      w_ = ctx_.resident(spec.source, wname, str_cat(type, " ", n_, "x", k_), [&] {
        DeviceBuffer d(count * op_size(), str_cat(wname, " (", type, " weights)"));
        // Each part as stored, or converted where its stored dtype differs (element by element,
        // so in the stored order as well as in any other).
        std::vector<AlignedBuffer> converted;
        std::vector<const void*> rows;
        for (const GemmSpec::WeightPart& part : spec.w) {
          if (part.w.dtype == op_dtype_) {
            rows.push_back(part.w.data);
            continue;
          }
          const size_t c = static_cast<size_t>(part.w.numel());
          AlignedBuffer f32(c * 4, part.name + " staging");
          converted.emplace_back(c * op_size(), part.name + " staging");
          convert_to_f32(part.w.dtype, part.w.data, f32.as<float>(), c);
          convert_from_f32(f32.as<float>(), op_dtype_, converted.back().data(), c);
          rows.push_back(converted.back().data());
        }
        upload_parts(elem, n_, k_, d, [&](size_t i) { return rows[i]; });
        return d;
      });
    }
    if (spec.bias) {
      const TensorView& b = *spec.bias;
      const std::string& bname = spec.bias_name;
      HYRT_CHECK(b.shape.numel() == n_ && dtype_is_float(b.dtype), kInvalidModel, "bias '", bname,
                 "' of node '", name_, "' is stored as ", dtype_name(b.dtype), b.shape.to_string(),
                 ", expected a float vector of ", n_);
      AlignedBuffer f32(bytes(n_ * 4), bname + " staging");
      convert_to_f32(b.dtype, b.data, f32.as<float>(), bytes(n_));
      bias_f32_ = ctx_.resident(spec.source, bname, "f32", [&] {
        DeviceBuffer d(f32.size(), bname + " (f32 bias)");
        ctx_.upload(d.data(), f32.data(), f32.size());
        return d;
      });
      bias_out_ = bias_f32_->data();
      if (a_dtype_ == DType::kF16) {
        bias_f16_ = ctx_.resident(spec.source, bname, "f16", [&] {
          AlignedBuffer f16(bytes(n_ * 2), bname + " staging");
          convert_from_f32(f32.as<float>(), DType::kF16, f16.data(), bytes(n_));
          DeviceBuffer d(f16.size(), bname + " (f16 bias)");
          ctx_.upload(d.data(), f16.data(), f16.size());
          return d;
        });
        bias_out_ = bias_f16_->data();
      }
    }
  }

  // `n` weight rows as stored (`rows`: n·K elements of elem_bytes, [n, K] or a conv's OIHW
  // [n, Cin, taps]; may be an unaligned file mapping) -> `dst` as [dst_rows, ld] in the im2col
  // column order [n, taps, Cin], zero-padded (launch_reorder_weight_rows): uploaded straight
  // into `dst` when there is nothing to reorder or pad, else as stored into a device copy
  // that the reorder reads.
  void upload_weight_rows(const GemmSpec& spec, const void* rows, int elem_bytes, int64_t n,
                          int64_t dst_rows, int64_t ld, void* dst) const {
    const size_t stored = bytes(n * k_) * static_cast<size_t>(elem_bytes);
    const bool reorder = spec.conv_taps > 1;
    if (!reorder && dst_rows == n && ld == k_) {
      ctx_.upload(dst, rows, stored);
      return;
    }
    DeviceBuffer as_stored(stored, spec.w_name + " (as stored)");
    ctx_.upload(as_stored.data(), rows, stored);
    HYRT_CUDA_CHECK(
        launch_reorder_weight_rows(as_stored.data(), elem_bytes, n, reorder ? spec.conv_cin : k_,
                                   reorder ? spec.conv_taps : 1, dst_rows, ld, dst, ctx_.stream()));
    // `as_stored` is freed on return: let the reorder finish reading it.
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
  }

  // --- the stages of the two candidates (all enqueued on the backend's stream) ---
  // Each stage that depends on M takes a chunk: GEMM rows [m0, m0 + rows) (the row-offset
  // rules at the top of this file).

  size_t act_size() const { return dtype_size(a_dtype_); }
  size_t op_size() const { return dtype_size(op_dtype_); }
  // Row m0 of a dense [M, cols] activation matrix in the activation dtype.
  const void* act_row(const void* base, int64_t m0, int64_t cols) const {
    return static_cast<const uint8_t*>(base) + bytes(m0 * cols) * act_size();
  }
  void* act_row(void* base, int64_t m0, int64_t cols) const {
    return static_cast<uint8_t*>(base) + bytes(m0 * cols) * act_size();
  }

  // The float GEMM's weight operand: the widened layer in staging, or the resident weights.
  const void* f16_a(const Staging& st) const {
    return s8_ || low_rank_ ? st[Scratch::kWeightWide] : w_->data();
  }

  // 8-bit S weights -> the operand type in staging (once per run: they do not depend on M).
  // A low-rank node's float weights are copied there too (the term is added to the copy).
  void stage_f16_weights(const Staging& st) const {
    if (s8_)
      HYRT_CUDA_CHECK(launch_dequantize_rows(w_->as<int8_t>(), n_, k_, k4_, w_scale_->as<float>(),
                                             st[Scratch::kWeightWide], float_type(op_dtype_),
                                             ctx_.stream()));
    else if (low_rank_)
      HYRT_CUDA_CHECK(cudaMemcpyAsync(st[Scratch::kWeightWide], w_->data(),
                                      bytes(n_ * k_) * op_size(), cudaMemcpyDeviceToDevice,
                                      ctx_.stream()));
  }

  // The low-rank term merged into the widened weights: W [N, K] += up [N, R] · down [R, K], one
  // f16 GEMM with f32 accumulation (cuBLASLt, beta = 1, in place). Then x · Wᵀ is the layer's
  // product plus (x · downᵀ) · upᵀ — the adapter's two products in the layer's one, exact up to
  // W's rounding to f16; the stored int8 weights are only read.
  void add_low_rank_term(const Staging& st) const {
    const float alpha = 1.0f, beta = 1.0f;
    void* wide = st[Scratch::kWeightWide];
    const cublasStatus_t status =
        cublasLtMatmul(ctx_.lt(), term_.op.get(), &alpha, down_->data(), term_.a.get(), up_->data(),
                       term_.b.get(), &beta, wide, term_.d.get(), wide, term_.d.get(), &term_algo_,
                       ctx_.workspace(), ctx_.workspace_bytes(), ctx_.stream());
    if (status != CUBLAS_STATUS_SUCCESS)
      throw_cublas_error(status, "cublasLtMatmul (low-rank term)", __FILE__, __LINE__);
  }

  // Takes the term's resident f16 factors (make_linear_kernel) and sets up its GEMM.
  // Column-major, as cuBLASLt reads: the widened W [N, K] row-major is D (K x N), down [R, K]
  // row-major is A (K x R), up [N, R] row-major is B (R x N), and D = A · B + D, both operands
  // untransposed (a first version transposing and converting the factors on the host spent
  // ~28 ms of a 40 ms LoRA switch). The heuristic's algorithm is kept in the program cache per
  // shape.
  void prepare_low_rank(const GemmSpec& spec, ProgramCache& cache) {
    HYRT_CHECK(spec.down && spec.up && spec.rank > 0 && op_dtype_ == DType::kF16, kUnsupported,
               "node '", name_,
               "': a low-rank term needs its down and up weights and f16 operands");
    low_rank_ = true;
    down_ = spec.down;
    up_ = spec.up;
    const int64_t rank = spec.rank;
    cublasLtMatmulDesc_t op = nullptr;
    HYRT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    term_.op.reset(op);
    set_attr(op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_N);
    set_attr(op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    term_.a = make_layout(CUDA_R_16F, k_, rank);
    term_.b = make_layout(CUDA_R_16F, rank, n_);
    term_.d = make_layout(CUDA_R_16F, k_, n_);
    const std::string key =
        str_cat("cuda ", ctx_.device().name, " sm", ctx_.device().compute_major,
                ctx_.device().compute_minor, " low-rank term f16 ", n_, "x", k_, " rank ", rank);
    term_algo_ = *cache.get_or_create<cublasLtMatmulAlgo_t>(key, [&] {
      const std::vector<cublasLtMatmulHeuristicResult_t> found =
          heuristics(ctx_, term_, 1, kF16MinAlign);
      HYRT_CHECK(!found.empty(), kUnsupported, "node '", name_,
                 "': cuBLASLt has no algorithm for the low-rank term's GEMM (", n_, " x ", k_,
                 ", rank ", rank, ")");
      return std::make_shared<cublasLtMatmulAlgo_t>(found[0].algo);
    });
  }

  // The float GEMM's activation operand for GEMM rows [m0, m0 + rows) of input x, [rows, K] in
  // the activations' own type (the operand type): a conv's im2col rows (gathered into
  // staging), or the activations' rows in place.
  const void* f16_operand(const Staging& st, const void* x, int64_t m0, int64_t rows) const {
    if (im2col_) {
      const Im2colGeometry& g = *im2col_;
      void* col = st[Scratch::kIm2col];
      HYRT_CUDA_CHECK(launch_im2col(x, float_type(a_dtype_), g.batch, g.height, g.width, g.channels,
                                    g.kernel_h, g.kernel_w, g.stride, g.padding, g.out_h, g.out_w,
                                    m0, rows, col, ctx_.stream()));
      return col;
    }
    return act_row(x, m0, k_);
  }

  // y rows [m0, m0 + rows) (at y_rows) = operand b [rows, K] · wᵀ (+ bias) (+ c_rows, the
  // residual's rows, as cuBLASLt's beta·C when not null).
  cublasStatus_t gemm_f16(const Staging& st, const void* b, void* y_rows, int64_t rows,
                          const cublasLtMatmulAlgo_t& algo, const void* c_rows = nullptr) const {
    const LtGemm& g = f16_.for_rows(rows);
    const float alpha = 1.0f, beta = c_rows ? 1.0f : 0.0f;
    return cublasLtMatmul(ctx_.lt(), g.op.get(), &alpha, f16_a(st), g.a.get(), b, g.b.get(), &beta,
                          c_rows ? c_rows : y_rows, g.d.get(), y_rows, g.d.get(), &algo,
                          ctx_.workspace(), ctx_.workspace_bytes(), ctx_.stream());
  }

  // GEMM rows [m0, m0 + rows) of input x -> the operand quantized, s8 [rows, K4] + row scales
  // [rows] in staging. A conv's im2col rows are quantized as they are gathered (never written
  // out as f16).
  void quantize(const Staging& st, const void* x, int64_t m0, int64_t rows) const {
    auto* q = static_cast<int8_t*>(st[Scratch::kActS8]);
    auto* scales = static_cast<float*>(st[Scratch::kRowScales]);
    if (im2col_) {
      const Im2colGeometry& g = *im2col_;
      HYRT_CUDA_CHECK(launch_im2col_quantize_s8(
          x, float_type(a_dtype_), g.batch, g.height, g.width, g.channels, g.kernel_h, g.kernel_w,
          g.stride, g.padding, g.out_h, g.out_w, m0, rows, k4_, q, scales, ctx_.stream()));
    } else {
      HYRT_CUDA_CHECK(launch_quantize_rows_s8(act_row(x, m0, k_), float_type(a_dtype_), rows, k_,
                                              k4_, q, scales, ctx_.stream()));
    }
  }

  // The fused W8A8 GEMM over `rows` rows: the quantized operand a [rows, K4] with its row
  // scales -> y_rows (f16), adding residual_rows (null: none) in its epilogue.
  void fused_gemm(const int8_t* a, const float* a_scales, const void* residual_rows, void* y_rows,
                  int64_t rows) const {
    HYRT_CUDA_CHECK(launch_fused_s8_gemm(
        a, k4_, w_->as<int8_t>(), k4_, a_scales, w_scale_->as<float>(),
        bias_f32_ ? bias_f32_->as<float>() : nullptr, static_cast<const __half*>(residual_rows),
        static_cast<__half*>(y_rows), rows, n_, k_, FusedS8Tile::kAuto,
        ctx_.device().multiprocessors, ctx_.stream()));
  }

  // The conv computed directly (launch_conv_narrow), its bias and residual in the kernel; a
  // fused activation (applied before the residual) in a pass of its own, which then adds the
  // residual.
  void run_narrow(const void* x, void* y, EpilogueActivation act, const void* residual) const {
    const Im2colGeometry& g = *im2col_;
    const bool activation = act != EpilogueActivation::kNone;
    HYRT_CUDA_CHECK(launch_conv_narrow(
        x, float_type(a_dtype_), g.batch, g.height, g.width, g.channels, g.kernel_h, g.kernel_w,
        g.stride, g.padding, g.out_h, g.out_w, w_->data(), n_,
        bias_f32_ ? bias_f32_->as<float>() : nullptr, activation ? nullptr : residual, y,
        ctx_.device().multiprocessors, ctx_.stream()));
    if (activation)
      HYRT_CUDA_CHECK(launch_activation_epilogue(y, residual, output_elems_, act,
                                                 float_type(a_dtype_), ctx_.stream()));
  }

  // The conv as one implicit GEMM: x quantized per image into staging (with the per-row scale
  // vector the epilogue reads), then the kernel reads it in place — no im2col rows.
  void run_implicit(const Staging& st, const void* x, void* y, const void* residual) const {
    const ImplicitConvS8Shape& s = implicit_->shape;
    auto* q = static_cast<int8_t*>(st[Scratch::kActS8]);
    auto* row_scales = static_cast<float*>(st[Scratch::kRowScales]);
    float* image_absmax = row_scales + key_.m;
    HYRT_CUDA_CHECK(launch_quantize_images_s8(
        x, float_type(a_dtype_), s.batch, s.height * s.width * s.channels, q, image_absmax,
        s.out_h * s.out_w, row_scales, ctx_.device().multiprocessors, ctx_.stream()));
    HYRT_CUDA_CHECK(launch_implicit_s8_conv(
        q, w_->as<int8_t>(), k4_, row_scales, w_scale_->as<float>(),
        bias_f32_ ? bias_f32_->as<float>() : nullptr, static_cast<const __half*>(residual),
        static_cast<__half*>(y), s, implicit_->tile, ctx_.stream()));
  }

  // y [M, N] (+ the residual, in the epilogue) from a quantized x (s8rows, core/dtype.h; K is a
  // multiple of 16 where the fused kernel applies, so its rows are K4 wide): one fused GEMM
  // over all rows — x is whole, nothing is staged, so there are no chunks. A conv's x (from a
  // group norm: one scale per image, on each row) is the implicit kernel's operand as it is:
  // its rows are the output pixels' (quantized_rows_match), so the row scales are the
  // epilogue's.
  void run_quantized_input(const TensorView& x, void* y, const void* residual) const {
    if (implicit_) {
      HYRT_CUDA_CHECK(launch_implicit_s8_conv(
          x.as<const int8_t>(), w_->as<int8_t>(), k4_, s8rows_scales(x), w_scale_->as<float>(),
          bias_f32_ ? bias_f32_->as<float>() : nullptr, static_cast<const __half*>(residual),
          static_cast<__half*>(y), implicit_->shape, implicit_->tile, ctx_.stream()));
      return;
    }
    fused_gemm(x.as<const int8_t>(), s8rows_scales(x), residual, y, key_.m);
  }

  // The quantized chunk of `rows` rows in staging -> its s32 result [rows, N4] in staging.
  cublasStatus_t gemm_s8(const Staging& st, int64_t rows, const cublasLtMatmulAlgo_t& algo) const {
    const LtGemm& g = s8_gemm_.for_rows(rows);
    const int32_t alpha = 1, beta = 0;
    void* acc = st[Scratch::kAccS32];
    return cublasLtMatmul(ctx_.lt(), g.op.get(), &alpha, w_->data(), g.a.get(), st[Scratch::kActS8],
                          g.b.get(), &beta, acc, g.d.get(), acc, g.d.get(), &algo, ctx_.workspace(),
                          ctx_.workspace_bytes(), ctx_.stream());
  }

  // What one run applies after the matmul: the node's fused activation and its bound residual
  // [M, N] (null without one). Tuning times the plain GEMM (both empty): the program is shared
  // with every epilogue of its shape (gemm_program_key).
  struct RunEpilogue {
    EpilogueActivation activation = EpilogueActivation::kNone;
    const void* residual = nullptr;
  };

  // The chunk's s32 result -> y rows [m0, m0 + rows), scaled, + bias, activated, + the
  // residual's rows.
  void rescale(const Staging& st, void* y, const RunEpilogue& e, int64_t m0, int64_t rows) const {
    HYRT_CUDA_CHECK(launch_rescale_s32(static_cast<const int32_t*>(st[Scratch::kAccS32]), rows, n_,
                                       n4_, static_cast<const float*>(st[Scratch::kRowScales]),
                                       w_scale_->as<float>(),
                                       (bias_f32_ ? bias_f32_->as<float>() : nullptr), e.activation,
                                       e.residual ? act_row(e.residual, m0, n_) : nullptr,
                                       act_row(y, m0, n_), float_type(a_dtype_), ctx_.stream()));
  }

  // Calls f(m0, rows, algo) for each chunk of `g` in order, with the chunk's algorithm.
  template <class F>
  static void for_each_chunk(const ChunkedGemm& g, const cublasLtMatmulAlgo_t& full_algo,
                             const cublasLtMatmulAlgo_t& tail_algo, F&& f) {
    const GemmChunking& ch = g.chunking;
    for (int64_t i = 0; i < ch.count; ++i) {
      const bool last = i == ch.count - 1;
      f(i * ch.rows, last ? ch.tail_rows : ch.rows, last && g.has_tail() ? tail_algo : full_algo);
    }
  }

  // The whole candidate for input x, chunk by chunk: operand gather (im2col) or staging, GEMM,
  // epilogue `e`; its buffers at `st` (staging_layout(c)'s).
  // `fused`: W8A8 as the fused kernel (this node's form unless tuning times the program's).
  void enqueue(GemmCandidate c, const CudaGemmProgram& p, const Staging& st, const void* x, void* y,
               const RunEpilogue& e) const {
    enqueue(c, p, st, x, y, e, fused_s8_);
  }
  void enqueue(GemmCandidate c, const CudaGemmProgram& p, const Staging& st, const void* x, void* y,
               const RunEpilogue& e, bool fused) const {
    if (c == GemmCandidate::kF16 && narrow_) {
      run_narrow(x, y, e.activation, e.residual);
      return;
    }
    if (c == GemmCandidate::kF16) {
      stage_f16_weights(st);
      if (low_rank_) add_low_rank_term(st);
      // Without an activation the residual is cuBLASLt's beta·C where residual fusion was asked
      // for (CudaBackendOptions::fuse_residual); with an activation (applied before the
      // residual), or a residual taken for the fused W8A8 kernel's sake (a node that then runs
      // this candidate), a pass of ours over the chunk's rows adds it: cuBLASLt's beta·C slowed
      // each new resolution's first step (bench/results/README.md, sd15_unet_fusion_h100).
      // A low-rank node (few: the adapted layers) takes the residual as beta·C too.
      const bool separate_pass = e.activation != EpilogueActivation::kNone ||
                                 (e.residual && !options_.fuse_residual && !low_rank_);
      for_each_chunk(
          f16_, p.f16_algo, p.f16_tail_algo,
          [&](int64_t m0, int64_t rows, const cublasLtMatmulAlgo_t& algo) {
            void* y_rows = act_row(y, m0, n_);
            const void* r_rows = e.residual ? act_row(e.residual, m0, n_) : nullptr;
            const cublasStatus_t status = gemm_f16(st, f16_operand(st, x, m0, rows), y_rows, rows,
                                                   algo, separate_pass ? nullptr : r_rows);
            if (status != CUBLAS_STATUS_SUCCESS)
              throw_cublas_error(status, "cublasLtMatmul (f16 candidate)", __FILE__, __LINE__);
            if (separate_pass)
              HYRT_CUDA_CHECK(launch_activation_epilogue(y_rows, r_rows, rows * n_, e.activation,
                                                         float_type(a_dtype_), ctx_.stream()));
          });
    } else {
      if (fused && implicit_) {
        run_implicit(st, x, y, e.residual);
        return;
      }
      if (fused) {
        // The same chunks (staging) without the s32 result: quantize, then the fused GEMM
        // writes the chunk's f16 rows, adding the residual's (no activation: fused_s8_applies).
        HYRT_ASSERT(e.activation == EpilogueActivation::kNone,
                    "the fused W8A8 kernel has no activation epilogue");
        for_each_chunk(s8_gemm_, p.s8_algo, p.s8_tail_algo,
                       [&](int64_t m0, int64_t rows, const cublasLtMatmulAlgo_t&) {
                         quantize(st, x, m0, rows);
                         fused_gemm(static_cast<const int8_t*>(st[Scratch::kActS8]),
                                    static_cast<const float*>(st[Scratch::kRowScales]),
                                    e.residual ? act_row(e.residual, m0, n_) : nullptr,
                                    act_row(y, m0, n_), rows);
                       });
        return;
      }
      for_each_chunk(s8_gemm_, p.s8_algo, p.s8_tail_algo,
                     [&](int64_t m0, int64_t rows, const cublasLtMatmulAlgo_t& algo) {
                       quantize(st, x, m0, rows);
                       const cublasStatus_t status = gemm_s8(st, rows, algo);
                       if (status != CUBLAS_STATUS_SUCCESS)
                         throw_cublas_error(status, "cublasLtMatmul (s8 candidate)", __FILE__,
                                            __LINE__);
                       rescale(st, y, e, m0, rows);
                     });
    }
  }

  // Times the heuristic's algorithms for one candidate's GEMM (its operands already staged);
  // returns the fastest, filling gemm_us and algos_timed. An algorithm that refuses the
  // operands at its trial run is skipped.
  template <class Gemm>
  std::optional<cublasLtMatmulAlgo_t> pick_algo(
      const std::vector<cublasLtMatmulHeuristicResult_t>& found, Gemm&& gemm,
      GemmCandidateStats& stats) const {
    std::optional<cublasLtMatmulAlgo_t> best;
    double best_us = std::numeric_limits<double>::infinity();
    for (const cublasLtMatmulHeuristicResult_t& h : found) {
      if (gemm(h.algo) != CUBLAS_STATUS_SUCCESS) continue;
      const double us = median_us(ctx_, options_.tune_reps, [&] {
        const cublasStatus_t st = gemm(h.algo);
        if (st != CUBLAS_STATUS_SUCCESS)
          throw_cublas_error(st, "cublasLtMatmul (autotuning)", __FILE__, __LINE__);
      });
      ++stats.algos_timed;
      if (us < best_us) best_us = us, best = h.algo;
    }
    if (best) stats.gemm_us = best_us;
    return best;
  }

  // cuBLASLt accepts `algo` for `g`'s layouts, within the workspace.
  bool algo_fits(const LtGemm& g, const cublasLtMatmulAlgo_t& algo) const {
    cublasLtMatmulHeuristicResult_t r{};
    return cublasLtMatmulAlgoCheck(ctx_.lt(), g.op.get(), g.a.get(), g.b.get(), g.d.get(),
                                   g.d.get(), &algo, &r) == CUBLAS_STATUS_SUCCESS &&
           r.workspaceSize <= ctx_.workspace_bytes();
  }

  // cuBLASLt accepts a recorded algorithm for this program's GEMMs (a full chunk's).
  bool still_valid(const CudaGemmProgram& p) const {
    if (p.tuning.f16.available && !algo_fits(f16_.full, p.f16_algo)) return false;
    if (p.tuning.w8a8.available && (!s8_ || !algo_fits(s8_gemm_.full, p.s8_algo))) return false;
    return true;
  }

  // The algorithm for the last chunk of `g` when it is shorter than the full ones, which run
  // `full_algo`: that one where cuBLASLt accepts it for the shorter layouts (an algorithm is
  // a kernel configuration, not tied to the problem size; AlgoCheck says whether it covers
  // this one), else the heuristic's first for them with the same alignment promise; none
  // when neither works. `full_algo` itself without a shorter last chunk.
  std::optional<cublasLtMatmulAlgo_t> tail_algo(const ChunkedGemm& g,
                                                const cublasLtMatmulAlgo_t& full_algo,
                                                uint32_t min_align_bcd) const {
    if (!g.has_tail() || algo_fits(g.tail, full_algo)) return full_algo;
    const auto found = heuristics(ctx_, g.tail, 1, min_align_bcd);
    if (found.empty()) return std::nullopt;
    return found[0].algo;
  }

  // Fills the last-chunk algorithms of p's available candidates (not recorded: derived here
  // for a decoded record); false when one has none.
  bool derive_tail_algos(CudaGemmProgram& p) const {
    if (p.tuning.f16.available) {
      const auto tail = tail_algo(f16_, p.f16_algo, kF16MinAlign);
      if (!tail) return false;
      p.f16_tail_algo = *tail;
    }
    if (p.tuning.w8a8.available) {
      const auto tail = tail_algo(s8_gemm_, p.s8_algo, kS8MinAlign);
      if (!tail) return false;
      p.s8_tail_algo = *tail;
    }
    return true;
  }

  // No GPU time: the heuristic's first algorithm per candidate (and its last chunk's), the
  // roofline picks.
  std::shared_ptr<CudaGemmProgram> untimed() const {
    auto p = std::make_shared<CudaGemmProgram>();
    GemmTuning& t = p->tuning;
    t.key = program_key_;
    if (auto f = heuristics(ctx_, f16_.full, 1, kF16MinAlign); !f.empty())
      if (auto tail = tail_algo(f16_, f[0].algo, kF16MinAlign)) {
        p->f16_algo = f[0].algo;
        p->f16_tail_algo = *tail;
        t.f16.available = true;
        t.f16.total_us = gemm_roofline_us(choice_key_, GemmCandidate::kF16);
      }
    if (s8_)
      if (auto q = heuristics(ctx_, s8_gemm_.full, 1, kS8MinAlign); !q.empty())
        if (auto tail = tail_algo(s8_gemm_, q[0].algo, kS8MinAlign)) {
          p->s8_algo = q[0].algo;
          p->s8_tail_algo = *tail;
          t.w8a8.available = true;
          t.w8a8.total_us = gemm_roofline_us(choice_key_, GemmCandidate::kW8A8, program_fused_s8_);
        }
    choose(t);
    return p;
  }

  // The faster available candidate by t's totals (estimated or measured); throws when
  // cuBLASLt offers neither.
  void choose(GemmTuning& t) const {
    HYRT_CHECK(t.f16.available || t.w8a8.available, kUnsupported, "node '", name_,
               "': cuBLASLt offers no working algorithm for ", key_.to_string(), " on ",
               ctx_.device().name);
    t.chosen = !t.w8a8.available                  ? GemmCandidate::kF16
               : !t.f16.available                 ? GemmCandidate::kW8A8
               : t.w8a8.total_us < t.f16.total_us ? GemmCandidate::kW8A8
                                                  : GemmCandidate::kF16;
  }

  // Median microseconds of the cuBLASLt calls of all of `g`'s chunks, gemm(m0, rows, algo)
  // each, back to back on operands already staged (the first chunk's: a shorter last chunk
  // reads their first rows).
  template <class Gemm>
  double all_chunks_gemm_us(const ChunkedGemm& g, const cublasLtMatmulAlgo_t& full_algo,
                            const cublasLtMatmulAlgo_t& tail_algo, Gemm&& gemm) const {
    return median_us(ctx_, options_.tune_reps, [&] {
      for_each_chunk(g, full_algo, tail_algo,
                     [&](int64_t m0, int64_t rows, const cublasLtMatmulAlgo_t& algo) {
                       const cublasStatus_t st = gemm(m0, rows, algo);
                       if (st != CUBLAS_STATUS_SUCCESS)
                         throw_cublas_error(st, "cublasLtMatmul (autotuning)", __FILE__, __LINE__);
                     });
    });
  }

  // A candidate run through cuBLASLt: the fastest of the heuristic's `n_algos` algorithms for
  // `g`'s full chunk (gemm(m0, rows, algo): the chunk's matmul, its operands staged), with its
  // last chunk's, kept in the record; then the candidate, `run`, timed whole (and its matmuls
  // over all chunks where there are several).
  template <class Gemm, class Run>
  void pick_and_time(const ChunkedGemm& g, uint32_t min_align, int n_algos, Gemm&& gemm,
                     cublasLtMatmulAlgo_t& algo_out, cublasLtMatmulAlgo_t& tail_out,
                     GemmCandidateStats& stats, Run&& run) const {
    const std::optional<cublasLtMatmulAlgo_t> algo = pick_algo(
        heuristics(ctx_, g.full, n_algos, min_align),
        [&](const cublasLtMatmulAlgo_t& al) { return gemm(0, g.chunking.rows, al); }, stats);
    if (!algo) return;
    const std::optional<cublasLtMatmulAlgo_t> tail = tail_algo(g, *algo, min_align);
    if (!tail) return;
    algo_out = *algo;
    tail_out = *tail;
    stats.available = stats.measured = true;
    if (g.chunking.chunked()) stats.gemm_us = all_chunks_gemm_us(g, *algo, *tail, gemm);
    stats.total_us = median_us(ctx_, options_.tune_reps, run);
  }

  // A candidate with no cuBLASLt algorithm to pick (the fused W8A8 kernel, the narrow conv):
  // the heuristic's first for `g` stays in the record (so that it checks out like any other) and
  // the candidate, `run`, is timed whole — its gemm_us is that total too.
  template <class Run>
  void time_whole(const ChunkedGemm& g, uint32_t min_align, cublasLtMatmulAlgo_t& algo,
                  cublasLtMatmulAlgo_t& tail_out, GemmCandidateStats& stats, Run&& run) const {
    const std::vector<cublasLtMatmulHeuristicResult_t> found =
        heuristics(ctx_, g.full, 1, min_align);
    if (found.empty()) return;
    const std::optional<cublasLtMatmulAlgo_t> tail = tail_algo(g, found[0].algo, min_align);
    if (!tail) return;
    algo = found[0].algo;
    tail_out = *tail;
    stats.available = stats.measured = true;
    stats.total_us = stats.gemm_us = median_us(ctx_, options_.tune_reps, run);
  }

  std::shared_ptr<CudaGemmProgram> tune() const {
    // Both candidates run while timing, one after the other on the stream, so their staging
    // shares one buffer of this call's own (freed on return, like the autotuning input and
    // output): tuning at prepare leaves nothing held (cuda_context.h, Scratch).
    const StagingLayout f16_layout = staging_layout(GemmCandidate::kF16);
    const StagingLayout s8_layout = staging_layout(GemmCandidate::kW8A8);
    DeviceBuffer staging(std::max(f16_layout.workspace_bytes(), s8_layout.workspace_bytes()),
                         "autotuning staging");
    const Staging f16_st = f16_layout.carve(staging.data());
    const Staging s8_st = s8_layout.carve(staging.data());
    auto p = std::make_shared<CudaGemmProgram>();
    GemmTuning& t = p->tuning;
    t.key = program_key_;
    const size_t a_size = dtype_size(a_dtype_);
    DeviceBuffer x(bytes(input_elems_) * a_size, "autotuning input");
    DeviceBuffer y(bytes(output_elems_) * a_size, "autotuning output");
    HYRT_CUDA_CHECK(launch_fill_random(x.data(), float_type(a_dtype_), input_elems_, 0x9e3779b9u,
                                       1.0f, ctx_.stream()));
    const int n_algos = std::max(options_.tune_algos, 1);

    // Algorithms are picked on a full chunk (all of M when unchunked): its f16 operand (a
    // conv's im2col rows) stays in staging for the GEMM-alone timings.
    if (narrow_) {
      time_whole(f16_, kF16MinAlign, p->f16_algo, p->f16_tail_algo, t.f16,
                 [&] { enqueue(GemmCandidate::kF16, *p, f16_st, x.data(), y.data(), {}); });
    } else {
      const int64_t f16_rows = f16_.chunking.rows;
      const void* a = f16_operand(f16_st, x.data(), 0, f16_rows);
      stage_f16_weights(f16_st);
      pick_and_time(
          f16_, kF16MinAlign, n_algos,
          [&](int64_t m0, int64_t rows, const cublasLtMatmulAlgo_t& al) {
            return gemm_f16(f16_st, a, act_row(y.data(), m0, n_), rows, al);
          },
          p->f16_algo, p->f16_tail_algo, t.f16,
          [&] { enqueue(GemmCandidate::kF16, *p, f16_st, x.data(), y.data(), {}); });
    }
    if (s8_ && program_fused_s8_) {
      time_whole(s8_gemm_, kS8MinAlign, p->s8_algo, p->s8_tail_algo, t.w8a8,
                 [&] { enqueue(GemmCandidate::kW8A8, *p, s8_st, x.data(), y.data(), {}, true); });
    } else if (s8_) {
      const int64_t s8_rows = s8_gemm_.chunking.rows;
      quantize(s8_st, x.data(), 0, s8_rows);
      pick_and_time(
          s8_gemm_, kS8MinAlign, n_algos,
          [&](int64_t, int64_t rows, const cublasLtMatmulAlgo_t& al) {
            return gemm_s8(s8_st, rows, al);
          },
          p->s8_algo, p->s8_tail_algo, t.w8a8,
          [&] { enqueue(GemmCandidate::kW8A8, *p, s8_st, x.data(), y.data(), {}); });
    }
    choose(t);
    // The buffers above are freed on return: let the timing runs finish first.
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
    HYRT_LOG(kDebug) << "cuda: tuned " << t.to_string()
                     << (im2col_ ? " (" + im2col_->to_string() + ")" : "") << chunks_note();
    return p;
  }

  CudaContext& ctx_;
  const CudaBackendOptions& options_;
  std::string name_;
  GemmKey key_;
  GemmKey program_key_;  // key_ without the fused-epilogue bits: what the program is cached under
  // program_key_ at the M of two samples (one picture under guidance, the usual batch): what
  // the untimed choice between the candidates is estimated at. A sample then runs the same
  // candidate alone or in any batch — W8A8's integer GEMM is exact whatever the algorithm, so
  // with 8-bit S weights a picture is computed bit for bit the same (request batching).
  GemmKey choice_key_;
  std::optional<Im2colGeometry> im2col_;
  int64_t input_elems_ = 0, output_elems_ = 0;
  bool residual_ = false;                    // a fused residual, the last bound input
  bool quantized_input_ = false;             // x bound as s8rows (GemmSpec::quantized_input)
  bool has_bias_ = false;                    // the node has a bias input (input 2)
  EpilogueActivation activation_;            // a fused activation (before the residual)
  int64_t n_ = 0, k_ = 0, n4_ = 0, k4_ = 0;  // M: key_.m, covered in chunks (f16_, s8_gemm_)
  DType a_dtype_ = DType::kF16;              // activations and output: f16, or f32 (wide range)
  DType op_dtype_ = DType::kF16;             // the float candidate's operands (float_operand)
  bool s8_ = false;
  bool fused_s8_ = false;  // this node's W8A8 runs as the fused Hopper kernel (fused_s8_applies)
  bool program_fused_s8_ = false;  // the plain GEMM's does: what the program is timed as
  // Set where this conv's W8A8 runs as the implicit-GEMM kernel (implicit_conv_form).
  std::optional<ImplicitConv> implicit_;
  // This conv's float candidate runs as launch_conv_narrow (conv_narrow_enabled): no staging.
  bool narrow_ = false;
  // Resident weights (CudaContext::resident), shared with every kernel of the same weight.
  std::shared_ptr<const DeviceBuffer> w_;        // s8 [N4, K4] zero-padded, or [N, K] in op_dtype_
  std::shared_ptr<const DeviceBuffer> w_scale_;  // f32 [N4] (s8 only; padded rows 0)
  std::shared_ptr<const DeviceBuffer> bias_f32_, bias_f16_;
  const void* bias_out_ = nullptr;  // the bias in the output's dtype, for cuBLASLt's epilogue
  ChunkedGemm f16_, s8_gemm_;       // s8_gemm_: only with 8-bit S weights
  // A low-rank term (prepare_low_rank): its f16 factors (resident) and merge GEMM.
  bool low_rank_ = false;
  std::shared_ptr<const DeviceBuffer> down_, up_;  // f16 [R, K] and [N, R]
  LtGemm term_;
  cublasLtMatmulAlgo_t term_algo_{};
  std::shared_ptr<CudaGemmProgram> program_;
  GemmCandidate candidate_ = GemmCandidate::kF16;
  StagingLayout layout_;          // candidate_'s staging (workspace_bytes)
  std::optional<Staging> bound_;  // its buffers in the bound workspace, if one is bound
};

// A stored weight of a GEMM-class node, checked against the graph's declaration.
TensorView stored_weight(const ir::Graph&, const ir::Node& node, const ir::Value& wv,
                         const weights::WeightSource& weights) {
  const TensorView stored = weights.get(wv.name);
  HYRT_CHECK(stored.shape == wv.shape && stored.dtype == wv.dtype, kInvalidModel, "weight '",
             wv.name, "' is stored as ", dtype_name(stored.dtype), stored.shape.to_string(),
             " but node '", node.name, "' expects ", dtype_name(wv.dtype), wv.shape.to_string());
  return stored;
}

// The weight-related fields of a GemmSpec (w as stored; a conv's is reordered at upload).
void fill_weights(GemmSpec& spec, const ir::Graph& graph, const ir::Node& node,
                  const weights::WeightSource& weights) {
  for (int i = 1; i <= node.gemm_weights(); ++i) {
    const ir::Value& wv = graph.value(node.inputs[static_cast<size_t>(i)]);
    GemmSpec::WeightPart part;
    part.name = wv.name;
    part.w = stored_weight(graph, node, wv, weights);
    if (wv.dtype == DType::kS8) part.scale = weights.scale(wv.name);
    // The resident matrix's identity (CudaContext::resident): the first part's generation and
    // every part's name, with the generation of any part stored elsewhere (an overlay's).
    const uint64_t generation = weights.generation_of(wv.name);
    if (i == 1) spec.source = generation;
    spec.w_name += i == 1 ? wv.name : "+" + wv.name;
    if (generation != spec.source) spec.w_name += str_cat("@", generation);
    spec.w.push_back(std::move(part));
  }
  if (const ir::ValueId b = node.gemm_bias(); b != ir::kNone) {
    const ir::Value& bv = graph.value(b);
    spec.bias_name = bv.name;
    spec.bias = weights.get(bv.name);
  }
  spec.epilogue = node.epilogue();
}

// True when the conv is exactly a linear over its pixels.
bool conv_is_pointwise(const ir::Graph& graph, const ir::Node& node) {
  const Shape& w = graph.value(node.inputs[1]).shape;
  const auto& a = node.attr<ir::Conv2dAttrs>();
  return w[2] == 1 && w[3] == 1 && a.stride == 1 && a.padding == 0;
}

// The conv's input, kernel and output geometry (x NHWC, w OIHW, y NHWC).
Im2colGeometry conv_geometry(const ir::Graph& graph, const ir::Node& node) {
  const Shape& xs = graph.value(node.inputs[0]).shape;
  const Shape& ws = graph.value(node.inputs[1]).shape;
  const Shape& ys = graph.value(node.output).shape;
  const auto& a = node.attr<ir::Conv2dAttrs>();
  Im2colGeometry g;
  g.batch = xs[0], g.height = xs[1], g.width = xs[2], g.channels = xs[3];
  g.kernel_h = static_cast<int>(ws[2]), g.kernel_w = static_cast<int>(ws[3]);
  g.stride = a.stride, g.padding = a.padding;
  g.out_h = ys[1], g.out_w = ys[2];
  return g;
}

}  // namespace

std::unique_ptr<CudaGemmKernel> make_linear_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache) {
  GemmSpec spec;
  spec.name = node.name;
  spec.key = linear_gemm_key(graph, node);
  spec.input_elems = spec.key.m * spec.key.k;
  spec.output_elems = spec.key.m * spec.key.n;
  const Shape& xs = graph.value(node.inputs[0]).shape;
  spec.rows_per_sample = xs.rank() >= 3 ? spec.key.m / std::max<int64_t>(xs[0], 1) : 1;
  spec.quantized_input = graph.value(node.inputs[0]).dtype == DType::kS8Rows;
  fill_weights(spec, graph, node, weights);
  if (spec.epilogue.low_rank) {
    // The factors as every weight goes up (shared with any other kernel reading them).
    auto factor = [&](ir::ValueId id) {
      const ir::Value& v = graph.value(id);
      return ctx.resident(weights.generation_of(v.name), v.name, "f16",
                          [&] { return upload_weight(ctx, weights, v, DType::kF16, node.name); });
    };
    spec.rank = graph.value(node.gemm_low_rank_down()).shape[0];
    spec.down = factor(node.gemm_low_rank_down());
    spec.up = factor(node.gemm_low_rank_up());
  }
  return std::make_unique<GemmKernel>(ctx, options, spec, cache);
}

bool supports_conv2d(const ir::Graph& graph, const ir::Node& node) {
  if (node.op != ir::OpKind::kConv2d || !std::holds_alternative<ir::Conv2dAttrs>(node.attrs))
    return false;
  if (!gemm_inputs_supported(graph, node)) return false;
  const auto& a = node.attr<ir::Conv2dAttrs>();
  const ir::Value& x = graph.value(node.inputs[0]);
  const ir::Value& w = graph.value(node.inputs[1]);
  const ir::Value& y = graph.value(node.output);
  if (x.kind == ir::ValueKind::kWeight) return false;
  // A quantized x (s8rows, from a group norm) writes the graph's float dtype, held as f16
  // (whether the implicit-GEMM kernel reads it: conv2d_reads_quantized_input).
  const bool quantized = x.dtype == DType::kS8Rows;
  if (quantized ? !dtype_is_float(y.dtype) || device_storage_dtype(y) != DType::kF16
                : !dtype_is_float(x.dtype) || y.dtype != x.dtype)
    return false;
  // Held as f16, or f32 for wide-range values (device_storage_dtype); y as x.
  const DType held = quantized ? DType::kF16 : device_storage_dtype(x);
  if (x.shape.rank() != 4 || y.shape.rank() != 4 || (held != DType::kF16 && held != DType::kF32) ||
      device_storage_dtype(y) != held)
    return false;
  if (w.kind != ir::ValueKind::kWeight || w.shape.rank() != 4) return false;
  if (w.dtype != DType::kS8 && !dtype_is_float(w.dtype)) return false;
  if (a.stride < 1 || a.padding < 0 || w.shape[1] != x.shape[3]) return false;
  if (x.shape.numel() <= 0 || w.shape.numel() <= 0 || y.shape.numel() <= 0) return false;
  // The im2col kernel indexes one image and one row with 32-bit arithmetic.
  if (x.shape[1] * x.shape[2] * x.shape[3] >= (int64_t{1} << 31) ||
      w.shape[1] * w.shape[2] * w.shape[3] >= (int64_t{1} << 31))
    return false;
  if (const ir::ValueId b = node.gemm_bias();
      b != ir::kNone && graph.value(b).shape.numel() != w.shape[0])
    return false;
  return true;
}

GemmKey conv2d_gemm_key(const ir::Graph& graph, const ir::Node& node) {
  const ir::Value& w = graph.value(node.inputs.at(1));
  const ir::Value& y = graph.value(node.output);
  GemmKey key;
  key.m = y.shape[0] * y.shape[1] * y.shape[2];
  key.n = w.shape[0];
  key.k = w.shape[1] * w.shape[2] * w.shape[3];
  key.batch = 1;
  // f16, f32 for wide range; on a quantized x, the output's (as a float x would give).
  const ir::Value& x = graph.value(node.inputs.at(0));
  key.a_type = device_storage_dtype(x.dtype == DType::kS8Rows ? y : x);
  key.w_type = float_operand_type(w.dtype, key.a_type);
  key.out_type = key.a_type;
  key.w_transposed = true;
  key.epilogue = epilogue_bits(node);
  if (!conv_is_pointwise(graph, node)) key.epilogue |= kIm2colOperand;
  return key;
}

std::unique_ptr<CudaGemmKernel> make_conv2d_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache) {
  HYRT_CHECK(supports_conv2d(graph, node), kUnsupported, "cuda backend cannot run conv2d node '",
             node.name, "'");
  const Shape& xs = graph.value(node.inputs[0]).shape;  // [B, H, W, Cin]
  const Shape& ws = graph.value(node.inputs[1]).shape;  // [Cout, Cin, kh, kw]
  const Shape& ys = graph.value(node.output).shape;     // [B, Ho, Wo, Cout]
  GemmSpec spec;
  spec.name = node.name;
  spec.key = conv2d_gemm_key(graph, node);
  spec.input_elems = xs.numel();
  spec.output_elems = ys.numel();
  spec.rows_per_sample = ys[1] * ys[2];
  fill_weights(spec, graph, node, weights);

  // OIHW -> [Cout, kh, kw, Cin] (the im2col matrix's column order) happens at upload, only
  // when the weight is not resident yet (GemmSpec::conv_taps). A 1x1 kernel is [Cout, Cin].
  const int64_t kh = ws[2], kw = ws[3];
  if (kh * kw > 1) {
    spec.conv_taps = kh * kw;
    spec.conv_cin = ws[1];
  }
  if (!conv_is_pointwise(graph, node)) spec.im2col = conv_geometry(graph, node);
  const ir::NodeId producer = graph.value(node.inputs[0]).producer;
  spec.input_group_normed =
      producer != ir::kNone && graph.node(producer).op == ir::OpKind::kGroupNorm;
  spec.quantized_input = graph.value(node.inputs[0]).dtype == DType::kS8Rows;
  return std::make_unique<GemmKernel>(ctx, options, spec, cache);
}

bool conv2d_reads_quantized_input(const ir::Graph& graph, const ir::Node& node,
                                  const CudaDeviceInfo& device, bool fused_s8_enabled) {
  if (conv_is_pointwise(graph, node)) return false;
  const ir::Value& w = graph.value(node.inputs[1]);
  const ir::Value& y = graph.value(node.output);
  if (w.dtype != DType::kS8 || device_storage_dtype(y) != DType::kF16 ||
      node.epilogue().activation != ir::Activation::kNone)
    return false;
  const Im2colGeometry g = conv_geometry(graph, node);
  if (!quantized_rows_match(g)) return false;
  const GemmKey key = conv2d_gemm_key(graph, node);
  return implicit_conv_form(fused_s8_applies(key, device, fused_s8_enabled), g, key.n,
                            round_up4(key.k), /*input_group_normed=*/true, device.multiprocessors)
      .has_value();
}

}  // namespace hyrt::backend::cuda
