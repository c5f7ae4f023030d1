#!/usr/bin/env python3
"""Copy a diffusers model folder with every floating-point safetensors tensor stored as f16.

  python3 train/export_f16.py OUT/model models/shapes

The shipped models/shapes is train.py's f32 EMA folder made this way (29.5 MB -> 14.8 MB);
hyrt, diffusers and transformers read f16 weights. The text encoder's config.json gets
"dtype": "float16", as transformers writes for f16 weights. Needs torch and safetensors.
"""

import json
import os
import shutil
import sys

from safetensors.torch import load_file, save_file


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    src, dst = argv
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    for root, _, files in os.walk(dst):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".safetensors"):
                tensors = load_file(path)
                save_file({k: (v.half() if v.is_floating_point() else v).contiguous()
                           for k, v in tensors.items()}, path, metadata={"format": "pt"})
            elif name == "config.json":
                with open(path) as f:
                    config = json.load(f)
                if "dtype" in config or "torch_dtype" in config:
                    config.pop("torch_dtype", None)
                    config["dtype"] = "float16"
                    with open(path, "w") as f:
                        json.dump(config, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
