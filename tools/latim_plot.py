#!/usr/bin/env python3
"""Heatmaps of latim interaction maps (PNG).

Draws one layer (--layer N) or a grid of layers (--layers all, or a list such
as 0,2-3) for one score of a latim HDF5 file. Rows are targets i, columns
sources j; the upper triangle (j > i) is left blank.

Options:
  --score NAME        which map (l2, l1, alti, alti-rollout, hidden-attn, ...); default l2
  --normalize rows    scale each row by the sum of |s_ij| over j <= i (default: none)
  --log               colour by log10(|s|); values below --log-floor times the panel
                      maximum (default 1e-4) are clipped to that floor
  --vocab FILE        one token string per line (line k = id k): label the axes with them
  --labels / --no-labels   force axis labels on / off (default: on when T <= 64 or --vocab)
  --max-pixels N      longest side of a panel in matrix cells (default 1024); larger maps
                      are downsampled by block maximum (a block that is all blank stays blank)
  --out FILE          PNG to write (default: <input stem>-<score>.png)

Files made with --rows are drawn with only their selected rows filled in.
Signed maps (hidden-attn can be negative) are shown as they are, or as |s|
with --log. Block-max downsampling keeps the largest value of each block.

Usage:
    python3 tools/latim_plot.py out.h5 --score l2 --layer 1 --out map.png
    python3 tools/latim_plot.py out.h5 --score alti --layers all --normalize rows
Needs numpy, h5py, matplotlib.
"""

import argparse
import math
import os
import re
import sys

import numpy as np


def parse_layers(spec, available):
    if spec in (None, "all"):
        return list(available)
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    missing = [l for l in out if l not in available]
    if missing:
        raise ValueError(f"layers {missing} not in file (has {list(available)})")
    return out


def normalize_rows(m):
    m = np.array(m, dtype=np.float64)
    tot = np.nansum(np.abs(m), axis=1, keepdims=True)
    tot[tot == 0] = 1.0
    return m / tot


def block_max(m, max_pixels):
    """Downsample a square map by block maximum so its side is <= max_pixels.

    Returns (map, block size). NaN entries are ignored; an all-NaN block stays NaN.
    """
    T = m.shape[0]
    if T <= max_pixels:
        return m, 1
    b = math.ceil(T / max_pixels)
    n = math.ceil(T / b)
    pad = np.full((n * b, n * b), np.nan)
    pad[:T, :T] = m
    blocks = pad.reshape(n, b, n, b).transpose(0, 2, 1, 3).reshape(n, n, b * b)
    allnan = np.all(np.isnan(blocks), axis=2)
    filled = np.where(np.isnan(blocks), -np.inf, blocks)
    out = filled.max(axis=2)
    out[allnan] = np.nan
    return out, b


def read_vocab(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load(path, score):
    """tokens and {layer: [T, T] map} of one score.

    Uses the full maps (/layers/NNN/<score>); for a --rows file, the selected
    rows (/layers/NNN/rows/<score>) are placed in a [T, T] array, other rows blank.
    """
    import h5py
    with h5py.File(path, "r") as f:
        tokens = np.asarray(f["tokens"][:], dtype=np.int64)
        T = len(tokens)
        rows = np.asarray(f["rows"][:], dtype=np.int64) if "rows" in f else None
        names = sorted((k for k in f["layers"].keys() if re.fullmatch(r"\d+", k)), key=int)
        maps = {}
        for name in names:
            g = f["layers"][name]
            ds = g.get(score)
            if isinstance(ds, h5py.Dataset) and ds.shape == (T, T):
                maps[int(name)] = np.asarray(ds[:], dtype=np.float64)
                continue
            rg = g.get("rows")
            if rows is not None and isinstance(rg, h5py.Group) and score in rg:
                m = np.full((T, T), np.nan)
                m[rows] = rg[score][:]
                maps[int(name)] = m
    return tokens, maps


def prepare(m, normalize, log, log_floor=1e-4):
    m = np.array(m, dtype=np.float64)
    T = m.shape[0]
    m[np.triu_indices(T, 1)] = np.nan
    if normalize == "rows":
        m = normalize_rows(m)
    if log:
        a = np.abs(m)
        top = np.nanmax(a) if np.any(np.isfinite(a)) else 1.0
        floor = max(top, 1e-300) * log_floor
        m = np.log10(np.maximum(a, floor))
        m[np.isnan(a)] = np.nan
    return m


def draw(tokens, maps, layers, score, out, normalize=None, log=False, vocab=None,
         labels=None, max_pixels=1024, title=None, dpi=100, log_floor=1e-4):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(tokens)
    n = len(layers)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    if labels is None:
        labels = vocab is not None or T <= 64
    side = 5.0 if n == 1 else 4.4
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 0.8, side * nrows),
                             squeeze=False)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("white")
    if vocab is not None:
        names = [vocab[t] if 0 <= t < len(vocab) else str(t) for t in tokens]
    else:
        names = [str(t) for t in tokens]
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        li = layers[k]
        m = prepare(maps[li], normalize, log, log_floor)
        m, b = block_max(m, max_pixels)
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, interpolation="nearest",
                       aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(f"layer {li}" + (f" (block {b})" if b > 1 else ""), fontsize=9)
        if labels and b == 1:
            fs = max(3.0, min(8.0, 260.0 / max(T, 1) / (1 if n == 1 else 1.4)))
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.set_xticklabels(names, rotation=90, fontsize=fs)
            ax.set_yticklabels(names, fontsize=fs)
        else:
            ax.tick_params(labelsize=7)
        ax.set_xlabel("source j", fontsize=8)
        ax.set_ylabel("target i", fontsize=8)
    what = score + (", rows normalised" if normalize == "rows" else "") + (", log10" if log else "")
    fig.suptitle(title or what, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", help="latim HDF5 output")
    ap.add_argument("--score", default="l2")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--layer", type=int, help="one layer")
    g.add_argument("--layers", help="'all' or a list such as 0,2-3 (grid)")
    ap.add_argument("--normalize", choices=["rows", "none"], default="none")
    ap.add_argument("--log", action="store_true")
    ap.add_argument("--log-floor", type=float, default=1e-4)
    ap.add_argument("--vocab", help="token strings, one per line (line k = id k)")
    lab = ap.add_mutually_exclusive_group()
    lab.add_argument("--labels", dest="labels", action="store_true", default=None)
    lab.add_argument("--no-labels", dest="labels", action="store_false")
    ap.add_argument("--max-pixels", type=int, default=1024)
    ap.add_argument("--title")
    ap.add_argument("--dpi", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()

    tokens, maps = load(args.file, args.score)
    if not maps:
        sys.exit(f"latim_plot: no '{args.score}' maps in {args.file}")
    available = sorted(maps)
    try:
        if args.layer is not None:
            layers = parse_layers(str(args.layer), available)
        else:
            layers = parse_layers(args.layers or "all", available)
    except ValueError as e:
        sys.exit(f"latim_plot: {e}")
    vocab = read_vocab(args.vocab) if args.vocab else None
    out = args.out or f"{os.path.splitext(args.file)[0]}-{args.score}.png"
    draw(tokens, maps, layers, args.score, out,
         normalize=None if args.normalize == "none" else args.normalize, log=args.log,
         vocab=vocab, labels=args.labels, max_pixels=args.max_pixels, title=args.title,
         dpi=args.dpi, log_floor=args.log_floor)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
