"""Studies per hour of ``encrypt-study --batch``: the serial path against 1 and 2 local Ray workers.

Synthetic studies (``medenc synth``), a randomly initialised base model (PGD costs the same whatever
the weights) and a key; each setting encrypts the same batch into a fresh folder from a fresh process
(so no setting inherits another's thread pools or caches), and the wall time
of :func:`medenc.study.batch.encrypt_batch` counts everything: starting Ray, each worker's model load,
reading, PGD, measuring, writing, verifying. Per-study phase times come from the cases' report.json;
"steady" studies/hour = workers x 3600 / mean seconds per case (what a long batch approaches), and
start-up = wall - (mean case seconds x cases / workers): Ray's start, the model loads, uneven ends.

    python benchmarks/batch_throughput.py --cases 8 --size 64 --steps 20 --runs serial,ray1,ray2 --out runs/bench

Ray probes an outside address to find its own IP: on a machine that must not, run the script under
``scripts/netns-run.sh`` (a private network namespace). On shared machines wrap it in the CPU lock.
The last line printed is a JSON summary (also written to OUT/batch-throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

PHASES = ("read", "pgd", "evaluate", "write", "verify", "total")


def prepare(out: Path, cases: int, size: int, steps: int, arch: str, seed: int) -> dict[str, Path]:
    """The synthetic data set, a random base model checkpoint and a key under ``out``."""
    import torch

    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.mapping import Preprocess
    from medenc.learn.checkpoint import ModelInfo, save_checkpoint
    from medenc.learn.models import build_model
    from medenc.synth.generate import write_dataset
    from medenc.synth.tumors import CLASSES

    manifest = write_dataset(out / "data", cases, seed=seed, size=size, fmt="dicom", force=True)
    torch.manual_seed(seed)
    model = build_model(arch, 1, len(CLASSES))
    info = ModelInfo(arch, tuple(CLASSES), preprocess=Preprocess((size, size)).to_dict())
    save_checkpoint(out / "model.pt", model, info)
    pgd = PGDSettings(eps=2.0, step=0.1, steps=steps)
    key = EncryptionKey.generate(tuple(CLASSES), "hconcat", seed=seed, pgd=pgd)
    key.save(out / "key.json", force=True)
    return {"manifest": manifest, "model": out / "model.pt", "key": out / "key.json"}


def measure(name: str, inputs: dict[str, Path], out: Path, slices: str, device: str) -> dict[str, Any]:
    """One setting, in a fresh process: ``serial`` (torch's default threads), ``serialT`` (T threads) or
    ``rayN`` (N local Ray workers, ``cpu_count // N`` threads each)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (name, inputs, out, slices, device))


def _measure(name: str, inputs: dict[str, Path], out: Path, slices: str, device: str) -> dict[str, Any]:
    import shutil

    import torch

    from medenc.study.batch import encrypt_batch

    serial = name.startswith("serial")
    if serial and name != "serial":
        torch.set_num_threads(int(name.removeprefix("serial")))
    workers = 1 if serial else int(name.removeprefix("ray"))
    target = out / f"run-{name}"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    summary = encrypt_batch(inputs["manifest"], model=inputs["model"], key=inputs["key"], out=target,
                            slices=slices, device=device, workers=workers,
                            engine="serial" if serial else "ray")
    wall = time.perf_counter() - started
    if summary["failed"]:
        raise SystemExit(f"{name}: {summary['failed']} case(s) failed: {summary['results']}")
    reports = [json.loads((Path(r["out"]) / "report.json").read_text()) for r in summary["results"]]
    phases = {p: statistics.median(r["timing_s"][p] for r in reports) for p in PHASES}
    first_done = min(r["seconds"] for r in summary["results"])
    mean_case = statistics.mean(r["seconds"] for r in summary["results"])
    overhead = max(0.0, wall - mean_case * summary["cases"] / workers)  # Ray start, model loads, imbalance
    return {
        "setting": name,
        "workers": workers,
        "threads_per_process": torch.get_num_threads() if serial else summary["engine"]["threads_per_worker"],
        "engine": summary["engine"],
        "cases": summary["cases"],
        "wall_s": round(wall, 2),
        "studies_per_hour": round(summary["cases"] / wall * 3600, 1),
        "overhead_s": round(overhead, 2),
        "mean_case_s": round(mean_case, 3),
        "steady_studies_per_hour": round(workers * 3600 / mean_case, 1),
        "median_case_s": round(statistics.median(r["seconds"] for r in summary["results"]), 3),
        "fastest_case_s": round(first_done, 3),
        "median_phase_s": {p: round(v, 3) for p, v in phases.items()},
        "slices_encrypted_per_study": statistics.median(len(r["slices"]["encrypted"]) for r in reports),
        "slices_per_study": statistics.median(r["slices"]["total"] for r in reports),
        "pgd_samples_per_study": statistics.median(r["pgd_batches"]["samples"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8, help="synthetic studies in the batch (>= 5)")
    parser.add_argument("--size", type=int, default=64, help="in-plane matrix of the studies and model input")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps of the key")
    parser.add_argument("--arch", default="smallcnn", help="base model architecture (random weights)")
    parser.add_argument("--slices", default="largest", help="largest | tumor | all")
    parser.add_argument("--runs", default="serial,ray1,ray2",
                        help="settings: serial (torch's threads), serial1 (1 thread), ray1, ray2, ... (N workers)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/batch-throughput"))
    args = parser.parse_args()

    import torch

    load_before = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = prepare(args.out, args.cases, args.size, args.steps, args.arch, args.seed)
    results = [measure(name.strip(), inputs, args.out, args.slices, args.device) for name in args.runs.split(",")]
    print(f"{args.cases} synthetic studies {args.size}x{args.size}, {args.arch} (random weights), hconcat, "
          f"{args.steps} PGD steps, --slices {args.slices}, device {args.device}; {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| setting | workers | threads each | wall s | start-up s | studies/hour | steady studies/hour "
          "| mean s/study | PGD s | read+write+verify s | evaluate s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p = r["median_phase_s"]
        io = p["read"] + p["write"] + p["verify"]
        print(f"| {r['setting']} | {r['workers']} | {r['threads_per_process']} | {r['wall_s']:.1f} | "
              f"{r['overhead_s']:.1f} | {r['studies_per_hour']:.0f} | {r['steady_studies_per_hour']:.0f} | "
              f"{r['mean_case_s']:.2f} | {p['pgd']:.2f} | {io:.2f} | {p['evaluate']:.2f} |")
    record = {"cases": args.cases, "size": args.size, "steps": args.steps, "arch": args.arch, "slices": args.slices,
              "device": args.device, "cpus": os.cpu_count(), "torch": torch.__version__,
              "load_average": [load_before[0], os.getloadavg()[0]],
              "results": results}
    (args.out / "batch-throughput.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
