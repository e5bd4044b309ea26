"""The ONNX side: mmdeploy's ``torch2onnx`` with the configured exporter, one onnxruntime run."""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import numpy as np
import torch

from .errors import ExportFailed

__all__ = ['onnx_exporter', 'run_torch2onnx', 'run_onnxruntime']


@contextlib.contextmanager
def onnx_exporter(dynamo: bool) -> Iterator[None]:
    """Make ``torch.onnx.export`` (called by mmdeploy without ``dynamo``) use ``dynamo``."""
    original = torch.onnx.export

    def export_with(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault('dynamo', dynamo)
        return original(*args, **kwargs)

    torch.onnx.export = export_with
    try:
        yield
    finally:
        torch.onnx.export = original


def run_torch2onnx(work: Path, image_path: Path, deploy_cfg: Any, model_cfg: Any,
                   checkpoint: str, dynamo: bool, exporter: str,
                   opset: Any) -> Tuple[Path, float]:
    """``mmdeploy.apis.torch2onnx`` of ``model_cfg`` + ``checkpoint`` into ``work``.

    Stale graph files of an earlier export are removed first (only reachable with
    ``overwrite``). Returns the graph's path and the seconds torch2onnx took; raises
    :class:`ExportFailed` naming the ``exporter`` and ``opset`` tried.
    """
    from mmdeploy.apis import torch2onnx
    onnx_name = deploy_cfg.onnx_config.save_file
    for stale in (work / onnx_name, work / f'{onnx_name}.data'):
        if stale.exists():  # only with overwrite (checked above)
            stale.unlink()
    start = time.perf_counter()
    try:
        with onnx_exporter(dynamo), warnings.catch_warnings():
            # the tracer's notes on mmdeploy's shape arithmetic: expected, static shapes
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch2onnx(str(image_path), str(work), onnx_name, deploy_cfg,
                       model_cfg, model_checkpoint=checkpoint, device='cpu')
    except Exception as error:  # noqa: BLE001 - re-raised with what was tried
        first = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise ExportFailed(
            f'mmdeploy torch2onnx failed with the {exporter} exporter (opset '
            f'{opset}): {type(error).__name__}: {first}. The shipped deploy '
            f'configs use the TorchScript exporter (dynamo=False, opset 11), which works '
            f'for classifiers, segmentors and detectors; see docs/deploy.md') from error
    return work / onnx_name, time.perf_counter() - start


def run_onnxruntime(onnx_path: Path, inputs: torch.Tensor) -> Tuple[Any, List[np.ndarray]]:
    """Run the graph once on CPU with torch's thread count.

    Returns the session (for output names) and the outputs (one array per graph output).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_path), options,
                                   providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: inputs.detach().cpu().numpy()}
    outputs: List[np.ndarray] = session.run(None, feed)
    return session, outputs
