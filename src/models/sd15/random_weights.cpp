#include "models/sd15/random_weights.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/half.h"

namespace hyrt::models::sd15 {

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
}  // namespace

struct RandomWeightStream::State {
  std::mt19937_64 rng;
  // f32 staging for the conversion to the stored dtype, a chunk at a time: a full-size
  // tensor's worth (152 MB for SD 1.5's token embedding) would double a writer's peak.
  std::vector<float> chunk = std::vector<float>(size_t{1} << 16);
};

RandomWeightStream::RandomWeightStream(uint64_t seed) : state_(std::make_unique<State>()) {
  state_->rng.seed(seed);
}

RandomWeightStream::~RandomWeightStream() = default;

void RandomWeightStream::next(const ExpectedTensor& e, DType dtype, void* out) {
  const bool is_norm = e.name.find("norm") != std::string::npos;
  const bool is_embedding = e.name.find("embedding.weight") != std::string::npos &&
                            e.name.find("time_embedding") == std::string::npos;
  float lo = -1, hi = 1, offset = 0;
  if (is_norm && ends_with(e.name, ".weight")) {
    lo = -0.1f, hi = 0.1f, offset = 1.0f;
  } else if (ends_with(e.name, ".bias")) {
    lo = -0.02f, hi = 0.02f;
  } else if (is_embedding) {
    lo = -0.03f, hi = 0.03f;
  } else {
    const int64_t fan_in = e.shape.rank() >= 2 ? e.shape.numel(1, e.shape.rank()) : 1;
    hi = 1.0f / std::sqrt(static_cast<float>(fan_in));
    lo = -hi;
  }
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float>& chunk = state_->chunk;
  const size_t n = static_cast<size_t>(e.shape.numel());
  auto* dst = static_cast<uint8_t*>(out);
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(chunk.size(), n - done);
    for (size_t i = 0; i < m; ++i)
      chunk[i] = offset + dist(state_->rng);
    convert_from_f32(chunk.data(), dtype, dst + done * dtype_size(dtype), m);
    done += m;
  }
}

void add_random_weights(const std::vector<ExpectedTensor>& expected, uint64_t seed, DType dtype,
                        weights::MemoryWeights& out) {
  RandomWeightStream stream(seed);
  for (const ExpectedTensor& e : expected) {
    Tensor t(dtype, e.shape);
    stream.next(e, dtype, t.data());
    out.add(e.name, std::move(t));
  }
}

ClipTextConfig tiny_clip_text_config() {
  ClipTextConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  return c;
}

UNetConfig tiny_unet_config() {
  UNetConfig c;
  c.block_out_channels = {32, 64, 64, 64};
  c.cross_attention_dim = 64;
  c.sample_size = 16;
  return c;
}

VaeConfig tiny_vae_config() {
  VaeConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = 1;
  c.sample_size = 32;
  return c;
}

}  // namespace hyrt::models::sd15
