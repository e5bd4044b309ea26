"""Reading and writing: safe checkpoint loading, key maps, form-aware weight loading, configs,
atomic output files. Every public name is importable from ``rep_mm.io``.

* :mod:`.safe_load`: ``weights_only`` loading with the Runner allow-list;
  :mod:`.zip_integrity`: CRC checks of zip checkpoints;
* :mod:`.state_dict`: the state dict inside a checkpoint and its ``meta['rep_mm_form']`` tag;
* :mod:`.key_maps`: official / mmpretrain / rep_mm names put under a model's names;
* :mod:`.forms`: training or deploy form, of a model and of a checkpoint, for every family;
* :mod:`.load`: :func:`load_weights` (strict, as the model is) and :func:`load_into` (either
  form: converts the model for a deploy-form checkpoint);
* :mod:`.save`: atomic checkpoint saving; :mod:`.atomic`: temp files and atomic writes;
  :mod:`.paths`: output-path checks; :mod:`.config`: configs with errors that name the line;
* :mod:`.errors`: :class:`CheckpointError`, :class:`CheckpointFormError`, :class:`ConfigError`.

Example: load a checkpoint of either form into a training-form model::

    from rep_mm.io import load_into
    result = load_into(model, 'work_dirs/x/converted.pth')
    print(result.form, result.summary())   # 'deploy': the model was converted first
"""
from .atomic import (STALE_AFTER_SECONDS, TempFile, make_temp_file, stale_temp_files,
                     temp_name, write_bytes_atomic, write_json_atomic)
from .config import load_config_file
from .errors import CheckpointError, CheckpointFormError, ConfigError
from .forms import ModelKeys, checkpoint_form, model_form, record_form, reparam_blocks
from .key_maps import KINDS, TARGETS, detect_kind, map_state_dict, mmpretrain_to_official
from .load import FormLoad, LoadReport, load_into, load_weights
from .paths import NoSpaceError, OutputPathError, check_output_path, same_file
from .safe_load import load_checkpoint_file, read_checkpoint, runner_allow_list, runner_safe_globals
from .save import save_checkpoint_atomic
from .state_dict import (FORM_KEY, FORMS, checkpoint_meta, extract_state_dict, form_tag,
                         tag_form)
from .zip_integrity import checkpoint_format, verify_zip_checkpoint

__all__ = [
    # reading
    'load_checkpoint_file', 'read_checkpoint', 'runner_allow_list', 'runner_safe_globals',
    'checkpoint_format', 'verify_zip_checkpoint', 'extract_state_dict', 'checkpoint_meta',
    # forms and loading
    'FORMS', 'FORM_KEY', 'form_tag', 'tag_form', 'model_form', 'record_form', 'reparam_blocks',
    'ModelKeys', 'checkpoint_form', 'KINDS', 'TARGETS', 'detect_kind', 'mmpretrain_to_official',
    'map_state_dict', 'LoadReport', 'FormLoad', 'load_weights', 'load_into',
    # writing
    'save_checkpoint_atomic', 'write_bytes_atomic', 'write_json_atomic', 'make_temp_file',
    'temp_name', 'stale_temp_files', 'TempFile', 'STALE_AFTER_SECONDS', 'check_output_path',
    'same_file', 'NoSpaceError', 'OutputPathError',
    # configs and errors
    'load_config_file', 'ConfigError', 'CheckpointError', 'CheckpointFormError',
]
