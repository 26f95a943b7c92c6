"""Calibrate the difficulty of ``medenc synth``: train classifiers on largest-tumour axial slices.

Generates ``--cases`` cases in memory (same labels, splits and cases as ``medenc synth`` with the same
seed), takes each case's largest-tumour axial slice (argmax over the axial index of the mask voxel
count), windows it to [0, 1] (0.5-99.5 percentiles) and trains, on CPU, a MONAI ResNet-18
(``resnet18(spatial_dims=2, n_input_channels=1, num_classes=5, conv1_t_stride=2)``: the ImageNet stem
that ``medenc.learn.models`` uses; ``--stem monai`` for MONAI's default stride-1 stem, 4x the compute) and a
small plain CNN, printing clean test accuracy. The target at difficulty "paper" is roughly 70-90%
(the paper's base classifier: 79.9%).

Example (the figures in docs/synthetic-data.md):
    .venv/bin/python benchmarks/synth_calibration.py --cases 500 --size 128 --epochs 15
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def slices(cases: int, seed: int, size: int, difficulty: str, balanced: bool) -> dict[str, np.ndarray]:
    """Largest-tumour axial slices (N, size, size) float32 in [0, 1], labels, splits and sites."""
    from medenc.synth.generate import CLASSES, case_rng, generate_case, plan_cases

    images, labels, test, sites = [], [], [], []
    t0 = time.perf_counter()
    for index, (_, label, split) in enumerate(plan_cases(cases, seed, balanced)):
        case = generate_case(label, case_rng(seed, index), size, difficulty)
        img = case.volume[:, :, case.largest_slice()].T.astype(np.float32)
        lo, hi = np.percentile(img, [0.5, 99.5])
        images.append(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32))
        labels.append(CLASSES.index(label))
        test.append(split == "test")
        sites.append(f"{label}:{case.site}")
    print(f"generated {cases} cases at {size} ({difficulty}) in {time.perf_counter() - t0:.1f} s")
    return {"x": np.stack(images), "y": np.array(labels), "test": np.array(test), "site": np.array(sites)}


def small_cnn(num_classes: int = 5) -> nn.Module:
    """Four conv-BN-ReLU-pool blocks and a linear head."""
    layers: list[nn.Module] = []
    ch = 1
    for width in (16, 32, 64, 96):
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        ch = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(ch, num_classes))


def train_eval(model: nn.Module, data: dict, epochs: int, input_size: int, seed: int, lr: float) -> dict:
    """Adam, batch 16, one-cycle schedule, no augmentation; returns final and per-epoch test accuracy."""
    torch.manual_seed(seed)
    x = torch.from_numpy(data["x"].astype(np.float32)).unsqueeze(1)
    if input_size != x.shape[-1]:
        x = nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True)
    y = torch.from_numpy(data["y"]).long()
    test = torch.from_numpy(data["test"])
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + 15) // 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    history = []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr), generator=gen).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(b).argmax(1) for b in xte.split(128)])
            train_pred = torch.cat([model(b).argmax(1) for b in xtr.split(128)])
        history.append(((pred == yte).float().mean().item(), (train_pred == ytr).float().mean().item()))
        print(f"  epoch {len(history)}: test {history[-1][0]:.3f} train {history[-1][1]:.3f}", flush=True)
    return {"test": history[-1][0], "train": history[-1][1], "history": history, "pred": pred.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--size", type=int, default=128, help="generated in-plane matrix")
    parser.add_argument("--input", type=int, default=128, help="classifier input size (slices are resized)")
    parser.add_argument("--difficulty", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--balanced", action="store_true")
    parser.add_argument("--models", default="resnet18,cnn")
    parser.add_argument("--stem", choices=("imagenet", "monai"), default="imagenet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="npz of generated slices to reuse / write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.cache is not None and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        data = slices(args.cases, args.seed, args.size, args.difficulty, args.balanced)
        if args.cache is not None:
            np.savez_compressed(args.cache, **data)
    from medenc.synth.generate import CLASSES

    n_test = int(data["test"].sum())
    print(f"train {len(data['y']) - n_test}, test {n_test}, classes {np.bincount(data['y'], minlength=5)}")
    for name in args.models.split(","):
        if name == "resnet18":
            from monai.networks.nets import resnet18

            stride = 2 if args.stem == "imagenet" else 1
            model = resnet18(spatial_dims=2, n_input_channels=1, num_classes=len(CLASSES), conv1_t_stride=stride)
        else:
            model = small_cnn(len(CLASSES))
        t0 = time.perf_counter()
        result = train_eval(model, data, args.epochs, args.input, args.seed, args.lr)
        curve = " ".join(f"{a:.2f}" for a, _ in result["history"])
        print(f"{name}: clean test accuracy {result['test']:.3f} (train {result['train']:.3f}) "
              f"in {time.perf_counter() - t0:.0f} s; per-epoch test: {curve}")
        yte = data["y"][data["test"]]
        confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
        np.add.at(confusion, (yte, result["pred"]), 1)
        print("confusion (rows true, cols predicted):", CLASSES)
        print(confusion)
        atypical = np.char.find(data["site"][data["test"]].astype(str), "(as ") >= 0
        hit = result["pred"] == yte
        if atypical.any():
            print(f"accuracy on the {int(atypical.sum())} test cases drawn as a differential diagnosis: "
                  f"{hit[atypical].mean():.3f}; on the others: {hit[~atypical].mean():.3f}")


if __name__ == "__main__":
    main()
