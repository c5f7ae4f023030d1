// CLIP text encoder — mirrors transformers' CLIPTextModel (CLIPTextEmbeddings,
// CLIPEncoderLayer with CLIPAttention + CLIPMLP, final_layer_norm) and the projection head of
// CLIPTextModelWithProjection (SDXL's second encoder).
#include "core/error.h"
#include "models/components.h"
#include "models/graph_builder.h"

namespace hyrt::models {

namespace {

std::string text_model_root(weights::Component which) {
  HYRT_CHECK(
      which == weights::Component::kTextEncoder || which == weights::Component::kTextEncoder2,
      kInvalidArgument, "text encoder graph: component '", weights::component_name(which),
      "' is not a text encoder");
  return std::string(weights::component_name(which));
}

}  // namespace

BuiltGraph build_clip_text_encoder(const ClipTextConfig& cfg, const weights::WeightSource& weights,
                                   const TextEncoderShape& shape, weights::Component which) {
  const int batch = shape.batch, seq = shape.seq;
  HYRT_CHECK(batch >= 1 && seq >= 1 && seq <= cfg.max_position_embeddings, kInvalidArgument,
             "text encoder: batch ", batch, " / sequence ", seq, " out of range (max positions ",
             cfg.max_position_embeddings, ")");
  HYRT_CHECK(shape.skip_layers >= 0 && shape.skip_layers < cfg.num_hidden_layers, kInvalidArgument,
             "text encoder: cannot skip ", shape.skip_layers, " of ", cfg.num_hidden_layers,
             " layers");
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, text_model_root(which) + ".text_model");
  const ir::OpKind act =
      cfg.hidden_act == "quick_gelu" ? ir::OpKind::kQuickGelu : ir::OpKind::kGelu;
  HYRT_CHECK(cfg.hidden_act == "quick_gelu" || cfg.hidden_act == "gelu", kUnsupported,
             "text encoder activation '", cfg.hidden_act, "'");

  // ids: [B, T]; positions: [1, T] -> h: [B, T, C]
  const ValueId ids = graph->add_input("input_ids", DType::kS32, {batch, seq});
  const ValueId pos = graph->add_input("position_ids", DType::kS32, {1, seq});
  ValueId h;
  {
    GraphBuilder::Scope s(b, "embeddings");
    const ValueId tok = b.op(ir::OpKind::kEmbedding, {ids, b.weight("token_embedding.weight")});
    const ValueId p = b.op(ir::OpKind::kEmbedding, {pos, b.weight("position_embedding.weight")});
    h = b.add(tok, p);
  }
  // hidden_states[-1 - k] is the output of layer n-1-k; nothing after the last state asked
  // for is built.
  const int returned_layer = cfg.num_hidden_layers - 1 - shape.skip_layers;
  const int built_layers = shape.last_hidden ? cfg.num_hidden_layers : returned_layer + 1;
  ValueId returned = ir::kNone;
  for (int i = 0; i < built_layers; ++i) {
    GraphBuilder::Scope s(b, "encoder.layers." + std::to_string(i));
    ValueId x = b.layer_norm(h, "layer_norm1", cfg.layer_norm_eps);
    {
      GraphBuilder::Scope a(b, "self_attn");
      const ValueId q = b.linear(x, "q_proj"), k = b.linear(x, "k_proj"), v = b.linear(x, "v_proj");
      x = b.linear(b.attention(q, k, v, cfg.num_attention_heads, /*causal=*/true), "out_proj");
    }
    h = b.add(h, x);
    x = b.layer_norm(h, "layer_norm2", cfg.layer_norm_eps);
    {
      GraphBuilder::Scope m(b, "mlp");
      x = b.linear(b.op(act, {b.linear(x, "fc1")}), "fc2");
    }
    h = b.add(h, x);
    if (i == returned_layer) returned = h;
  }
  if (shape.skip_layers == 0 || shape.norm_skipped)
    returned = b.layer_norm(returned, "final_layer_norm", cfg.layer_norm_eps);
  if (!shape.last_hidden) return {graph, b.finish(returned)};
  // Two outputs: the returned state first, then the last layer's.
  auto taps = b.finish(returned);
  graph->mark_output(h);
  return {graph, std::move(taps)};
}

BuiltGraph build_text_pooled_projection(const ClipTextConfig& cfg,
                                        const weights::WeightSource& weights, int batch,
                                        weights::Component which) {
  HYRT_CHECK(cfg.projection_dim > 0, kInvalidModel, "the ", weights::component_title(which),
             " has no text projection (projection_dim 0)");
  HYRT_CHECK(batch >= 1, kInvalidArgument, "text projection: batch ", batch);
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, text_model_root(which));
  // hidden: [B, C] -> [B, P]
  const ValueId hidden = graph->add_input("hidden", DType::kF32, {batch, cfg.hidden_size});
  ValueId h;
  {
    GraphBuilder::Scope s(b, "text_model");
    h = b.layer_norm(hidden, "final_layer_norm", cfg.layer_norm_eps);
  }
  return {graph, b.finish(b.linear(h, "text_projection", /*bias=*/false))};
}

}  // namespace hyrt::models
