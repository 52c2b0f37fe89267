#!/usr/bin/env python3
"""Build the tiny random-weight test models under tests/data/ and their goldens.

Each fixture is a small Mamba-1 / Mamba-2 model built with Hugging Face
transformers, with weights randomised so that nothing is trivially structured
(Delta varies over positions and channels, A spans short and long memory,
outputs are O(1)). For every fixture we write

    tests/data/<name>/config.json, model.safetensors (or shards + index)
    tests/data/<name>/tokens.txt           300 token ids, whitespace separated
    tests/data/<name>/golden.safetensors   HF outputs (see below)

golden.safetensors holds, for T in {1, 7, 64, 300}: tokens_T{T} (int64 [T]),
logits_T{T} (float32 [T, V]) and hidden_T{T}_L{l} (float32 [T, d], the
residual stream after layer l, before the final norm). Each T is a separate
forward pass on the first T tokens, batch 1, use_cache=False, CPU, float32,
the pure-torch code path.

Low-precision fixtures store float16 / bfloat16 weights; their golden comes
from running HF in float32 on those stored weights upcast back to float32.

Usage (from the repository root):
    python3 tools/make_golden.py [--out tests/data] [--only name1,name2]
Needs torch, transformers, safetensors, numpy.
"""

import argparse
import inspect
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

TS = (1, 7, 64, 300)
SEQ_LEN = 300

# name -> description. "kind": hf | mamba_ssm. "identity": conv activation is the identity.
FIXTURES = {
    "mamba1_f32": dict(
        family=1, seed=101, dtype="float32",
        cfg=dict(hidden_size=32, num_hidden_layers=3, vocab_size=128, state_size=16, expand=2,
                 conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
                 tie_word_embeddings=True),
    ),
    "mamba1_bias_f16": dict(
        family=1, seed=102, dtype="float16",
        cfg=dict(hidden_size=48, num_hidden_layers=2, vocab_size=96, state_size=8, expand=2,
                 conv_kernel=3, use_bias=True, use_conv_bias=True, time_step_rank="auto",
                 tie_word_embeddings=False),
    ),
    "mamba1_ssm_padded": dict(
        family=1, seed=103, dtype="float32", kind="mamba_ssm",
        # HF model with the padded vocab (112 rows); written out with mamba_ssm names/config.
        vocab_unpadded=100, pad_multiple=16,
        cfg=dict(hidden_size=40, num_hidden_layers=2, vocab_size=112, state_size=16, expand=2,
                 conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
                 tie_word_embeddings=True),
    ),
    "mamba1_identity_f32": dict(
        family=1, seed=104, dtype="float32", identity=True,
        cfg=dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=8, expand=2,
                 conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
                 tie_word_embeddings=True),
    ),
    "mamba2_f32": dict(
        family=2, seed=201, dtype="float32",
        cfg=dict(hidden_size=32, num_hidden_layers=3, vocab_size=128, expand=2, head_dim=16,
                 num_heads=4, state_size=16, conv_kernel=4, n_groups=1, use_bias=False,
                 use_conv_bias=True, time_step_limit=(0.01, 1.0), tie_word_embeddings=True),
    ),
    "mamba2_bf16_sharded": dict(
        family=2, seed=202, dtype="bfloat16", max_shard_size="40KB",
        # default (0, inf) limit, rewritten as a bare `Infinity` (Python json / transformers 4.x
        # spelling); the other default-limit fixtures keep transformers 5's {"__float__": "Infinity"}.
        bare_infinity=True,
        cfg=dict(hidden_size=48, num_hidden_layers=2, vocab_size=100, expand=2, head_dim=24,
                 num_heads=4, state_size=8, conv_kernel=4, n_groups=1, use_bias=False,
                 use_conv_bias=True, tie_word_embeddings=False),
    ),
    "mamba2_g2_f32": dict(
        family=2, seed=203, dtype="float32",
        cfg=dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, expand=2, head_dim=16,
                 num_heads=4, state_size=16, conv_kernel=4, n_groups=2, use_bias=False,
                 use_conv_bias=True, tie_word_embeddings=True),
    ),
    "mamba2_identity_f32": dict(
        family=2, seed=204, dtype="float32", identity=True,
        cfg=dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, expand=2, head_dim=16,
                 num_heads=4, state_size=8, conv_kernel=4, n_groups=1, use_bias=False,
                 use_conv_bias=True, tie_word_embeddings=True),
    ),
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def inv_softplus(y):
    return y + torch.log(-torch.expm1(-y))


def randomise(model, family, gen):
    """Overwrite every parameter with seeded random values at sensible scales."""

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    def loguniform(lo, hi, *shape):
        return torch.exp(unif(math.log(lo), math.log(hi), *shape))

    bb = model.backbone
    cfg = model.config
    d = cfg.hidden_size
    with torch.no_grad():
        bb.embeddings.weight.copy_(randn(*bb.embeddings.weight.shape))
        bb.norm_f.weight.copy_(unif(0.6, 1.4, d))
        if not cfg.tie_word_embeddings:
            model.lm_head.weight.copy_(randn(*model.lm_head.weight.shape) * d ** -0.5)
        for layer in bb.layers:
            mx = layer.mixer
            layer.norm.weight.copy_(unif(0.6, 1.4, d))
            D = mx.intermediate_size
            mx.in_proj.weight.copy_(randn(*mx.in_proj.weight.shape) * d ** -0.5)
            if mx.in_proj.bias is not None:
                mx.in_proj.bias.copy_(randn(*mx.in_proj.bias.shape) * 0.1)
            mx.conv1d.weight.copy_(randn(*mx.conv1d.weight.shape) * 0.6)
            if mx.conv1d.bias is not None:
                mx.conv1d.bias.copy_(randn(*mx.conv1d.bias.shape) * 0.3)
            mx.out_proj.weight.copy_(randn(*mx.out_proj.weight.shape) * D ** -0.5 * 0.8)
            if mx.out_proj.bias is not None:
                mx.out_proj.bias.copy_(randn(*mx.out_proj.bias.shape) * 0.1)
            mx.D.copy_(unif(-0.5, 1.5, *mx.D.shape))
            if family == 1:
                R = mx.time_step_rank
                mx.x_proj.weight.copy_(randn(*mx.x_proj.weight.shape) * D ** -0.5)
                mx.dt_proj.weight.copy_(randn(*mx.dt_proj.weight.shape) * R ** -0.5)
                mx.dt_proj.bias.copy_(inv_softplus(loguniform(0.02, 0.5, D)))
                mx.A_log.copy_(torch.log(unif(0.1, 3.0, *mx.A_log.shape)))
            else:
                H = mx.num_heads
                mx.dt_bias.copy_(inv_softplus(loguniform(0.02, 1.0, H)))
                mx.A_log.copy_(torch.log(unif(0.1, 2.0, H)))
                mx.norm.weight.copy_(unif(0.6, 1.4, D))


def set_identity_conv(model):
    """Make the post-conv activation the identity in HF's torch path (gate stays SiLU)."""
    from transformers.activations import ACT2FN
    for layer in model.backbone.layers:
        layer.mixer.activation = "linear"
        layer.mixer.act = ACT2FN["linear"]


def hf_golden(model, tokens, vocab_keep):
    """Run HF once per T; return {name: tensor}."""
    model.eval()
    caps = {}
    hooks = []
    for li, layer in enumerate(model.backbone.layers):
        def hook(mod, inp, out, li=li):
            caps[li] = (out[0] if isinstance(out, (tuple, list)) else out).detach()
        hooks.append(layer.register_forward_hook(hook))
    g = {}
    try:
        for T in TS:
            ids = torch.tensor(tokens[:T], dtype=torch.long)[None]
            caps.clear()
            with torch.no_grad():
                out = model(input_ids=ids, use_cache=False)
            g[f"tokens_T{T}"] = ids[0].clone()
            g[f"logits_T{T}"] = out.logits[0, :, :vocab_keep].float().contiguous()
            for li in range(len(model.backbone.layers)):
                g[f"hidden_T{T}_L{li}"] = caps[li][0].float().contiguous()
    finally:
        for h in hooks:
            h.remove()
    return g


def delta_stats(model, tokens):
    """Fraction of Mamba-2 Delta values clamped at each end of time_step_limit (for the log)."""
    stats = []
    caps = {}

    def hook(mod, inp, out):
        caps["u"] = inp[0].detach()

    for layer in model.backbone.layers:
        mx = layer.mixer
        h = mx.register_forward_hook(hook)
        with torch.no_grad():
            model(input_ids=torch.tensor(tokens)[None], use_cache=False)
        h.remove()
        with torch.no_grad():
            p = mx.in_proj(caps["u"])
            dt = torch.nn.functional.softplus(p[..., -mx.num_heads:] + mx.dt_bias)
        lo, hi = mx.time_step_limit
        stats.append((float((dt < lo).float().mean()), float((dt > hi).float().mean()),
                      float(dt.min()), float(dt.max())))
    return stats


def save_hf(model, out_dir, dtype, max_shard_size=None):
    kw = {}
    params = inspect.signature(model.save_pretrained).parameters
    if "safe_serialization" in params:
        kw["safe_serialization"] = True
    if max_shard_size:
        kw["max_shard_size"] = max_shard_size
    model.to(DTYPES[dtype]).save_pretrained(out_dir, **kw)
    model.float()


def patch_config(out_dir, extra):
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(extra)
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build(name, spec, out_root):
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    family = spec["family"]
    torch.manual_seed(spec["seed"])
    if family == 1:
        cfg = MambaConfig(**spec["cfg"], use_cache=False)
        cls = MambaForCausalLM
    else:
        cfg = Mamba2Config(**spec["cfg"], use_cache=False)
        cls = Mamba2ForCausalLM
    model = cls(cfg).float().eval()
    randomise(model, family, torch.Generator().manual_seed(spec["seed"]))

    kind = spec.get("kind", "hf")
    vocab_real = spec.get("vocab_unpadded", cfg.vocab_size)
    rng = np.random.default_rng(spec["seed"] + 7)
    tokens = [int(t) for t in rng.integers(0, vocab_real, size=SEQ_LEN)]

    if spec.get("identity"):
        set_identity_conv(model)

    if kind == "hf":
        # Round the weights through the storage dtype first, so the golden is an
        # fp32 computation on exactly the stored values.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(DTYPES[spec["dtype"]]).float())
        save_hf(model, out_dir, spec["dtype"], spec.get("max_shard_size"))
        extra = {}
        if spec.get("identity"):
            extra["conv_activation"] = "identity"
        if spec.get("bare_infinity"):
            extra["time_step_limit"] = [float(x) for x in cfg.time_step_limit]
        if extra:
            patch_config(out_dir, extra)
        # Golden from the model as re-loaded from disk (upcast to fp32).
        reloaded = cls.from_pretrained(out_dir, dtype=torch.float32).eval()
        if spec.get("identity"):
            set_identity_conv(reloaded)
        sd0, sd1 = model.state_dict(), reloaded.state_dict()
        for k in sd0:
            if not torch.equal(sd0[k], sd1[k]):
                raise RuntimeError(f"{name}: reloaded tensor {k} differs from the saved one")
        golden = hf_golden(reloaded, tokens, vocab_real)
        if family == 2 and tuple(cfg.time_step_limit) != (0.0, float("inf")):
            for li, (flo, fhi, mn, mx) in enumerate(delta_stats(reloaded, tokens)):
                print(f"  {name} layer {li}: Delta in [{mn:.4f}, {mx:.4f}], "
                      f"{100 * flo:.1f}% below / {100 * fhi:.1f}% above time_step_limit")
    else:
        golden = hf_golden(model, tokens, vocab_real)
        write_mamba_ssm(model, out_dir, spec)

    save_file(golden, os.path.join(out_dir, "golden.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "tokens.txt"), "w") as f:
        f.write(" ".join(str(t) for t in tokens) + "\n")
    if spec.get("identity"):
        # Sanity: the identity patch really changes HF's output.
        plain = cls.from_pretrained(out_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            lp = plain(input_ids=torch.tensor(tokens[:64])[None], use_cache=False).logits[0]
        diff = float((lp[:, :vocab_real] - golden["logits_T64"]).abs().max())
        if diff < 1e-3:
            raise RuntimeError(f"{name}: identity conv patch had no effect")
    print(f"wrote {out_dir}")


def write_mamba_ssm(model, out_dir, spec):
    """Write a mamba_ssm-style checkpoint (MambaLMHeadModel names and config)."""
    cfg = model.config
    sd = {}
    for k, v in model.state_dict().items():
        if k == "backbone.embeddings.weight":
            k = "backbone.embedding.weight"
        sd[k] = v.detach().to(DTYPES[spec["dtype"]]).clone().contiguous()
    # mamba_ssm state dicts carry lm_head.weight even when tied; store it as its own copy.
    sd["lm_head.weight"] = sd["backbone.embedding.weight"].clone()
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    mcfg = {
        "d_model": cfg.hidden_size,
        "d_intermediate": 0,
        "n_layer": cfg.num_hidden_layers,
        "vocab_size": spec["vocab_unpadded"],
        "ssm_cfg": {},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": spec["pad_multiple"],
        "tie_embeddings": True,
    }
    padded = math.ceil(spec["vocab_unpadded"] / spec["pad_multiple"]) * spec["pad_multiple"]
    assert padded == cfg.vocab_size, (padded, cfg.vocab_size)
    # mamba_ssm Mamba defaults: d_state 16, d_conv 4, expand 2, dt_rank auto, conv_bias, no bias
    assert (cfg.state_size, cfg.conv_kernel, cfg.expand, cfg.use_bias, cfg.use_conv_bias) == (16, 4, 2, False, True)
    assert abs(cfg.layer_norm_epsilon - 1e-5) < 1e-12
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(mcfg, indent=2) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data"))
    ap.add_argument("--only", default="", help="comma list of fixture names")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(FIXTURES)
    for n in names:
        if n not in FIXTURES:
            sys.exit(f"make_golden: error: unknown fixture {n!r}")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    os.makedirs(args.out, exist_ok=True)
    for n in names:
        build(n, FIXTURES[n], os.path.normpath(args.out))


if __name__ == "__main__":
    main()
