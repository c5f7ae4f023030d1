// ResnetBlock2D and Upsample2D — mirror diffusers.models.resnet.
#include "models/blocks/blocks.h"

namespace hyrt::models {

ValueId resnet_block(GraphBuilder& b, ValueId x, ValueId temb_act, int groups, float eps) {
  ValueId h = b.conv2d(b.group_norm(x, "norm1", groups, eps, /*silu=*/true), "conv1");
  if (temb_act != ir::kNone) {
    // [B, Ct] -> [B, Cout] -> [B, 1, 1, Cout], broadcast over H and W.
    ValueId t = b.linear(temb_act, "time_emb_proj");
    const Shape ts = b.shape(t);
    t = b.reshape(t, {ts[0], 1, 1, ts[1]});
    h = b.add(h, t);
  }
  h = b.conv2d(b.group_norm(h, "norm2", groups, eps, /*silu=*/true), "conv2");
  const ValueId shortcut = b.has_weight("conv_shortcut.weight") ? b.conv2d(x, "conv_shortcut") : x;
  return b.add(shortcut, h);
}

ValueId upsample_conv(GraphBuilder& b, ValueId x, int64_t out_height, int64_t out_width) {
  return b.conv2d(b.op(ir::OpKind::kUpsampleNearest, {x}, ir::UpsampleAttrs{out_height, out_width}),
                  "conv");
}

}  // namespace hyrt::models
