"""PyTorch side of `cargo xtask bench --suite speed --peers PYTHON`.

The same workloads as metalearn's speed suite (benches/src/speed.rs), same shapes, learning
rates and synthetic data (standard-normal 28x28 images, 5-way 1-shot, 15 queries per class):

- conv4_fwd_bwd_80: Conv4 forward + backward on 80 images, loss = mean(out**2);
  conv4_fwd_80_nograd: forward only.
- conv4_5w1s/{maml2,fomaml}_mb{4,32}: one MAML meta-iteration (1 inner SGD step, lr 0.4;
  Adam 0.003), learn2learn's MAML per task (as its Omniglot example) and, at meta-batch 4, a
  plain-PyTorch functional loop (torch.func.functional_call + autograd.grad).
- protonet_5w1s_episode: one Prototypical Networks episode (support and query embedded
  separately), Adam 0.001.
- sinusoid/{maml2,fomaml}_mb25: MLP 1-40-40-1, K = 10, inner lr 0.01, Adam 0.001;
  torch.func vmap and learn2learn.
- layers/block{1..4}/{conv,bn,pool,relu,block}_{fwd,fwd_bwd}: one block's layers on 80 images.

With `--device cuda` every workload runs on the GPU (data made on the CPU from the same
generator, then moved) and each timed run ends with `torch.cuda.synchronize()`; `auto` picks
CUDA when torch sees a GPU. metalearn's side passes `cuda` for its GPU backend (wgpu).

Prints one JSON line per workload and variant: workload, system, threads, device, times_ms, load.
Usage: python speed.py --threads T [--warmup W] [--iters N] [--quick] [--device cpu|cuda|auto]
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

try:
    import learn2learn as l2l
except Exception:  # learn2learn is optional: its variants are skipped without it
    l2l = None

WAYS, QUERY, SIZE = 5, 15, 28

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--quick", action="store_true")
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
args = ap.parse_args()
if args.device == "auto":
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
DEV = torch.device(args.device)


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def on(t, requires_grad=False):
    """A tensor made on the CPU (same numbers on every device), moved to the workload's device."""
    return t.to(DEV).requires_grad_(requires_grad)
torch.set_num_threads(args.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass


def loadavg():
    return os.getloadavg()[0]


def emit(workload, system, fn, gflop=None):
    l0 = loadavg()
    slow = False
    for _ in range(args.warmup):
        t = time.perf_counter()
        fn()
        sync()
        slow |= time.perf_counter() - t > 2.0
    times = []
    # Multi-second workloads (meta-batch 32) get fewer timed runs, as in speed.rs.
    for _ in range(min(args.iters, 3) if slow else args.iters):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"workload": workload, "system": system, "threads": args.threads,
                      "device": args.device, "times_ms": times, "load": [l0, loadavg()], "gflop": gflop}), flush=True)


def block(cin, cout=64):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1),
                         nn.BatchNorm2d(cout, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2))


class Conv4(nn.Module):
    def __init__(self, head=True):
        super().__init__()
        self.features = nn.Sequential(block(1), block(64), block(64), block(64), nn.Flatten())
        self.head = nn.Linear(64, WAYS) if head else None

    def forward(self, x):
        z = self.features(x)
        return self.head(z) if self.head is not None else z


def episodes(n, gen):
    xs = torch.randn(n, WAYS, 1, SIZE, SIZE, generator=gen)
    xq = torch.randn(n, WAYS * QUERY, 1, SIZE, SIZE, generator=gen)
    ys = torch.arange(WAYS).expand(n, -1).contiguous()
    yq = torch.arange(WAYS).repeat_interleave(QUERY).expand(n, -1).contiguous()
    return on(xs), on(ys), on(xq), on(yq)


def l2l_step(maml, opt, batch, loss_fn):
    xs, ys, xq, yq = batch
    n = xs.shape[0]
    opt.zero_grad()
    for i in range(n):
        learner = maml.clone()
        learner.adapt(loss_fn(learner(xs[i]), ys[i]))
        (loss_fn(learner(xq[i]), yq[i]) / n).backward()
    opt.step()


def func_loop_step(model, opt, batch, loss_fn, lr, first_order):
    xs, ys, xq, yq = batch
    names = [k for k, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    n = xs.shape[0]
    opt.zero_grad()
    for i in range(n):
        loss = loss_fn(functional_call(model, dict(zip(names, params)), (xs[i],)), ys[i])
        g = torch.autograd.grad(loss, params, create_graph=not first_order)
        fast = [p - lr * gi for p, gi in zip(params, g)]
        (loss_fn(functional_call(model, dict(zip(names, fast)), (xq[i],)), yq[i]) / n).backward()
    opt.step()


def conv_flops(n, cin, cout, s):
    return 2.0 * n * s * s * cin * cout * 9


torch.manual_seed(0)
gen = torch.Generator().manual_seed(7)

# Conv4 forward + backward, forward only.
model = Conv4().to(DEV)
x = on(torch.randn(80, 1, SIZE, SIZE, generator=gen))
total = sum(conv_flops(80, 1 if b == 0 else 64, 64, SIZE >> b) * (2 if b == 0 else 3) for b in range(4))


def fwd_bwd():
    model.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()


emit("conv4_fwd_bwd_80", "torch", fwd_bwd, total / 1e9)


def fwd():
    with torch.no_grad():
        model(x)


emit("conv4_fwd_80_nograd", "torch", fwd, total / 3e9)

# Conv4 5-way 1-shot MAML / FOMAML.
for mb in ([4] if args.quick else [4, 32]):
    batch = episodes(mb, gen)
    for first_order in (False, True):
        order = "fomaml" if first_order else "maml2"
        if l2l is not None:
            net = Conv4().to(DEV)
            maml = l2l.algorithms.MAML(net, lr=0.4, first_order=first_order)
            opt = torch.optim.Adam(maml.parameters(), lr=0.003)
            emit(f"conv4_5w1s/{order}_mb{mb}", "torch/learn2learn",
                 lambda: l2l_step(maml, opt, batch, F.cross_entropy))
        if mb <= 4:  # the functional loop tracks learn2learn; meta-batch 4 shows it
            net2 = Conv4().to(DEV)
            opt2 = torch.optim.Adam(net2.parameters(), lr=0.003)
            emit(f"conv4_5w1s/{order}_mb{mb}", "torch/func_loop",
                 lambda: func_loop_step(net2, opt2, batch, F.cross_entropy, 0.4, first_order))

# ProtoNet episode.
body = Conv4(head=False).to(DEV)
popt = torch.optim.Adam(body.parameters(), lr=0.001)
xs, ys, xq, yq = episodes(1, gen)


def proto():
    popt.zero_grad()
    zs, zq = body(xs[0]), body(xq[0])
    logits = -torch.cdist(zq, zs).pow(2)
    F.cross_entropy(logits, yq[0]).backward()
    popt.step()


emit("protonet_5w1s_episode", "torch", proto)


# Sinusoid MAML, meta-batch 25, K = 10.
class SineMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(1, 40), nn.Linear(40, 40), nn.Linear(40, 1)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


amp = torch.empty(25, 1, 1).uniform_(0.1, 5.0, generator=gen)
phase = torch.empty(25, 1, 1).uniform_(0.0, math.pi, generator=gen)
sx = torch.empty(25, 10, 1).uniform_(-5.0, 5.0, generator=gen)
qx = torch.empty(25, 10, 1).uniform_(-5.0, 5.0, generator=gen)
sin_batch = tuple(on(t) for t in (sx, amp * torch.sin(sx - phase), qx, amp * torch.sin(qx - phase)))
for first_order in (False, True):
    order = "fomaml" if first_order else "maml2"
    mlp = SineMLP().to(DEV)
    params = dict(mlp.named_parameters())
    vopt = torch.optim.Adam(params.values(), lr=0.001)

    def make_task(fo, m):
        def loss_fn(p, x, y):
            return F.mse_loss(functional_call(m, p, (x,)), y)

        def task(p, xs, ys, xq, yq):
            g = grad(loss_fn)(p, xs, ys)
            if fo:
                g = {k: v.detach() for k, v in g.items()}
            return loss_fn({k: p[k] - 0.01 * g[k] for k in p}, xq, yq)
        return vmap(task, in_dims=(None, 0, 0, 0, 0))

    batched = make_task(first_order, mlp)

    def vstep(batched=batched, params=params, vopt=vopt):
        vopt.zero_grad()
        batched(params, *sin_batch).mean().backward()
        vopt.step()

    emit(f"sinusoid/{order}_mb25", "torch/vmap", vstep)
    if l2l is not None:
        smaml = l2l.algorithms.MAML(SineMLP().to(DEV), lr=0.01, first_order=first_order)
        sopt = torch.optim.Adam(smaml.parameters(), lr=0.001)
        emit(f"sinusoid/{order}_mb25", "torch/learn2learn",
             lambda smaml=smaml, sopt=sopt: l2l_step(smaml, sopt, sin_batch, F.mse_loss))

# Per-layer breakdown.
for b in range(4):
    cin, s = (1 if b == 0 else 64), SIZE >> b
    conv, bn, relu, pool = model.features[b][0], model.features[b][1], model.features[b][2], model.features[b][3]
    flops = conv_flops(80, cin, 64, s) / 1e9
    ops = {
        "conv": (lambda t: conv(t), on(torch.randn(80, cin, s, s), b > 0), flops),
        "bn": (lambda t: bn(t), on(torch.randn(80, 64, s, s), True), None),
        "pool": (lambda t: pool(t), on(torch.randn(80, 64, s, s), True), None),
        "relu": (lambda t: relu(t), on(torch.randn(80, 64, s // 2, s // 2), True), None),
        "block": (lambda t: pool(relu(bn(conv(t)))), on(torch.randn(80, cin, s, s), b > 0), flops),
    }
    for name, (f, inp, fl) in ops.items():
        with torch.no_grad():
            w = torch.rand_like(f(inp))

        def fwd_only(f=f, inp=inp):
            with torch.no_grad():
                f(inp)

        def fwd_bwd_layer(f=f, inp=inp, w=w):
            (f(inp) * w).sum().backward()

        emit(f"layers/block{b + 1}/{name}_fwd", "torch", fwd_only, fl)
        emit(f"layers/block{b + 1}/{name}_fwd_bwd", "torch", fwd_bwd_layer,
             None if fl is None else fl * (2 if b == 0 else 3))
