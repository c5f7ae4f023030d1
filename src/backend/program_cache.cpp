#include "backend/program_cache.h"

#include "core/error.h"

namespace hyrt::backend {

bool GemmKey::operator==(const GemmKey& o) const {
  return m == o.m && n == o.n && k == o.k && batch == o.batch && a_type == o.a_type &&
         w_type == o.w_type && out_type == o.out_type && w_transposed == o.w_transposed &&
         epilogue == o.epilogue;
}

std::string GemmKey::to_string() const {
  return str_cat("gemm m=", m, " n=", n, " k=", k, " b=", batch, " a=", dtype_name(a_type),
                 " w=", dtype_name(w_type), " o=", dtype_name(out_type), " wt=", w_transposed ? 1 : 0,
                 " e=", static_cast<int>(epilogue));
}

size_t GemmKeyHash::operator()(const GemmKey& k) const {
  size_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(static_cast<uint64_t>(k.m));
  mix(static_cast<uint64_t>(k.n));
  mix(static_cast<uint64_t>(k.k));
  mix(static_cast<uint64_t>(k.batch));
  mix(static_cast<uint64_t>(k.a_type));
  mix(static_cast<uint64_t>(k.w_type));
  mix(static_cast<uint64_t>(k.out_type));
  mix(k.w_transposed ? 1 : 0);
  mix(k.epilogue);
  return h;
}

size_t ProgramCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return programs_.size();
}
uint64_t ProgramCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}
uint64_t ProgramCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}
void ProgramCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  programs_.clear();
}

}  // namespace hyrt::backend
