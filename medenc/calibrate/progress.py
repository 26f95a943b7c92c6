"""Progress of a calibration: one overall bar weighted by estimated seconds, an inner bar per work item."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medenc.calibrate.plan import Plan


class _Inner:
    """Forwards ``add_task``/``update`` to a progress display and remembers the tasks it added."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: list[Any] = []

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        task = self.progress.add_task(*args, **kwargs)
        self.tasks.append(task)
        return task

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.progress.update(*args, **kwargs)


class Ticker:
    """Overall progress weighted by estimated seconds (so the display's ETA is meaningful)."""

    def __init__(self, progress: Any, plan: Plan) -> None:
        self.progress = progress
        self.plan = plan
        self.task = None
        if progress is not None and plan.todo:
            self.task = progress.add_task("calibration", total=sum(plan.todo.values()))
        self.inner: _Inner | None = None

    @contextlib.contextmanager
    def item(self, name: tuple, description: str, slices: int | None = None) -> Iterator[Callable[[int, int], None]]:
        """Run one work item: an inner progress task while it runs, then advance the overall bar."""
        self.inner = _Inner(self.progress) if self.progress is not None else None
        sub = None
        if self.inner is not None and slices is not None:
            sub = self.inner.add_task(description, total=slices)

        def on_slices(done: int, total: int) -> None:
            if sub is not None:
                self.inner.update(sub, completed=done, total=total)  # type: ignore[union-attr]

        try:
            yield on_slices
        finally:
            if self.inner is not None:
                for task in self.inner.tasks:
                    with contextlib.suppress(Exception):
                        self.progress.remove_task(task)
            self.inner = None
        if self.task is not None:
            self.progress.update(self.task, advance=self.plan.todo.get(name, 0.0))
