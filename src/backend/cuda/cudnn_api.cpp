// cuDNN opened at run time (cudnn_api.h).
#include "backend/cuda/cudnn_api.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "core/env.h"
#include "core/error.h"

namespace hyrt::backend::cuda {

#if defined(HYRT_HAVE_CUDNN)
namespace {

#define HYRT_CUDNN_STR2(x) #x
#define HYRT_CUDNN_STR(x) HYRT_CUDNN_STR2(x)

struct Opened {
  CudnnApi api;
  bool ok = false;
  std::string why;   // when !ok
  std::string path;  // when ok: what was opened
};

void* open_first(std::string& why, std::string& path) {
  std::vector<std::string> tries;
  if (const char* p = std::getenv("HYRT_CUDNN_LIBRARY"); p && *p) tries.emplace_back(p);
  tries.emplace_back("libcudnn.so." HYRT_CUDNN_STR(CUDNN_MAJOR));
#ifdef HYRT_CUDA_LIBRARY_DIR
  tries.emplace_back(str_cat(HYRT_CUDA_LIBRARY_DIR, "/libcudnn.so." HYRT_CUDNN_STR(CUDNN_MAJOR)));
#endif
  for (const std::string& t : tries) {
    if (void* h = ::dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      path = t;
      return h;
    }
    why += str_cat(why.empty() ? "" : "; ", ::dlerror());
  }
  return nullptr;
}

template <class F>
bool resolve(void* lib, const char* name, F& fn, std::string& why) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  if (!fn) why = str_cat("libcudnn has no ", name);
  return fn != nullptr;
}

// HYRT_CUDNN=0, read once.
bool turned_off() {
  static const bool off = env_is("HYRT_CUDNN", "0");
  return off;
}

Opened open_cudnn() {
  Opened o;
  if (turned_off()) {
    o.why = "turned off (HYRT_CUDNN=0)";
    return o;
  }
  void* lib = open_first(o.why, o.path);
  if (!lib) {
    o.why = str_cat("cannot open libcudnn: ", o.why);
    return o;
  }
  // The library stays open even when unusable: closing a half-initialised cuDNN is not safe.
  CudnnApi& a = o.api;
  if (!(resolve(lib, "cudnnGetVersion", a.get_version, o.why) &&
        resolve(lib, "cudnnGetErrorString", a.error_string, o.why) &&
        resolve(lib, "cudnnGetLastErrorString", a.last_error, o.why) &&
        resolve(lib, "cudnnCreate", a.create, o.why) &&
        resolve(lib, "cudnnDestroy", a.destroy, o.why) &&
        resolve(lib, "cudnnSetStream", a.set_stream, o.why) &&
        resolve(lib, "cudnnBackendCreateDescriptor", a.create_descriptor, o.why) &&
        resolve(lib, "cudnnBackendDestroyDescriptor", a.destroy_descriptor, o.why) &&
        resolve(lib, "cudnnBackendSetAttribute", a.set_attribute, o.why) &&
        resolve(lib, "cudnnBackendGetAttribute", a.get_attribute, o.why) &&
        resolve(lib, "cudnnBackendFinalize", a.finalize, o.why) &&
        resolve(lib, "cudnnBackendExecute", a.execute, o.why)))
    return o;
  a.version = static_cast<int>(a.get_version());
  if (a.version < kMinCudnnVersion) {
    o.why = str_cat(o.path, " is cuDNN ", a.version, ", older than ", kMinCudnnVersion);
    return o;
  }
  o.ok = true;
  return o;
}

std::atomic<bool> g_known_absent{false};

const Opened& opened() {
  static const Opened o = [] {
    Opened tried = open_cudnn();
    g_known_absent = !tried.ok;
    return tried;
  }();  // thread-safe, once
  return o;
}

}  // namespace

const CudnnApi* cudnn_api(std::string* why) {
  const Opened& o = opened();
  if (!o.ok && why) *why = o.why;
  return o.ok ? &o.api : nullptr;
}

std::string cudnn_description() {
  const Opened& o = opened();
  if (!o.ok) return str_cat("not used: ", o.why);
  const int v = o.api.version;
  return str_cat("cuDNN ", v / 10000, ".", v / 100 % 100, ".", v % 100, " (", o.path, ")");
}

bool cudnn_known_absent() {
  return turned_off() || g_known_absent.load();
}

#else

std::string cudnn_description() {
  return "not used: hyrt was built without cuDNN's headers";
}

bool cudnn_known_absent() {
  return true;
}

#endif

}  // namespace hyrt::backend::cuda
