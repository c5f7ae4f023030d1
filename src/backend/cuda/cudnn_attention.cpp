// Attention as cuDNN's SDPA operation (cudnn_attention.h), through cuDNN's backend API.
#include "backend/cuda/cudnn_attention.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "backend/cuda/cudnn_api.h"
#include "core/error.h"

namespace hyrt::backend::cuda {

std::string CudnnAttentionShape::key() const {
  char scale_text[32];
  std::snprintf(scale_text, sizeof scale_text, "%.9g", static_cast<double>(scale));
  std::string key =
      str_cat("b", batch, " h", heads, " q", tq, " k", tk, " d", d, " v", dv, " s", scale_text);
  if (ld_q || ld_k || ld_v) key += str_cat(" ld", row_q(), ",", row_k(), ",", row_v());
  return key;
}

#if defined(HYRT_HAVE_CUDNN)
namespace {

[[noreturn]] void fail(const CudnnApi& api, cudnnStatus_t status, const char* what) {
  char detail[512] = {};
  api.last_error(detail, sizeof detail);
  throw Error(ErrorCode::kUnsupported,
              str_cat("cuDNN attention: ", what, ": ", api.error_string(status),
                      detail[0] ? str_cat(" (", detail, ")") : ""));
}

void check(const CudnnApi& api, cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS) fail(api, status, what);
}

// An owned backend descriptor.
class Descriptor {
 public:
  Descriptor(const CudnnApi& api, cudnnBackendDescriptorType_t type) : api_(&api) {
    check(api, api.create_descriptor(type, &d_), "creating a descriptor");
  }
  ~Descriptor() {
    if (d_) api_->destroy_descriptor(d_);
  }
  Descriptor(Descriptor&& o) noexcept : api_(o.api_), d_(o.d_) { o.d_ = nullptr; }
  Descriptor& operator=(Descriptor&&) = delete;
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  template <class T>
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const T* values, const char* what) {
    check(*api_, api_->set_attribute(d_, name, type, count, values), what);
  }
  void set(cudnnBackendAttributeName_t name, const Descriptor& d, const char* what) {
    cudnnBackendDescriptor_t raw = d.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw, what);
  }
  void finalize(const char* what) { check(*api_, api_->finalize(d_), what); }

 private:
  const CudnnApi* api_;
  cudnnBackendDescriptor_t d_ = nullptr;
};

// A cuDNN handle of the plan's own: cuDNN lets threads use different handles at once but
// not one handle, and plans are built on threads of their own (cudnn_plan_for in
// cuda_attention.cpp). cudnnCreate takes 2-4 ms after the first, which of the
// process also loads cuDNN's engine libraries.
struct OwnedHandle {
  const CudnnApi* api = nullptr;
  cudnnHandle_t handle = nullptr;
  std::mutex run_mu;  // one execution at a time on this handle
  ~OwnedHandle() {
    if (handle) api->destroy(handle);
  }
};

enum Uid : int64_t { kQ = 1, kK, kV, kO, kScale };

Descriptor tensor(const CudnnApi& api, Uid uid, const int64_t (&dims)[4],
                  const int64_t (&strides)[4], cudnnDataType_t type, bool by_value) {
  Descriptor t(api, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t id = uid, alignment = by_value ? 4 : 16;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, "tensor dimensions");
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, "tensor strides");
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id, "tensor id");
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
  if (by_value) {
    const bool yes = true;
    t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor by value");
  }
  t.finalize("finalizing a tensor");
  return t;
}

// The engine's name from the plan's JSON ("engineId" and knobs), for logs; "" if unreadable.
std::string plan_json(const CudnnApi& api, const Descriptor& plan) {
  int64_t size = 0;
  if (api.get_attribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                        0, &size, nullptr) != CUDNN_STATUS_SUCCESS ||
      size <= 0)
    return "";
  std::string json(static_cast<size_t>(size), '\0');
  if (api.get_attribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                        size, &size, json.data()) != CUDNN_STATUS_SUCCESS)
    return "";
  json.resize(std::min<size_t>(json.size(), static_cast<size_t>(size)));
  while (!json.empty() && json.back() == '\0')
    json.pop_back();
  return json;
}

}  // namespace

struct CudnnAttentionPlan::State {
  const CudnnApi* api = nullptr;
  OwnedHandle handle;  // declared before the descriptors: destroyed after them
  cudaStream_t stream = nullptr;
  float scale = 0.0f;            // read by cuDNN through the variant pack at every run (by value)
  std::vector<Descriptor> keep;  // tensors, operation, graph: alive as long as the plan
  std::unique_ptr<Descriptor> plan;
};

CudnnAttentionPlan::CudnnAttentionPlan(const CudnnAttentionShape& s, cudaStream_t stream)
    : st_(std::make_unique<State>()) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string why;
  const CudnnApi* api = cudnn_api(&why);
  if (!api) throw Error(ErrorCode::kUnsupported, str_cat("cuDNN attention: ", why));
  HYRT_CHECK(s.batch >= 1 && s.heads >= 1 && s.tq >= 1 && s.tk >= 1 && s.d >= 1 && s.dv >= 1,
             kInvalidArgument, "cuDNN attention: empty shape ", s.key());
  st_->api = api;
  st_->handle.api = api;
  check(*api, api->create(&st_->handle.handle), "cudnnCreate");
  handle_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  st_->stream = stream;
  st_->scale = s.scale;

  // Logical [B, H, S, D] over the BSHD memory the graph holds.
  const int64_t q_dims[4] = {s.batch, s.heads, s.tq, s.d};
  const int64_t q_strides[4] = {s.tq * s.row_q(), s.d, s.row_q(), 1};
  const int64_t k_dims[4] = {s.batch, s.heads, s.tk, s.d};
  const int64_t k_strides[4] = {s.tk * s.row_k(), s.d, s.row_k(), 1};
  const int64_t v_dims[4] = {s.batch, s.heads, s.tk, s.dv};
  const int64_t v_strides[4] = {s.tk * s.row_v(), s.dv, s.row_v(), 1};
  const int64_t o_dims[4] = {s.batch, s.heads, s.tq, s.dv};
  const int64_t o_strides[4] = {s.tq * s.heads * s.dv, s.dv, s.heads * s.dv, 1};
  const int64_t one[4] = {1, 1, 1, 1};
  auto& keep = st_->keep;
  keep.reserve(8);
  keep.push_back(tensor(*api, kQ, q_dims, q_strides, CUDNN_DATA_HALF, false));
  keep.push_back(tensor(*api, kK, k_dims, k_strides, CUDNN_DATA_HALF, false));
  keep.push_back(tensor(*api, kV, v_dims, v_strides, CUDNN_DATA_HALF, false));
  keep.push_back(tensor(*api, kO, o_dims, o_strides, CUDNN_DATA_HALF, false));
  keep.push_back(tensor(*api, kScale, one, one, CUDNN_DATA_FLOAT, true));

  Descriptor op(*api, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
  op.set(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, keep[0], "SDPA q");
  op.set(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, keep[1], "SDPA k");
  op.set(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, keep[2], "SDPA v");
  op.set(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, keep[3], "SDPA out");
  op.set(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, keep[4], "SDPA scale");
  op.finalize("finalizing the SDPA operation");
  keep.push_back(std::move(op));

  cudnnHandle_t handle = st_->handle.handle;
  Descriptor graph(*api, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  cudnnBackendDescriptor_t ops[1] = {keep.back().get()};
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, ops, "graph ops");
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
  graph.finalize("finalizing the operation graph");
  keep.push_back(std::move(graph));

  // The heuristics' engine configurations, best first; the first whose plan finalizes wins.
  std::string refusals;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Descriptor heur(*api, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, keep.back(), "heuristics graph");
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
    if (api->finalize(heur.get()) != CUDNN_STATUS_SUCCESS) continue;
    int64_t count = 0;
    if (api->get_attribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                           0, &count, nullptr) != CUDNN_STATUS_SUCCESS ||
        count <= 0)
      continue;
    std::vector<Descriptor> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.emplace_back(*api, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    int64_t got = 0;
    check(*api,
          api->get_attribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                             CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()),
          "reading the heuristics' results");
    heuristics_ms_ =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t i = 0; i < got && !st_->plan; ++i) {
      auto plan = std::make_unique<Descriptor>(*api, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
      plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[static_cast<size_t>(i)],
                "plan engine config");
      const cudnnStatus_t st = api->finalize(plan->get());
      if (st != CUDNN_STATUS_SUCCESS) {
        refusals += str_cat(refusals.empty() ? "" : "; ", api->error_string(st));
        continue;
      }
      int64_t ws = 0;
      check(*api,
            api->get_attribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                               CUDNN_TYPE_INT64, 1, &got, &ws),
            "reading the plan's workspace size");
      workspace_bytes_ = static_cast<size_t>(std::max<int64_t>(ws, 0));
      engine_ = plan_json(*api, *plan);
      st_->plan = std::move(plan);
    }
    if (st_->plan) break;
  }
  if (!st_->plan) {
    char detail[512] = {};
    api->last_error(detail, sizeof detail);
    throw Error(ErrorCode::kUnsupported,
                str_cat("cuDNN attention: no engine for ", s.key(),
                        refusals.empty() ? "" : str_cat(" (", refusals, ")"),
                        detail[0] ? str_cat(": ", detail) : ""));
  }
  build_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

CudnnAttentionPlan::~CudnnAttentionPlan() = default;

void CudnnAttentionPlan::run(const void* q, const void* k, const void* v, void* out,
                             void* workspace) const {
  const CudnnApi& api = *st_->api;
  Descriptor pack(api, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const int64_t uids[5] = {kQ, kK, kV, kO, kScale};
  void* ptrs[5] = {const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), out,
                   &st_->scale};
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids, "variant ids");
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs, "variant data");
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace,
           "variant workspace");
  pack.finalize("finalizing the variant pack");
  std::lock_guard<std::mutex> lock(st_->handle.run_mu);
  check(api, api.set_stream(st_->handle.handle, st_->stream), "cudnnSetStream");
  check(api, api.execute(st_->handle.handle, st_->plan->get(), pack.get()), "executing");
}

bool cudnn_attention_available(std::string* why) {
  return cudnn_api(why) != nullptr;
}

#else

struct CudnnAttentionPlan::State {};

CudnnAttentionPlan::CudnnAttentionPlan(const CudnnAttentionShape&, cudaStream_t) {
  throw Error(ErrorCode::kUnsupported, "cuDNN attention: hyrt was built without cuDNN's headers");
}
CudnnAttentionPlan::~CudnnAttentionPlan() = default;
void CudnnAttentionPlan::run(const void*, const void*, const void*, void*, void*) const {}

bool cudnn_attention_available(std::string* why) {
  if (why) *why = "hyrt was built without cuDNN's headers";
  return false;
}

#endif

}  // namespace hyrt::backend::cuda
