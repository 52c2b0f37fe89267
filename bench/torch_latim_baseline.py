"""Peer baseline: LaTIM l2 maps for ONE layer, written the way a researcher would in PyTorch.
Shapes of mamba-130m (Mamba-1: d=768, D=1536, N=16, K=4) and mamba2-130m (d=768, D=1536, H=24, P=64, N=128).
Two variants: 'dense' materialises upsilon (T x T x D); 'rowblock' loops over row blocks to fit memory.
Prints per-T time (s) and peak memory (GiB), or OOM.
Adapted from the project's shared baseline script: lengths from --dense/--rowblock, results also as JSON.
    python3 bench/torch_latim_baseline.py --dense 1024 --rowblock 4096,16384 --json torch_latim.json"""
import argparse, json, sys, time, torch
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
d, D, K = 768, 1536, 4

def inputs_m2(T, H=24, N=128):
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=dev, generator=g)
    B, C = r(T, N) / N**0.5, r(T, N) / N**0.5
    dt = torch.nn.functional.softplus(r(T, H) - 3)
    A = -torch.rand(H, device=dev, generator=g) * 15 - 1
    xc = r(T, K, D)            # xc[j, k] = x_{j+k <- j}
    Z = torch.nn.functional.silu(r(T, D))
    gam = r(T, 1).abs() + 0.5
    Wo = r(d, D) / D**0.5
    return B, C, dt, A, xc, Z, gam, Wo

def M2(B, C, dt, A, rows):        # M[i,l,h] for i in rows, all l
    cum = torch.cumsum(dt * A, 0)                      # T,H
    seg = cum[rows, None, :] - cum[None, :, :]         # b,T,H
    T = B.shape[0]
    mask = (torch.arange(T, device=dev)[None, :] <= rows[:, None])[..., None]
    return torch.where(mask, torch.exp(torch.where(mask, seg, -1e30)), 0.) * (C[rows] @ B.T)[..., None] * dt[None]

def latim_rows(inp, rows, H=24, P=64):
    B, C, dt, A, xc, Z, gam, Wo = inp
    T = B.shape[0]
    M = M2(B, C, dt, A, rows)                           # b,T,H
    ups = torch.zeros(len(rows), T, D, device=dev)
    for k in range(K):                                  # upsilon_{i<-j} = sum_k M[i, j+k] * x_{j+k<-j}
        Mk = torch.zeros_like(M); Mk[:, :T-k] = M[:, k:]
        ups += (Mk.repeat_interleave(P, -1)) * xc[None, :, k]
    u = ups * (Z[rows] * gam[rows])[:, None, :]
    return torch.linalg.vector_norm(u @ Wo.T, dim=-1)     # b,T

def run(T, block):
    inp = inputs_m2(T)
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = torch.empty(T, T, device=dev) if T <= 32768 else None
    for s in range(0, T, block):
        rows = torch.arange(s, min(T, s + block), device=dev)
        o = latim_rows(inp, rows)
        if out is not None: out[s:s+len(rows)] = o
    torch.cuda.synchronize()
    return time.time() - t0, torch.cuda.max_memory_allocated() / 2**30

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dense", default="512,1024,2048,4096")
    ap.add_argument("--rowblock", default="1024,2048,4096,8192,16384")
    ap.add_argument("--json", default="torch_latim.json")
    args = ap.parse_args()
    lists = lambda v: [int(t) for t in v.split(",") if t]
    results = []
    print("mode T block seconds peakGiB pairs_per_s")
    for mode, Ts in [("dense", lists(args.dense)), ("rowblock", lists(args.rowblock))]:
        for T in Ts:
            block = T if mode == "dense" else max(1, (2**31) // (T * D * 4))
            s = 0.0
            try:
                run(min(T, 256), min(block, 256))
                s, m = run(T, block)
                print(f"{mode} {T} {block} {s:.3f} {m:.1f} {T*(T+1)/2/s:.3e}", flush=True)
                results.append({"mode": mode, "T": T, "block": block, "seconds": s, "peak_gib": m, "pairs_per_s": T*(T+1)/2/s})
            except torch.OutOfMemoryError:
                print(f"{mode} {T} {block} OOM", flush=True); torch.cuda.empty_cache()
                results.append({"mode": mode, "T": T, "oom": True})
            if s > 120: break
    json.dump({"results": results}, open(args.json, "w"), indent=1)
