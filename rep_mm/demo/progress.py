"""What a demo part shows while it runs: one progress bar on stderr; the mm logs go to files.

A :class:`DemoPart` is a context around one part of the demo (classification, segmentation,
RepOptimizer). Inside it

* every Runner is a :class:`FileLoggedRunner`: mmengine's Runner whose logger keeps its file
  handler (``<runner work_dir>/<timestamp>/<timestamp>.log``) and drops its console handler;
* a :class:`ProgressHook` in each Runner advances the part's bar after every train / val / test
  iteration (tqdm on a terminal; on a pipe, one plain line per phase);
* Python warnings, records of other ``logging`` loggers, mmengine's ``print_log`` outside a
  Runner and whatever the stack prints on ``sys.stdout`` / ``sys.stderr`` go to the part's own
  log, ``WORK_DIR/<part>.log``, with the traceback of a failure.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import os.path as osp
import shutil
import sys
import time
import traceback
import uuid
import warnings
from typing import List, Optional, TextIO

from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner

__all__ = ['DemoPart', 'FileLoggedRunner', 'ProgressHook', 'PartProgress',
           'planned_iterations', 'detach_console']


def detach_console(logger: logging.Logger) -> logging.Logger:
    """Remove the handlers of ``logger`` that write to a stream other than a file."""
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            logger.removeHandler(handler)
    return logger


class FileLoggedRunner(Runner):
    """mmengine's Runner, logging to its work dir's log file only (nothing on the console)."""

    def build_logger(self, log_level='INFO', log_file=None, **kwargs) -> MMLogger:
        return detach_console(super().build_logger(log_level, log_file, **kwargs))


def planned_iterations(cfg, train_images: int, eval_images: int, tests: int = 0,
                       extra_vals: int = 0) -> int:
    """Iterations the Runners of ``cfg`` run: training with its validations, then
    ``extra_vals`` validation and ``tests`` test passes over ``eval_images`` images."""
    train_cfg = cfg.train_cfg
    if train_cfg.get('max_iters') is not None:  # IterBasedTrainLoop
        train = span = int(train_cfg.max_iters)
    else:
        span = int(train_cfg.max_epochs)
        train = span * math.ceil(train_images / cfg.train_dataloader.batch_size)
    vals = span // int(train_cfg.get('val_interval', 1)) + extra_vals
    return (train + vals * math.ceil(eval_images / cfg.val_dataloader.batch_size)
            + tests * math.ceil(eval_images / cfg.test_dataloader.batch_size))


class PartProgress:
    """One progress line per part: a tqdm bar on a terminal (drawn once the part has planned
    its iterations), else a plain line per phase."""

    def __init__(self, name: str, stream: Optional[TextIO] = None) -> None:
        self.name, self.stream = name, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.phase_name: Optional[str] = None
        self.bar = None

    def add_total(self, iterations: int) -> None:
        if not self.tty:
            return
        if self.bar is None:
            from tqdm import tqdm
            columns = shutil.get_terminal_size((100, 24)).columns  # 0 on some ptys
            self.bar = tqdm(total=iterations, desc=f'{self.name:<6}', file=self.stream,
                            leave=True, ncols=min(columns, 100) if columns > 20 else 100,
                            bar_format='{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} '
                            'it [{elapsed}<{remaining}]{postfix}')
            self.bar.set_postfix_str(self.phase_name or '')
        else:
            self.bar.total += iterations
            self.bar.refresh()

    def phase(self, name: str) -> None:
        """Show that ``name`` (train, test converted, ...) is running; repeats are ignored."""
        if name == self.phase_name:
            return
        self.phase_name = name
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        elif not self.tty:
            print(f'[{self.name}] {name}', file=self.stream, flush=True)

    def advance(self, iterations: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(iterations)

    def close(self, message: str) -> None:
        if self.bar is None:
            print(f'[{self.name}] {message}', file=self.stream, flush=True)
            return
        self.bar.total = max(self.bar.total, self.bar.n)
        self.bar.set_postfix_str(message)
        self.bar.close()


class ProgressHook(Hook):
    """Advances a :class:`PartProgress` after every iteration of the Runner it is in."""

    priority = 'VERY_LOW'

    def __init__(self, progress: PartProgress, label: str) -> None:
        self.progress, self.label = progress, label

    def before_train(self, runner) -> None:
        self.progress.phase(self.label)

    def before_val(self, runner) -> None:
        self.progress.phase(f'{self.label}: validate')

    def before_test(self, runner) -> None:
        self.progress.phase(self.label)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.progress.advance()

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.progress.advance()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.progress.advance()


class _ForwardTo(logging.Handler):
    """Hands every record to ``logger`` (the part's file logger)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.WARNING)
        self.target = logger

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


class _LogWriter(io.TextIOBase):
    """A text stream that logs each complete line it is given (what the stack ``print``s)."""

    def __init__(self, logger: logging.Logger, source: str) -> None:
        super().__init__()
        self.logger, self.source, self.pending = logger, source, ''

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split('\n')
        for line in lines:
            self.logger.info(f'{self.source}: {line}')
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.logger.info(f'{self.source}: {self.pending}')
            self.pending = ''


class DemoPart:
    """One part of the demo: its progress line, its log file and the logs of its Runners.

    A re-entrant context: only the outermost ``with`` opens and closes it, so a ``run_*``
    function can use a part given by the caller or make its own (:meth:`use`).

    Args:
        name (str): short name (``cls``, ``seg``, ``repopt``): the bar's label and the log's
            file name ``WORK_DIR/<name>.log``.
        work_dir (str): the demo's output directory.
        stream (TextIO, optional): where progress goes. Default ``sys.stderr``.
    """

    def __init__(self, name: str, work_dir: str, stream: Optional[TextIO] = None) -> None:
        self.name, self.work_dir, self.stream = name, osp.abspath(work_dir), stream
        self.log_file = osp.join(self.work_dir, f'{name}.log')
        self.runner_logs: List[str] = []
        self.seconds: Optional[float] = None
        self._depth = 0

    @classmethod
    def use(cls, part: Optional['DemoPart'], name: str, work_dir: str) -> 'DemoPart':
        """``part`` if given, else a new part (enter either with ``with``)."""
        return part if part is not None else cls(name, work_dir)

    def __enter__(self) -> 'DemoPart':
        self._depth += 1
        if self._depth == 1:
            self._open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._depth -= 1
        if self._depth == 0:
            self._close(exc)
        return False

    def _open(self) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        self.started = time.perf_counter()
        # the latest MMLogger instance: mmengine's print_log(logger='current') writes here
        self.logger = detach_console(MMLogger.get_instance(
            f'rep_mm_demo_{self.name}_{time.time_ns()}', log_file=self.log_file,
            logger_name=f'rep_mm.demo.{self.name}', log_level='INFO', file_mode='w'))
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.showwarning = self._log_warning
        self._root_handler = _ForwardTo(self.logger)
        logging.getLogger().addHandler(self._root_handler)
        self.progress = PartProgress(self.name, self.stream)  # on stderr, before the redirect
        self._redirects = contextlib.ExitStack()
        self._redirects.enter_context(contextlib.redirect_stdout(_LogWriter(self.logger,
                                                                            'stdout')))
        self._redirects.enter_context(contextlib.redirect_stderr(_LogWriter(self.logger,
                                                                            'stderr')))

    def _close(self, error: Optional[BaseException]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._redirects.close()
        if error is not None:
            self.logger.error('the part failed:\n' + ''.join(
                traceback.format_exception(type(error), error, error.__traceback__)))
        logging.getLogger().removeHandler(self._root_handler)
        self._warnings.__exit__(None, None, None)
        self.seconds = round(time.perf_counter() - self.started, 2)
        self.progress.close(f'{"failed" if error is not None else "done"} in '
                            f'{self.seconds:.0f} s')

    def _log_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.logger.warning(warnings.formatwarning(message, category, filename, lineno,
                                                   line).rstrip())

    @property
    def elapsed(self) -> float:
        """Seconds since the part started (its total once closed)."""
        if self.seconds is not None and self._depth == 0:
            return self.seconds
        return time.perf_counter() - self.started

    def finish(self, summary: dict, ok) -> dict:
        """Close ``summary`` (after the part's ``with``): ``ok`` as a bool, the part's total
        seconds and its log files (the part's log, then its Runners'); returns ``summary``."""
        summary['ok'] = bool(ok)
        summary.update(total_seconds=round(self.elapsed, 2),
                       log_files=[self.log_file] + self.runner_logs)
        return summary

    def plan(self, iterations: int) -> None:
        """Add ``iterations`` (see :func:`planned_iterations`) to the bar's total."""
        self.progress.add_total(iterations)

    def phase(self, name: str) -> None:
        """Name a step that runs outside a Runner (comparing, timing, plotting)."""
        self.progress.phase(name)
        self.logger.info(f'{self.name}: {name}')

    def build_runner(self, cfg, name: str, label: str) -> Runner:
        """A :class:`FileLoggedRunner` of ``cfg`` (experiment ``name``) advancing the bar."""
        cfg = copy.deepcopy(cfg)
        # mmengine keys its logger / visualizer instances by experiment name: a name of its own
        # per Runner, or a second demo in one process would log into the first one's file
        cfg.experiment_name = f'{name}-{uuid.uuid4().hex[:8]}'
        runner = FileLoggedRunner.from_cfg(cfg)
        runner.register_hook(ProgressHook(self.progress, label))
        self.runner_logs.append(runner.logger.log_file)
        self.logger.info(f'{label}: Runner {name!r} logs to {runner.logger.log_file}')
        return runner

    def where_to_look(self) -> str:
        """The log files to read when this part failed."""
        where = f'see {self.log_file}'
        if self.runner_logs:
            where += f' and the last Runner log {self.runner_logs[-1]}'
        return where
