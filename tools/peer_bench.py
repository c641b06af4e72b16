#!/usr/bin/env python3
"""The peer run of `qcanet-gpu bench --only net`: the same NSN and NDN in
PyTorch, timed the same way, so benches/RESULTS.md can give the ratio measured
in one run on one machine (optional; not in CI; needs torch).

The networks are built as `src/model/config.rs` builds them (`Layout::new`):
encoder level 0 conv-BN-ReLU in->b, b->2b; each level i = 1..depth max-pool,
conv-BN-ReLU c->c, c->2c (c = b << i); each decoder i = depth..1 transposed
conv 2c->2c (kernel 2, stride 2), concatenation with the skip, conv-BN-ReLU
3c->c, c->c; a 1x1x1 head 2b->classes. Same padding, biases, BN eps 2e-5 and
momentum 0.1. The parameter counts are printed so they can be checked against
`bench` (NSN 1147618, NDN 44450498 for the presets).

Protocol, as `src/model/bench.rs`: batch 1 of side^3 (uniform 0..1), one
untimed run, then the median of REPS runs of (a) the inference forward with
softmax (eval mode, no autograd) and (b) one training step (train mode,
cross-entropy with class weights 1,1 on ~10 % foreground, backward, Adam
lr 1e-4), each synchronised. GFLOP/s count the convolutions' multiply-adds x 2
(`NetConfig::forward_flops`; a training step is 3x the forward).

    python3 tools/peer_bench.py [--device cpu|cuda|all] [--sides 64] [--reps 5] [--json]
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    sys.exit("peer_bench.py needs PyTorch (pip install torch); it is optional and not part of the tests")

PRESETS = {"nsn": (2, 16, 3), "ndn": (4, 12, 5)}  # depth, base, kernel (src/model/config.rs)
BN_EPS, BN_MOMENTUM = 2e-5, 0.1


def cbr(cin, cout, k):
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, padding=k // 2, bias=True),
        nn.BatchNorm3d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


class UNet3d(nn.Module):
    def __init__(self, depth, base, k, classes=2, cin=1):
        super().__init__()
        self.depth = depth
        self.enc = nn.ModuleList([nn.Sequential(cbr(cin, base, k), cbr(base, 2 * base, k))])
        for i in range(1, depth + 1):
            c = base << i
            self.enc.append(nn.Sequential(cbr(c, c, k), cbr(c, 2 * c, k)))
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(depth, 0, -1):
            c = base << i
            self.ups.append(nn.ConvTranspose3d(2 * c, 2 * c, 2, stride=2))
            self.dec.append(nn.Sequential(cbr(3 * c, c, k), cbr(c, c, k)))
        self.head = nn.Conv3d(2 * base, classes, 1)
        self.pool = nn.MaxPool3d(2, 2)

    def forward(self, x):
        skips = []
        h = self.enc[0](x)
        for i in range(1, self.depth + 1):
            skips.append(h)
            h = self.enc[i](self.pool(h))
        for up, dec in zip(self.ups, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        return self.head(h)


def forward_flops(depth, base, k, side, classes=2, cin=1):
    """NetConfig::forward_flops."""
    vox = lambda level: side**3 / 8**level
    f = 0.0
    chans = [(cin, base), (base, 2 * base)]
    for c_in, c_out in chans:
        f += 2 * vox(0) * c_in * c_out * k**3
    for i in range(1, depth + 1):
        c = base << i
        for c_in, c_out in [(c, c), (c, 2 * c)]:
            f += 2 * vox(i) * c_in * c_out * k**3
    for i in range(depth, 0, -1):
        c = base << i
        f += 2 * vox(i) * (2 * c) * (2 * c) * 8
        for c_in, c_out in [(3 * c, c), (c, c)]:
            f += 2 * vox(i - 1) * c_in * c_out * k**3
    f += 2 * vox(0) * 2 * base * classes
    return f


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(dev, reps, fn):
    fn()
    sync(dev)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(name, dev, side, reps):
    depth, base, k = PRESETS[name]
    torch.manual_seed(0)
    net = UNet3d(depth, base, k).to(dev)
    params = sum(p.numel() for p in net.parameters())
    x = torch.rand(1, 1, side, side, side, device=dev)
    t = (torch.rand(1, side, side, side, device=dev) > 0.9).long()
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.0], device=dev))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def forward():
        with torch.no_grad():
            torch.softmax(net(x), dim=1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), t)
        loss.backward()
        opt.step()
        loss.item()

    net.eval()
    f = timed(dev, reps, forward)
    net.train()
    s = timed(dev, reps, step)
    fl = forward_flops(depth, base, k, side)
    return {
        "network": name,
        "device": str(dev),
        "side": side,
        "params": params,
        "forward_s": f,
        "forward_gflops": fl / f / 1e9,
        "train_step_s": s,
        "train_step_gflops": 3 * fl / s / 1e9,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cuda where present)")
    ap.add_argument("--sides", default="64", help="cube sides, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--networks", default="nsn,ndn")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    devs = []
    if a.device in ("cpu", "all"):
        devs.append(torch.device("cpu"))
    if a.device in ("cuda", "all") and torch.cuda.is_available():
        devs.append(torch.device("cuda"))
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
        file=sys.stderr,
    )
    for dev in devs:
        for side in [int(s) for s in a.sides.split(",")]:
            for name in a.networks.split(","):
                r = bench(name, dev, side, a.reps)
                rows.append(r)
                if not a.json:
                    print(
                        f"{r['network']:4} {r['device']:5} {side:4} {r['params']:>10} params  forward {r['forward_s'] * 1e3:9.1f} ms "
                        f"{r['forward_gflops']:8.1f} GFLOP/s  train step {r['train_step_s'] * 1e3:9.1f} ms {r['train_step_gflops']:8.1f} GFLOP/s",
                        flush=True,
                    )
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
