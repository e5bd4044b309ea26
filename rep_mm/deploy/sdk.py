"""mmdeploy SDK meta of an export: deploy.json, pipeline.json, detail.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

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
    # mmdeploy names the model after cfg.model.type: give the real one, not the builder's
    meta_path = work / 'deploy.json'
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        real_name = model_cfg.model.model_type.split('.')[-1].lower()
        for entry in meta.get('models', []):
            if entry.get('name') == 'rep_mm.reparameterizedmodel':
                entry['name'] = real_name
        meta_path.write_text(json.dumps(meta, indent=4) + '\n')
    return dict(written=len(files) == 3, files=files, note='')
