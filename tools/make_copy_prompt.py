#!/usr/bin/env python3
"""Write a copying-task prompt as a latim token file, plus a JSON sidecar.

The prompt is the full teacher-forced copy sequence used to train the models
under models/ (see tools/train_copy_model.py and models/README.md):

    x_0 .. x_{L-1}  SEP  x_0 .. x_{L-1}            T = 2L + 1 tokens

with SEP = 2 and content ids drawn from [3, vocab). Positions: x_k sits at k
(first half) and at L + 1 + k (its copy); the separator is at L.

The sidecar (OUT.json, or --meta) records the length, seed, vocabulary, the
separator id and position, and the token ids, so tools/eval_copy.py can use it
(it can also rederive everything from the token row and the separator id).

Usage:
    python3 tools/make_copy_prompt.py --length 16 --seed 1 --out copy_L16_s1.txt
    python3 tools/make_copy_prompt.py --length 16 --seed 1 --vocab 32 --distinct --out p.txt

Only the standard library is needed.
"""

import argparse
import json
import random
import sys

SEP_ID = 2
FIRST_CONTENT_ID = 3


def copy_prompt(length, seed, vocab=32, distinct=False, sep_id=SEP_ID, first_id=FIRST_CONTENT_ID):
    """Return the token list of one copy prompt (first half, separator, copy)."""
    rng = random.Random(seed)
    pool = list(range(first_id, vocab))
    if distinct:
        if length > len(pool):
            raise ValueError(f"--distinct needs length <= {len(pool)} for vocab {vocab}")
        x = rng.sample(pool, length)
    else:
        x = [rng.choice(pool) for _ in range(length)]
    return x + [sep_id] + x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, required=True, help="L, tokens to copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=32, help="model vocab_size (content ids 3..vocab-1)")
    ap.add_argument("--distinct", action="store_true",
                    help="no repeated content token inside the sequence (unambiguous sources)")
    ap.add_argument("--sep-id", type=int, default=SEP_ID)
    ap.add_argument("--out", required=True, help="token file to write (whitespace-separated ids)")
    ap.add_argument("--meta", help="sidecar JSON path (default: OUT with .json suffix)")
    args = ap.parse_args()

    if args.length < 1:
        sys.exit("--length must be >= 1")
    try:
        toks = copy_prompt(args.length, args.seed, args.vocab, args.distinct, args.sep_id)
    except ValueError as e:
        sys.exit(str(e))
    with open(args.out, "w") as f:
        f.write(" ".join(str(t) for t in toks) + "\n")
    meta_path = args.meta or (args.out.rsplit(".", 1)[0] if "." in args.out else args.out) + ".json"
    meta = {
        "task": "copy",
        "length": args.length,
        "seed": args.seed,
        "vocab": args.vocab,
        "distinct": args.distinct,
        "sep_id": args.sep_id,
        "sep_pos": args.length,
        "T": len(toks),
        "first_half": [0, args.length],           # [start, end) positions of x
        "copy_half": [args.length + 1, 2 * args.length + 1],
        "tokens": toks,
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} (T={len(toks)}) and {meta_path}")


if __name__ == "__main__":
    main()
