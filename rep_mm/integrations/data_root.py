"""One ``data_root`` override that moves the data sets, with any script that runs the config.

Configs copy their top-level ``data_root`` into each dataset while they are parsed, so
``--cfg-options data_root=DIR`` alone changes a variable that nothing reads any more. The
loops below are mmengine's, registered as ``rep_mm.EpochBasedTrainLoop``,
``rep_mm.IterBasedTrainLoop``, ``rep_mm.ValLoop`` and ``rep_mm.TestLoop``: before building their
dataloader (and evaluator) they compare the Runner's ``cfg.data_root`` with the value the
config's own file sets, and move every dataset (and evaluator ``ann_file``) that used the file's
value. The Runner builds its loops itself, so this holds for the train / test scripts of
mmpretrain, mmseg and mmdet, for ``Runner.from_cfg`` and for rep_mm's tools alike.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional, Tuple

from mmengine.runner import loops

from ..registry import LOOPS

__all__ = ['data_root_in_file', 'move_data_root', 'follow_data_root', 'EpochBasedTrainLoop',
           'IterBasedTrainLoop', 'ValLoop', 'TestLoop']

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
EVALUATORS = ('val_evaluator', 'test_evaluator')
_FILE_ROOTS: Dict[Tuple[str, float], Optional[str]] = {}


def data_root_in_file(cfg: Any) -> Optional[str]:
    """The ``data_root`` the config's own file sets (before command-line overrides), or None."""
    filename = getattr(cfg, 'filename', None)
    if not filename or not os.path.isfile(filename):
        return None
    key = (os.path.abspath(filename), os.path.getmtime(filename))
    if key not in _FILE_ROOTS:
        from mmengine.config import Config
        _FILE_ROOTS[key] = Config.fromfile(filename).get('data_root')
    return _FILE_ROOTS[key]


def move_data_root(node: Any, original: str, new_root: str, path: str = '',
                   evaluator: bool = False) -> List[str]:
    """Replace ``data_root == original`` by ``new_root`` in a (nested) config node, in place.

    With ``evaluator``, ``ann_file`` paths under ``original`` move along. Returns the dotted
    paths of the entries changed.
    """
    changed: List[str] = []
    prefix = original.rstrip('/') + '/'
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'data_root' and value == original:
                node[key] = new_root
                changed.append(f'{path}.{key}')
            elif evaluator and key == 'ann_file' and isinstance(value, str) and \
                    value.startswith(prefix):
                node[key] = os.path.join(new_root, value[len(prefix):])
                changed.append(f'{path}.{key}')
            else:
                changed += move_data_root(value, original, new_root, f'{path}.{key}', evaluator)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            changed += move_data_root(value, original, new_root, f'{path}[{index}]', evaluator)
    return changed


def _roots(cfg: Any, original: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(original, new)`` when the config's ``data_root`` was overridden, else None."""
    new_root = cfg.get('data_root') if cfg is not None else None
    if original is None and isinstance(new_root, str):
        original = data_root_in_file(cfg)
    if not isinstance(new_root, str) or not isinstance(original, str) or new_root == original:
        return None
    return original, new_root


def follow_data_root(cfg: Any, original: Optional[str] = None) -> List[str]:
    """Apply :func:`move_data_root` to every dataloader and evaluator of ``cfg`` (in place).

    ``original`` defaults to the value in the config's file; returns the entries changed.
    """
    roots = _roots(cfg, original)
    if roots is None:
        return []
    changed: List[str] = []
    for key in DATALOADERS + EVALUATORS:
        if cfg.get(key) is not None:
            changed += move_data_root(cfg[key], *roots, path=key, evaluator=key in EVALUATORS)
    return changed


def _moved(runner: Any, node: Any, evaluator: bool = False) -> Any:
    """``node`` (a dataloader / evaluator config) moved to the Runner's ``data_root``."""
    if not isinstance(node, (dict, list)):
        return node  # already built
    roots = _roots(getattr(runner, 'cfg', None), None)
    if roots is None:
        return node
    node = copy.deepcopy(node)
    changed = move_data_root(node, *roots, evaluator=evaluator)
    if changed:
        runner.logger.info(f'data_root {roots[1]!r} (the config file says {roots[0]!r}): '
                           f'moved {", ".join(c.lstrip(".") for c in changed)}')
    return node


@LOOPS.register_module(name='EpochBasedTrainLoop')
class EpochBasedTrainLoop(loops.EpochBasedTrainLoop):
    """mmengine's epoch-based training loop; its dataloader follows ``data_root``."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _moved(runner, dataloader), *args, **kwargs)


@LOOPS.register_module(name='IterBasedTrainLoop')
class IterBasedTrainLoop(loops.IterBasedTrainLoop):
    """mmengine's iteration-based training loop; its dataloader follows ``data_root``."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _moved(runner, dataloader), *args, **kwargs)


@LOOPS.register_module(name='ValLoop')
class ValLoop(loops.ValLoop):
    """mmengine's validation loop; its dataloader and evaluator follow ``data_root``."""

    def __init__(self, runner, dataloader, evaluator, *args, **kwargs) -> None:
        super().__init__(runner, _moved(runner, dataloader), _moved(runner, evaluator, True),
                         *args, **kwargs)


@LOOPS.register_module(name='TestLoop')
class TestLoop(loops.TestLoop):
    """mmengine's test loop; its dataloader and evaluator follow ``data_root``."""

    def __init__(self, runner, dataloader, evaluator, *args, **kwargs) -> None:
        super().__init__(runner, _moved(runner, dataloader), _moved(runner, evaluator, True),
                         *args, **kwargs)
