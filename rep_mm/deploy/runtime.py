"""The ONNX side: mmdeploy's ``torch2onnx`` (the exporter chosen by the deploy config through
rep_mm's ``torch.onnx.export`` rewriter, :mod:`.exporter`), one onnxruntime run."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import torch

from .errors import ExportFailed

__all__ = ['run_torch2onnx', 'run_onnxruntime']


def run_torch2onnx(work: Path, image_path: Path, deploy_cfg: Any, model_cfg: Any,
                   checkpoint: str, dynamo: bool, exporter: str,
                   opset: Any) -> Tuple[Path, float]:
    """``mmdeploy.apis.torch2onnx`` of ``model_cfg`` + ``checkpoint`` into ``work``.

    The exporter is the deploy config's (``onnx_config.dynamo``, default False: TorchScript);
    ``dynamo`` only names it in messages. Stale graph files of an earlier export are removed
    first (only reachable with ``overwrite``). Returns the graph's path and the seconds
    torch2onnx took; raises :class:`ExportFailed` naming the ``exporter`` and ``opset`` tried.
    """
    from mmdeploy.apis import torch2onnx

    from .exporter import ensure_registered
    ensure_registered()  # mmdeploy's RewriterContext passes the config's `dynamo` on
    onnx_name = deploy_cfg.onnx_config.save_file
    for stale in (work / onnx_name, work / f'{onnx_name}.data'):
        if stale.exists():  # only with overwrite (checked above)
            stale.unlink()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the tracer's notes on mmdeploy's shape arithmetic: expected, static shapes
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch2onnx(str(image_path), str(work), onnx_name, deploy_cfg,
                       model_cfg, model_checkpoint=checkpoint, device='cpu')
    except ExportFailed:
        raise  # already says what failed and what works (the exporter rewriter)
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
