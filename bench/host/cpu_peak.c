// The CPU's peak arithmetic rates, for the floors in bench/results (issue 21): one tight loop
// of independent multiply-accumulates per ISA form on every thread (OpenMP), long enough that
// thread start-up is noise. Prints one JSON object: G(FL)OP/s per form (a multiply-add counts
// 2), threads, and the forms the build could not test.
// Built and run by cpu_peak.sh (gcc -O2 -march=native -fopenmp): the forms are those the
// compiling CPU has (AVX-512 F/BF16/VNNI; AMX BF16/INT8 tiles where the kernel grants them).
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>
#if defined(__AMX_TILE__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

enum { kAcc = 12 };  // independent accumulators: more than latency x issue rate
static const long kInstr = 4000000000L;  // instructions over all threads, per form
static volatile float g_sink;

// Runs `form` on every thread; returns seconds.
static double run(int form) {
  const double t0 = now();
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    const long n = kInstr / omp_get_num_threads() / kAcc;
#if defined(__AVX512F__)
    __m512 a[kAcc];
    __m512i ai[kAcc];
    for (int i = 0; i < kAcc; i++) {
      a[i] = _mm512_setzero_ps();
      ai[i] = _mm512_setzero_si512();
    }
    const __m512 f = _mm512_set1_ps(1.0001f), g = _mm512_set1_ps(0.9999f);
    if (form == 0)
      for (long k = 0; k < n; k++)
#pragma GCC unroll 12
        for (int i = 0; i < kAcc; i++) a[i] = _mm512_fmadd_ps(a[i], f, g);
#if defined(__AVX512BF16__)
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);
    if (form == 1)
      for (long k = 0; k < n; k++)
#pragma GCC unroll 12
        for (int i = 0; i < kAcc; i++) a[i] = _mm512_dpbf16_ps(a[i], x, x);
#endif
#if defined(__AVX512VNNI__)
    const __m512i u = _mm512_set1_epi8(1);
    if (form == 2)
      for (long k = 0; k < n; k++)
#pragma GCC unroll 12
        for (int i = 0; i < kAcc; i++) ai[i] = _mm512_dpbusd_epi32(ai[i], u, u);
#endif
    for (int i = 0; i < kAcc; i++)
      sink += _mm512_reduce_add_ps(a[i]) + (float)_mm512_reduce_add_epi32(ai[i]);
#endif
  }
  g_sink = sink;
  return now() - t0;
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
// AMX: tiles of 16 rows x 64 bytes; one TDPBF16PS is 16x16x32 multiply-adds, TDPBSSD 16x16x64.
static double run_amx(int int8) {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return -1;
  const double t0 = now();
#pragma omp parallel
  {
    if (syscall(SYS_arch_prctl, 0x1023, 18) == 0) {
      struct {
        unsigned char palette, start;
        unsigned char pad[14];
        unsigned short colsb[16];
        unsigned char rows[16];
      } __attribute__((packed)) cfg;
      __builtin_memset(&cfg, 0, sizeof cfg);
      cfg.palette = 1;
      for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
      }
      _tile_loadconfig(&cfg);
      static char buf[1024] __attribute__((aligned(64)));
      _tile_loadd(4, buf, 64);
      _tile_loadd(5, buf, 64);
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const long n = kInstr / 64 / omp_get_num_threads() / 4;
      for (long k = 0; k < n; k++) {
        if (int8) {
          _tile_dpbssd(0, 4, 5);
          _tile_dpbssd(1, 4, 5);
          _tile_dpbssd(2, 4, 5);
          _tile_dpbssd(3, 4, 5);
        } else {
          _tile_dpbf16ps(0, 4, 5);
          _tile_dpbf16ps(1, 4, 5);
          _tile_dpbf16ps(2, 4, 5);
          _tile_dpbf16ps(3, 4, 5);
        }
      }
      _tile_release();
    }
  }
  return now() - t0;
}
#endif

int main(void) {
  // Operations per instruction (a multiply-add = 2): zmm FMA 16 lanes, VDPBF16PS 32 pairs,
  // VPDPBUSD 64 byte products.
  const char* names[] = {"f32_fma_avx512", "bf16_avx512_bf16", "int8_avx512_vnni"};
  const double ops[] = {32, 64, 128};
  printf("{\"threads\": %d", omp_get_max_threads());
  for (int form = 0; form < 3; form++) {
    int have = 0;
#if defined(__AVX512F__)
    have = form == 0;
#endif
#if defined(__AVX512BF16__)
    have |= form == 1;
#endif
#if defined(__AVX512VNNI__)
    have |= form == 2;
#endif
    if (!have) {
      printf(", \"%s\": null", names[form]);
      continue;
    }
    run(form);  // warm the cores up
    const double s = run(form);
    printf(", \"%s\": %.1f", names[form], (double)kInstr * ops[form] / s / 1e9);
  }
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
  for (int int8 = 0; int8 < 2; int8++) {
    const double s = run_amx(int8);
    // 16 x 16 x 32 (bf16) or 16 x 16 x 64 (int8) multiply-adds per instruction; kInstr / 64
    // instructions in all.
    const double per = int8 ? 16.0 * 16 * 64 * 2 : 16.0 * 16 * 32 * 2;
    printf(", \"%s\": %.1f", int8 ? "int8_amx" : "bf16_amx",
           s > 0 ? (double)(kInstr / 64) * per / s / 1e9 : -1.0);
  }
#else
  printf(", \"bf16_amx\": null, \"int8_amx\": null");
#endif
  printf("}\n");
  return 0;
}
