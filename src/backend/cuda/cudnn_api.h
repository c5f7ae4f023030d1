// Internal to the CUDA backend: cuDNN, opened at run time and optional.
//
// Why optional and opened, not linked: cuDNN is a separate download from the CUDA toolkit (a
// Debian/NVIDIA package or the nvidia-cudnn wheel) and large; a machine without it must still
// run every model (hyrt's own kernels cover every op), and a host-only process must not map it.
// The backend asks for it where a cuDNN engine is the faster program (today: the fused
// attention of cudnn_attention.h) and falls back to its own kernel where it is absent.
//
// Where it is looked for: $HYRT_CUDNN_LIBRARY (a path to libcudnn.so.9), then the soname
// libcudnn.so.<major we were built against> (LD_LIBRARY_PATH, RUNPATH, the ld.so cache), then
// the CUDA toolkit's library folder found at configure time. HYRT_CUDNN=0 turns it off.
// Versions older than kMinCudnnVersion count as absent (the fused attention operation came
// with 9.13.1).
#pragma once

#include <string>

#if defined(HYRT_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace hyrt::backend::cuda {

inline constexpr int kMinCudnnVersion = 91301;

#if defined(HYRT_HAVE_CUDNN)
// The entry points the backend calls, resolved once. Signatures are cuDNN's own headers'.
struct CudnnApi {
  decltype(&cudnnGetVersion) get_version = nullptr;
  decltype(&cudnnGetErrorString) error_string = nullptr;
  decltype(&cudnnGetLastErrorString) last_error = nullptr;
  decltype(&cudnnCreate) create = nullptr;
  decltype(&cudnnDestroy) destroy = nullptr;
  decltype(&cudnnSetStream) set_stream = nullptr;
  decltype(&cudnnBackendCreateDescriptor) create_descriptor = nullptr;
  decltype(&cudnnBackendDestroyDescriptor) destroy_descriptor = nullptr;
  decltype(&cudnnBackendSetAttribute) set_attribute = nullptr;
  decltype(&cudnnBackendGetAttribute) get_attribute = nullptr;
  decltype(&cudnnBackendFinalize) finalize = nullptr;
  decltype(&cudnnBackendExecute) execute = nullptr;
  int version = 0;  // cudnnGetVersion() of the library opened
};

// The API, opened on the first call (thread-safe; never closed). Null when cuDNN is turned
// off, cannot be opened, lacks an entry point or is older than kMinCudnnVersion; `why` (if
// given) then says which, every call.
const CudnnApi* cudnn_api(std::string* why = nullptr);
#endif

// "cuDNN 9.19.0 (<path>)" or why it is not used, for logs and benchmark JSON.
std::string cudnn_description();

// True once an attempt to open cuDNN has finished and failed (or HYRT_CUDNN=0, or a build
// without cuDNN's headers); false while it is usable or not yet tried. Never opens it: for
// choices on the compile's path, which must not pay for loading cuDNN.
bool cudnn_known_absent();

}  // namespace hyrt::backend::cuda
