"""Peer baseline: HF transformers forward (torch path: no mamba_ssm kernels), random weights, 130m shapes, fp32.
Adapted from the project's shared baseline script: lengths from --T, results also as JSON.
    python3 bench/hf_forward_baseline.py --T 4096,16384 --json hf_forward.json"""
import argparse, json, time, torch, transformers
from transformers import MambaConfig, MambaForCausalLM, Mamba2Config, Mamba2ForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--T", default="4096,16384")
ap.add_argument("--families", default="mamba1-130m,mamba2-130m")
ap.add_argument("--json", default="hf_forward.json")
ap.add_argument("--max-seconds", type=float, default=60.0, help="skip longer T once a run takes this long")
args = ap.parse_args()
dev = "cuda"
print("transformers", transformers.__version__, "torch", torch.__version__)
try:
    import mamba_ssm; print("mamba_ssm present")
except Exception:
    print("mamba_ssm absent")
cfgs = {
 "mamba1-130m": (MambaForCausalLM, MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4)),
 "mamba2-130m": (Mamba2ForCausalLM, Mamba2Config(vocab_size=50288, hidden_size=768, num_hidden_layers=24, state_size=128, expand=2, head_dim=64, num_heads=24, n_groups=1, conv_kernel=4, chunk_size=256)),
}
results = []
for name in args.families.split(","):
    cls, cfg = cfgs[name]
    m = cls(cfg).to(dev).eval()
    for T in [int(t) for t in args.T.split(",")]:
        ids = torch.randint(0, 50000, (1, T), device=dev)
        try:
            with torch.no_grad():
                m(ids[:, :128]); torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
                t0 = time.time(); m(ids); torch.cuda.synchronize(); s = time.time() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{name} T={T} fp32 {s:.3f}s {T/s:.0f} tok/s peak {peak:.1f}GiB", flush=True)
            results.append({"model": name, "T": T, "seconds": s, "tok_per_s": T / s, "peak_gib": peak})
            if s > args.max_seconds: break
        except torch.OutOfMemoryError:
            print(f"{name} T={T} OOM", flush=True); results.append({"model": name, "T": T, "oom": True})
            torch.cuda.empty_cache(); break
    del m; torch.cuda.empty_cache()
json.dump({"transformers": transformers.__version__, "results": results}, open(args.json, "w"), indent=1)
