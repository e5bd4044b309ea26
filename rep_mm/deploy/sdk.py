"""mmdeploy SDK meta of an export: deploy.json, pipeline.json, detail.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from ..io import write_bytes_atomic

__all__ = ['SDK_FILES', 'write_sdk']

SDK_FILES = ('deploy.json', 'pipeline.json', 'detail.json')


def write_sdk(enabled: bool, work: Path, deploy_cfg: Any, model_cfg: Any,
              checkpoint: str) -> Dict[str, Any]:
    """mmdeploy SDK meta (deploy.json, pipeline.json, detail.json) via ``export2SDK``."""
    if not enabled:
        return dict(written=False, note='skipped (--no-sdk)')
    try:
        from mmdeploy.backend.sdk.export_info import export2SDK
        export2SDK(deploy_cfg, model_cfg, str(work), pth=checkpoint, device='cpu')
    except Exception as error:  # noqa: BLE001 - reported, the export itself is fine
        return dict(written=False, note=f'export2SDK failed: {type(error).__name__}: {error}')
    files = [name for name in SDK_FILES if (work / name).is_file()]
    # mmdeploy names the model after cfg.model.type: give the real one, not the builder's, in
    # deploy.json AND in pipeline.json's Net task (the SDK looks the one up by the other)
    real_name = model_cfg.model.model_type.split('.')[-1].lower()
    for name in ('deploy.json', 'pipeline.json'):
        path = work / name
        if path.is_file():
            meta = json.loads(path.read_text())
            if _rename(meta, 'rep_mm.reparameterizedmodel', real_name):
                write_bytes_atomic(str(path), (json.dumps(meta, indent=4) + '\n').encode())
    return dict(written=len(files) == 3, files=files, note='')


def _rename(node: Any, old: str, new: str) -> bool:
    """Replace every ``"name": old`` in the nested JSON ``node`` by ``new``; True if any."""
    changed = False
    if isinstance(node, dict):
        if node.get('name') == old:
            node['name'], changed = new, True
        for value in node.values():
            changed = _rename(value, old, new) or changed
    elif isinstance(node, list):
        for value in node:
            changed = _rename(value, old, new) or changed
    return changed
