"""Writes and reads MLP weights with the reference safetensors library and numpy, the way a
PyTorch user's `safetensors.torch.save_file(model.state_dict())` lays them out for
`torch.nn.Linear` layers named `layers.<i>`. Used by crates/reflex-runtime/tests/mlp_interop.rs.

usage: python safetensors_mlp.py write OUT.safetensors IN.json   (IN: dims, inputs; prints outputs)
       python safetensors_mlp.py read  IN.safetensors  IN.json   (prints outputs of IN's network)
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def forward(tensors, x, n, hidden="relu", output="identity"):
    for i in range(n):
        x = tensors[f"layers.{i}.weight"].astype(np.float64) @ x + tensors[f"layers.{i}.bias"]
        act = output if i == n - 1 else hidden
        if act == "relu":
            x = np.maximum(x, 0.0)
        elif act == "tanh":
            x = np.tanh(x)
    return x


def main():
    mode, path, spec_path = sys.argv[1:4]
    with open(spec_path) as f:
        spec = json.load(f)
    inputs = [np.array(x, dtype=np.float64) for x in spec["inputs"]]
    if mode == "write":
        dims = spec["dims"]
        rng = np.random.default_rng(7)
        tensors = {}
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1.0 / np.sqrt(a)
            tensors[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (b, a)).astype(np.float32)
            tensors[f"layers.{i}.bias"] = rng.uniform(-bound, bound, (b,)).astype(np.float32)
        save_file(tensors, path, metadata={"hidden_activation": "relu", "output_activation": "tanh"})
        outputs = [forward(tensors, x, len(dims) - 1, output="tanh").tolist() for x in inputs]
    else:
        tensors = load_file(path)
        n = len(tensors) // 2
        outputs = [forward(tensors, x, n).tolist() for x in inputs]
    json.dump({"outputs": outputs}, sys.stdout)


if __name__ == "__main__":
    main()
