#!/usr/bin/env python3
"""Checks for the copying-task tools (tools/make_copy_prompt.py, eval_copy.py,
latim_plot.py) and for the trained copy models under models/.

Runs with pytest or on its own:

    python3 tests/python/test_copy_tools.py          # from the repository root

Needs numpy and h5py; the plot test needs matplotlib, the sklearn cross-check
needs scikit-learn, the model checks need a built latim (build/latim, or
$LATIM_BIN) and, for the comparison with transformers, torch + transformers.
Checks whose dependencies are missing are skipped.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import eval_copy  # noqa: E402
import make_copy_prompt  # noqa: E402

MODELS = ["copy-mamba1", "copy-mamba2", "copy-mamba2-identity"]


class Skip(Exception):
    pass


def _skip(msg):
    try:
        import pytest
        pytest.skip(msg)
    except ImportError:
        raise Skip(msg)


def _latim():
    exe = os.environ.get("LATIM_BIN", os.path.join(ROOT, "build", "latim"))
    if not os.access(exe, os.X_OK):
        _skip(f"no latim binary at {exe}")
    return exe


def _write_fake_latim_file(path, tokens, maps_by_layer, eps_by_layer=None):
    import h5py
    with h5py.File(path, "w") as f:
        f["tokens"] = np.asarray(tokens, dtype=np.int64)
        f.attrs["complete"] = 1
        f.attrs["model_config"] = json.dumps({"family": "test"})
        for li, maps in maps_by_layer.items():
            g = f.create_group(f"layers/{li:03d}")
            for name, m in maps.items():
                g[name] = np.asarray(m, dtype=np.float32)
            if eps_by_layer is not None:
                g["approx_error"] = np.asarray(eps_by_layer[li], dtype=np.float32)


# ---------------------------------------------------------------- unit checks

def test_selftest():
    assert eval_copy.selftest()


def test_auc_ap_match_sklearn():
    try:
        from sklearn.metrics import average_precision_score, roc_auc_score
    except ImportError:
        _skip("scikit-learn not installed")
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 60))
        y = rng.random(n) < rng.uniform(0.05, 0.6)
        if y.all() or not y.any():
            continue
        # coarse scores so that ties are common
        s = np.round(rng.normal(size=n) + 0.8 * y, int(rng.integers(0, 3)))
        assert abs(eval_copy.roc_auc(y, s) - roc_auc_score(y, s)) < 1e-12
        assert abs(eval_copy.average_precision(y, s) - average_precision_score(y, s)) < 1e-12


def test_make_copy_prompt_layout():
    toks = make_copy_prompt.copy_prompt(12, seed=3, vocab=32, distinct=True)
    assert len(toks) == 25
    assert toks[12] == 2
    assert toks[:12] == toks[13:]
    assert len(set(toks[:12])) == 12
    assert all(3 <= t < 32 for t in toks[:12])
    assert eval_copy.copy_layout(np.array(toks)) == 12
    # same seed, same prompt
    assert toks == make_copy_prompt.copy_prompt(12, seed=3, vocab=32, distinct=True)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "p.txt")
        subprocess.run([sys.executable, os.path.join(TOOLS, "make_copy_prompt.py"), "--length",
                        "5", "--seed", "1", "--out", out], check=True, capture_output=True)
        ids = [int(t) for t in open(out).read().split()]
        meta = json.load(open(os.path.join(d, "p.json")))
        assert ids == meta["tokens"] and meta["sep_pos"] == 5 and len(ids) == 11


def test_copy_layout_rejects_non_copy():
    for bad in ([3, 4, 2, 3, 5], [3, 4, 5, 3, 4], [3, 2, 3, 4]):
        try:
            eval_copy.copy_layout(np.array(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_evaluate_on_fake_file():
    L = 6
    toks = list(range(3, 3 + L)) + [2] + list(range(3, 3 + L))
    T = len(toks)
    rng = np.random.default_rng(1)
    ideal = np.tril(rng.uniform(0.0, 0.1, size=(T, T)))
    for k in range(L):
        ideal[L + k, k] = 1.0          # 'next' alignment
    noise = np.tril(rng.uniform(0.0, 1.0, size=(T, T)))
    for m in (ideal, noise):
        m[np.triu_indices(T, 1)] = np.nan
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fake.h5")
        _write_fake_latim_file(path, toks, {0: {"l2": noise}, 1: {"l2": ideal}},
                               {0: np.full(T, 0.25), 1: np.zeros(T)})
        res = eval_copy.evaluate([path])
        nxt = res["scores"]["l2"]["next"]
        assert nxt["best_layer"] == 1
        assert nxt["best"]["auc"] == 1.0 and nxt["best"]["ap"] == 1.0 and nxt["best"]["top1"] == 1.0
        assert nxt["per_layer"]["1"]["n_rows"] == L
        assert abs(res["approx_error_mean"]["0"] - 0.25) < 1e-6
        assert res["approx_error_mean"]["1"] == 0.0
        # pooled over two copies of the same file: same metrics, twice the rows
        res2 = eval_copy.evaluate([path, path])
        assert res2["scores"]["l2"]["next"]["per_layer"]["1"]["n_rows"] == 2 * L
        # command line with --json
        js = os.path.join(d, "m.json")
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "eval_copy.py"), path,
                            "--score", "l2", "--json", js], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.load(open(js))["scores"]["l2"]["next"]["best_layer"] == 1


def test_evaluate_rows_plan_file():
    """A --rows file (only /layers/NNN/rows/<score>) gives the same metrics as a full one."""
    import h5py
    L = 5
    toks = [7, 4, 9, 3, 8, 2, 7, 4, 9, 3, 8]
    T = len(toks)
    rng = np.random.default_rng(2)
    m = np.tril(rng.uniform(size=(T, T)))
    m[np.triu_indices(T, 1)] = np.nan
    rows = np.arange(L, 2 * L + 1)
    with tempfile.TemporaryDirectory() as d:
        full = os.path.join(d, "full.h5")
        _write_fake_latim_file(full, toks, {0: {"l2": m}})
        part = os.path.join(d, "rows.h5")
        with h5py.File(part, "w") as f:
            f["tokens"] = np.asarray(toks, dtype=np.int64)
            f.attrs["complete"] = 1
            f["rows"] = rows
            g = f.create_group("layers/000/rows")
            g["l2"] = m[rows].astype(np.float32)
            g["approx_error"] = np.zeros(len(rows), dtype=np.float32)
        a = eval_copy.evaluate([full])["scores"]["l2"]
        b = eval_copy.evaluate([part])["scores"]["l2"]
        for al in ("next", "same"):
            assert a[al]["per_layer"]["0"] == b[al]["per_layer"]["0"]
        # a --rows file that lacks a needed row is an error
        with h5py.File(part, "a") as f:
            del f["rows"]
            f["rows"] = rows[1:]
            del f["layers/000/rows/l2"]
            f["layers/000/rows/l2"] = m[rows[1:]].astype(np.float32)
        try:
            eval_copy.evaluate([part])
        except ValueError:
            pass
        else:
            raise AssertionError("missing row not detected")


def test_plot_block_max_and_png():
    import latim_plot
    m = np.arange(25, dtype=float).reshape(5, 5)
    m[np.triu_indices(5, 1)] = np.nan
    small, b = latim_plot.block_max(m, 3)
    assert b == 2 and small.shape == (3, 3)
    assert small[0, 0] == np.nanmax(m[:2, :2]) and np.isnan(small[0, 2])
    assert small[2, 2] == m[4, 4]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _skip("matplotlib not installed")
    T = 1500
    big = np.tril(np.random.default_rng(0).random((T, T)))
    big[np.triu_indices(T, 1)] = np.nan
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "big.png")
        latim_plot.draw(np.arange(T) % 30, {0: big, 1: big}, [0, 1], "l2", out,
                        normalize="rows", log=True, max_pixels=1024)
        assert os.path.getsize(out) > 1000


# ------------------------------------------------------------- model checks

def _run_latim(model_dir, toks, out, scores="l2"):
    exe = _latim()
    tok_path = out + ".txt"
    with open(tok_path, "w") as f:
        f.write(" ".join(map(str, toks)) + "\n")
    subprocess.run([exe, "run", "--model", model_dir, "--tokens", tok_path, "--out", out,
                    "--save-logits", "--scores", scores, "-q", "--backend", "cpu"],
                   check=True, capture_output=True)


def _present_models():
    dirs = [os.path.join(ROOT, "models", n) for n in MODELS]
    dirs = [d for d in dirs if os.path.exists(os.path.join(d, "config.json"))]
    if not dirs:
        _skip("no trained copy models under models/")
    return dirs


def test_models_copy_with_latim():
    import h5py
    _latim()
    for d in _present_models():
        name = os.path.basename(d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        L = json.load(open(os.path.join(d, "training_log.json")))["args"]["max_length"]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "o.h5")
            correct = 0
            for seed in range(4):
                toks = make_copy_prompt.copy_prompt(L, seed=100 + seed, vocab=cfg["vocab_size"])
                _run_latim(d, toks, out)
                with h5py.File(out, "r") as f:
                    pred = f["logits"][L:2 * L].argmax(-1)
                    correct += int((pred == np.array(toks[L + 1:])).sum())
                    eps = [f[f"layers/{k}/approx_error"][:] for k in f["layers"]]
            acc = correct / (4 * L)
            assert acc >= 0.95, f"{name}: latim copy accuracy {acc}"
            if cfg.get("conv_activation") == "identity":
                assert max(float(np.max(e)) for e in eps) < 1e-4, f"{name}: identity eps {eps}"


def test_models_latim_matches_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        _skip("torch / transformers not installed")
    import h5py
    import torch
    import train_copy_model
    _latim()
    for d in _present_models():
        name = os.path.basename(d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        model = train_copy_model.load_model(d, cfg.get("conv_activation") == "identity")
        L = json.load(open(os.path.join(d, "training_log.json")))["args"]["max_length"]
        toks = make_copy_prompt.copy_prompt(L, seed=7, vocab=cfg["vocab_size"])
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "o.h5")
            _run_latim(d, toks, out)
            with h5py.File(out, "r") as f:
                lat = f["logits"][:]
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([toks])).logits[0].numpy()
        err = np.abs(hf - lat).max() / max(1.0, np.abs(hf).max())
        assert err < 1e-4, f"{name}: latim vs transformers logits differ by {err}"


if __name__ == "__main__":
    tests = [(k, v) for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
        except Skip as e:
            print(f"SKIP {name}: {e}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    sys.exit(1 if failed else 0)
