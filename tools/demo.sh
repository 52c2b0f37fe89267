#!/usr/bin/env bash
# The demo: install, build, then map a copy-task prompt with the shipped Mamba-2 copy model,
# draw the l2 maps of every layer, and print how well each layer points a copied token back
# to its original (the paper's copying AUC / AP).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
PY=.venv/bin/python
MODEL=${MODEL:-models/copy-mamba2}
mkdir -p demo
"$PY" tools/make_copy_prompt.py --length 16 --seed 7 --vocab 32 --distinct --out demo/copy.txt
build/latim run --model "$MODEL" --tokens demo/copy.txt --out demo/copy.h5 --scores l2,alti,hidden-attn --save-logits
"$PY" tools/latim_plot.py demo/copy.h5 --score l2 --layers all --vocab models/copy-vocab.txt --out demo/copy-l2.png
echo "wrote demo/copy.h5 and demo/copy-l2.png"
"$PY" tools/eval_copy.py demo/copy.h5
