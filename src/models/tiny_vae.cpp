// TAESD's decoder — mirrors diffusers.models.autoencoders.vae.DecoderTiny with
// unet_2d_blocks.AutoencoderTinyBlock (madebyollin's taesd.Decoder is the same network). The
// layer list is read off the weights: each index holds a convolution (`<i>.weight`), a block
// (`<i>.conv.0.weight`) or nothing — the ReLU after the first convolution, and otherwise the 2x
// nearest upsample that ends each stage but the last.
#include <string>

#include "core/error.h"
#include "models/components.h"
#include "models/graph_builder.h"
#include "weights/tiny_autoencoder.h"

namespace hyrt::models {
namespace {

constexpr int kMaxLayers = 256;
constexpr int kMaxUpscale = 64;  // real decoders: 8 (three upsamples)

enum class LayerKind { kConv, kBlock, kRelu, kUpsample };

std::string layer_name(int i) {
  return "layers." + std::to_string(i);
}

struct Layers {
  std::vector<LayerKind> kinds;
  TinyVaeDecoderLayout layout;
};

Layers read_layers(const weights::WeightSource& w) {
  const std::string root = std::string(weights::TinyAutoencoderWeights::kPrefix);
  auto has = [&](int i, const char* leaf) {
    return w.contains(root + std::to_string(i) + "." + leaf);
  };
  int last = -1;
  for (int i = 0; i < kMaxLayers; ++i)
    if (has(i, "weight") || has(i, "conv.0.weight")) last = i;
  HYRT_CHECK(last >= 0, kInvalidModel, "the TAESD weights hold no decoder layer");
  Layers out;
  bool seen_block = false;
  for (int i = 0; i <= last; ++i) {
    LayerKind k;
    if (has(i, "weight")) {
      k = LayerKind::kConv;
    } else if (has(i, "conv.0.weight")) {
      k = LayerKind::kBlock;
      seen_block = true;
    } else if (i == 1) {
      k = LayerKind::kRelu;
    } else {
      HYRT_CHECK(seen_block && !out.kinds.empty() && out.kinds.back() == LayerKind::kBlock,
                 kInvalidModel, "TAESD decoder layer ", i,
                 " has no weights but does not follow a block (not a DecoderTiny)");
      k = LayerKind::kUpsample;
      out.layout.upscale *= 2;
      HYRT_CHECK(out.layout.upscale <= kMaxUpscale, kInvalidModel,
                 "the TAESD decoder upsamples more than ", kMaxUpscale, "x (layer ", i, ")");
    }
    out.kinds.push_back(k);
  }
  HYRT_CHECK(out.kinds.size() >= 3 && out.kinds[0] == LayerKind::kConv &&
                 out.kinds[1] == LayerKind::kRelu && out.kinds.back() == LayerKind::kConv,
             kInvalidModel,
             "the TAESD decoder's layers are not conv, ReLU, …, conv (not a DecoderTiny)");
  const TensorView first = w.get(root + "0.weight");
  const TensorView final = w.get(root + std::to_string(last) + ".weight");
  HYRT_CHECK(first.shape.rank() == 4 && final.shape.rank() == 4, kInvalidModel,
             "the TAESD decoder's first and last layers must be 2-D convolutions");
  out.layout.latent_channels = static_cast<int>(first.shape[1]);
  out.layout.out_channels = static_cast<int>(final.shape[0]);
  out.layout.layers = last + 1;
  return out;
}

// AutoencoderTinyBlock: relu(conv(relu(conv(relu(conv(x))))) + skip(x)), skip a 1x1
// convolution without bias where the channel count changes.
ir::ValueId tiny_block(GraphBuilder& b, ir::ValueId x) {
  ir::ValueId h = b.op(ir::OpKind::kRelu, {b.conv2d(x, "conv.0")});
  h = b.op(ir::OpKind::kRelu, {b.conv2d(h, "conv.2")});
  h = b.conv2d(h, "conv.4");
  const ir::ValueId skip = b.has_weight("skip.weight") ? b.conv2d(x, "skip") : x;
  HYRT_CHECK(b.shape(h) == b.shape(skip), kInvalidModel, "TAESD block ", b.name("conv"),
             ": its convolutions give ", b.shape(h).to_string(), " but its skip ",
             b.shape(skip).to_string());
  return b.op(ir::OpKind::kRelu, {b.add(h, skip)});
}

}  // namespace

TinyVaeDecoderLayout inspect_tiny_vae_decoder(const weights::WeightSource& weights) {
  return read_layers(weights).layout;
}

BuiltGraph build_tiny_vae_decoder(const weights::WeightSource& weights, int batch,
                                  int latent_height, int latent_width) {
  HYRT_CHECK(batch >= 1 && latent_height >= 1 && latent_width >= 1, kInvalidArgument,
             "TAESD decoder: bad latent size ", latent_height, "x", latent_width);
  const Layers layers = read_layers(weights);
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "taesd.decoder");
  ir::ValueId h = graph->add_input(
      "latent", DType::kF32, {batch, latent_height, latent_width, layers.layout.latent_channels});
  // torch.tanh(x / 3) * 3: soft-clamps the latents to ±3.
  h = b.op(ir::OpKind::kScale, {h}, ir::ScaleAttrs{1.0f / 3.0f, 0.0f});
  h = b.op(ir::OpKind::kTanh, {h});
  h = b.op(ir::OpKind::kScale, {h}, ir::ScaleAttrs{3.0f, 0.0f});
  for (int i = 0; i < layers.layout.layers; ++i) {
    switch (layers.kinds[static_cast<size_t>(i)]) {
      case LayerKind::kConv:
        h = b.conv2d(h, layer_name(i));
        break;
      case LayerKind::kBlock: {
        GraphBuilder::Scope s(b, layer_name(i));
        h = tiny_block(b, h);
        break;
      }
      case LayerKind::kRelu:
        h = b.op(ir::OpKind::kRelu, {h});
        break;
      case LayerKind::kUpsample:
        h = b.op(ir::OpKind::kUpsampleNearest, {h}, ir::UpsampleAttrs{});
        break;
    }
  }
  // x.mul(2).sub(1): the [0, 1] picture to the VAE's [-1, 1].
  h = b.op(ir::OpKind::kScale, {h}, ir::ScaleAttrs{2.0f, -1.0f});
  return {graph, b.finish(h)};
}

}  // namespace hyrt::models
