// kAttention: out = softmax(q kᵀ · scale [+ causal mask]) v, per batch and head.
//   q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv] -> out [B, Tq, H·Dv]
//
// Memory: SD 1.5 at 512² has Tq = Tk = 4096, so one head's full score matrix is 64 MiB
// and all heads' 512 MiB. We never build it: the work is split into tiles of (batch, head,
// block of `block_rows` queries); a thread computes one tile's scores against all keys
// into its own scratch S [block_rows, Tk], turns them into probabilities in place and
// multiplies by V straight into the output. Per-thread scratch is block_rows · Tk · 4
// bytes, block_rows chosen so that this stays near 2 MiB: Tk = 4096 -> 128 rows; Tk = 77
// -> 256 rows = 77 KiB. (Measured at 4096x4096x8x40 on 2 AVX-512 cores with 2 MiB L2:
// 0.5 MiB 145 ms, 1 MiB 143 ms, 2 MiB 126 ms, 4 MiB 130 ms — bigger blocks make the
// k = 40 score GEMMs more efficient until the scores fall out of cache.)
//
// A tile is (batch, head, a run of query blocks): its thread first copies the head's keys,
// transposed, into K_hᵀ [D, Tk] and its values into V_h [Tk, Dv] (dense, in its scratch),
// then for each query block runs two oneDNN matmuls on dense operands:
//   scores  S [m, Tk]  = Q_blk [m, D] (row stride H·D) × K_hᵀ [D, Tk]
//   output  O [m, Dv]  = P [m, Tk] × V_h [Tk, Dv], O row stride H·Dv
// (Reading K and V through strided views instead made oneDNN re-gather them for every
// query block: measured slower.) A head's blocks are split into several tiles only when
// there are too few heads to keep every thread busy. Tiles run in parallel on the OpenMP
// team, each matmul single-threaded inside its tile (the primitives are created with one
// OpenMP thread so they partition work for one).
//
// Softmax: the scale is applied while finding the row maximum, exp(s − max) is summed in
// f32 (terms are in (0, 1], so the sum of ≤ 64k terms keeps ~1e-7 relative accuracy), and
// the 1/sum normalisation is applied to the Dv-wide output row instead of the Tk-wide P.
#include <dnnl.hpp>

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/onednn_compat.h"
#include "backend/cpu/vec_math.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using dt = memory::data_type;

// Scores scratch budget per thread (see the header comment).
constexpr int64_t kScoreBytesPerThread = 2 << 20;
constexpr int64_t kMinBlockRows = 16;
constexpr int64_t kMaxBlockRows = 256;

struct StridedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

// A single-threaded matmul C [m, n] = A [m, k] × B [k, n] on strided 2D views.
std::shared_ptr<StridedMatmul> strided_matmul(ProgramCache& cache, int64_t m, int64_t n, int64_t k,
                                              const memory::dims& a_strides,
                                              const memory::dims& b_strides,
                                              const memory::dims& c_strides) {
  const std::string key = str_cat("matmul f32 1thread m=", m, " n=", n, " k=", k,
                                  " sa=", a_strides[0], ",", a_strides[1], " sb=", b_strides[0],
                                  ",", b_strides[1], " sc=", c_strides[0], ",", c_strides[1]);
  return cache.get_or_create<StridedMatmul>(key, [&] {
    ScopedOmpThreads one_thread(1);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto program = std::make_shared<StridedMatmul>();
    program->pd = make_matmul_pd(dnnl_engine(), memory::desc({m, k}, dt::f32, a_strides),
                                 memory::desc({k, n}, dt::f32, b_strides), memory::desc(),
                                 memory::desc({m, n}, dt::f32, c_strides), attr);
    refuse_reference_impl(program->pd.impl_info_str(), key);
    program->primitive = dnnl::matmul(program->pd);
    return program;
  });
}

// Runs one strided matmul with user scratchpad `scratch`.
void run_matmul(const StridedMatmul& mm, dnnl::stream& stream, const float* a, const float* b,
                float* c, void* scratch) {
  const dnnl::engine& eng = dnnl_engine();
  memory a_mem(mm.pd.src_desc(), eng, const_cast<float*>(a));
  memory b_mem(mm.pd.weights_desc(), eng, const_cast<float*>(b));
  memory c_mem(mm.pd.dst_desc(), eng, c);
  memory scratch_mem(mm.pd.scratchpad_desc(), eng, scratch);
  mm.primitive.execute(stream, {{DNNL_ARG_SRC, a_mem},
                                {DNNL_ARG_WEIGHTS, b_mem},
                                {DNNL_ARG_DST, c_mem},
                                {DNNL_ARG_SCRATCHPAD, scratch_mem}});
}

// scores [valid] -> exp(scale·s − max) in place, returns the sum. Entries past `valid`
// (causally masked keys) are set to 0 so the P × V product ignores them.
float softmax_numerators(float* scores, int64_t valid, int64_t total, float scale) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= valid; j += 8) {
    const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(scores + j), vscale);
    _mm256_storeu_ps(scores + j, s);
    vmax = _mm256_max_ps(vmax, s);
  }
  float row_max = hmax_avx2(vmax);
  for (; j < valid; ++j) {
    scores[j] *= scale;
    row_max = std::max(row_max, scores[j]);
  }
  const __m256 vrow_max = _mm256_set1_ps(row_max);
  __m256 vsum = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= valid; j += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vrow_max));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum_avx2(vsum);
  for (; j < valid; ++j) {
    scores[j] = std::exp(scores[j] - row_max);
    sum += scores[j];
  }
  std::fill(scores + valid, scores + total, 0.0f);
  return sum;
}

class AttentionKernel final : public Kernel {
 public:
  explicit AttentionKernel(const PrepareContext& ctx) {
    const auto& attrs = ctx.node.attr<ir::AttentionAttrs>();
    const Shape& q = ctx.input(0).shape;  // [B, Tq, H·D]
    const Shape& k = ctx.input(1).shape;  // [B, Tk, H·D]
    const Shape& v = ctx.input(2).shape;  // [B, Tk, H·Dv]
    batch_ = q[0];
    tq_ = q[1];
    tk_ = k[1];
    heads_ = attrs.heads;
    d_ = q[2] / heads_;
    dv_ = v[2] / heads_;
    causal_ = attrs.causal;
    scale_ = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(d_));

    block_rows_ = kScoreBytesPerThread / (tk_ * static_cast<int64_t>(sizeof(float)));
    block_rows_ = std::clamp<int64_t>(block_rows_ / kMinBlockRows * kMinBlockRows, kMinBlockRows,
                                      kMaxBlockRows);
    block_rows_ = std::min(block_rows_, tq_);
    const int64_t tail_rows = tq_ % block_rows_;

    const int64_t ld_qk = heads_ * d_, ld_v = heads_ * dv_;
    auto make_pair = [&](int64_t rows, Products& p) {
      p.scores = strided_matmul(ctx.cache, rows, tk_, d_, {ld_qk, 1}, {tk_, 1}, {tk_, 1});
      p.output = strided_matmul(ctx.cache, rows, dv_, tk_, {tk_, 1}, {dv_, 1}, {ld_v, 1});
    };
    make_pair(block_rows_, full_);
    if (tail_rows > 0) make_pair(tail_rows, tail_);

    size_t onednn_scratch = 0;
    for (const Products* p : {&full_, &tail_})
      if (p->scores)
        onednn_scratch = std::max({onednn_scratch, p->scores->pd.scratchpad_desc().get_size(),
                                   p->output->pd.scratchpad_desc().get_size()});
    scores_bytes_ = align64(static_cast<size_t>(block_rows_ * tk_) * sizeof(float));
    kv_bytes_ = align64(static_cast<size_t>(tk_ * (d_ + dv_)) * sizeof(float));
    scratch_per_thread_ = scores_bytes_ + kv_bytes_ + align64(onednn_scratch);
  }

  size_t scratch_bytes_per_thread() const { return scratch_per_thread_; }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* q = inputs[0].as<const float>();
    const float* k = inputs[1].as<const float>();
    const float* v = inputs[2].as<const float>();
    float* out = output.as<float>();
    const int threads = std::max(1, num_threads());
    if (scratch_.size() < scratch_per_thread_ * threads)
      scratch_ = AlignedBuffer(scratch_per_thread_ * threads, "attention scratch");

    const int64_t blocks = (tq_ + block_rows_ - 1) / block_rows_;
    // Split a head's blocks into `groups` tiles only if the heads alone cannot feed ~2
    // tiles per thread; each tile repacks its head's K and V once.
    const int64_t heads_total = batch_ * heads_;
    const int64_t groups =
        std::clamp<int64_t>((2 * threads + heads_total - 1) / heads_total, 1, blocks);
    const int64_t blocks_per_group = (blocks + groups - 1) / groups;
    const int64_t tiles = heads_total * groups;
    const int64_t ld_qk = heads_ * d_, ld_v = heads_ * dv_;
    parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
      const int slot = omp_get_thread_num();
      dnnl::stream& stream = dnnl_stream(slot);
      char* mine = scratch_.as<char>() + scratch_per_thread_ * slot;
      float* scores = reinterpret_cast<float*>(mine);              // [rows, Tk]
      float* kt = reinterpret_cast<float*>(mine + scores_bytes_);  // [D, Tk]
      float* vc = kt + tk_ * d_;                                   // [Tk, Dv]
      void* onednn_scratch = mine + scores_bytes_ + kv_bytes_;
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t bh = tile / groups, group = tile % groups;
        const int64_t b = bh / heads_, h = bh % heads_;
        const float* k_h = k + b * tk_ * ld_qk + h * d_;  // [Tk, D], row stride H·D
        const float* v_h = v + b * tk_ * ld_v + h * dv_;  // [Tk, Dv], row stride H·Dv
        for (int64_t j = 0; j < tk_; ++j) {
          const float* krow = k_h + j * ld_qk;
          for (int64_t c = 0; c < d_; ++c)
            kt[c * tk_ + j] = krow[c];
          std::copy(v_h + j * ld_v, v_h + j * ld_v + dv_, vc + j * dv_);
        }
        const int64_t first = group * blocks_per_group;
        const int64_t last = std::min(blocks, first + blocks_per_group);
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t q0 = blk * block_rows_;
          const int64_t rows = std::min(block_rows_, tq_ - q0);
          const Products& p = rows == block_rows_ ? full_ : tail_;
          const float* q_blk = q + (b * tq_ + q0) * ld_qk + h * d_;  // [rows, D], stride H·D
          float* o_blk = out + (b * tq_ + q0) * ld_v + h * dv_;      // [rows, Dv], stride H·Dv

          run_matmul(*p.scores, stream, q_blk, kt, scores, onednn_scratch);
          stream.wait();
          float inv_sum[kMaxBlockRows];
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t valid = causal_ ? q0 + r + 1 : tk_;
            inv_sum[r] = 1.0f / softmax_numerators(scores + r * tk_, valid, tk_, scale_);
          }
          run_matmul(*p.output, stream, scores, vc, o_blk, onednn_scratch);
          stream.wait();
          for (int64_t r = 0; r < rows; ++r) {
            float* o_row = o_blk + r * ld_v;
            for (int64_t c = 0; c < dv_; ++c)
              o_row[c] *= inv_sum[r];
          }
        }
      }
    });
  }

  size_t held_bytes() const override { return scratch_.size(); }

 private:
  struct Products {
    std::shared_ptr<StridedMatmul> scores, output;
  };

  static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

  int64_t batch_, tq_, tk_, heads_, d_, dv_, block_rows_;
  bool causal_;
  float scale_;
  Products full_, tail_;
  size_t scores_bytes_ = 0, kv_bytes_ = 0, scratch_per_thread_ = 0;
  AlignedBuffer scratch_;  // threads × scratch_per_thread_, grown on first run
};

}  // namespace

std::unique_ptr<Kernel> make_attention_kernel(const PrepareContext& ctx) {
  return std::make_unique<AttentionKernel>(ctx);
}

}  // namespace hyrt::backend::cpu
