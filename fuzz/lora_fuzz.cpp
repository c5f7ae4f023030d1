// libFuzzer target for LoRA files (weights/lora.h): arbitrary bytes read as a LoRA
// (safetensors, then the kohya / PEFT / diffusers key forms), then laid over a small model of
// one attention projection [4, 4], one 3x3 convolution [4, 4, 3, 3] and one text-encoder
// projection [4, 4] at multiplier 0.7. Only hyrt::Error may escape; an overlay that is built
// must hold finite adapters of the layer's shapes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "weights/lora.h"
#include "weights/memory_weights.h"

namespace {

using namespace hyrt;
using namespace hyrt::weights;

const char* kModules[] = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                          "unet.down_blocks.0.resnets.0.conv1",
                          "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"};

struct Model {
  MemoryWeights w;
  std::unique_ptr<LoraTargetIndex> index;
  Model() {
    std::vector<LoraTarget> t;
    const Shape shapes[] = {Shape{4, 4}, Shape{4, 4, 3, 3}, Shape{4, 4}};
    const Component comps[] = {Component::kUNet, Component::kUNet, Component::kTextEncoder};
    for (int i = 0; i < 3; ++i) {
      w.add(std::string(kModules[i]) + ".weight", Tensor::zeros(DType::kF32, shapes[i]));
      t.push_back({kModules[i], comps[i], shapes[i]});
    }
    index = std::make_unique<LoraTargetIndex>(std::move(t), LdmStructure{}, false);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Model model;
  try {
    auto file = LoraFile::from_file(
        SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz"), "fuzz");
    const LoraUse use{file, 0.7f};
    const LoraWeights lw(model.w, std::span<const LoraUse>(&use, 1), *model.index);
    for (const char* m : kModules) {
      if (!lw.contains(lora_down_name(m))) continue;
      const TensorView down = lw.get(lora_down_name(m)), up = lw.get(lora_up_name(m));
      const TensorView base = lw.get(std::string(m) + ".weight");
      if (down.shape[1] != base.shape[1] || up.shape[0] != base.shape[0] ||
          up.shape[1] != down.shape[0])
        __builtin_trap();
      // Adapters are finite and readable as their type: a down may be a view of the file (f16
      // or f32), so it must sit at an address aligned for that type.
      for (const TensorView* v : {&down, &up}) {
        if (reinterpret_cast<uintptr_t>(v->data) % dtype_size(v->dtype) != 0) __builtin_trap();
        std::vector<float> f(static_cast<size_t>(v->numel()));
        convert_to_f32(v->dtype, v->data, f.data(), f.size());
        for (float x : f)
          if (!std::isfinite(x)) __builtin_trap();
      }
    }
  } catch (const hyrt::Error&) {
  }
  return 0;
}
