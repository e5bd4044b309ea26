"""The QAT configs train with tools/train.py (as a user runs it) from a stock checkpoint and
write ``qat_deploy.pth``, a plain deploy-form checkpoint for the ``deploy=True`` model config."""
import pytest
import torch

from rep_mm.io import extract_state_dict, load_checkpoint_file
from rep_mm.quantization.qat import QATError, fold_checkpoint

from ..conftest import REPO_ROOT, relative_error
from ..helpers import load_train_tool, run_python
from .test_qat_insert_bn import (TOLERANCE, build_deploy_config_model, build_digits_model,
                                 digits_batches, logits)

CONFIGS = REPO_ROOT / 'configs' / 'quantization'
AFTER_CONVERSION = CONFIGS / 'repvgg-tiny_qat-after-conversion_digits.py'
EQK = CONFIGS / 'repvgg-tiny_eqk-qat_digits.py'
FLOAT = CONFIGS / 'repvgg-tiny_deploy-finetune_digits.py'
TINY = ['train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=32',
        'train_dataloader.batch_size=16', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1', 'custom_hooks.0.calib_batches=2']


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A training-form and the converted (deploy-form) checkpoint of the same stock model."""
    from rep_mm import reparameterize
    directory = tmp_path_factory.mktemp('stock')
    model = build_digits_model(seed=3)
    training = directory / 'training_form.pth'
    torch.save(dict(state_dict=model.state_dict()), training)
    reparameterize(model)
    deploy = directory / 'deploy_form.pth'
    torch.save(dict(state_dict=model.state_dict()), deploy)
    return training, deploy


def train(config, work_dir, data_root, load_from, *extra):
    result = run_python([REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir,
                         '--cfg-options', f'data_root={data_root}', f'load_from={load_from}',
                         *TINY, *extra])
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def load_deploy(path):
    model = build_deploy_config_model().eval()
    model.load_state_dict(extract_state_dict(load_checkpoint_file(path)), strict=True)
    return model


def test_after_conversion_config_from_a_training_form_checkpoint(checkpoints, data_root,
                                                                 tmp_path):
    log = train(AFTER_CONVERSION, tmp_path, data_root, checkpoints[0])
    assert 'QATHook: converted the training-form checkpoint (7 block(s))' in log
    assert 'QATHook: inserted BN after 7 fused conv(s)' in log
    assert '(PASS at tolerance 1e-05)' in log and 'Epoch(train) [1][2/2]' in log
    deploy = load_deploy(tmp_path / 'qat_deploy.pth')
    # the Runner checkpoint of the same run folds to the same deploy-form weights
    info = fold_checkpoint(str(AFTER_CONVERSION), str(tmp_path / 'epoch_1.pth'),
                           str(tmp_path / 'refolded.pth'))
    assert len(info['folded']) == 7
    refolded = extract_state_dict(load_checkpoint_file(tmp_path / 'refolded.pth'))
    assert all(torch.equal(v, refolded[k]) for k, v in deploy.state_dict().items())
    # resuming does not measure the BNs again (their statistics are in the checkpoint)
    tool = load_train_tool()
    assert tool.main([str(AFTER_CONVERSION), '--work-dir', str(tmp_path), '--resume',
                      str(tmp_path / 'epoch_1.pth'), '--cfg-options', f'data_root={data_root}',
                      *TINY, 'train_cfg.max_epochs=2']) == 0
    assert 'QATHook: inserted BNs already calibrated (resumed)' in run_log(tmp_path)
    assert (tmp_path / 'epoch_2.pth').is_file()
    # QAT changed the weights of the converted stock model
    stock = load_deploy(checkpoints[1])
    x = digits_batches(data_root, 1)[0]
    with torch.no_grad():
        assert relative_error(logits(stock, x), logits(deploy, x)) > 1e-4


def run_log(work_dir) -> str:
    """The Runner's log file of an in-process run in ``work_dir``."""
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no Runner log in {work_dir}'
    return logs[-1].read_text()


def test_eqk_config_from_a_training_form_checkpoint(checkpoints, data_root, tmp_path):
    # in process (tools/train.py's main): the subprocess run above already covers a fresh
    # interpreter importing the configs' custom_imports
    tool = load_train_tool()
    assert tool.main([str(EQK), '--work-dir', str(tmp_path), '--cfg-options',
                      f'data_root={data_root}', f'load_from={checkpoints[0]}', *TINY]) == 0
    log = run_log(tmp_path)
    assert 'QATHook: equivalent-kernel QAT of 7 block(s)' in log
    assert 'ReparameterizeHook: val equivalence on the first batch' in log
    assert '(PASS at tolerance 1e-05)' in log and 'Epoch(train) [1][2/2]' in log
    state = extract_state_dict(load_checkpoint_file(tmp_path / 'epoch_1.pth'))
    assert any('rbr_dense' in k for k in state) and any('input_quant' in k for k in state)
    deploy = load_deploy(tmp_path / 'qat_deploy.pth')
    assert not any('input_quant' in k for k in deploy.state_dict())
    # the trained training-form checkpoint converts to the same deploy-form weights
    from rep_mm.quantization.qat.cli import main as fold_main
    args = [str(EQK), str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'f.pth')]
    assert fold_main(args) == 0
    assert fold_main(args) == 2  # exists: not overwritten without --overwrite
    assert fold_main([str(EQK), str(tmp_path / 'missing.pth'), str(tmp_path / 'g.pth')]) == 2
    refolded = extract_state_dict(load_checkpoint_file(tmp_path / 'f.pth'))
    assert all(torch.equal(v, refolded[k]) for k, v in deploy.state_dict().items())


def test_float_finetune_config_from_a_deploy_form_checkpoint(checkpoints, data_root, tmp_path):
    tool = load_train_tool()
    assert tool.main([str(FLOAT), '--work-dir', str(tmp_path), '--cfg-options',
                      f'data_root={data_root}', f'load_from={checkpoints[1]}', *TINY]) == 0
    before = extract_state_dict(load_checkpoint_file(checkpoints[1]))
    after = load_deploy(tmp_path / 'qat_deploy.pth').state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.endswith('rbr_reparam.weight') for k in changed)
    state = extract_state_dict(load_checkpoint_file(tmp_path / 'epoch_1.pth'))
    assert any('.rbr_reparam.bn.' in k for k in state)
    assert not any('input_quant' in k for k in state)  # no fake quantization


def test_qat_model_bad_inputs():
    from mmengine.registry import MODELS
    from .test_qat_insert_bn import digits_config
    import rep_mm.quantization.qat  # noqa: F401
    stock = digits_config().model
    with pytest.raises(QATError, match="flow must be one of"):
        MODELS.build(dict(type='rep_mm.QATModel', flow='ptq', model=stock))
    with pytest.raises(QATError, match='must be the deploy-form config'):
        MODELS.build(dict(type='rep_mm.QATModel', flow='after_conversion', model=stock))
    with pytest.raises(QATError, match='without fake_quant is plain training'):
        MODELS.build(dict(type='rep_mm.QATModel', flow='equivalent_kernel', fake_quant=False,
                          model=stock))


def test_eqk_config_refuses_a_deploy_form_checkpoint(checkpoints, data_root, tmp_path):
    tool = load_train_tool()
    with pytest.raises(QATError, match='a converted checkpoint cannot be un-fused'):
        tool.main([str(EQK), '--work-dir', str(tmp_path), '--cfg-options',
                   f'data_root={data_root}', f'load_from={checkpoints[1]}', *TINY])
