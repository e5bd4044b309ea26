"""The named steps of an export, with their timings and a progress display on stderr."""
from __future__ import annotations

import sys
import time
from typing import Dict, Sequence

__all__ = ['STEPS', 'Progress']

STEPS = ('build model', 'load weights', 'prepare input', 'convert blocks',
         'save converted checkpoint',
         'export ONNX (mmdeploy torch2onnx)', 'run onnxruntime', 'compare + check graph',
         'check dynamic shapes', 'write SDK meta', 'run SDK (mmdeploy_runtime)')


class Progress:
    """Named steps with a rich progress bar on a terminal (plain lines otherwise)."""

    def __init__(self, steps: Sequence[str], quiet: bool = False) -> None:
        self.steps, self.quiet, self.index = list(steps), quiet, 0
        self.started = time.perf_counter()
        self.timings: Dict[str, float] = {}
        self._progress = self._task = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import Progress as RichProgress
            self._progress = RichProgress(transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.steps[0], total=len(self.steps))

    def step(self, name: str) -> None:
        now = time.perf_counter()
        if self.index:
            self.timings[self.steps[self.index - 1]] = round(now - self.started, 3)
        self.started, self.index = now, self.index + 1
        if self._progress is not None:
            self._progress.update(self._task, description=name, completed=self.index - 1)
        elif not self.quiet:
            print(f'[{self.index}/{len(self.steps)}] {name}', file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.index:
            self.timings[self.steps[self.index - 1]] = round(time.perf_counter() -
                                                             self.started, 3)
        if self._progress is not None:
            self._progress.stop()
