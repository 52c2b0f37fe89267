#!/usr/bin/env python3
"""Plain numpy reference implementation of LaTIM for Mamba-1 / Mamba-2.

Written from the method spec (docs: latim-method.md, sections 1-4); independent
of the C++ runtime. Everything is computed in float64. Slow but readable: the
point is to be obviously correct, not fast.

Command line:

    latim_ref.py --model DIR --tokens FILE --out OUT.h5 \
        [--scores l2,l1,alti,alti-rollout,hidden-attn] [--layers 0,2-3]
    latim_ref.py --selftest tests/data

Python:

    from latim_ref import load_model, forward, latim_scores
    m = load_model("tests/data/mamba1_f32")
    fw = forward(m, tokens)          # logits + per-layer intermediates
    res = latim_scores(m, fw, layers=[0, 1], scores=["l2", "alti"])

Dependencies: numpy; h5py only for writing the output file.
"""

import argparse
import glob
import json
import math
import os
import struct
import sys

import numpy as np

SCORE_NAMES = ("l2", "l1", "alti", "alti-rollout", "hidden-attn")


# --------------------------------------------------------------------------
# safetensors reading (own parser: header length, JSON header, raw data)
# --------------------------------------------------------------------------

_ST_NUMPY = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def read_safetensors(path, upcast=True):
    """Return {name: ndarray}. Floating tensors become float64 if upcast."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + hlen)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        buf = raw[a:b]
        if dt == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt in _ST_NUMPY:
            arr = np.frombuffer(buf, dtype=_ST_NUMPY[dt])
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        arr = arr.reshape(shape)
        if upcast and arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
        else:
            arr = np.array(arr)
        out[name] = arr
    return out


def read_checkpoint_tensors(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(os.path.join(model_dir, shard)))
        missing = set(weight_map) - set(tensors)
        if missing:
            raise ValueError(f"{model_dir}: index lists tensors missing from shards: {sorted(missing)[:5]}")
        return tensors
    if os.path.exists(os.path.join(model_dir, "pytorch_model.bin")):
        raise ValueError(f"{model_dir}: only pytorch_model.bin found; convert it with tools/convert_checkpoint.py")
    raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


# --------------------------------------------------------------------------
# model loading
# --------------------------------------------------------------------------

def _act_name(name):
    if name is None:
        return "silu"
    n = str(name).lower()
    if n in ("silu", "swish"):
        return "silu"
    if n in ("identity", "linear", "none", "id"):
        return "identity"
    raise ValueError(f"unsupported conv activation {name!r} (silu or identity)")


def _get_layer_tensor(t, i, name, required=True):
    for prefix in (f"backbone.layers.{i}.", f"model.layers.{i}.", f"layers.{i}."):
        if prefix + name in t:
            return t[prefix + name]
    if required:
        raise ValueError(f"missing tensor layers.{i}.{name}")
    return None


def _get_any(t, names, required=True):
    for n in names:
        if n in t:
            return t[n]
    if required:
        raise ValueError(f"missing tensor (tried {names})")
    return None


def _decode_special_floats(obj):
    """transformers >= 5 writes inf/nan in config.json as {"__float__": "Infinity"};
    older writers (Python's json, transformers 4.x, mamba_ssm) write a bare Infinity."""
    if isinstance(obj, dict):
        if set(obj) == {"__float__"} and isinstance(obj["__float__"], str):
            return float(obj["__float__"].lower().replace("infinity", "inf"))
        return {k: _decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_special_floats(v) for v in obj]
    return obj


def load_model(model_dir, config=None):
    """Read config.json (Hugging Face or mamba_ssm style) and weights.

    config: optional dict used instead of the directory's config.json.
    Returns a dict with the architecture description and float64 weights.
    """
    if config is None:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
    cfg = _decode_special_floats(config)
    t = read_checkpoint_tensors(model_dir)

    ssm_style = "d_model" in cfg and "n_layer" in cfg
    ssm_cfg = cfg.get("ssm_cfg") or {}
    if ssm_style:
        layer_kind = ssm_cfg.get("layer", "Mamba1")
        family = 2 if layer_kind == "Mamba2" else 1
        if cfg.get("d_intermediate", 0):
            raise ValueError("mamba_ssm d_intermediate > 0 (MLP blocks) is not supported")
        if cfg.get("attn_layer_idx"):
            raise ValueError("mamba_ssm attention layers are not supported")
        if not cfg.get("rms_norm", True):
            raise ValueError("rms_norm=false (LayerNorm) is not supported")
        n_layer = cfg["n_layer"]
        vocab = cfg["vocab_size"]
        eps = cfg.get("norm_epsilon", 1e-5)
        act = _act_name(cfg.get("conv_activation", ssm_cfg.get("activation", "silu")))
        tied = cfg.get("tie_embeddings", True)
    else:
        mt = cfg.get("model_type", "")
        if mt == "mamba2":
            family = 2
        elif mt == "mamba":
            family = 1
        else:
            family = 2 if any(k.endswith("mixer.dt_bias") for k in t) else 1
        n_layer = cfg["num_hidden_layers"]
        vocab = cfg["vocab_size"]
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        act = _act_name(cfg.get("conv_activation", ssm_cfg.get("activation", cfg.get("hidden_act", "silu"))))
        tied = cfg.get("tie_word_embeddings", True)

    emb = _get_any(t, ["backbone.embeddings.weight", "backbone.embedding.weight",
                       "model.embeddings.weight", "embeddings.weight"])
    norm_f = _get_any(t, ["backbone.norm_f.weight", "model.norm_f.weight", "norm_f.weight"])
    lm_head = t.get("lm_head.weight")
    if lm_head is None:
        lm_head = emb
    m = {
        "dir": model_dir, "config": cfg, "family": family, "n_layer": n_layer,
        "vocab_size": vocab, "eps": eps, "act": act, "emb": emb, "norm_f": norm_f,
        "lm_head": lm_head, "has_lm_head": "lm_head.weight" in t, "tied_in_config": tied,
        "d_model": emb.shape[1], "layers": [],
    }

    for i in range(n_layer):
        g = lambda name, req=True: _get_layer_tensor(t, i, name, req)  # noqa: E731
        L = {
            "norm": g("norm.weight"),
            "in_w": g("mixer.in_proj.weight"), "in_b": g("mixer.in_proj.bias", False),
            "conv_w": g("mixer.conv1d.weight"), "conv_b": g("mixer.conv1d.bias", False),
            "out_w": g("mixer.out_proj.weight"), "out_b": g("mixer.out_proj.bias", False),
            "A_log": g("mixer.A_log"), "D": g("mixer.D"),
        }
        if L["conv_w"].ndim == 3:
            L["conv_w"] = L["conv_w"][:, 0, :]
        if family == 1:
            L["x_w"] = g("mixer.x_proj.weight")
            L["dt_w"] = g("mixer.dt_proj.weight")
            L["dt_b"] = g("mixer.dt_proj.bias")
        else:
            L["dt_bias"] = g("mixer.dt_bias")
            L["gn_w"] = g("mixer.norm.weight", False)
        m["layers"].append(L)

    L0 = m["layers"][0]
    d = m["d_model"]
    m["K"] = L0["conv_w"].shape[1]
    if family == 1:
        D = L0["in_w"].shape[0] // 2
        N = L0["A_log"].shape[1]
        R = L0["x_w"].shape[0] - 2 * N
        if ssm_style:
            dt_rank = ssm_cfg.get("dt_rank", "auto")
        else:
            dt_rank = cfg.get("time_step_rank", "auto")
        if dt_rank == "auto":
            dt_rank = math.ceil(d / 16)
        if int(dt_rank) != R:
            raise ValueError(f"time_step_rank {dt_rank} in config but x_proj implies {R}")
        m.update(D=D, N=N, R=R)
    else:
        if ssm_style:
            N = ssm_cfg.get("d_state", 128)
            G = ssm_cfg.get("ngroups", 1)
            P = ssm_cfg.get("headdim", 64)
            lim = ssm_cfg.get("dt_limit", (0.0, float("inf")))
            nbg = ssm_cfg.get("norm_before_gate", False)
            use_gn = ssm_cfg.get("rmsnorm", True)
            gn_eps = 1e-5  # mamba_ssm's Mamba2 RMSNormGated default
        else:
            N = cfg["state_size"]
            G = cfg.get("n_groups", 1)
            P = cfg["head_dim"]
            lim = cfg.get("time_step_limit", (0.0, float("inf")))
            nbg = cfg.get("norm_before_gate", False)
            use_gn = True
            gn_eps = eps
        H = L0["A_log"].shape[0]
        conv_dim = L0["conv_w"].shape[0]
        D = conv_dim - 2 * G * N
        extra = L0["in_w"].shape[0] - (2 * D + 2 * G * N + H)
        if extra != 0:
            raise ValueError("Mamba-2 in_proj with extra gated-MLP slices (d_ssm < d_inner) is not supported")
        if D != H * P:
            raise ValueError(f"Mamba-2 shapes: D={D} but heads {H} x head_dim {P}")
        if H % G or D % G:
            raise ValueError("heads and channels must divide by n_groups")
        if use_gn and L0["gn_w"] is None:
            raise ValueError("missing mixer.norm.weight")
        lo = -math.inf if lim[0] is None else float(lim[0])
        hi = math.inf if lim[1] is None else float(lim[1])
        m.update(D=D, N=N, G=G, H=H, P=P, time_step_limit=(lo, hi),
                 norm_before_gate=bool(nbg), gated_norm=bool(use_gn), gn_eps=gn_eps)
    return m


# --------------------------------------------------------------------------
# forward pass
# --------------------------------------------------------------------------

def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0.0, x)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def activation(name, x):
    return silu(x) if name == "silu" else x


def causal_conv(v, w, b):
    """c_i = sum_k w[:, K-1-k] * v_{i-k} + b, v_{<0} = 0. v: [T, C], w: [C, K]."""
    T = v.shape[0]
    K = w.shape[1]
    c = np.zeros_like(v)
    for k in range(K):
        if k >= T:
            break
        c[k:] += w[:, K - 1 - k] * v[: T - k]
    if b is not None:
        c = c + b
    return c


def scan_mamba1(x, dt, A, B, C):
    """Recurrent selective scan without the skip term. x, dt: [T, D]; A: [D, N]; B, C: [T, N]."""
    T, D = x.shape
    h = np.zeros((D, A.shape[1]))
    y = np.empty((T, D))
    for i in range(T):
        h = np.exp(dt[i][:, None] * A) * h + (dt[i] * x[i])[:, None] * B[i][None, :]
        y[i] = h @ C[i]
    return y


def scan_mamba2(x, dt, A, B, C, P):
    """Recurrent SSD scan without the skip term. x: [T, D]; dt: [T, H]; A: [H]; B, C: [T, G, N]."""
    T, D = x.shape
    H, G, N = A.shape[0], B.shape[1], B.shape[2]
    grp = np.arange(H) // (H // G)          # g(h) = h / (H/G)
    Bh, Ch = B[:, grp, :], C[:, grp, :]      # [T, H, N]
    xh = x.reshape(T, H, P)
    h = np.zeros((H, P, N))
    y = np.empty((T, H, P))
    for i in range(T):
        h = np.exp(dt[i] * A)[:, None, None] * h + (dt[i][:, None] * xh[i])[:, :, None] * Bh[i][:, None, :]
        y[i] = np.einsum("hpn,hn->hp", h, Ch[i])
    return y.reshape(T, D)


def _mamba1_mixer(m, L, r):
    eps, D, N, R = m["eps"], m["D"], m["N"], m["R"]
    u = rmsnorm(r, L["norm"], eps)
    xz = u @ L["in_w"].T
    if L["in_b"] is not None:
        xz = xz + L["in_b"]
    v, z = xz[:, :D], xz[:, D:]
    x = activation(m["act"], causal_conv(v, L["conv_w"], L["conv_b"]))
    xdbl = x @ L["x_w"].T
    delta, B, C = xdbl[:, :R], xdbl[:, R:R + N], xdbl[:, R + N:]
    dt = softplus(delta @ L["dt_w"].T + L["dt_b"])
    A = -np.exp(L["A_log"])
    y = scan_mamba1(x, dt, A, B, C) + L["D"] * x
    gate = silu(z)
    o = (y * gate) @ L["out_w"].T
    if L["out_b"] is not None:
        o = o + L["out_b"]
    return dict(v=v, z=z, x=x, dt=dt, B=B, C=C, A=A, y=y, gate=gate, scale=gate, o=o)


def _mamba2_mixer(m, L, r, norm_all_channels=False):
    eps, D, N, G, H, P = m["eps"], m["D"], m["N"], m["G"], m["H"], m["P"]
    T = r.shape[0]
    u = rmsnorm(r, L["norm"], eps)
    p = u @ L["in_w"].T
    if L["in_b"] is not None:
        p = p + L["in_b"]
    conv_dim = D + 2 * G * N
    z, xi, dtr = p[:, :D], p[:, D:D + conv_dim], p[:, D + conv_dim:]
    xbc = activation(m["act"], causal_conv(xi, L["conv_w"], L["conv_b"]))
    x = xbc[:, :D]
    B = xbc[:, D:D + G * N].reshape(T, G, N)
    C = xbc[:, D + G * N:].reshape(T, G, N)
    lo, hi = m["time_step_limit"]
    dt = np.clip(softplus(dtr + L["dt_bias"]), lo, hi)
    A = -np.exp(L["A_log"])
    Dsk = L["D"]
    Dch = np.repeat(Dsk, P) if Dsk.shape[0] == H else Dsk   # per channel
    y = scan_mamba2(x, dt, A, B, C, P) + Dch * x
    gate = silu(z)
    if m["gated_norm"]:
        normed = y if m["norm_before_gate"] else y * gate
        gs = D if norm_all_channels else D // G
        var = np.mean(normed.reshape(T, D // gs, gs) ** 2, axis=-1)          # [T, groups]
        inv = np.repeat(1.0 / np.sqrt(var + m["gn_eps"]), gs, axis=1)       # [T, D]
        gamma = L["gn_w"] * inv
    else:
        gamma = np.ones((T, D))
    n = gamma * y * gate
    o = n @ L["out_w"].T
    if L["out_b"] is not None:
        o = o + L["out_b"]
    return dict(v=xi[:, :D], z=z, x=x, dt=dt, B=B, C=C, A=A, y=y, gate=gate, gamma=gamma,
                scale=gamma * gate, o=o, Dch=Dch)


def forward(m, tokens, norm_all_channels=False):
    """Run the model. Returns dict(tokens, logits [T,V], layers=[per-layer dict]).

    Per-layer dict: r_in (residual entering), o (mixer output incl. b_out),
    hidden (r_in + o) and the intermediates needed by latim_scores.
    norm_all_channels: Mamba-2 only, normalise the gated norm over all D
    channels (the convention of some transformers versions) instead of per group.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    r = m["emb"][tokens].astype(np.float64)
    layers = []
    for L in m["layers"]:
        if m["family"] == 1:
            ld = _mamba1_mixer(m, L, r)
        else:
            ld = _mamba2_mixer(m, L, r, norm_all_channels)
        ld["r_in"] = r
        r = r + ld["o"]
        ld["hidden"] = r
        layers.append(ld)
    logits = rmsnorm(r, m["norm_f"], m["eps"]) @ m["lm_head"].T
    return dict(tokens=tokens, logits=logits[:, : m["vocab_size"]], layers=layers)


# --------------------------------------------------------------------------
# LaTIM decomposition and scores
# --------------------------------------------------------------------------

def _source_pieces(m, L, ld):
    """x_{j+k <- j} for k = 0..K-1, indexed by source j: list of [T, D]."""
    D, K = m["D"], m["K"]
    w = L["conv_w"][:D]                     # x slice only (Mamba-2); all channels (Mamba-1)
    b = L["conv_b"][:D] if L["conv_b"] is not None else 0.0
    v = ld["v"]
    pieces = []
    for k in range(K):
        pre = w[:, K - 1 - k] * v + (b if k == 0 else 0.0)
        pieces.append(activation(m["act"], pre))
    return pieces


def _kernel_row(m, ld, S, i):
    """M_{i,l} for l = 0..i as [i+1, D] (per channel) plus the hidden-attn row."""
    dt = ld["dt"]
    if m["family"] == 1:
        dS = S[i] - S[: i + 1]                                   # [i+1, D], >= 0
        E = np.exp(ld["A"][None, :, :] * dS[:, :, None])          # [i+1, D, N]
        # M_{i,l}[c] = sum_n C_i[n] exp(A[c,n](S_i[c]-S_l[c])) Delta_l[c] B_l[n]
        Mi = ((E * ld["B"][: i + 1][:, None, :]) @ ld["C"][i]) * dt[: i + 1]
        return Mi, Mi.mean(axis=1)
    H, P, G = m["H"], m["P"], m["G"]
    grp = np.arange(H) // (H // G)
    CB = np.einsum("hn,lhn->lh", ld["C"][i][grp], ld["B"][: i + 1][:, grp, :])   # [i+1, H]
    dS = S[i] - S[: i + 1]                                                       # [i+1, H]
    Mh = CB * np.exp(ld["A"][None, :] * dS) * dt[: i + 1]
    return np.repeat(Mh, P, axis=1), Mh.mean(axis=1)


def latim_layer(m, layer_index, ld, scores=("l2",), return_vectors=False):
    """Scores and approximation error for one layer. Returns dict name -> array.

    return_vectors: also return "T": [T, T, d] with T[i, j] = T_i(x_j) (0 for j > i).
    """
    L = m["layers"][layer_index]
    T = ld["x"].shape[0]
    K = m["K"]
    pieces = _source_pieces(m, L, ld)
    S = np.cumsum(ld["dt"], axis=0)
    Dch = ld["Dch"] if m["family"] == 2 else L["D"]
    b_out = L["out_b"] if L["out_b"] is not None else np.zeros(m["d_model"])
    o_nob = ld["o"] - b_out
    want = set(scores)
    need_alti = "alti" in want or "alti-rollout" in want
    res = {name: np.full((T, T), np.nan) for name in want if name != "alti-rollout"}
    if need_alti:
        res.setdefault("alti", np.full((T, T), np.nan))
    err = np.empty(T)
    if return_vectors:
        vecs = np.zeros((T, T, m["d_model"]))
    for i in range(T):
        Mi, ha_row = _kernel_row(m, ld, S, i)
        ups = np.zeros((i + 1, m["D"]))
        for k in range(K):
            if k > i:
                break
            # l = j + k for j = 0..i-k
            ups[: i - k + 1] += Mi[k: i + 1] * pieces[k][: i - k + 1]
        for j in range(max(0, i - K + 1), i + 1):
            ups[j] += Dch * pieces[i - j][j]
        Ti = (ups * ld["scale"][i]) @ L["out_w"].T          # [i+1, d]; row j = T_i(x_j)
        if return_vectors:
            vecs[i, : i + 1] = Ti
        denom = np.linalg.norm(o_nob[i])
        err[i] = np.linalg.norm(o_nob[i] - Ti.sum(axis=0)) / denom if denom > 0 else 0.0
        if "l2" in res:
            res["l2"][i, : i + 1] = np.linalg.norm(Ti, axis=1)
        if "l1" in res:
            res["l1"][i, : i + 1] = np.abs(Ti).sum(axis=1)
        if "hidden-attn" in res:
            res["hidden-attn"][i, : i + 1] = ha_row
        if need_alti:
            yhat = ld["r_in"][i] + ld["o"][i]
            That = Ti.copy()
            That[i] += ld["r_in"][i]
            s = np.maximum(0.0, np.abs(yhat).sum() - np.abs(yhat[None, :] - That).sum(axis=1))
            tot = s.sum()
            res["alti"][i, : i + 1] = s / tot if tot > 0 else s
    res["approx_error"] = err
    if return_vectors:
        res["T"] = vecs
    return res


def latim_scores(m, fw, layers=None, scores=("l2",)):
    """LaTIM maps for the given layers (default: all). Returns {layer: {name: array}}.

    alti-rollout needs the alti maps of every layer up to the highest one asked
    for; they are computed internally but only returned for requested layers.
    """
    if layers is None:
        layers = list(range(m["n_layer"]))
    layers = sorted(set(layers))
    for s in scores:
        if s not in SCORE_NAMES:
            raise ValueError(f"unknown score {s!r}; known: {', '.join(SCORE_NAMES)}")
    rollout = "alti-rollout" in scores
    todo = list(range(max(layers) + 1)) if rollout else layers
    out = {}
    R = None
    for li in todo:
        sc = list(scores) if li in layers else ["alti"]
        res = latim_layer(m, li, fw["layers"][li], sc)
        if rollout:
            Sm = np.nan_to_num(res["alti"], nan=0.0)
            R = Sm if R is None else Sm @ R
            if li in layers:
                Rm = R.copy()
                Rm[np.triu_indices(Rm.shape[0], 1)] = np.nan
                res["alti-rollout"] = Rm
        if li in layers:
            if "alti" not in scores:
                res.pop("alti", None)
            out[li] = res
    return out


# --------------------------------------------------------------------------
# output file
# --------------------------------------------------------------------------

def conventions(m, scores):
    act = m["act"]
    conv = {
        "orientation": "row = target i, column = source j, j <= i; upper triangle NaN",
        "conv_bias": "folded into the current token's piece",
        "surrogate_f": act,
        "frozen": "Delta, B, C, gate" + (", gamma" if m["family"] == 2 else "") + ", final-norm scale",
        "scores": ",".join(scores),
        "rows_normalised": "alti and alti-rollout rows sum to 1; l1, l2, hidden-attn raw",
        "precision": "float64 (numpy reference)",
        "b_out": "not attributed; stored as /layers/NNN/b_out when present",
        "family": f"mamba{m['family']}",
    }
    if m["family"] == 2:
        grouping = ("all D channels (one group)" if m.get("norm_all_channels")
                    else f"grouped: {m['G']} groups of {m['D'] // m['G']} channels")
        conv["mamba2_norm"] = grouping + "; " + ("norm before gate" if m["norm_before_gate"] else "gate before norm")
    return conv


def write_h5(path, m, fw, results):
    import h5py
    with h5py.File(path, "w") as f:
        for k, v in conventions(m, results["scores"]).items():
            f.attrs[k] = v
        f.create_dataset("tokens", data=fw["tokens"].astype(np.int64))
        f.create_dataset("logits", data=fw["logits"].astype(np.float32))
        grp = f.create_group("layers")
        for li, res in results["layers"].items():
            g = grp.create_group(f"{li:03d}")
            for name, arr in res.items():
                g.create_dataset(name, data=arr)
            g.create_dataset("hidden", data=fw["layers"][li]["hidden"])
            b = m["layers"][li]["out_b"]
            if b is not None:
                g.create_dataset("b_out", data=b)


def parse_layers(spec, n_layer):
    if not spec:
        return list(range(n_layer))
    out = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    bad = [x for x in out if x < 0 or x >= n_layer]
    if bad:
        raise ValueError(f"layers {sorted(bad)} out of range 0..{n_layer - 1}")
    return sorted(out)


def read_tokens(path):
    with open(path) as f:
        return np.array([int(x) for x in f.read().split()], dtype=np.int64)


# --------------------------------------------------------------------------
# self test
# --------------------------------------------------------------------------

def _rel(a, b):
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b)))


def _bruteforce_check(m, fw):
    """Recompute T_i(x_j) for every layer by running the frozen scan on the input sequence
    that holds only source j's pieces x_(l<-j) (zero elsewhere). Independent of the
    kernel-row code and its index bookkeeping. Returns the worst relative difference."""
    worst = 0.0
    for li, ld in enumerate(fw["layers"]):
        L = m["layers"][li]
        T, D, K = ld["x"].shape[0], m["D"], m["K"]
        pieces = _source_pieces(m, L, ld)
        Dch = ld["Dch"] if m["family"] == 2 else L["D"]
        got = latim_layer(m, li, ld, ["l2"], return_vectors=True)["T"]
        want = np.zeros_like(got)
        for j in range(T):
            xj = np.zeros((T, D))
            for k in range(min(K, T - j)):
                xj[j + k] = pieces[k][j]
            if m["family"] == 1:
                yj = scan_mamba1(xj, ld["dt"], ld["A"], ld["B"], ld["C"]) + L["D"] * xj
            else:
                yj = scan_mamba2(xj, ld["dt"], ld["A"], ld["B"], ld["C"], m["P"]) + Dch * xj
            want[j:, j] = (yj[j:] * ld["scale"][j:]) @ L["out_w"].T
        worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return worst


def _as_mamba_ssm_config(m):
    """The mamba_ssm-style config.json equivalent to a loaded HF-style model."""
    c = m["config"]
    ssm = {"d_state": m["N"], "d_conv": m["K"], "expand": m["D"] // m["d_model"]}
    if m["act"] == "identity":
        ssm["activation"] = "identity"
    if m["family"] == 1:
        ssm["dt_rank"] = m["R"]
    else:
        ssm.update(layer="Mamba2", headdim=m["P"], ngroups=m["G"], dt_limit=list(m["time_step_limit"]),
                   norm_before_gate=m["norm_before_gate"])
    return {"d_model": m["d_model"], "n_layer": m["n_layer"], "vocab_size": m["vocab_size"],
            "ssm_cfg": ssm, "rms_norm": True, "norm_epsilon": m["eps"],
            "tie_embeddings": c.get("tie_word_embeddings", True)}


def _config_variants(m, tokens, check):
    """Parsing checks: the same weights described mamba_ssm-style give the same model;
    for Mamba-2 the norm_before_gate variant keeps the decomposition exact for identity models."""
    name = os.path.basename(m["dir"])
    base = forward(m, tokens)
    if "d_model" not in m["config"] and (m["family"] == 1 or m["gn_eps"] == 1e-5):
        alt = load_model(m["dir"], config=_as_mamba_ssm_config(m))
        e = float(np.max(np.abs(forward(alt, tokens)["logits"] - base["logits"])))
        check(e == 0.0, f"{name}: same model through a mamba_ssm-style config (max diff {e:.1e})")
    if m["family"] == 2:
        alt = dict(m, norm_before_gate=not m["norm_before_gate"])
        fw = forward(alt, tokens)
        e = max(float(np.max(r["approx_error"])) for r in latim_scores(alt, fw).values())
        moved = float(np.max(np.abs(fw["logits"] - base["logits"])))
        ok = moved > 1e-6 and (e <= 1e-10 if m["act"] == "identity" else np.isfinite(e))
        check(ok, f"{name}: norm_before_gate={alt['norm_before_gate']} variant runs (eps max {e:.1e})")


def selftest(data_dir, tol=1e-5, verbose=True):
    failures = []

    def check(ok, msg):
        if verbose:
            print(("  ok   " if ok else "  FAIL ") + msg)
        if not ok:
            failures.append(msg)

    dirs = sorted(d for d in glob.glob(os.path.join(data_dir, "*")) if os.path.exists(os.path.join(d, "config.json")))
    if not dirs:
        print(f"selftest: no fixtures under {data_dir}")
        return 1
    for d in dirs:
        name = os.path.basename(d)
        print(f"[{name}]")
        m = load_model(d)
        tokens = read_tokens(os.path.join(d, "tokens.txt"))
        check(len(tokens) == 300 and tokens.max() < m["vocab_size"], f"{name}: tokens.txt has 300 ids < vocab_size")
        gpath = os.path.join(d, "golden.safetensors")
        if os.path.exists(gpath):
            gold = read_safetensors(gpath)
            Ts = sorted(int(k[len("tokens_T"):]) for k in gold if k.startswith("tokens_T"))
            for T in Ts:
                tk = gold[f"tokens_T{T}"]
                check(np.array_equal(tk, tokens[:T]), f"{name} T={T}: golden tokens are the prefix of tokens.txt")
                fw = forward(m, tk)
                e = _rel(fw["logits"], gold[f"logits_T{T}"])
                check(e <= tol, f"{name} T={T}: logits rel err {e:.2e}")
                worst = 0.0
                for li in range(m["n_layer"]):
                    worst = max(worst, _rel(fw["layers"][li]["hidden"], gold[f"hidden_T{T}_L{li}"]))
                check(worst <= tol, f"{name} T={T}: per-layer hidden rel err {worst:.2e}")
            if m["family"] == 2 and m["G"] > 1:
                fw_all = forward(m, tokens[:64], norm_all_channels=True)
                e = _rel(fw_all["logits"], gold["logits_T64"])
                check(e > 100 * tol, f"{name}: norm over all D channels differs from golden ({e:.2e}), per-group matches")
        else:
            print("  (no golden.safetensors)")
        # decomposition checks
        T = 64
        fw = forward(m, tokens[:T])
        res = latim_scores(m, fw, scores=list(SCORE_NAMES))
        eps_max = max(float(np.max(r["approx_error"])) for r in res.values())
        eps_mean = float(np.mean([np.mean(r["approx_error"]) for r in res.values()]))
        if m["act"] == "identity":
            check(eps_max <= 1e-10, f"{name}: identity activation, max eps {eps_max:.2e} <= 1e-10")
        else:
            check(1e-8 < eps_max < 10 and np.isfinite(eps_max),
                  f"{name}: silu surrogate, eps mean {eps_mean:.3e} max {eps_max:.3e} (approximate, nonzero)")
        for li, r in res.items():
            upper = np.triu_indices(T, 1)
            lower = np.tril_indices(T)
            ok = all(np.all(np.isnan(r[s][upper])) and np.all(np.isfinite(r[s][lower])) for s in SCORE_NAMES)
            ok &= np.allclose(np.nansum(r["alti"], axis=1), 1.0)
            ok &= np.allclose(np.nansum(r["alti-rollout"], axis=1), 1.0)
            if not ok:
                check(False, f"{name} layer {li}: map shape/NaN/normalisation")
        check(True, f"{name}: maps lower-triangular, alti rows sum to 1")
        # mixer output via the unrolled kernel equals the recurrence (checks M)
        ld, L = fw["layers"][0], m["layers"][0]
        S = np.cumsum(ld["dt"], axis=0)
        Dch = ld["Dch"] if m["family"] == 2 else L["D"]
        worst = 0.0
        for i in (0, 1, T // 2, T - 1):
            Mi, _ = _kernel_row(m, ld, S, i)
            yi = (Mi * ld["x"][: i + 1]).sum(axis=0) + Dch * ld["x"][i]
            worst = max(worst, float(np.max(np.abs(yi - ld["y"][i])) / np.max(np.abs(ld["y"][i]))))
        check(worst < 1e-10, f"{name}: unrolled kernel M reproduces the scan (rel {worst:.1e})")
        e = _bruteforce_check(m, forward(m, tokens[:20]))
        check(e < 1e-10, f"{name}: T_i(x_j) equals a rescan of the pieces x_(.<-j) (rel {e:.1e})")
        _config_variants(m, tokens[:32], check)
    print(f"selftest: {len(failures)} failure(s)")
    return 1 if failures else 0


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="numpy float64 reference for LaTIM (Mamba-1/Mamba-2)")
    ap.add_argument("--model", help="model directory (config.json + safetensors)")
    ap.add_argument("--tokens", help="file with whitespace-separated token ids")
    ap.add_argument("--out", help="output HDF5 file")
    ap.add_argument("--scores", default="l2", help="comma list of " + ",".join(SCORE_NAMES) + " (default l2)")
    ap.add_argument("--layers", default="", help="e.g. 0,2-3 (default: all)")
    ap.add_argument("--mamba2-norm", choices=["group", "all"], default="group",
                    help="Mamba-2 gated RMSNorm over groups of D/G channels (default, mamba_ssm) "
                         "or over all D channels (the convention of some transformers versions)")
    ap.add_argument("--selftest", metavar="DATA_DIR", help="check fixtures under DATA_DIR and exit")
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest(args.selftest)
    if not (args.model and args.tokens and args.out):
        ap.error("--model, --tokens and --out are required (or --selftest DIR)")
    try:
        m = load_model(args.model)
        tokens = read_tokens(args.tokens)
        if len(tokens) == 0:
            raise ValueError("no tokens")
        if tokens.min() < 0 or tokens.max() >= m["emb"].shape[0]:
            raise ValueError("token id out of range")
        scores = [s.strip() for s in args.scores.split(",") if s.strip()]
        layers = parse_layers(args.layers, m["n_layer"])
        all_ch = args.mamba2_norm == "all"
        fw = forward(m, tokens, norm_all_channels=all_ch)
        res = latim_scores(m, fw, layers=layers, scores=scores)
        if all_ch:
            m["norm_all_channels"] = True
    except (ValueError, KeyError, OSError) as e:
        print(f"latim_ref: error: {e}", file=sys.stderr)
        return 2
    write_h5(args.out, m, fw, {"scores": scores, "layers": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
