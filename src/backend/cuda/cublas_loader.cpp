// cuBLAS and cuBLASLt opened on their first call instead of linked.
//
// Why: loading libcublasLt runs static initialisers that write about 90 MiB of its .bss, so a
// process linked against it holds ~150 MiB more resident (60 MiB of mapped code besides the
// .bss) before it does anything, and a host-only run (no device, or --device host) never calls
// it. Measured on the 2-core host (no GPU): `hyrt --help` 228 MiB linked, ~75 MiB without; a
// 512² int8 txt2img's peak drops by the same ~150 MiB (bench/results/README.md). The CUDA
// backend makes its first cuBLAS call when a device was found (CudaContext), so that is when
// the libraries are mapped now.
//
// How: this file defines the few cuBLAS entry points the backend calls, each resolving the real
// one with dlsym once (a function-local static: thread-safe, one lookup per entry point) and
// calling through it. The declarations are cuBLAS's own headers', so a signature that drifts
// fails to compile here. A backend source that calls an entry point not defined below fails to
// link (undefined reference): add it here. The definitions are hidden (CMake compiles this file
// with -fvisibility=hidden), so they never interpose on another copy of cuBLAS in the process.
//
// Where the libraries are looked for: the soname of the major version we were built against
// (LD_LIBRARY_PATH, the executable's RUNPATH, the ld.so cache), then the toolkit's library
// folder found at configure time (HYRT_CUDA_LIBRARY_DIR). A library that cannot be opened (or
// lacks an entry point) throws hyrt::Error(kUnsupported) naming it and dlerror()'s reason, which
// try_make_cuda_backend turns into "no accelerator: <reason>".
#include <cublasLt.h>
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "core/error.h"

namespace hyrt::backend::cuda {
namespace {

#define HYRT_CUBLAS_STR2(x) #x
#define HYRT_CUBLAS_STR(x) HYRT_CUBLAS_STR2(x)

enum class Library { kLt, kBlas };

void* open_library(const char* soname) {
  std::string why = str_cat(soname, ": ");
  if (void* h = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL)) return h;
  why += ::dlerror();
#ifdef HYRT_CUDA_LIBRARY_DIR
  const std::string path = str_cat(HYRT_CUDA_LIBRARY_DIR, "/", soname);
  if (void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  why += str_cat("; ", ::dlerror());
#endif
  throw Error(ErrorCode::kUnsupported, str_cat("cannot load cuBLAS: ", why));
}

void* handle(Library lib) {
  // Opened once and never closed: kernels and handles of the library live as long as the
  // process may use them. Lt first: libcublas needs it too.
  static std::mutex mu;
  static void* lt = nullptr;
  static void* blas = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!lt) lt = open_library("libcublasLt.so." HYRT_CUBLAS_STR(CUBLAS_VER_MAJOR));
  if (lib == Library::kLt) return lt;
  if (!blas) blas = open_library("libcublas.so." HYRT_CUBLAS_STR(CUBLAS_VER_MAJOR));
  return blas;
}

void* resolve(Library lib, const char* name) {
  void* h = handle(lib);
  ::dlerror();
  void* f = ::dlsym(h, name);
  HYRT_CHECK(f != nullptr, kUnsupported, "cuBLAS has no entry point ", name, ": ", ::dlerror());
  return f;
}

// Calls the real `Self` (the entry point of that name in `lib`), resolved on the first call.
template <auto Self, typename... Args>
auto forward(Library lib, const char* name, Args... args) {
  static const auto real = reinterpret_cast<decltype(Self)>(resolve(lib, name));
  return real(args...);
}

}  // namespace
}  // namespace hyrt::backend::cuda

using hyrt::backend::cuda::forward;
using hyrt::backend::cuda::Library;

// The cuBLASLt entry points the backend calls.

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  return forward<&cublasLtCreate>(Library::kLt, "cublasLtCreate", handle);
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  return forward<&cublasLtDestroy>(Library::kLt, "cublasLtDestroy", handle);
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  return forward<&cublasLtGetStatusName>(Library::kLt, "cublasLtGetStatusName", status);
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  return forward<&cublasLtGetStatusString>(Library::kLt, "cublasLtGetStatusString", status);
}

size_t cublasLtGetVersion(void) {
  return forward<&cublasLtGetVersion>(Library::kLt, "cublasLtGetVersion");
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* a, cublasLtMatrixLayout_t a_desc, const void* b,
                              cublasLtMatrixLayout_t b_desc, const void* beta, const void* c,
                              cublasLtMatrixLayout_t c_desc, void* d, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  return forward<&cublasLtMatmul>(Library::kLt, "cublasLtMatmul", handle, desc, alpha, a, a_desc, b,
                                  b_desc, beta, c, c_desc, d, d_desc, algo, workspace,
                                  workspace_bytes, stream);
}

cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                       cublasLtMatrixLayout_t a_desc, cublasLtMatrixLayout_t b_desc,
                                       cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc,
                                       const cublasLtMatmulAlgo_t* algo,
                                       cublasLtMatmulHeuristicResult_t* result) {
  return forward<&cublasLtMatmulAlgoCheck>(Library::kLt, "cublasLtMatmulAlgoCheck", handle, desc,
                                           a_desc, b_desc, c_desc, d_desc, algo, result);
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a_desc,
    cublasLtMatrixLayout_t b_desc, cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc,
    cublasLtMatmulPreference_t preference, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  return forward<&cublasLtMatmulAlgoGetHeuristic>(Library::kLt, "cublasLtMatmulAlgoGetHeuristic",
                                                  handle, desc, a_desc, b_desc, c_desc, d_desc,
                                                  preference, requested, results, returned);
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type) {
  return forward<&cublasLtMatmulDescCreate>(Library::kLt, "cublasLtMatmulDescCreate", desc, compute,
                                            scale_type);
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  return forward<&cublasLtMatmulDescDestroy>(Library::kLt, "cublasLtMatmulDescDestroy", desc);
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t bytes) {
  return forward<&cublasLtMatmulDescSetAttribute>(Library::kLt, "cublasLtMatmulDescSetAttribute",
                                                  desc, attr, buf, bytes);
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return forward<&cublasLtMatmulPreferenceCreate>(Library::kLt, "cublasLtMatmulPreferenceCreate",
                                                  pref);
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return forward<&cublasLtMatmulPreferenceDestroy>(Library::kLt, "cublasLtMatmulPreferenceDestroy",
                                                   pref);
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t bytes) {
  return forward<&cublasLtMatmulPreferenceSetAttribute>(
      Library::kLt, "cublasLtMatmulPreferenceSetAttribute", pref, attr, buf, bytes);
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  return forward<&cublasLtMatrixLayoutCreate>(Library::kLt, "cublasLtMatrixLayoutCreate", layout,
                                              type, rows, cols, ld);
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  return forward<&cublasLtMatrixLayoutDestroy>(Library::kLt, "cublasLtMatrixLayoutDestroy", layout);
}

// The cuBLAS entry points (cublas_v2.h maps cublasCreate and the like to these _v2 names).

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  return forward<&cublasCreate_v2>(Library::kBlas, "cublasCreate_v2", handle);
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  return forward<&cublasDestroy_v2>(Library::kBlas, "cublasDestroy_v2", handle);
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  return forward<&cublasSetStream_v2>(Library::kBlas, "cublasSetStream_v2", handle, stream);
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  return forward<&cublasSetWorkspace_v2>(Library::kBlas, "cublasSetWorkspace_v2", handle, workspace,
                                         bytes);
}

// The C++ headers overload cublasGemmEx (a legacy cudaDataType compute type): name this one.
using GemmEx = cublasStatus_t(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void*, const void*, cudaDataType, int, const void*,
                              cudaDataType, int, const void*, void*, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* a, cudaDataType a_type, int lda, const void* b,
                            cudaDataType b_type, int ldb, const void* beta, void* c,
                            cudaDataType c_type, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
  return forward<static_cast<GemmEx*>(&cublasGemmEx)>(
      Library::kBlas, "cublasGemmEx", handle, transa, transb, m, n, k, alpha, a, a_type, lda, b,
      b_type, ldb, beta, c, c_type, ldc, compute, algo);
}
