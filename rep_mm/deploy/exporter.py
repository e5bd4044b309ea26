"""Which torch.onnx exporter mmdeploy uses: an mmdeploy function rewriter of ``torch.onnx.export``.

mmdeploy 1.3.1 calls ``torch.onnx.export`` (inside its ``RewriterContext``) without ``dynamo``;
torch >= 2.9 then picks the dynamo exporter, which mmdeploy's rewriters were not written for
(on detectors it fails inside mmdeploy's ``single_stage.py`` rewrite). The rewriter registered
here reads the deploy config the context carries and passes ``dynamo`` on:

* ``onnx_config.dynamo`` absent (stock mmdeploy deploy configs) or ``False``: the TorchScript
  exporter, the one mmdeploy 1.3.1 was written for;
* ``onnx_config.dynamo=True``: the dynamo exporter (its failures are re-raised as
  :class:`~rep_mm.deploy.errors.ExportFailed` naming the cause and the working setting);
* an explicit ``dynamo=`` argument of the caller always wins.

So ``mmdeploy.apis.torch2onnx`` called directly (or by mmdeploy's ``tools/deploy.py``) exports
rep_mm models as rep_mm's own ``rep-mm export`` does: one mechanism for both.

Registration is lazy: :func:`install` registers at once if ``mmdeploy.core`` is already
imported, else it puts a finder on ``sys.meta_path`` that registers right after
``mmdeploy.core`` has been imported (mmdeploy is never imported by rep_mm just for this).
``import rep_mm`` calls :func:`install`; so does ``import rep_mm.deploy``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Optional

__all__ = ['install', 'ensure_registered', 'is_registered', 'exporter_choice', 'failure_point',
           'REWRITTEN']

REWRITTEN = 'torch.onnx.export'
_TARGET_MODULE = 'mmdeploy.core'
_lock = threading.Lock()
_state = dict(registered=False, finder=None)


def exporter_choice(deploy_cfg: Any) -> bool:
    """``dynamo`` flag of a deploy config: ``onnx_config.dynamo`` (default False = TorchScript).

    Raises:
        DeployError: the key is set to something else than True / False.
    """
    onnx_cfg = {}
    if deploy_cfg is not None:
        getter = getattr(deploy_cfg, 'get', None)
        onnx_cfg = (getter('onnx_config', None) if getter else None) or {}
    value = onnx_cfg.get('dynamo', False) if hasattr(onnx_cfg, 'get') else False
    if not isinstance(value, bool):
        from .errors import DeployError
        raise DeployError(f'deploy config onnx_config.dynamo must be True (dynamo exporter) '
                           f'or False (TorchScript exporter, the default), got {value!r}')
    return value


def _export_with_configured_exporter(*args: Any, **kwargs: Any) -> Any:
    """Rewrite of ``torch.onnx.export`` active in mmdeploy's ``RewriterContext``: the original
    with ``dynamo`` taken from the context's deploy config (see the module docstring)."""
    from mmdeploy.core import FUNCTION_REWRITER
    ctx = FUNCTION_REWRITER.get_context()
    if 'dynamo' not in kwargs:
        kwargs['dynamo'] = exporter_choice(getattr(ctx, 'cfg', None))
    if not kwargs['dynamo']:
        return ctx.origin_func(*args, **kwargs)
    try:
        return ctx.origin_func(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised with the cause and the way out
        from .errors import ExportFailed
        raise ExportFailed(
            f'the dynamo exporter (onnx_config.dynamo=True) failed: {failure_point(error)}. '
            f'mmdeploy 1.3.1\'s rewrites are written for the TorchScript exporter: set '
            f'onnx_config.dynamo=False (or drop the key) with opset_version=11, e.g. '
            f'configs/deploy/<task>_onnxruntime_static.py') from error


def _first_line(text: str) -> str:
    text = re.sub(r'\x1b\[[0-9;]*m', '', text)  # torch colours its messages
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ''


def failure_point(error: BaseException) -> str:
    """``Type: message`` of the innermost cause of ``error`` and the last frame outside torch
    where it was raised (e.g. a rewrite in mmdeploy), as one line."""
    root, seen = error, {id(error)}
    while True:
        nxt = root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    where = ''
    frames = traceback.extract_tb(root.__traceback__)
    outside = [f for f in frames if f'{os.sep}torch{os.sep}' not in f.filename]
    if outside:
        frame = outside[-1]
        parts = Path(frame.filename).parts
        short = '/'.join(parts[-5:]) if 'site-packages' in parts else frame.filename
        where = f' at {short}:{frame.lineno} `{(frame.line or "").strip()}`'
    message = f'{type(root).__name__}: {_first_line(str(root))}{where}'
    if root is not error:
        message = f'{type(error).__name__} ({_first_line(str(error))}), caused by {message}'
    return message


def _register() -> None:
    """Register the rewriter in mmdeploy's ``FUNCTION_REWRITER`` (once per process)."""
    with _lock:
        if _state['registered']:
            return
        from mmdeploy.core import FUNCTION_REWRITER
        FUNCTION_REWRITER.register_rewriter(REWRITTEN)(_export_with_configured_exporter)
        _state['registered'] = True


def ensure_registered() -> None:
    """Import ``mmdeploy.core`` and register now (for callers that use mmdeploy anyway)."""
    import mmdeploy.core  # noqa: F401 - the finder (if any) registers on this import
    _uninstall_finder()
    _register()


def is_registered() -> bool:
    """Whether the ``torch.onnx.export`` rewriter is in mmdeploy's registry (this process)."""
    return _state['registered']


class _Loader(importlib.abc.Loader):
    """Runs the real loader of ``mmdeploy.core``, then registers the rewriter."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[Any]:
        return self.loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, resource readers...
        return getattr(self.loader, name)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        # the module keeps its real loader; this wrapper was only needed for the import
        module.__loader__ = self.loader
        if getattr(module, '__spec__', None) is not None:
            module.__spec__.loader = self.loader
        _uninstall_finder()
        try:
            _register()
        except Exception as error:  # noqa: BLE001 - never break mmdeploy's own import
            import warnings
            warnings.warn(f'rep_mm could not register its torch.onnx.export rewriter in '
                          f'mmdeploy ({type(error).__name__}: {error}); mmdeploy will use '
                          f'torch\'s default exporter')


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``mmdeploy.core`` with the other finders and wraps its loader in :class:`_Loader`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _uninstall_finder() -> None:
    finder = _state['finder']
    if finder is not None and finder in sys.meta_path:
        sys.meta_path.remove(finder)
    _state['finder'] = None


def install() -> None:
    """Make mmdeploy use the deploy config's exporter (idempotent, cheap, never imports mmdeploy).

    If ``mmdeploy.core`` is imported already, registers now; else registers when it is.
    """
    if _state['registered']:
        return
    if _TARGET_MODULE in sys.modules:
        module = sys.modules[_TARGET_MODULE]
        if hasattr(module, 'FUNCTION_REWRITER'):
            _register()
            return
    with _lock:
        if _state['finder'] is None:
            _state['finder'] = _Finder()
            sys.meta_path.insert(0, _state['finder'])
