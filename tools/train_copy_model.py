#!/usr/bin/env python3
"""Train a tiny Mamba-1 / Mamba-2 language model on the copying task.

The task (as in the LaTIM paper's copying experiment): a sequence of L random
content tokens, one separator token, then the same L tokens again. The model
is trained as an ordinary causal LM with the loss only on the copied half,
i.e. on the predictions made at positions L (the separator) .. 2L-1, whose
targets are tokens L+1 .. 2L (the copy).

Token conventions (see models/README.md):

    id 0  PAD   (never appears in a copy prompt; padding only)
    id 1  BOS   (reserved, unused by the copy prompts)
    id 2  SEP   (separator between the sequence and its copy)
    ids 3 .. vocab-1  content tokens, drawn uniformly with replacement

    prompt = x_0 .. x_{L-1}  SEP  x_0 .. x_{L-1}        (T = 2L + 1 tokens)

The model is saved with ``save_pretrained`` (config.json + model.safetensors)
in Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` format, so both
transformers and ``latim`` can read it.

Identity variant (``--identity``): the post-conv activation of every mixer is
replaced by the identity in memory while training (the gate keeps SiLU: in the
transformers torch path the activation named by ``hidden_act`` is applied only
after the causal conv, and the gate's SiLU is hard-coded). The saved
config.json keeps ``hidden_act: silu`` (which transformers needs for the
gate-free parts of its config) and gains a top-level
``"conv_activation": "identity"``, which latim reads. To run such a model in
transformers, load it and call ``set_identity_conv(model)`` from this file.

Usage (from the repository root):

    python3 tools/train_copy_model.py --arch mamba2 --out models/copy-mamba2
    python3 tools/train_copy_model.py --arch mamba1 --out models/copy-mamba1
    python3 tools/train_copy_model.py --arch mamba2 --identity \
        --out models/copy-mamba2-identity

Needs torch, transformers (tested with 5.23), safetensors, numpy. Runs on CPU
with transformers' pure-PyTorch path: on one thread of a shared CPU the Mamba-2
models took about 9 minutes, the Mamba-1 model about 40 (its sequential scan is
the slow part).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

PAD_ID, BOS_ID, SEP_ID = 0, 1, 2
FIRST_CONTENT_ID = 3


# --------------------------------------------------------------------------- data

def make_batch(rng, batch, length, vocab):
    """Return int64 [batch, 2*length+1] copy sequences (numpy Generator rng)."""
    x = rng.integers(FIRST_CONTENT_ID, vocab, size=(batch, length), dtype=np.int64)
    sep = np.full((batch, 1), SEP_ID, dtype=np.int64)
    return np.concatenate([x, sep, x], axis=1)


def copy_labels(ids, length):
    """HF-style labels: the model's logits at t predict labels[t+1]; keep the copy only."""
    labels = ids.clone()
    labels[:, : length + 1] = -100
    return labels


# -------------------------------------------------------------------------- model

def set_identity_conv(model):
    """Make the post-conv activation the identity in transformers' torch path.

    Both ``mixer.activation`` (the name the conv helper receives) and
    ``mixer.act`` (the module some code paths call) are switched; the gate's
    SiLU is not touched.
    """
    from transformers.activations import ACT2FN
    for layer in model.backbone.layers:
        layer.mixer.activation = "linear"
        layer.mixer.act = ACT2FN["linear"]


def build_model(args):
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM
    common = dict(
        vocab_size=args.vocab, hidden_size=args.d_model, num_hidden_layers=args.layers,
        state_size=args.state, expand=args.expand, conv_kernel=args.conv,
        use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=SEP_ID,
        hidden_act="silu", residual_in_fp32=True, use_cache=False,
    )
    if args.arch == "mamba1":
        cfg = MambaConfig(time_step_rank="auto", **common)
        model = MambaForCausalLM(cfg)
    else:
        inner = args.expand * args.d_model
        if inner % args.head_dim:
            sys.exit(f"expand*d_model = {inner} is not a multiple of --head-dim {args.head_dim}")
        cfg = Mamba2Config(num_heads=inner // args.head_dim, head_dim=args.head_dim,
                           n_groups=1, chunk_size=args.chunk_size, **common)
        model = Mamba2ForCausalLM(cfg)
    if args.identity:
        set_identity_conv(model)
    return model


def load_model(path, identity):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if identity:
        set_identity_conv(model)
    return model


# --------------------------------------------------------------------------- eval

@torch.no_grad()
def copy_accuracy(model, seqs, length, batch=256):
    """Token accuracy and exact-sequence accuracy of greedy teacher-forced copying."""
    model.eval()
    correct = 0
    exact = 0
    for s in range(0, len(seqs), batch):
        ids = torch.from_numpy(seqs[s:s + batch])
        logits = model(input_ids=ids, use_cache=False).logits
        pred = logits[:, length:2 * length].argmax(-1)     # predictions for tokens L+1..2L
        ok = pred == ids[:, length + 1:]
        correct += ok.sum().item()
        exact += ok.all(dim=1).sum().item()
    model.train()
    return correct / (len(seqs) * length), exact / len(seqs)


def heldout_sets(seed, lengths, vocab, n):
    """Held-out sequences: a separate RNG stream (seed + 10007) per length."""
    rng = np.random.default_rng(seed + 10007)
    return {L: make_batch(rng, n, L, vocab) for L in lengths}


def eval_all(model, sets):
    out = {}
    for L, seqs in sets.items():
        tok, seq = copy_accuracy(model, seqs, L)
        out[L] = {"token_acc": tok, "seq_acc": seq}
    return out


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=["mamba1", "mamba2"], required=True)
    ap.add_argument("--identity", action="store_true",
                    help="identity post-conv activation (saved as conv_activation: identity)")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--min-length", type=int, default=16, help="shortest sequence to copy (L)")
    ap.add_argument("--max-length", type=int, default=16, help="longest sequence to copy (L)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--conv", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=16, help="Mamba-2 head dim")
    ap.add_argument("--chunk-size", type=int, default=64,
                    help="Mamba-2 scan chunk (speed only; HF's pure-torch path pads T to a multiple)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=512, help="held-out sequences per length")
    ap.add_argument("--target-acc", type=float, default=0.995,
                    help="stop once held-out token accuracy at every length reaches this")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.min_length > args.max_length or args.min_length < 1:
        sys.exit("need 1 <= --min-length <= --max-length")
    if args.vocab <= FIRST_CONTENT_ID + 1:
        sys.exit("--vocab too small")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_model(args)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    eval_lengths = sorted({args.min_length, (args.min_length + args.max_length) // 2,
                           args.max_length})
    sets = heldout_sets(args.seed, eval_lengths, args.vocab, args.eval_n)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "A_log" in n or n.endswith(".D") or "dt" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    os.makedirs(args.out, exist_ok=True)
    log = {"args": vars(args), "params": nparams, "evals": []}
    print(f"{args.arch}{' identity' if args.identity else ''}: {nparams} parameters", flush=True)
    t0 = time.time()
    running = None
    step = 0
    done = False
    for step in range(1, args.steps + 1):
        L = int(rng.integers(args.min_length, args.max_length + 1))
        ids = torch.from_numpy(make_batch(rng, args.batch, L, args.vocab))
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        out = model(input_ids=ids, labels=copy_labels(ids, L), use_cache=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = out.loss.item() if running is None else 0.98 * running + 0.02 * out.loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            acc = eval_all(model, sets)
            rec = {"step": step, "loss": running, "time_s": round(time.time() - t0, 1),
                   "acc": {str(k): v for k, v in acc.items()}}
            log["evals"].append(rec)
            accs = " ".join(f"L{k}:{v['token_acc']:.4f}/{v['seq_acc']:.3f}" for k, v in acc.items())
            print(f"step {step:6d} loss {running:.4f} acc(tok/seq) {accs} "
                  f"{time.time() - t0:.0f}s", flush=True)
            if min(v["token_acc"] for v in acc.values()) >= args.target_acc:
                done = True
            if done:
                break

    # Save, then re-load from disk and re-evaluate (this is the number we report).
    if args.identity:
        model.config.conv_activation = "identity"
    model.save_pretrained(args.out, safe_serialization=True)
    reloaded = load_model(args.out, args.identity)
    final_sets = heldout_sets(args.seed + 1, eval_lengths, args.vocab, 2000)
    final = eval_all(reloaded, final_sets)
    log["final"] = {"step": step, "train_time_s": round(time.time() - t0, 1),
                    "heldout_n_per_length": 2000,
                    "acc": {str(k): v for k, v in final.items()}}
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    accs = " ".join(f"L{k}:{v['token_acc']:.4f}/{v['seq_acc']:.3f}" for k, v in final.items())
    print(f"saved {args.out} after {step} steps; reloaded held-out acc(tok/seq) {accs}", flush=True)


if __name__ == "__main__":
    main()
