// libFuzzer target for the safetensors reader: any byte string must either parse into
// tensors whose views lie inside the buffer (or in its aligned copies of misaligned tensors) and
// are aligned for their types, or throw hyrt::Error — never crash, leak,
// read out of bounds or hit undefined behaviour (the build adds ASan + UBSan).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = hyrt::weights::SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size),
                                                           "fuzz-input");
    // Touch every byte of every view: ASan flags any view that strays outside the buffer.
    uint8_t checksum = 0;
    for (const auto& info : file->tensors()) {
      hyrt::TensorView v = file->view(info);
      if (v.bytes() != info.bytes) __builtin_trap();
      // Views are aligned for their type, whatever the file's offsets (safetensors.h).
      if (v.bytes() && reinterpret_cast<uintptr_t>(v.data) % hyrt::dtype_size(v.dtype) != 0)
        __builtin_trap();
      const auto* p = static_cast<const uint8_t*>(v.data);
      for (size_t i = 0; i < v.bytes(); ++i)
        checksum ^= p[i];
      if (file->find(info.name) != &info) __builtin_trap();
    }
    for (const auto& [k, v] : file->metadata())
      checksum ^= static_cast<uint8_t>(k.size() + v.size());
    // Keep the reads from being optimised away.
    volatile uint8_t sink = checksum;
    (void)sink;
  } catch (const hyrt::Error&) {
    // Rejecting malformed input is the expected outcome.
  }
  return 0;
}
