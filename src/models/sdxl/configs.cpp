#include "models/sdxl/configs.h"

namespace hyrt::models::sdxl {

ModelConfigs base_configs() {
  ModelConfigs c;
  c.text_encoder = ClipTextConfig{};  // CLIP ViT-L/14, as SD 1.5's
  ClipTextConfig g;
  g.hidden_size = 1280;
  g.intermediate_size = 5120;
  g.num_hidden_layers = 32;
  g.num_attention_heads = 20;
  g.hidden_act = "gelu";
  g.projection_dim = 1280;
  c.text_encoder_2 = g;
  UNetConfig u;
  u.block_out_channels = {320, 640, 1280};
  u.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  u.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  u.cross_attention_dim = 2048;
  u.num_attention_heads = {5, 10, 20};
  u.use_linear_projection = true;
  u.transformer_layers_per_block = {1, 2, 10};
  u.addition_embed_type = "text_time";
  u.addition_time_embed_dim = 256;
  u.projection_class_embeddings_input_dim = 2816;
  u.sample_size = 128;
  c.unet = u;
  VaeConfig v;
  v.scaling_factor = 0.13025f;
  v.sample_size = 1024;
  c.vae = v;
  return c;
}

ModelConfigs tiny_configs() {
  ModelConfigs c;
  ClipTextConfig l;
  l.hidden_size = 32;
  l.intermediate_size = 128;
  l.num_hidden_layers = 3;
  l.num_attention_heads = 4;
  c.text_encoder = l;
  ClipTextConfig g;
  g.hidden_size = 64;
  g.intermediate_size = 256;
  g.num_hidden_layers = 3;
  g.num_attention_heads = 4;
  g.hidden_act = "gelu";
  g.projection_dim = 48;
  c.text_encoder_2 = g;
  UNetConfig u;
  u.block_out_channels = {32, 64, 64};
  u.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  u.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  u.cross_attention_dim = 96;
  u.num_attention_heads = {2, 4, 4};
  u.use_linear_projection = true;
  u.transformer_layers_per_block = {1, 1, 2};
  u.addition_embed_type = "text_time";
  u.addition_time_embed_dim = 8;
  u.projection_class_embeddings_input_dim = 96;
  u.sample_size = 16;
  c.unet = u;
  VaeConfig v;
  v.block_out_channels = {32, 32, 64, 64};
  v.layers_per_block = 1;
  v.scaling_factor = 0.13025f;
  v.sample_size = 128;
  c.vae = v;
  return c;
}

}  // namespace hyrt::models::sdxl
