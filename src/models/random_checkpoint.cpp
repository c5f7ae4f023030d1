#include "models/random_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <unordered_map>

#include "core/error.h"
#include "models/sd15/random_weights.h"
#include "weights/safetensors.h"

namespace hyrt::models {
namespace fs = std::filesystem;
using weights::Component;

weights::LdmStructure ldm_structure(const UNetConfig& unet, const VaeConfig& vae) {
  weights::LdmStructure s;
  s.unet_layers_per_block = unet.layers_per_block;
  s.unet_up_attention.clear();
  for (const auto& t : unet.up_block_types)
    s.unet_up_attention.push_back(t == "CrossAttnUpBlock2D");
  s.vae_levels = static_cast<int>(vae.block_out_channels.size());
  return s;
}

uint64_t random_stream_seed(uint64_t seed, Component component) {
  switch (component) {
    case Component::kTextEncoder:
      return seed;
    case Component::kUNet:
      return seed + 1;
    case Component::kVae:
      return seed + 2;
    case Component::kTextEncoder2:
      return seed + 3;
  }
  fail(ErrorCode::kInvalidArgument, "random checkpoint: unknown component");
}

RawTensor position_ids_tensor(std::string key, int64_t positions) {
  HYRT_CHECK(positions > 0, kInvalidArgument, "random checkpoint: ", key,
             ": positions must be positive");
  RawTensor t{std::move(key), DType::kS64, {1, positions}, {}};
  std::vector<int64_t> ids(static_cast<size_t>(positions));
  std::iota(ids.begin(), ids.end(), int64_t{0});
  t.bytes.resize(ids.size() * sizeof(int64_t));
  std::memcpy(t.bytes.data(), ids.data(), t.bytes.size());
  return t;
}

namespace {

// A stacked key whose parts are still being generated.
struct PendingStack {
  std::vector<uint8_t> bytes;
  std::vector<bool> have;  // while declaring: parts listed
  int missing = 0;         // while declaring: parts not listed yet
  int received = 0;        // while writing: parts generated
};

void check_placement(const RandomTensorPlacement& p) {
  const Shape& c = p.canonical.shape;
  const Shape& s = p.stored_shape;
  if (p.part >= 0) {
    HYRT_CHECK(!p.transposed && p.parts > 0 && p.part < p.parts && c.rank() > 0 &&
                   s.rank() == c.rank() && s[0] == c[0] * p.parts &&
                   std::equal(s.begin() + 1, s.end(), c.begin() + 1),
               kInvalidArgument, "random checkpoint: ", p.key, ": part ", p.part, " of ", p.parts,
               " (", p.canonical.name, ") does not stack into the stored shape");
  } else if (p.transposed) {
    HYRT_CHECK(c.rank() == 2 && s == Shape({c[1], c[0]}), kInvalidArgument,
               "random checkpoint: ", p.key, ": ", p.canonical.name,
               " stored transposed needs rank 2 and the swapped shape");
  } else {
    HYRT_CHECK(s.numel() == c.numel(), kInvalidArgument, "random checkpoint: ", p.key,
               ": stored shape holds a different number of values than ", p.canonical.name);
  }
}

// out[j][i] = in[i][j] for an [rows, cols] tensor of `elem`-byte values.
void transpose2d(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, size_t elem) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      std::memcpy(out + (j * rows + i) * elem, in + (i * cols + j) * elem, elem);
}

}  // namespace

RandomCheckpointSummary write_random_checkpoint(const fs::path& out,
                                                const std::vector<RandomTensorPlacement>& tensors,
                                                const std::vector<RawTensor>& extra, uint64_t seed,
                                                DType dtype, std::string_view generator,
                                                const ProgressFn& progress) {
  HYRT_CHECK(dtype == DType::kF16 || dtype == DType::kF32 || dtype == DType::kBF16,
             kInvalidArgument, "random checkpoint: dtype must be f16, f32 or bf16, not ",
             dtype_name(dtype));

  RandomCheckpointSummary summary;
  auto count = [&](Component c) -> int64_t& {
    switch (c) {
      case Component::kTextEncoder:
        return summary.text_encoder_parameters;
      case Component::kTextEncoder2:
        return summary.text_encoder_2_parameters;
      case Component::kUNet:
        return summary.unet_parameters;
      case Component::kVae:
        return summary.vae_parameters;
    }
    fail(ErrorCode::kInvalidArgument, "random checkpoint: unknown component");
  };

  // Declare everything first: the header (and so every offset) is fixed before any data.
  std::vector<weights::TensorDecl> decls;
  std::unordered_map<std::string, PendingStack> stacks;
  for (const RandomTensorPlacement& p : tensors) {
    check_placement(p);
    count(p.component) += p.canonical.shape.numel();
    if (p.part >= 0) {
      auto [it, first] = stacks.try_emplace(p.key);
      PendingStack& st = it->second;
      if (first) {
        st.have.assign(static_cast<size_t>(p.parts), false);
        st.missing = p.parts;
        decls.push_back({p.key, dtype, p.stored_shape});
      }
      HYRT_CHECK(static_cast<int>(st.have.size()) == p.parts && !st.have[p.part], kInvalidArgument,
                 "random checkpoint: ", p.key, ": part ", p.part,
                 " listed twice or with a different part count");
      st.have[p.part] = true;
      --st.missing;
    } else {
      decls.push_back({p.key, dtype, p.stored_shape});
    }
  }
  for (const auto& [key, st] : stacks)
    HYRT_CHECK(st.missing == 0, kInvalidArgument, "random checkpoint: ", key, ": ", st.missing,
               " of its ", st.have.size(), " stacked parts are not listed");
  for (const RawTensor& r : extra) {
    HYRT_CHECK(r.bytes.size() == static_cast<size_t>(r.shape.numel()) * dtype_size(r.dtype),
               kInvalidArgument, "random checkpoint: ", r.key, ": byte count does not match");
    decls.push_back({r.key, r.dtype, r.shape});
  }

  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"random", "true"},
      {"seed", std::to_string(seed)},
      {"dtype", std::string(dtype_name(dtype))},
      {"generator", std::string(generator)},
  };

  uint64_t total = 0, largest = 0;
  for (const auto& d : decls) {
    const uint64_t b = static_cast<uint64_t>(d.shape.numel()) * dtype_size(d.dtype);
    total += b;
    largest = std::max(largest, b);
  }
  weights::SafetensorsWriter writer(out, decls, metadata);

  sd15::RandomWeightStream streams[weights::kNumComponents] = {
      sd15::RandomWeightStream(random_stream_seed(seed, Component::kTextEncoder)),
      sd15::RandomWeightStream(random_stream_seed(seed, Component::kUNet)),
      sd15::RandomWeightStream(random_stream_seed(seed, Component::kVae)),
      sd15::RandomWeightStream(random_stream_seed(seed, Component::kTextEncoder2))};
  const size_t elem = dtype_size(dtype);
  std::vector<uint8_t> bytes(static_cast<size_t>(largest));
  std::vector<uint8_t> transposed;
  for (const RandomTensorPlacement& p : tensors) {
    streams[static_cast<size_t>(p.component)].next(p.canonical, dtype, bytes.data());
    const uint8_t* data = bytes.data();
    if (p.transposed) {
      transposed.resize(static_cast<size_t>(p.canonical.shape.numel()) * elem);
      transpose2d(bytes.data(), transposed.data(), p.canonical.shape[0], p.canonical.shape[1],
                  elem);
      data = transposed.data();
    }
    if (p.part >= 0) {
      // Parts may come in any order (a component's list order decides): collect them.
      PendingStack& st = stacks.at(p.key);
      const size_t part_bytes = static_cast<size_t>(p.canonical.shape.numel()) * elem;
      if (st.bytes.empty()) st.bytes.resize(part_bytes * static_cast<size_t>(p.parts));
      std::memcpy(st.bytes.data() + part_bytes * static_cast<size_t>(p.part), data, part_bytes);
      if (++st.received < p.parts) continue;
      writer.write(p.key, st.bytes.data());
      stacks.erase(p.key);
    } else {
      writer.write(p.key, data);
    }
    if (progress) progress(writer.bytes_written(), total);
  }
  for (const RawTensor& r : extra) {
    writer.write(r.key, r.bytes.data());
    if (progress) progress(writer.bytes_written(), total);
  }
  writer.finish();

  summary.tensors = decls.size();
  summary.file_bytes = writer.file_size();
  return summary;
}

fs::path copy_tokenizer_beside(const fs::path& tokenizer_dir, const fs::path& checkpoint_file,
                               std::string_view folder) {
  for (const char* required : {"vocab.json", "merges.txt"}) {
    std::error_code ec;
    HYRT_CHECK(fs::is_regular_file(tokenizer_dir / required, ec), kNotFound,
               (tokenizer_dir / required).string(),
               ": no such file (a CLIP tokenizer folder "
               "holds vocab.json and merges.txt)");
  }
  fs::path parent = checkpoint_file.parent_path();
  if (parent.empty()) parent = ".";
  const fs::path dest = parent / folder;
  std::error_code ec;
  fs::create_directories(dest, ec);
  HYRT_CHECK(!ec, kIo, dest.string(), ": cannot create: ", ec.message());
  for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json"}) {
    const fs::path src = tokenizer_dir / name;
    if (!fs::is_regular_file(src, ec)) continue;  // only the optional config can be absent here
    // Sources are often read-only (a shared cache); copy_file keeps their permissions, so
    // replace rather than overwrite, and leave the copy writable by its owner.
    fs::remove(dest / name, ec);
    if (!ec) fs::copy_file(src, dest / name, ec);
    if (!ec) fs::permissions(dest / name, fs::perms::owner_write, fs::perm_options::add, ec);
    HYRT_CHECK(!ec, kIo, (dest / name).string(), ": cannot copy from ", src.string(), ": ",
               ec.message());
  }
  return dest;
}

}  // namespace hyrt::models
