"""Rich progress bars with counts, rates and ETA for long-running work."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from decola_core.utils.logs import ProgressLog


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``12.3 img/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


class LoggedProgress(Progress):
    """A rich progress display that also logs each task's progress as periodic lines (shown on
    the console only when it is no terminal; always written to a run's log.txt)."""

    def __init__(self, *columns, unit: str, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self._unit = unit
        self._lines: dict[TaskID, ProgressLog] = {}

    def add_task(self, description: str, *args, total: float | None = None, **kwargs) -> TaskID:
        task = super().add_task(description, *args, total=total, **kwargs)
        self._lines[task] = ProgressLog(description, self._unit)
        return task

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if self.disable or task_id not in self._lines:
            return
        task, line = self._tasks[task_id], self._lines[task_id]
        line.what = task.description
        line.total = int(task.total) if task.total is not None else None
        line.update(int(task.completed))


def progress_bar(
    unit: str = "img", *, disable: bool = False, console: Console | None = None
) -> Progress:
    """A progress display on stderr: description, bar, n/total, rate, elapsed and ETA (and
    progress lines in the log, see :class:`LoggedProgress`)."""
    return LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=disable,
        unit=unit,
    )
