#!/usr/bin/env python3
"""Writes a random-weight Mamba / Mamba-2 checkpoint (HF layout: config.json +
model.safetensors) with the shapes of a real model, for benchmarks and long-context runs.
Needs only numpy. Weights are scaled so activations stay O(1) and step sizes vary.

    python3 tools/make_random_model.py --shape mamba2-130m --out /tmp/m2 [--layers 24] [--dtype bf16]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

SHAPES = {
    "mamba-130m": dict(model_type="mamba", hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16,
                       expand=2, conv_kernel=4, time_step_rank=48),
    "mamba2-130m": dict(model_type="mamba2", hidden_size=768, num_hidden_layers=24, vocab_size=50288, state_size=128,
                        expand=2, conv_kernel=4, num_heads=24, head_dim=64, n_groups=1),
    "mamba-1.4b": dict(model_type="mamba", hidden_size=2048, num_hidden_layers=48, vocab_size=50280, state_size=16,
                       expand=2, conv_kernel=4, time_step_rank=128),
    "mamba2-1.3b": dict(model_type="mamba2", hidden_size=2048, num_hidden_layers=48, vocab_size=50288, state_size=128,
                        expand=2, conv_kernel=4, num_heads=64, head_dim=64, n_groups=1),
}


def to_bytes(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes()
    bits = a.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return rounded.tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = to_bytes(a, dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, help="override the number of layers")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = dict(SHAPES[args.shape])
    if args.layers:
        cfg["num_hidden_layers"] = args.layers
    cfg.update(use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
               hidden_act="silu", residual_in_fp32=True)
    rng = np.random.default_rng(args.seed)
    d, L, V, N, K = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["state_size"], cfg["conv_kernel"]
    D = cfg["expand"] * d
    randn = lambda *s, scale=1.0: (rng.standard_normal(s, dtype=np.float32) * scale)
    t = {"backbone.embeddings.weight": randn(V, d), "backbone.norm_f.weight": 1 + randn(d, scale=0.1)}
    for l in range(L):
        p = f"backbone.layers.{l}."
        q = p + "mixer."
        t[p + "norm.weight"] = 1 + randn(d, scale=0.1)
        t[q + "out_proj.weight"] = randn(d, D, scale=D ** -0.5)
        if cfg["model_type"] == "mamba":
            R = cfg["time_step_rank"]
            t[q + "in_proj.weight"] = randn(2 * D, d, scale=d ** -0.5)
            t[q + "conv1d.weight"] = randn(D, 1, K, scale=0.5)
            t[q + "conv1d.bias"] = randn(D, scale=0.1)
            t[q + "x_proj.weight"] = randn(R + 2 * N, D, scale=D ** -0.5)
            t[q + "dt_proj.weight"] = randn(D, R, scale=R ** -0.5)
            t[q + "dt_proj.bias"] = -3 + randn(D, scale=0.5)
            t[q + "A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1)))
            t[q + "D"] = 1 + randn(D, scale=0.5)
        else:
            H, G = cfg["num_heads"], cfg["n_groups"]
            conv = D + 2 * G * N
            t[q + "in_proj.weight"] = randn(2 * D + 2 * G * N + H, d, scale=d ** -0.5)
            t[q + "conv1d.weight"] = randn(conv, 1, K, scale=0.5)
            t[q + "conv1d.bias"] = randn(conv, scale=0.1)
            t[q + "dt_bias"] = -3 + randn(H, scale=0.5)
            t[q + "A_log"] = np.log(rng.uniform(1, 16, H).astype(np.float32))
            t[q + "D"] = 1 + randn(H, scale=0.5)
            t[q + "norm.weight"] = 1 + randn(D, scale=0.1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_safetensors(os.path.join(args.out, "model.safetensors"), t, "F32" if args.dtype == "f32" else "BF16")
    print(f"wrote {args.out}: {args.shape}, {L} layers, {sum(a.size for a in t.values()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    sys.exit(main())
