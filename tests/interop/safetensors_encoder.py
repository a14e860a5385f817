"""Writes and reads pixel-encoder weights with the reference safetensors library and numpy, in
the layout a PyTorch user's `save_file(model.state_dict())` gives a stack of `torch.nn.Conv2d`
layers named `convs.<i>`, a `torch.nn.Linear` named `head` and a `torch.nn.LayerNorm` named
`head.norm`, with the encoder's metadata. numpy computes the forward pass the way PyTorch
defines it (channel-major images, zero padding, flatten in channel-major order). Used by
crates/reflex-policy/tests/encoder_interop.rs.

usage: python safetensors_encoder.py write OUT.safetensors IN.json  (IN: shape, images; prints features)
       python safetensors_encoder.py read  IN.safetensors  IN.json  (prints features of IN's encoder)
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def conv_relu(x, w, b, stride, pad):
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((o, ho, wo)) + b[:, None, None]
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
            out += np.einsum("oc,chw->ohw", w[:, :, ky, kx].astype(np.float64), patch)
    return np.maximum(out, 0.0)


def forward(t, meta, image):
    h, w, c = (int(v) for v in meta["input"].split("x"))
    strides = [int(v) for v in meta["strides"].split(",")]
    pads = [int(v) for v in meta["paddings"].split(",")]
    # Interleaved bytes (row, column, channel) to a channel-major image in [0, 1].
    x = np.array(image, dtype=np.float64).reshape(h, w, c).transpose(2, 0, 1) / 255.0
    for i, (s, p) in enumerate(zip(strides, pads)):
        x = conv_relu(x, t[f"convs.{i}.weight"], t[f"convs.{i}.bias"], s, p)
    z = t["head.weight"].astype(np.float64) @ x.reshape(-1) + t["head.bias"]
    z = (z - z.mean()) / np.sqrt(z.var() + 1e-5) * t["head.norm.weight"] + t["head.norm.bias"]
    return np.tanh(z)


def main():
    mode, path, spec_path = sys.argv[1:4]
    with open(spec_path) as f:
        spec = json.load(f)
    if mode == "write":
        s = spec["shape"]
        rng = np.random.default_rng(11)
        t = {}
        c = s["channels"]
        side = s["height"]
        for i, conv in enumerate(s["convs"]):
            o, k = conv["channels"], conv["kernel"]
            bound = 1.0 / np.sqrt(c * k * k)
            t[f"convs.{i}.weight"] = rng.uniform(-bound, bound, (o, c, k, k)).astype(np.float32)
            t[f"convs.{i}.bias"] = rng.uniform(-bound, bound, (o,)).astype(np.float32)
            side = (side + 2 * conv["padding"] - k) // conv["stride"] + 1
            c = o
        flat, f = c * side * side, s["features"]
        bound = 1.0 / np.sqrt(flat)
        t["head.weight"] = rng.uniform(-bound, bound, (f, flat)).astype(np.float32)
        t["head.bias"] = rng.uniform(-bound, bound, (f,)).astype(np.float32)
        t["head.norm.weight"] = rng.uniform(0.5, 1.5, (f,)).astype(np.float32)
        t["head.norm.bias"] = rng.uniform(-0.2, 0.2, (f,)).astype(np.float32)
        meta = {
            "format": "reflex-conv-encoder",
            "input": f'{s["height"]}x{s["width"]}x{s["channels"]}',
            "strides": ",".join(str(cv["stride"]) for cv in s["convs"]),
            "paddings": ",".join(str(cv["padding"]) for cv in s["convs"]),
        }
        save_file(t, path, metadata=meta)
    else:
        t = load_file(path)
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
    print(json.dumps({"features": [forward(t, meta, im).tolist() for im in spec["images"]]}))


if __name__ == "__main__":
    main()
