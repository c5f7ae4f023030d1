// libFuzzer target for the checkpoint key maps: the input is a newline-separated list of
// tensor names (LDM, SGM or diffusers). LdmKeyMap derives block counts from them and maps
// each; nothing may crash or hit undefined behaviour (index arithmetic on hostile numbers
// included), and a mapped key must get canonical, component-prefixed names — one, or
// exactly three for a stacked q/k/v tensor. Each mapped name is fed back through
// ldm_key_for / sgm_key_for, which may only throw hyrt::Error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "weights/ldm_names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> keys;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    keys.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  hyrt::weights::LdmKeyMap map(keys);
  using hyrt::weights::KeyMapping;
  const hyrt::weights::LdmStructure structure;
  auto reverse = [&](const std::string& canonical) {
    try {
      (void)hyrt::weights::ldm_key_for(canonical, structure);
    } catch (const hyrt::Error&) {
    }
    try {
      (void)hyrt::weights::sgm_key_for(canonical, structure);
    } catch (const hyrt::Error&) {
    }
  };
  for (const auto& k : keys) {
    KeyMapping m = map.map(k);
    const std::string prefix = std::string(hyrt::weights::component_name(m.component)) + ".";
    if (m.kind == KeyMapping::Kind::kMapped) {
      if (m.split_rows.empty()) {
        if (m.canonical.rfind(prefix, 0) != 0) __builtin_trap();
        reverse(m.canonical);
      } else {
        if (m.split_rows.size() != 3 || !m.canonical.empty()) __builtin_trap();
        for (const auto& n : m.split_rows) {
          if (n.rfind(prefix, 0) != 0) __builtin_trap();
          reverse(n);
        }
      }
    }
    reverse(k);
    for (auto c : hyrt::weights::kAllComponents) {
      KeyMapping d = hyrt::weights::map_diffusers_key(c, k, 4, true);
      if (d.kind == KeyMapping::Kind::kMapped && d.canonical.empty()) __builtin_trap();
    }
  }
  return 0;
}
