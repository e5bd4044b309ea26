"""The segmentation QAT configs (PSPNet-RepVGG on digit scenes) train a few iterations with
tools/train.py from a stock training-form checkpoint and write ``qat_deploy.pth``, a plain
deploy-form checkpoint of the stock segmentor config (``deploy=True``)."""
import pytest
import torch

from rep_mm.integrations import build_model
from rep_mm.io import extract_state_dict, load_checkpoint_file
from rep_mm.quantization.qat import QATError, fold_checkpoint, with_deploy

from ..conftest import REPO_ROOT, relative_error
from ..helpers import load_train_tool, run_python

CONFIGS = REPO_ROOT / 'configs' / 'quantization'
STOCK = REPO_ROOT / 'configs' / 'pspnet' / 'pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py'
AFTER_CONVERSION = CONFIGS / 'pspnet_repvgg-tiny-d4_qat-after-conversion_digit-scenes-64x64.py'
EQK = CONFIGS / 'pspnet_repvgg-tiny-d4_eqk-qat_digit-scenes-64x64.py'
TINY = ['train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']


def stock_config():
    from mmengine.config import Config
    return Config.fromfile(str(STOCK))


def build_stock(deploy: bool):
    cfg = stock_config()
    model_cfg = with_deploy(cfg.model, True) if deploy else cfg.model
    return build_model(cfg, model_cfg, with_data_preprocessor=True, seed=0)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    from rep_mm.datasets import prepare_digit_scenes
    root = tmp_path_factory.mktemp('qat_scenes') / 'digit_scenes'
    prepare_digit_scenes(root, num_train=8, num_val=4, size=64, seed=0)
    return str(root)


@pytest.fixture(scope='module')
def training_form(tmp_path_factory):
    path = tmp_path_factory.mktemp('seg_stock') / 'training_form.pth'
    torch.save(dict(state_dict=build_stock(deploy=False).state_dict()), path)
    return path


def run_log(work_dir) -> str:
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no Runner log in {work_dir}'
    return logs[-1].read_text()


def load_deploy(path):
    model = build_stock(deploy=True).eval()
    checkpoint = load_checkpoint_file(path)
    model.load_state_dict(extract_state_dict(checkpoint), strict=True)
    return model, checkpoint.get('meta', {})


def seg_logits(model, seed=0):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x, mode='tensor')


def test_after_conversion_seg_config_trains(scenes, training_form, tmp_path):
    result = run_python([REPO_ROOT / 'tools' / 'train.py', AFTER_CONVERSION, '--work-dir',
                         tmp_path, '--cfg-options', f'data_root={scenes}',
                         f'load_from={training_form}', *TINY, 'custom_hooks.0.calib_batches=2'])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'QATHook: converted the training-form checkpoint (7 block(s))' in log
    assert 'QATHook: inserted BN after 7 fused conv(s)' in log
    assert '(PASS at tolerance 1e-05)' in log and 'Iter(train) [2/2]' in log
    deploy, meta = load_deploy(tmp_path / 'qat_deploy.pth')
    assert meta['rep_mm_form'] == 'deploy' and meta['qat_flow'] == 'after_conversion'
    assert meta['weight_quant'] == 'per_channel'
    # the Runner checkpoint of the run folds to the same weights (written atomically, never
    # over its input)
    info = fold_checkpoint(str(AFTER_CONVERSION), str(tmp_path / 'iter_2.pth'),
                           str(tmp_path / 'refolded.pth'))
    assert len(info['folded']) == 7
    refolded = extract_state_dict(load_checkpoint_file(tmp_path / 'refolded.pth'))
    assert all(torch.equal(v, refolded[k]) for k, v in deploy.state_dict().items())
    assert not list(tmp_path.glob('.*.tmp'))
    with pytest.raises(FileExistsError):
        fold_checkpoint(str(AFTER_CONVERSION), str(tmp_path / 'iter_2.pth'),
                        str(tmp_path / 'refolded.pth'))
    with pytest.raises(QATError, match='is the input checkpoint'):
        fold_checkpoint(str(AFTER_CONVERSION), str(tmp_path / 'iter_2.pth'),
                        str(tmp_path / 'iter_2.pth'), overwrite=True)
    # the QAT steps changed the converted stock model
    stock = build_stock(deploy=False).eval()
    stock.load_state_dict(torch.load(training_form)['state_dict'])
    from rep_mm import reparameterize
    reparameterize(stock)
    assert relative_error(seg_logits(stock), seg_logits(deploy)) > 1e-4


def test_eqk_seg_config_trains_per_tensor(scenes, training_form, tmp_path):
    tool = load_train_tool()
    assert tool.main([str(EQK), '--work-dir', str(tmp_path), '--cfg-options',
                      f'data_root={scenes}', f'load_from={training_form}', *TINY,
                      'model.weight_quant=per_tensor']) == 0
    log = run_log(tmp_path)
    assert 'QATHook: equivalent-kernel QAT of 7 block(s)' in log
    assert 'ReparameterizeHook: val equivalence on the first batch' in log
    assert 'Iter(train) [2/2]' in log
    state = extract_state_dict(load_checkpoint_file(tmp_path / 'iter_2.pth'))
    assert any('rbr_dense' in k for k in state) and any('input_quant' in k for k in state)
    deploy, meta = load_deploy(tmp_path / 'qat_deploy.pth')
    assert meta['rep_mm_form'] == 'deploy' and meta['qat_flow'] == 'equivalent_kernel'
    assert meta['weight_quant'] == 'per_tensor'
    assert not any('input_quant' in k for k in deploy.state_dict())
    fused = [m for n, m in deploy.named_modules() if n.endswith('rbr_reparam')]
    assert len(fused) == 7
