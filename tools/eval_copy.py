#!/usr/bin/env python3
"""Copying-task metrics (ROC AUC, average precision) from latim interaction maps.

Input: one or more latim HDF5 files, each holding a copy prompt

    x_0 .. x_{L-1}  SEP  x_0 .. x_{L-1}            (T = 2L + 1 tokens)

(as written by tools/make_copy_prompt.py). L and the layout are derived from
/tokens and the separator id; a file that is not of this form is an error.

For every target row i in the copied part, one source position is the known
positive and the other candidate sources are negatives. Two alignments:

  next  (default, primary) row i is the position whose output *predicts* the
        next copied token. In a teacher-forced sequence position i predicts
        token i+1, so rows i = L .. 2L-1 (the separator and the first L-1
        copies) predict x_{i-L}; the positive is its original occurrence,
        j = i - L. This is the pair "output being produced <- token that is
        copied", which is what an attribution map of the copying step should
        recover.
  same  row i is the position that *holds* the copy: rows i = L+1 .. 2L hold
        x_{i-L-1}, and the positive is j = i - L - 1 (the same token in the
        first half). This is the "identical token" reading of the task.

Candidates (--candidates): `all` (default) = every source j <= i, diagonal
included, as the paper scores a row over all previous tokens; `strict` = j < i;
`first-half` = j < L only. First-half sources j != positive that hold the
same token as the positive (repeats inside x) are ambiguous and are dropped
from the negatives unless --keep-duplicates is given; positions in the copied
half (the separator, earlier copies, the diagonal) always stay negatives.
Prompts made by `make_copy_prompt.py --distinct` have no repeats.

Scores are pooled over all target rows of all input files (one ROC / one PR
curve per score and layer). Because rows are pooled, each row is first scaled
by the sum of |s_ij| over its candidates (--no-normalize to turn off); this
does not change any ranking inside a row and makes raw l1/l2 maps comparable
across rows. Also reported: top-1, the fraction of rows whose highest-scoring
candidate is the positive (ties count as misses unless the positive is the
only maximum).

AUC is the Mann-Whitney statistic with tied scores given their average rank
(= sklearn.metrics.roc_auc_score). AP is the step-wise sum
sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, highest first
(= sklearn.metrics.average_precision_score). Neither needs sklearn.

Besides the per-layer maps, a pseudo-layer "mean" is evaluated: the average of
the row-normalised maps of all layers. The best layer is the one with the
highest AUC (ties: higher AP), among real layers only.

Usage:
    python3 tools/eval_copy.py out.h5 [more.h5 ...] [--score l2,alti]
           [--sep-id 2] [--alignment next|same|both] [--json metrics.json]
    python3 tools/eval_copy.py --selftest

Importable:  from eval_copy import evaluate, roc_auc, average_precision
Needs numpy and h5py (h5py only for reading files).
"""

import argparse
import json
import re
import sys

import numpy as np

SEP_ID = 2
ALIGNMENTS = ("next", "same")


# ------------------------------------------------------------------ metrics

def _average_ranks(x):
    """1-based ranks of x, ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    # boundaries of tie groups in sorted order
    change = np.flatnonzero(np.diff(xs) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    avg = (starts + ends + 1) / 2.0          # mean of ranks starts+1 .. ends
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_auc(y, s):
    """ROC AUC of scores s for binary labels y (ties: average rank). NaN if one class."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    npos = int(y.sum())
    nneg = len(y) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def average_precision(y, s):
    """Average precision, step-wise over distinct thresholds (sklearn's definition)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    npos = int(y.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    ys = y[order]
    # last index of each group of equal scores = one threshold
    last = np.concatenate([np.flatnonzero(np.diff(ss) != 0), [len(ss) - 1]])
    tps = np.cumsum(ys)[last].astype(np.float64)
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / npos
    dr = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(dr * precision))


# ------------------------------------------------------------------ layout

def copy_layout(tokens, sep_id=SEP_ID):
    """Return L for a copy prompt x SEP x; raise ValueError otherwise."""
    tokens = np.asarray(tokens)
    T = len(tokens)
    if T < 3 or T % 2 == 0:
        raise ValueError(f"T = {T} is not of the form 2L+1")
    L = (T - 1) // 2
    if tokens[L] != sep_id:
        raise ValueError(f"token at position {L} is {tokens[L]}, not the separator {sep_id}")
    if not np.array_equal(tokens[:L], tokens[L + 1:]):
        raise ValueError("second half is not a copy of the first half")
    return L


def target_pairs(L, alignment):
    """[(row i, positive source j)] for one copy prompt of length L."""
    if alignment == "next":
        return [(L + k, k) for k in range(L)]
    if alignment == "same":
        return [(L + 1 + k, k) for k in range(L)]
    raise ValueError(f"unknown alignment {alignment!r}")


def row_candidates(i, L, candidates):
    if candidates == "all":
        return np.arange(0, i + 1)
    if candidates == "strict":
        return np.arange(0, i)
    if candidates == "first-half":
        return np.arange(0, L)
    raise ValueError(f"unknown candidate set {candidates!r}")


def collect(score_map, tokens, L, alignment, candidates="all", normalize=True,
            keep_duplicates=False):
    """Labels, scores and top-1 hits for all target rows of one map.

    Returns (y, s, hits): y, s concatenated over rows; hits[r] is True when the
    positive is the unique maximum of row r's candidates.
    """
    ys, ss, hits = [], [], []
    for i, jpos in target_pairs(L, alignment):
        cand = row_candidates(i, L, candidates)
        if not keep_duplicates:
            same = (tokens[cand] == tokens[jpos]) & (cand != jpos) & (cand < L)
            cand = cand[~same]
        row = np.asarray(score_map[i, cand], dtype=np.float64)
        if not np.all(np.isfinite(row)):
            raise ValueError(f"row {i}: missing or non-finite scores at sources j <= i "
                             f"(a --rows file must include rows {L}..{2 * L})")
        if normalize:
            tot = np.abs(row).sum()
            if tot > 0:
                row = row / tot
        y = cand == jpos
        ys.append(y)
        ss.append(row)
        top = row.max()
        hits.append(bool(row[y][0] == top and np.sum(row == top) == 1))
    return np.concatenate(ys), np.concatenate(ss), np.array(hits)


# ------------------------------------------------------------------ files

def _layer_names(f):
    return sorted((k for k in f["layers"].keys() if re.fullmatch(r"\d+", k)), key=int)


def read_file(path, scores=None):
    """Read one latim file.

    Returns {'tokens', 'layers': {int: {score: [T, T] map}}, 'approx_error': {int: [T]},
    'model_config', 'complete'}. Full maps (/layers/NNN/<score>, --full) are used
    when present; otherwise a --rows file's /layers/NNN/rows/<score> is spread into
    a [T, T] array whose unselected rows are NaN.
    """
    import h5py
    out = {"path": path, "layers": {}, "approx_error": {}}
    with h5py.File(path, "r") as f:
        out["tokens"] = np.asarray(f["tokens"][:], dtype=np.int64)
        T = len(out["tokens"])
        cfg = f.attrs.get("model_config")
        if isinstance(cfg, bytes):
            cfg = cfg.decode()
        out["model_config"] = json.loads(cfg) if cfg else {}
        out["complete"] = bool(f.attrs.get("complete", 1))
        if "logits" in f:
            out["argmax"] = np.asarray(f["logits"][:], dtype=np.float64).argmax(axis=-1)
        rows = np.asarray(f["rows"][:], dtype=np.int64) if "rows" in f else None
        for name in _layer_names(f):
            g = f["layers"][name]
            li = int(name)
            maps = {}
            if isinstance(g.get("approx_error"), h5py.Dataset):
                out["approx_error"][li] = np.asarray(g["approx_error"][:], dtype=np.float64)
            for key, ds in g.items():
                if (isinstance(ds, h5py.Dataset) and ds.shape == (T, T)
                        and (scores is None or key in scores)):
                    maps[key] = np.asarray(ds[:], dtype=np.float64)
            rg = g.get("rows")
            if (rows is not None and isinstance(rg, h5py.Group) and li not in out["approx_error"]
                    and isinstance(rg.get("approx_error"), h5py.Dataset)):
                e = np.full(T, np.nan)
                e[rows] = rg["approx_error"][:]
                out["approx_error"][li] = e
            if rows is not None and isinstance(rg, h5py.Group):
                for key, ds in rg.items():
                    if (key in maps or key == "approx_error" or ds.shape != (len(rows), T)
                            or (scores is not None and key not in scores)):
                        continue
                    m = np.full((T, T), np.nan)
                    m[rows] = ds[:]
                    maps[key] = m
            out["layers"][li] = maps
    return out


def _score_names(files):
    names = []
    for fd in files:
        for maps in fd["layers"].values():
            for k in maps:
                if k not in names:
                    names.append(k)
    return names


def _row_normalized(m, T):
    m = np.array(m, dtype=np.float64)
    m[np.triu_indices(T, 1)] = 0.0
    tot = np.abs(m).sum(axis=1, keepdims=True)
    tot[tot == 0] = 1.0
    return m / tot


def evaluate(paths, scores=None, sep_id=SEP_ID, alignments=("next", "same"),
             candidates="all", normalize=True, keep_duplicates=False):
    """Metrics dict for the given latim files (see the module docstring)."""
    if isinstance(paths, str):
        paths = [paths]
    files = [read_file(p, scores) for p in paths]
    for fd in files:
        if not fd["complete"]:
            print(f"eval_copy: warning: {fd['path']} is incomplete (complete = 0)",
                  file=sys.stderr)
    layouts = []
    for fd in files:
        try:
            layouts.append(copy_layout(fd["tokens"], sep_id))
        except ValueError as e:
            raise ValueError(f"{fd['path']}: not a copy prompt: {e}") from None
    names = [s for s in (scores or _score_names(files))]
    res = {
        "files": list(paths),
        "lengths": layouts,
        "candidates": candidates,
        "row_normalized": normalize,
        "keep_duplicates": keep_duplicates,
        "model_config": files[0]["model_config"],
        "approx_error_mean": {},
        "scores": {},
    }
    # copy accuracy of the model itself, when the files have /logits (--save-logits):
    # the argmax at positions L .. 2L-1 against tokens L+1 .. 2L
    if all("argmax" in fd for fd in files):
        hits = np.concatenate([fd["argmax"][L:2 * L] == fd["tokens"][L + 1:]
                               for fd, L in zip(files, layouts)])
        res["copy_token_acc"] = float(hits.mean())
        res["copy_seq_acc"] = float(np.mean([
            np.all(fd["argmax"][L:2 * L] == fd["tokens"][L + 1:]) for fd, L in zip(files, layouts)]))
    # approximation error: mean over all target tokens of all files, per layer
    layers_all = sorted(set().union(*[fd["approx_error"].keys() for fd in files]))
    for li in layers_all:
        vals = np.concatenate([fd["approx_error"][li] for fd in files if li in fd["approx_error"]])
        res["approx_error_mean"][str(li)] = float(np.nanmean(vals))
        res.setdefault("approx_error_max", {})[str(li)] = float(np.nanmax(vals))
    for sc in names:
        layers = sorted(set.intersection(*[
            {li for li, m in fd["layers"].items() if sc in m} for fd in files]))
        if not layers:
            continue
        per_align = {}
        for al in alignments:
            per_layer = {}
            pooled = {}
            for li in layers + ["mean"]:
                Y, S, H = [], [], []
                for fd, L in zip(files, layouts):
                    T = len(fd["tokens"])
                    if li == "mean":
                        m = sum(_row_normalized(fd["layers"][l][sc], T) for l in layers) / len(layers)
                    else:
                        m = fd["layers"][li][sc]
                    y, s, h = collect(m, fd["tokens"], L, al, candidates, normalize,
                                      keep_duplicates)
                    Y.append(y), S.append(s), H.append(h)
                y, s, h = np.concatenate(Y), np.concatenate(S), np.concatenate(H)
                pooled[str(li)] = {
                    "auc": roc_auc(y, s),
                    "ap": average_precision(y, s),
                    "top1": float(h.mean()),
                    "n_rows": int(len(h)),
                    "n_pos": int(y.sum()),
                    "n_neg": int(len(y) - y.sum()),
                }
            real = [str(l) for l in layers]
            best = max(real, key=lambda k: (np.nan_to_num(pooled[k]["auc"], nan=-1),
                                            np.nan_to_num(pooled[k]["ap"], nan=-1)))
            best_ap = max(real, key=lambda k: np.nan_to_num(pooled[k]["ap"], nan=-1))
            per_align[al] = {"per_layer": pooled, "best_layer": int(best),
                             "best": pooled[best], "best_ap_layer": int(best_ap),
                             "max_ap": pooled[best_ap]["ap"]}
        res["scores"][sc] = per_align
    return res


# ------------------------------------------------------------------ report

def format_report(res):
    lines = []
    lines.append(f"files: {len(res['files'])}  L: {sorted(set(res['lengths']))}  "
                 f"candidates: {res['candidates']}  row-normalized: {res['row_normalized']}")
    if "copy_token_acc" in res:
        lines.append(f"model copy accuracy (from /logits): token {res['copy_token_acc']:.4f}  "
                     f"sequence {res['copy_seq_acc']:.3f}")
    if res["approx_error_mean"]:
        eps = "  ".join(f"L{k}:{v:.3g}" for k, v in res["approx_error_mean"].items())
        lines.append(f"approx_error mean per layer: {eps}")
    for sc, per_align in res["scores"].items():
        for al, r in per_align.items():
            lines.append(f"\n[{sc}] alignment={al}   best layer {r['best_layer']}: "
                         f"AUC {r['best']['auc']:.3f}  AP {r['best']['ap']:.3f}  "
                         f"top1 {r['best']['top1']:.3f}   (max AP {r['max_ap']:.3f} "
                         f"at layer {r['best_ap_layer']})")
            lines.append("  layer     AUC      AP    top1")
            for li, m in r["per_layer"].items():
                lines.append(f"  {li:>5} {m['auc']:7.3f} {m['ap']:7.3f} {m['top1']:7.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ selftest

def selftest():
    ok = True

    def check(name, got, want, tol=1e-12):
        nonlocal ok
        good = (np.isnan(want) and np.isnan(got)) or abs(got - want) <= tol
        print(f"  {'ok  ' if good else 'FAIL'} {name}: got {got!r}, want {want!r}")
        ok &= bool(good)

    print("AUC / AP on hand-made cases:")
    # perfect separation
    check("auc perfect", roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), 1.0)
    check("ap perfect", average_precision([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), 1.0)
    # inverted
    check("auc inverted", roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]), 0.0)
    # one positive ranked 2nd of 4: AUC = 2/3, AP = 1/2
    check("auc rank2", roc_auc([0, 1, 0, 0], [0.9, 0.5, 0.3, 0.1]), 2 / 3)
    check("ap rank2", average_precision([0, 1, 0, 0], [0.9, 0.5, 0.3, 0.1]), 0.5)
    # all tied: AUC = 0.5, AP = prevalence
    check("auc all tied", roc_auc([1, 0, 0, 0], [1, 1, 1, 1]), 0.5)
    check("ap all tied", average_precision([1, 0, 0, 0], [1, 1, 1, 1]), 0.25)
    # positive tied with one negative at the top: AUC = (2 + 0.5)/3, AP = 1/2
    check("auc tie top", roc_auc([1, 0, 0, 0], [0.9, 0.9, 0.2, 0.1]), 2.5 / 3)
    check("ap tie top", average_precision([1, 0, 0, 0], [0.9, 0.9, 0.2, 0.1]), 0.5)
    # sklearn doc example: y=[0,0,1,1], s=[.1,.4,.35,.8] -> AUC .75, AP .8333...
    check("auc sklearn example", roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 0.75)
    check("ap sklearn example", average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
          (1 / 2) * 1.0 + (1 / 2) * (2 / 3))
    # two positives at ranks 1 and 3 of 5: AP = 1/2*(1/1) + 1/2*(2/3)
    check("ap ranks 1,3", average_precision([1, 0, 1, 0, 0], [5, 4, 3, 2, 1]), 0.5 + 1 / 3)
    check("auc ranks 1,3", roc_auc([1, 0, 1, 0, 0], [5, 4, 3, 2, 1]), 5 / 6)
    check("auc one class", roc_auc([1, 1], [0.3, 0.4]), float("nan"))

    print("copy-map metrics on hand-made maps (L = 3, T = 7):")
    toks = np.array([5, 6, 7, 2, 5, 6, 7])
    L = copy_layout(toks)
    check("layout L", L, 3)
    T = len(toks)
    ideal_next = np.full((T, T), np.nan)
    ideal_same = np.full((T, T), np.nan)
    for i in range(T):
        ideal_next[i, : i + 1] = 0.01
        ideal_same[i, : i + 1] = 0.01
    for i, j in target_pairs(L, "next"):
        ideal_next[i, j] = 1.0
    for i, j in target_pairs(L, "same"):
        ideal_same[i, j] = 1.0
    for al, m in (("next", ideal_next), ("same", ideal_same)):
        y, s, h = collect(m, toks, L, al)
        check(f"ideal {al}: auc", roc_auc(y, s), 1.0)
        check(f"ideal {al}: ap", average_precision(y, s), 1.0)
        check(f"ideal {al}: top1", float(h.mean()), 1.0)
    # the 'same' map read with the 'next' alignment: rows L..2L-1 have their
    # 1.0 at j = i-L-1 (row L has none, every candidate 0.01).
    y, s, h = collect(ideal_same, toks, L, "next")
    check("shifted map: top1", float(h.mean()), 0.0)
    # number of candidates: rows 3, 4, 5 see 4, 5, 6 sources
    y, s, h = collect(ideal_next, toks, L, "next")
    check("n candidates", len(y), 4 + 5 + 6)
    # repeats inside x: x = 5 6 5. Row 3 (positive 0, token 5) drops j = 2;
    # row 5 (positive 2, token 5) drops j = 0; the copy at j = 4 stays a negative.
    toks2 = np.array([5, 6, 5, 2, 5, 6, 5])
    y, s, h = collect(ideal_next, toks2, L, "next", keep_duplicates=True)
    check("n candidates (keep repeats)", len(y), 4 + 5 + 6)
    y, s, h = collect(ideal_next, toks2, L, "next")
    check("n candidates (drop repeats)", len(y), 3 + 5 + 5)
    y, s, h = collect(ideal_same, toks, L, "same")
    check("same: diagonal stays a negative", len(y), 5 + 6 + 7)
    y, s, h = collect(ideal_next, toks, L, "next", candidates="first-half")
    check("n candidates first-half", len(y), 9)
    print("selftest " + ("passed" if ok else "FAILED"))
    return ok


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="latim HDF5 output files (copy prompts)")
    ap.add_argument("--score", help="comma list of scores (default: every score in the files)")
    ap.add_argument("--sep-id", type=int, default=SEP_ID)
    ap.add_argument("--alignment", choices=["next", "same", "both"], default="both")
    ap.add_argument("--candidates", choices=["all", "strict", "first-half"], default="all")
    ap.add_argument("--no-normalize", action="store_true", help="do not scale rows before pooling")
    ap.add_argument("--keep-duplicates", action="store_true",
                    help="count sources holding the same token as the positive as negatives")
    ap.add_argument("--json", help="write the metrics dict here")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()

    if args.selftest:
        sys.exit(0 if selftest() else 1)
    if not args.files:
        ap.error("give at least one HDF5 file (or --selftest)")
    aligns = ALIGNMENTS if args.alignment == "both" else (args.alignment,)
    scores = args.score.split(",") if args.score else None
    try:
        res = evaluate(args.files, scores, args.sep_id, aligns, args.candidates,
                       not args.no_normalize, args.keep_duplicates)
    except ValueError as e:
        sys.exit(f"eval_copy: {e}")
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
