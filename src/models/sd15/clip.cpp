// CLIP text encoder — mirrors transformers' CLIPTextModel (CLIPTextEmbeddings,
// CLIPEncoderLayer with CLIPAttention + CLIPMLP, final_layer_norm).
#include "core/error.h"
#include "models/graph_builder.h"
#include "models/sd15/sd15.h"

namespace hyrt::models::sd15 {

BuiltGraph build_clip_text_encoder(const ClipTextConfig& cfg, const weights::WeightSource& weights,
                                   int batch, int seq) {
  HYRT_CHECK(batch >= 1 && seq >= 1 && seq <= cfg.max_position_embeddings, kInvalidArgument,
             "text encoder: batch ", batch, " / sequence ", seq, " out of range (max positions ",
             cfg.max_position_embeddings, ")");
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "text_encoder.text_model");
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
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
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
  }
  h = b.layer_norm(h, "final_layer_norm", cfg.layer_norm_eps);
  return {graph, b.finish(h)};
}

}  // namespace hyrt::models::sd15
