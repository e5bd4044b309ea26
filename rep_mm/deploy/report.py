"""What an export measured (``report.json``) and the versions of the stack it ran on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

__all__ = ['DEFAULT_TOLERANCE', 'ExportReport', 'versions']

DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """What :func:`export` measured; ``to_dict()`` is written to ``report.json``."""

    task: str
    work_dir: str
    passed: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    data: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dict(task=self.task, passed=self.passed, tolerance=self.tolerance,
                    work_dir=self.work_dir, **self.data)


def versions() -> Dict[str, str]:
    """Installed versions of torch, the mm stack, onnx and onnxruntime (missing ones left out)."""
    import importlib.metadata as metadata
    out = {}
    for name in ('torch', 'mmengine', 'mmcv', 'mmpretrain', 'mmsegmentation', 'mmdet',
                 'mmdeploy', 'onnx', 'onnxruntime'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
