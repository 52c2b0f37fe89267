#!/usr/bin/env python3
"""Convert a mamba_ssm checkpoint (pytorch_model.bin + config.json) to model.safetensors.

Tensor names and config.json are kept as they are (mamba_ssm naming:
backbone.embedding.weight, backbone.layers.N.mixer.*, backbone.layers.N.norm.weight,
backbone.norm_f.weight, lm_head.weight).

Tied weights: mamba_ssm's MambaLMHeadModel ties lm_head.weight to the embedding,
so its state dict holds the same storage under both names. safetensors cannot
store shared storage. If config.json says tie_embeddings (mamba_ssm's default is
true) and lm_head.weight equals the embedding, lm_head.weight is dropped (readers
then use the embedding). Otherwise every tensor that shares storage with another
is written as its own copy.

Usage:
    python3 tools/convert_checkpoint.py --in DIR [--out DIR] [--dtype keep|float32|bfloat16|float16] [--force]
Needs torch and safetensors.
"""

import argparse
import json
import os
import shutil
import sys


def fail(msg):
    print(f"convert_checkpoint: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description="mamba_ssm pytorch_model.bin -> model.safetensors")
    ap.add_argument("--in", dest="inp", required=True, help="directory with pytorch_model.bin and config.json")
    ap.add_argument("--out", default=None, help="output directory (default: same as --in)")
    ap.add_argument("--dtype", default="keep", choices=["keep", "float32", "bfloat16", "float16"],
                    help="cast floating-point tensors (default keep)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing model.safetensors")
    args = ap.parse_args()

    try:
        import torch
        from safetensors.torch import save_file
    except ImportError as e:
        fail(f"needs torch and safetensors ({e})")

    src_bin = os.path.join(args.inp, "pytorch_model.bin")
    src_cfg = os.path.join(args.inp, "config.json")
    if not os.path.isdir(args.inp):
        fail(f"input directory not found: {args.inp}")
    if not os.path.isfile(src_bin):
        fail(f"no pytorch_model.bin in {args.inp}")
    if not os.path.isfile(src_cfg):
        fail(f"no config.json in {args.inp}")
    out_dir = args.out or args.inp
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, "model.safetensors")
    if os.path.exists(dst) and not args.force:
        fail(f"{dst} exists (use --force to overwrite)")

    try:
        with open(src_cfg) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read config.json: {e}")
    if not isinstance(cfg, dict):
        fail("config.json is not a JSON object")

    try:
        try:
            sd = torch.load(src_bin, map_location="cpu", weights_only=True)
        except TypeError:  # torch without weights_only
            sd = torch.load(src_bin, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report any load failure on one line
        fail(f"cannot load pytorch_model.bin: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        fail("pytorch_model.bin does not hold a state dict of tensors")
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        fail(f"non-tensor entries in state dict: {bad[:3]}")

    emb_name = next((n for n in ("backbone.embedding.weight", "backbone.embeddings.weight") if n in sd), None)
    tied = bool(cfg.get("tie_embeddings", cfg.get("tie_word_embeddings", True)))
    dropped = []
    if tied and emb_name and "lm_head.weight" in sd:
        lm, emb = sd["lm_head.weight"], sd[emb_name]
        if lm.shape == emb.shape and (lm.data_ptr() == emb.data_ptr() or torch.equal(lm, emb)):
            del sd["lm_head.weight"]
            dropped.append("lm_head.weight")
        else:
            print("convert_checkpoint: note: tie_embeddings is set but lm_head.weight differs from the "
                  "embedding; keeping it", file=sys.stderr)

    target = {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    out = {}
    for name, t in sd.items():
        if target is not None and t.is_floating_point():
            t = t.to(target)
        # clone breaks any storage sharing (ties, views) so safetensors accepts it
        out[name] = t.detach().clone().contiguous()

    try:
        save_file(out, dst, metadata={"format": "pt"})
    except Exception as e:  # noqa: BLE001
        fail(f"cannot write {dst}: {type(e).__name__}: {e}")
    if os.path.abspath(out_dir) != os.path.abspath(args.inp):
        shutil.copyfile(src_cfg, os.path.join(out_dir, "config.json"))
    msg = f"wrote {dst}: {len(out)} tensors"
    if dropped:
        msg += f" (dropped tied {', '.join(dropped)})"
    print(msg)


if __name__ == "__main__":
    main()
