#!/usr/bin/env python3
"""Runs `latim run` on randomly corrupted inputs (a seeded fuzz, the same cases every run)
and checks the bad-input rules on each: no crash, no hang, and on failure a single-line
message that is printable UTF-8 and no output file left behind. Two families of cases:

- a fixture's model folder with one or two mutations: a config.json field deleted or set
  to an odd value (0, -1, huge, a string, null, ...), or a safetensors header entry with
  another dtype, shape or data offsets, dropped or replaced, a flipped header byte, or the
  file cut short;
- an unfinished output file (`complete` = 0) given to --resume after a mutation: flipped
  bytes, truncation, a deleted dataset, changed or removed attributes, changed values.

- odd command-line values (0, negative, huge, malformed) for every option of `latim run`.

A corrupted input may still be valid, so success is allowed; what is checked is how
latim fails. Warning lines (`latim run: warning: ...`) may precede the error line."""
import json
import os
import random
import shutil
import struct
import subprocess

import h5py
import numpy as np

from latim_testlib import parse_args

ODD = [0, -1, 1, 2, 3, 7, 10**6, 2**31, 2**40, -(2**31), 1.5, -0.5, 1e308, "x", None, [], {}, True, [1], "1e-5"]


def mutate_config(rng, path):
    cfg = json.load(open(path))
    key = rng.choice(sorted(cfg))
    if rng.random() < 0.15:
        del cfg[key]
        what = f"config: {key} deleted"
    else:
        cfg[key] = rng.choice(ODD)
        what = f"config: {key} = {cfg[key]!r}"
    json.dump(cfg, open(path, "w"))
    return what


def mutate_safetensors(rng, path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    r = rng.random()
    if r < 0.1:
        cut = rng.randrange(len(raw))
        open(path, "wb").write(raw[:cut])
        return f"safetensors: cut at byte {cut}"
    if r < 0.2:
        b = bytearray(raw)
        pos = rng.randrange(8, 8 + n)
        b[pos] = rng.randrange(256)
        open(path, "wb").write(bytes(b))
        return f"safetensors: header byte {pos} = {b[pos]}"
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError:
        return "safetensors: (header already unreadable)"
    names = [k for k, v in header.items()
             if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("shape"), list)
             and isinstance(v.get("data_offsets"), list)]
    if not names:
        return "safetensors: (no entry left to change)"
    name = rng.choice(sorted(names))
    entry = header[name]
    if r < 0.4:
        entry["dtype"] = rng.choice(["F64", "I8", "BOOL", "F8_E4M3", "U64", "x", 3, None])
        what = f"dtype = {entry['dtype']!r}"
    elif r < 0.6:
        shape = list(entry["shape"])
        if shape and rng.random() < 0.7:
            shape[rng.randrange(len(shape))] = rng.choice([0, -1, 1, 2**33, 3, shape[0] * 2])
        else:
            shape = rng.choice([[], [0], shape + [1], [2**62, 2**62], "x"])
        entry["shape"] = shape
        what = f"shape = {shape!r}"
    elif r < 0.8:
        off = list(entry["data_offsets"])
        i = rng.randrange(2)
        off[i] = rng.choice([0, -8, 1, off[1 - i], off[i] + 1, off[i] - 1, 2**63 - 1, len(raw)])
        entry["data_offsets"] = off
        what = f"data_offsets = {off}"
    elif r < 0.9:
        del header[name]
        what = "dropped"
    else:
        header[name] = rng.choice([None, [], "x", {"dtype": "F32"}])
        what = f"replaced by {header[name]!r}"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return f"safetensors: {name} {what}"


def mutate_output(rng, path):
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = np.int64(0)
        names = []
        f.visititems(lambda n, o: names.append(n))
    r = rng.random()
    if r < 0.3:
        b = bytearray(open(path, "rb").read())
        for _ in range(rng.choice([1, 4, 32])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        open(path, "wb").write(bytes(b))
        return "output: flipped bytes"
    if r < 0.45:
        size = os.path.getsize(path)
        cut = rng.randrange(size)
        os.truncate(path, cut)
        return f"output: cut at byte {cut}"
    with h5py.File(path, "r+") as f:
        name = rng.choice(sorted(names))
        obj = f[name]
        k = rng.random()
        if k < 0.3:
            del f[name]
            return f"output: {name} deleted"
        if obj.attrs and k < 0.7:
            attr = rng.choice(sorted(obj.attrs))
            obj.attrs[attr] = rng.choice([0, -1, 1, 10**12, "x", np.array([1, 2]), 2.5])
            return f"output: {name} attribute {attr} changed"
        if isinstance(obj, h5py.Dataset) and obj.size and obj.dtype.kind in "fiu":
            idx = tuple(rng.randrange(s) for s in obj.shape)
            obj[idx] = rng.choice([np.nan, -1.0, 1e30] if obj.dtype.kind == "f" else [0, 1, 3])
            return f"output: {name}{list(idx)} changed"
        for attr in list(obj.attrs):
            del obj.attrs[attr]
        return f"output: {name} attributes removed"


def judge(cmd, out, fresh_output):
    """The problem with how this run ended, or None."""
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        return "no answer within 120 s"
    text = (p.stdout + p.stderr).decode("utf-8", "backslashreplace").strip()
    text = "\n".join(l for l in text.split("\n") if not l.startswith("latim run: warning:"))
    if p.returncode < 0 or p.returncode >= 128:
        return f"crashed (exit {p.returncode}): {text[:500]}"
    if p.returncode == 0:
        return None
    if not text:
        return "failed without a message"
    if "\n" in text:
        return f"message of several lines:\n{text[:800]}"
    try:
        (p.stdout + p.stderr).decode("utf-8")
    except UnicodeDecodeError:
        return f"message is not UTF-8: {text[:300]}"
    if any(ord(c) < 32 for c in text):
        return f"control character in the message: {text[:300]}"
    if fresh_output and os.path.exists(out):
        return f"a failed run left {out}"
    return None


def main():
    args = parse_args(__doc__, lambda ap: (ap.add_argument("--cases", type=int, default=200),
                                            ap.add_argument("--seed", type=int, default=2026)))
    rng = random.Random(args.seed)
    fixtures = ["mamba2_f32", "mamba1_f32", "mamba2_g2_f32", "mamba1_bias_f16"]
    plans = [[], ["--scores", "l2,l1,alti", "--full"], ["--pool", "4", "--topk", "3"], ["--rows", "last:2"], ["--no-maps"]]
    failures = []

    for case in range(args.cases):
        fixture = rng.choice(fixtures)
        model = os.path.join(args.work, "model")
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(os.path.join(args.data, fixture), model)
        what = []
        for _ in range(rng.choice([1, 1, 2])):
            if rng.random() < 0.5:
                what.append(mutate_config(rng, os.path.join(model, "config.json")))
            else:
                what.append(mutate_safetensors(rng, os.path.join(model, "model.safetensors")))
        out = os.path.join(args.work, "out.h5")
        if os.path.exists(out):
            os.remove(out)
        cmd = [args.latim, "run", "--model", model, "--tokens", os.path.join(model, "tokens.txt"), "--out", out,
               "--backend", "cpu", "--quiet"] + rng.choice(plans)
        problem = judge(cmd, out, fresh_output=True)
        if problem:
            failures.append(f"model case {case} ({fixture}; {'; '.join(what)}): {problem}")

    fixture = os.path.join(args.data, "mamba2_f32")
    run_args = ["--model", fixture, "--tokens", os.path.join(fixture, "tokens.txt"), "--backend", "cpu", "--quiet",
                "--tile", "16", "--scores", "l2,l1", "--full", "--pool", "4", "--topk", "2"]
    finished = os.path.join(args.work, "finished.h5")
    subprocess.run([args.latim, "run", "--out", finished] + run_args, check=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1"))
    for case in range(args.cases):
        out = os.path.join(args.work, "resumed.h5")
        shutil.copy(finished, out)
        what = mutate_output(rng, out)
        problem = judge([args.latim, "info", "--file", out], out, fresh_output=False)
        if problem:
            failures.append(f"info case {case} ({what}): {problem}")
        problem = judge([args.latim, "run", "--out", out, "--resume"] + run_args, out, fresh_output=False)
        if problem:
            failures.append(f"resume case {case} ({what}): {problem}")

    numbers = ["0", "-1", "1", "3", "17", "256", "300", "301", "1000000", "99999999999999999999", "2147483648",
               "-2147483649", "1.5", "x", "", "1e3", "0x10", "+5", "nan"]
    values = {"--scores": ["l1,alti", "alti-rollout", "hidden-attn", "l2,l2", ",", "l2,", "all", ""],
              "--layers": ["0-2", "2-0", "0,0", "-1", "1-", "-", "0-99999999999", "0,1,2,", "a", ""],
              "--rows": ["last:0", "last:-1", "last:", "last:300", "last:301", "299-0", "5,,9", "@/nonexistent",
                         "@/dev/null", "1000-1100", "x"],
              "--forward": ["sharded", "replicated", "x"], "--precision": ["tf32", "bf16", "fp16"],
              "--backend": ["cuda", "gpu"]}
    for opt in ["--pool", "--topk", "--window", "--tile", "--map-chunk", "--threads", "--seq-shards",
                "--layer-shards", "--chunk-tokens"]:
        values[opt] = numbers
    for case in range(args.cases // 2):
        out = os.path.join(args.work, "cli.h5")
        if os.path.exists(out):
            os.remove(out)
        cmd = [args.latim, "run", "--model", fixture, "--tokens", os.path.join(fixture, "tokens.txt"), "--out", out,
               "--backend", "cpu", "--quiet"]
        for _ in range(rng.choice([1, 2, 3])):
            opt = rng.choice(sorted(values))
            cmd += [opt, rng.choice(values[opt])]
        problem = judge(cmd, out, fresh_output=True)
        if problem:
            failures.append(f"command-line case {case} ({' '.join(cmd[9:])}): {problem}")

    for f in failures:
        print("FAIL", f)
    print(f"{2 * args.cases + args.cases // 2} corrupted inputs, {len(failures)} handled badly")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
