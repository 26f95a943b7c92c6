"""Encryption quality of PGD's fast paths against plain fp32, on real data (scikit-learn's digits).

A base classifier (``--arch``, with batch norm, so folding is exercised) is trained on the digits; the
training and test sets are then encrypted (``--combiner``, default basic) once per variant, with the
same key and inputs:

- ``fp32-plain``: fp32, the model as trained (the reference);
- ``fp32-fast``: fp32, the frozen copy of ``medenc.core.fast_model.attack_model`` (what ``Encryptor`` uses);
- ``bf16-fast``: the same copy under bf16 autocast (the CUDA default of ``precision="auto"``);
- ``bf16-fast-compile``, ``fp32-fast-compile``: plus ``torch.compile`` (meant for CUDA).

Per variant: the base model's target-class hit rate on the encrypted test images, their mean
cross-entropy to the targets, PSNR, the largest difference from the reference, and victims (same
architecture, ``--victims`` seeds) trained on the encrypted training set, tested on encrypted and on
original test images (mean and spread over the seeds: the noise a difference has to beat).

Example:
    .venv/bin/python benchmarks/quality_parity.py --threads 1
    python benchmarks/quality_parity.py --device cuda --size 32 --arch resnet18 \
        --variants fp32-plain,fp32-fast,bf16-fast,bf16-fast-compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

VARIANTS = {
    "fp32-plain": ("fp32", False, False),
    "fp32-fast": ("fp32", True, False),
    "bf16-plain": ("bf16", False, False),
    "bf16-fast": ("bf16", True, False),
    "fp32-fast-compile": ("fp32", True, True),
    "bf16-fast-compile": ("bf16", True, True),
}


def digits(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/test split of scikit-learn's digits in [0, 1], optionally resized to ``size``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


def fit(arch: str, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, device: torch.device) -> nn.Module:
    from medenc.learn.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch, in_channels=1, num_classes=10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = x.to(device), y.to(device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), device=device)
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    device = next(model.parameters()).device
    return (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="smallcnn", help="a medenc.learn.models architecture (base and victims)")
    parser.add_argument("--size", type=int, default=8, help="resize the 8x8 digits to this size")
    parser.add_argument("--combiner", default="basic")
    parser.add_argument("--eps", type=float, default=1.5, help="L2 radius on the [0, 1] images")
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--victims", type=int, default=3, help="victim seeds per variant")
    parser.add_argument("--variants", default="fp32-plain,fp32-fast,bf16-fast", help=", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from medenc import EncryptionKey, Encryptor
    from medenc.core.key import PGDSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    x_train, y_train, x_test, y_test = digits(args.size)
    base = fit(args.arch, x_train, y_train, seed=1, epochs=args.epochs, device=device)
    settings = PGDSettings(eps=args.eps, step=args.step, steps=args.steps)
    key = EncryptionKey.generate([str(d) for d in range(10)], args.combiner, seed=0, pgd=settings)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"digits {args.size}x{args.size} ({where}); base {args.arch}: clean test accuracy "
        f"{accuracy(base, x_test, y_test):.3f}; {args.combiner}, L2 eps {args.eps}, step {args.step}, "
        f"{args.steps} steps; {args.victims} victims ({args.arch}, {args.epochs} epochs) per variant"
    )
    print(
        "| variant | PGD s | hit rate | final CE | PSNR dB | max abs diff vs first | victim on encrypted "
        "| victim on original |"
    )
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for name in names:
        precision, fast, compiled = VARIANTS[name]
        encryptor = Encryptor(
            base, key, device=device, batch_size=512, precision=precision, fast_model=fast, compile=compiled
        )
        start = time.perf_counter()
        enc_train = encryptor.encrypt(x_train, y_train)
        result = encryptor.encrypt_with_details(x_test, y_test)
        seconds = time.perf_counter() - start
        first_target = result.targets[:, 0]
        with torch.no_grad():
            logits = base(result.copies[:, 0].to(device)).float().cpu()
        hit = (logits.argmax(1) == first_target).float().mean().item()
        loss = nn.functional.cross_entropy(logits, first_target).item()
        psnr = 10 * torch.log10(1.0 / (result.encrypted - x_test).pow(2).mean()).item()
        if reference is None:
            reference = result.encrypted
        diff = (result.encrypted - reference).abs().max().item()
        on_enc, on_orig = [], []
        for seed in range(args.victims):
            victim = fit(args.arch, enc_train, y_train, seed=100 + seed, epochs=args.epochs, device=device)
            on_enc.append(accuracy(victim, result.encrypted, y_test))
            on_orig.append(accuracy(victim, x_test, y_test))

        def spread(values: list[float]) -> str:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {sd:.3f}"

        print(
            f"| {name} | {seconds:.1f} | {hit:.3f} | {loss:.4f} | {psnr:.2f} | {diff:.2e} | {spread(on_enc)} "
            f"| {spread(on_orig)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
