// libFuzzer target for the checkpoint key maps: the input is a newline-separated list of
// tensor names. LdmKeyMap derives block counts from them and maps each; nothing may crash
// or hit undefined behaviour (index arithmetic on hostile numbers included), and a mapped
// key must get a canonical, component-prefixed name.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
  for (const auto& k : keys) {
    KeyMapping m = map.map(k);
    if (m.kind == KeyMapping::Kind::kMapped &&
        m.canonical.rfind(std::string(hyrt::weights::component_name(m.component)) + ".", 0) != 0)
      __builtin_trap();
    for (auto c : hyrt::weights::kAllComponents) {
      KeyMapping d = hyrt::weights::map_diffusers_key(c, k, 4, true);
      if (d.kind == KeyMapping::Kind::kMapped && d.canonical.empty()) __builtin_trap();
    }
  }
  return 0;
}
