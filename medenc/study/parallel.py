"""``medenc encrypt-study --batch --workers N``: a batch over several processes (or a cluster) with Ray.

Each worker is a Ray actor that loads the base model and the key once (:func:`open_session`) and then
encrypts case after case with :func:`medenc.study.cases.run_case`, exactly what the serial batch runs,
so every case's output folder and ``report.json`` are the serial path's (bit for bit when the workers
use as many torch threads as the serial run; see ``docs/cluster.md``). Cases are handed out one at a
time to whichever worker is free. Resuming works as in the serial path: every worker checks its case's
finished output before doing any work.

Where it runs:

- by default a **local** Ray instance is started for the batch (and stopped after it): ``workers``
  actors of one CPU each; on a CUDA machine each actor also takes one GPU (``num_gpus=1``), so N
  workers need N GPUs; on CPU each actor's torch uses ``cpu_count // workers`` threads;
- with ``ray_address`` (``auto`` or ``HOST:PORT``, as ``ray.init`` takes it) the actors go to that
  existing cluster, which is left running. Every node must see the model, the key, the studies and
  the output folder at the same paths (a shared file system).

A worker that dies (killed, out of memory) fails the case it held (the error says so) and is replaced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from medenc.errors import InputError
from medenc.files import safe_name
from medenc.study.cases import BatchCase, BatchOptions, run_case


class CaseWorker:
    """One worker: a session (model + key loaded once) and the cases it is given.

    Args:
        session_args: keyword arguments of :func:`medenc.study.encrypt.open_session`.
        threads: torch threads of this process (CPU work), or ``None`` to leave torch's default.
    """

    def __init__(self, session_args: dict[str, Any], threads: int | None = None) -> None:
        import torch

        from medenc.study.encrypt import open_session

        if threads is not None:
            torch.set_num_threads(threads)
        self.session = open_session(**session_args)

    def run(self, case: BatchCase, options: BatchOptions) -> dict[str, Any]:
        """:func:`run_case` of one case; the entry carries this worker's process id."""
        entry = run_case(case, self.session, options)
        entry["worker_pid"] = os.getpid()
        return entry

    def device(self) -> str:
        """The device this worker's PGD runs on."""
        return str(self.session.encryptor.device)


def _ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise InputError("--workers needs the ray package", tip="pip install 'ray>=2.40'") from None
    return ray


def run_parallel(
    cases: Sequence[BatchCase],
    options: BatchOptions,
    session_args: dict[str, Any],
    *,
    workers: int,
    ray_address: str | None = None,
    on_case: Callable[[str, str, str | None], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run :func:`run_case` over ``cases`` on ``workers`` Ray actors; entries come back in case order.

    Args:
        cases: the batch's cases.
        options: what every case shares.
        session_args: :func:`open_session` keyword arguments (paths must be visible to every worker).
        workers: number of actors (each loads the model once).
        ray_address: an existing Ray cluster (``auto`` or ``HOST:PORT``); ``None``: a local one.
        on_case: called with ``(case_id, status, error)`` as each case finishes.

    Returns:
        The case entries (in case order) and what ran them: ``{"engine", "workers", "devices",
        "gpus_per_worker", "address"}``.

    Raises:
        InputError: ``workers`` < 1, or Ray cannot start or reach the cluster.
    """
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    ray = _ray()
    import torch

    started_here = not ray.is_initialized()
    if started_here:
        try:
            if ray_address is None:
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # ray raises ConnectionError, RuntimeError, ValueError...
            where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray instance"
            raise InputError(f"cannot start or reach {where} ({type(error).__name__}: {error})") from None
    pool: list[Any] = []
    try:
        device = session_args.get("device")
        cuda = device == "cuda" or (device is None and ray_address is None and torch.cuda.is_available())
        gpus = 1 if cuda or (ray_address is not None and device != "cpu" and _cluster_gpus(ray) >= 1) else 0
        available = torch.cuda.device_count() if ray_address is None else _cluster_gpus(ray)
        if gpus and available < min(workers, len(cases)):
            raise InputError(
                f"--workers {workers} needs {min(workers, len(cases))} GPU(s) (one per worker); "
                f"{'this machine' if ray_address is None else 'the Ray cluster'} has {available:g}",
                tip="use fewer workers, or --device cpu",
            )
        threads = None  # GPU workers, or a cluster's nodes: torch's own default
        if not gpus and ray_address is None:  # local CPU workers share the machine's cores
            threads = max(1, (os.cpu_count() or 1) // workers)
        actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(CaseWorker)

        def spawn() -> Any:
            return actor.remote(session_args, threads)

        pool.extend(spawn() for _ in range(min(workers, len(cases)) or 1))
        try:
            devices = sorted(set(ray.get([w.device.remote() for w in pool])))
        except ray.exceptions.RayError as error:  # a worker could not load the model or the key
            cause = str(error).strip().splitlines()[-1]
            raise InputError(f"a Ray worker could not start: {cause}") from None
        results: dict[int, dict[str, Any]] = {}
        waiting = list(enumerate(cases))[::-1]
        running: dict[Any, tuple[int, Any]] = {}
        while waiting or running:
            while waiting and len(running) < len(pool):
                index, case = waiting.pop()
                free = next(w for w in pool if all(w is not a for _, a in running.values()))
                running[free.run.remote(case, options)] = (index, free)
            done, _ = ray.wait(list(running), num_returns=1)
            index, worker = running.pop(done[0])
            try:
                entry = ray.get(done[0])
            except ray.exceptions.RayError as error:  # the worker died: fail its case, replace it
                entry = {"case_id": cases[index].case_id, "out": str(options.out / safe_name(cases[index].case_id)),
                         "status": "failed", "error": f"worker died ({type(error).__name__})", "warnings": [],
                         "seconds": None}
                pool[pool.index(worker)] = spawn()
            results[index] = entry
            if on_case is not None:
                on_case(entry["case_id"], entry["status"], entry["error"])
        engine = {"engine": "ray", "workers": len(pool), "devices": devices, "gpus_per_worker": gpus,
                  "address": ray_address or "local", "threads_per_worker": threads}
        return [results[i] for i in range(len(cases))], engine
    finally:
        for worker in pool:  # on an existing cluster the actors must not outlive the batch
            with contextlib.suppress(Exception):  # already dead
                ray.kill(worker)
        if started_here:
            ray.shutdown()


def _cluster_gpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("GPU", 0))
