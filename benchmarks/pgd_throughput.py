"""Targeted L2 PGD throughput: medenc's ``targeted_pgd`` against torchattacks' ``PGDL2`` in one run.

Both attack the same model (random weights, eval mode) on the same inputs with the same targets, eps,
step and number of steps, no random start. torchattacks gets the model as built (fp32, default
layout: how a user would call it); medenc gets its own fast path: the frozen copy made by
``medenc.core.fast_model.attack_model`` (``--plain``: the model as built), the chosen ``--precision`` and
optionally ``torch.compile``. Timed runs alternate between the two and the best of ``--repeats`` is
reported (the median too), after one untimed warm-up run each (the compile time is reported on its own).

Prints image-steps/s for each, peak memory, the mean final cross-entropy to the targets (equal strength
check), the FLOPs of one image-step (``torch.utils.flop_counter``), a measured matrix-multiply rate and
the throughput bound they imply. The last line is ``ratio medenc/torchattacks: X.XX``.

Examples:
    .venv/bin/python benchmarks/pgd_throughput.py --size 128 --batch 16 --steps 10 --threads 1
    python benchmarks/pgd_throughput.py --device cuda --size 320 --batch 256 --steps 20 --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch
from torch import nn


def build(arch: str, classes: int) -> nn.Module:
    """``medenc.learn.models.build_model(arch)``; for resnet18 MONAI's network directly if that is missing."""
    try:
        from medenc.learn.models import build_model
    except ImportError:
        if arch != "resnet18":
            raise
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=2, n_input_channels=1, num_classes=classes, conv1_t_stride=2)
    return build_model(arch, in_channels=1, num_classes=classes)


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or on CPU the peak resident-set growth (sampled)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self, base: int) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss() - base)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._thread = threading.Thread(target=self._sample, args=(self._rss(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def flops_per_image_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """FLOPs of one forward and one input-gradient backward, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).eval().requires_grad_(False)
    probe, probe_target = x[:2].clone().requires_grad_(True), target[:2]
    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.cross_entropy(model(probe), probe_target, reduction="sum")
        loss.backward()  # only the probe needs a gradient: the parameters are frozen
    return counter.get_total_flops() / probe.shape[0]


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a large square matrix product (best of a few)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        seconds, _ = timed(lambda: a @ b, device)
        best = min(best, seconds)
    return 2 * n**3 / best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


def mem(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="image height = width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--arch", default="resnet18", help="a medenc.learn.models architecture")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="medenc's autocast")
    parser.add_argument("--compile", nargs="?", const=True, default=False, help="torch.compile [mode] for medenc")
    parser.add_argument("--plain", action="store_true", help="medenc attacks the model as built, no fast copy")
    parser.add_argument("--no-best", action="store_true", help="medenc returns the last iterate (use_best=False)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--eps", type=float, default=2.0)
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torchattacks

    from medenc.core.fast_model import attack_model
    from medenc.core.pgd import targeted_pgd

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    model = build(args.arch, args.classes).to(device).eval()
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    target = torch.arange(args.batch, device=device) % args.classes
    attacked = model if args.plain else attack_model(model, device)
    autocast = torch.bfloat16 if args.precision == "bf16" else None

    def run_torchattacks() -> torch.Tensor:
        attack = torchattacks.PGDL2(model, eps=args.eps, alpha=args.step, steps=args.steps, random_start=False)
        attack.set_mode_targeted_by_label(quiet=True)
        return attack(x, target)

    def run_medenc() -> torch.Tensor:
        return targeted_pgd(
            attacked,
            x,
            target,
            eps=args.eps,
            step=args.step,
            steps=args.steps,
            use_best=not args.no_best,
            autocast_dtype=autocast,
            compile=args.compile,
        )

    runs = {"torchattacks": run_torchattacks, "medenc": run_medenc}
    warm = {name: timed(fn, device)[0] for name, fn in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, int] = dict.fromkeys(runs, 0)
    finals: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for name, fn in list(runs.items())[:: 1 if repeat % 2 == 0 else -1]:  # alternate who goes first
            with PeakMemory(device) as peak:
                elapsed, finals[name] = timed(fn, device)
            seconds[name].append(elapsed)
            peaks[name] = max(peaks[name], peak.peak)

    threads = f"{torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {threads}"
    print(f"device: {name}; torch {torch.__version__}; torchattacks {torchattacks.__version__}")
    print(
        f"arch {args.arch} 1x{args.size}x{args.size}, {args.classes} classes, batch {args.batch}, {args.steps} steps, "
        f"eps {args.eps}, step {args.step}; medenc: {args.precision}, compile={args.compile}, "
        f"{'plain model' if args.plain else 'attack_model copy'}, use_best={not args.no_best}; "
        f"best of {args.repeats}"
    )
    rates = {}
    for key in runs:
        rates[key] = args.batch * args.steps / min(seconds[key])
        median = args.batch * args.steps / statistics.median(seconds[key])
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(finals[key]), target).item()
        print(
            f"{key:>12}: {rates[key]:10,.1f} image-steps/s (median {median:,.1f}); peak memory {mem(peaks[key])}; "
            f"final CE to target {loss:.4f}"
        )
    compile_s = max(0.0, warm["medenc"] - min(seconds["medenc"]))
    print(f"medenc warm-up run minus a timed run (compile/autotune time): {compile_s:.1f} s")
    flops = flops_per_image_step(model, x, target)
    dtype = torch.bfloat16 if (args.precision == "bf16" and device.type == "cuda") else torch.float32
    rate = matmul_rate(device, dtype)
    print(
        f"one image-step: {flops / 1e9:.3f} GFLOP; measured {str(dtype).split('.')[-1]} matmul "
        f"{rate / 1e12:.3f} TFLOP/s; bound {rate / flops:,.0f} image-steps/s "
        f"(medenc at {100 * rates['medenc'] * flops / rate:.0f}% of it)"
    )
    print(f"ratio medenc/torchattacks: {rates['medenc'] / rates['torchattacks']:.2f}")


if __name__ == "__main__":
    main()
