"""Re-param ANY backbone: stock mmdet / mmseg / mmpretrain ResNets trained with ACB / DBB / OREPA
blocks fold back into checkpoints that the stock models load strictly, without rep_mm."""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import rep_mm  # noqa: F401  (registers rep_mm.ReparamWrapped)
from rep_mm.blocks import OREPA, ACBlock, DiverseBranchBlock, OREPALargeConv
from rep_mm.integrations.stock_backbones import (SwappedNorm, export_stock_checkpoint,
                                                find_conv_bn_pairs, fold_to_stock,
                                                reparam_backbone, stock_state_dict)
from rep_mm.integrations.stock_backbones.cli import main
from rep_mm.registry import MODELS
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import relative_error

REPO = Path(__file__).resolve().parents[2]
# a stock backbone config per toolbox (and the conv type it is trained with here)
CASES = {
    'mmdet-r50-orepa': (dict(type='mmdet.ResNet', depth=50, out_indices=(0, 1, 2, 3),
                             frozen_stages=1, norm_eval=True), 'orepa'),
    'mmseg-r50v1c-d8-dbb': (dict(type='mmseg.ResNetV1c', depth=50, strides=(1, 2, 1, 1),
                                 dilations=(1, 1, 2, 4), out_indices=(0, 1, 2, 3),
                                 contract_dilation=True), 'dbb'),
}
STOCK_SCRIPT = r'''
import json, sys
import torch
spec = json.loads(sys.argv[1])
from mmengine.registry import MODELS
import mmdet.models, mmseg.models  # noqa: F401  the stock toolboxes only
results = {}
for name, case in spec.items():
    model = MODELS.build(case['cfg'])
    state = torch.load(case['ckpt'], map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        outs = model(torch.load(case['input'], weights_only=True))
    torch.save([o.clone() for o in outs], case['out'])
results['rep_mm_imported'] = any(m == 'rep_mm' or m.startswith('rep_mm.') for m in sys.modules)
print(json.dumps(results))
'''


def train_steps(model: nn.Module, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9)
    for _ in range(steps):
        outs = model(torch.randn(2, 3, 64, 64))
        loss = sum((o ** 2).mean() for o in outs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def randomize_scales(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and OREPA branch scales; the model is left in eval mode."""
    randomize_bn_statistics(model, seed)
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith('vector'):
            param.copy_(torch.rand(param.shape, generator=generator) * 0.9 + 0.1)
    model.eval()  # (mmpretrain's ResNet.train() returns None: no chaining on it)
    return model


def test_stock_resnets_fold_into_checkpoints_the_stock_models_load_without_rep_mm(tmp_path):
    torch.manual_seed(0)
    spec, expected = {}, {}
    for name, (cfg, conv_type) in CASES.items():
        model = MODELS.build(dict(type='rep_mm.ReparamWrapped', backbone=cfg, conv_type=conv_type))
        blocks = [m for m in model.modules() if isinstance(m, (OREPA, OREPALargeConv,
                                                               DiverseBranchBlock))]
        assert len(blocks) == len(model.rep_mm_swaps) >= 11
        train_steps(model)
        randomize_scales(model, seed=3)
        x = torch.randn(1, 3, 72, 56)
        with torch.no_grad():
            expected[name] = model(x)
        ckpt = export_stock_checkpoint(model, tmp_path / f'{name}.pth')
        torch.save(x, tmp_path / f'{name}_in.pt')
        spec[name] = dict(cfg=cfg, ckpt=ckpt, input=str(tmp_path / f'{name}_in.pt'),
                          out=str(tmp_path / f'{name}_out.pt'))
    result = subprocess.run([sys.executable, '-c', STOCK_SCRIPT, json.dumps(spec)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600,
                            env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {'rep_mm_imported': False}
    for name in CASES:
        outs = torch.load(spec[name]['out'], weights_only=True)
        assert len(outs) == 4
        for a, b in zip(expected[name], outs):
            assert relative_error(a, b) <= 1e-5, name


def test_mmseg_dilated_convs_stay_stock_for_dbb_and_are_reported():
    model = MODELS.build(dict(type='rep_mm.ReparamWrapped', backbone=CASES['mmseg-r50v1c-d8-dbb'][0],
                              conv_type='dbb'))
    # contract_dilation: the first block of layer3 runs at dilation 1 and is swapped
    dilated = [f'layer3.{i}.conv2' for i in range(1, 6)] + [f'layer4.{i}.conv2' for i in range(3)]
    assert model.rep_mm_skipped == {name: 'DBB needs dilation 1 and padding k // 2'
                                    for name in dilated}
    assert len(model.rep_mm_swaps) == 3 + 3 + 4 + 1
    assert [s.conv for s in model.rep_mm_swaps[:3]] == ['stem.0', 'stem.3', 'stem.6']


@pytest.mark.parametrize('conv_type', ['acb', 'dbb', 'orepa'])
def test_mmpretrain_resnet_folds_to_its_exact_stock_keys(conv_type):
    from mmpretrain.models import ResNet
    torch.manual_seed(1)
    stock = ResNet(18)
    model = reparam_backbone(ResNet(18), conv_type)
    kinds = {type(model.conv1), type(model.layer1[0].conv1)}
    assert kinds == {'acb': {ACBlock}, 'dbb': {DiverseBranchBlock},
                     'orepa': {OREPALargeConv, OREPA}}[conv_type]
    assert isinstance(model.bn1, SwappedNorm) and 'bn1.weight' not in model.state_dict()
    train_steps(model, 1)
    randomize_scales(model, seed=5)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        reference = model(x)
    state = stock_state_dict(model)
    assert list(state) == list(stock.state_dict())
    stock.load_state_dict(state, strict=True)
    with torch.no_grad():
        stock.eval()  # mmpretrain ResNet.train() returns None
        assert relative_error(reference[-1], stock(x)[-1]) <= 1e-5
    # the folded copy never touched the training model
    assert isinstance(model.bn1, SwappedNorm)


def test_identity_batchnorm_of_the_fold_adds_only_the_bias():
    """ACB / DBB fold to (K, b): BN(running 0 / 1, weight sqrt(1 + eps)) must be y = x + b."""
    from mmpretrain.models import ResNet
    model = randomize_scales(reparam_backbone(ResNet(18), 'acb'), seed=2)
    folded = fold_to_stock(copy.deepcopy(model))
    bn = folded.bn1
    assert torch.equal(bn.running_mean, torch.zeros(64)) and torch.equal(bn.running_var,
                                                                         torch.ones(64))
    assert bn.weight[0].item() == pytest.approx(math.sqrt(1 + bn.eps), rel=1e-7)
    x = torch.randn(2, 64, 5, 5) * 10
    with torch.no_grad():
        y = bn(x) - bn.bias.view(1, -1, 1, 1)
    assert relative_error(x, y) <= 1e-6
    kernel, bias = model.conv1.equivalent_kernel_bias()
    assert torch.equal(folded.conv1.weight, kernel.detach()) and torch.equal(bn.bias,
                                                                             bias.detach())


def test_orepa_folds_to_its_generated_kernel_and_own_batchnorm():
    from mmpretrain.models import ResNet
    model = randomize_scales(reparam_backbone(ResNet(18), 'orepa'), seed=4)
    folded = fold_to_stock(copy.deepcopy(model))
    block = model.layer2[0].conv2
    assert torch.allclose(folded.layer2[0].conv2.weight, block.weight_gen(), atol=1e-6)
    for key, value in block.bn.state_dict().items():
        assert torch.equal(getattr(folded.layer2[0].bn2, key), value)


def test_freezing_and_norm_eval_reach_the_blocks_through_the_placeholders():
    model = MODELS.build(dict(type='rep_mm.ReparamWrapped', backbone=CASES['mmdet-r50-orepa'][0]))
    model.train()
    stem = model.conv1
    assert isinstance(stem, OREPALargeConv) and not stem.training and not stem.bn.training
    assert not any(p.requires_grad for p in stem.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))


def test_dbb_identity_convs_survive_the_stock_init_weights():
    from mmdet.models.backbones import ResNet
    model = reparam_backbone(ResNet(18), 'dbb')
    model.init_weights()
    idconvs = [m.dbb_1x1_kxk.idconv1.weight for m in model.modules()
               if isinstance(m, DiverseBranchBlock)]
    assert idconvs and all(torch.count_nonzero(w) == 0 for w in idconvs)
    assert model.layer1[0].conv1.dbb_origin.conv.weight.std() > 0
    fold_to_stock(model)
    assert 'init_weights' not in model.__dict__


def test_reparameterize_then_fold_also_gives_the_stock_layers():
    """A model converted by the hook (blocks in deploy form) still folds into stock keys."""
    from mmpretrain.models import ResNet
    model = randomize_scales(reparam_backbone(ResNet(18), 'orepa'), seed=6)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)[-1]
    rep_mm.reparameterize(model)
    folded = fold_to_stock(model)
    assert list(folded.state_dict()) == list(ResNet(18).state_dict())
    with torch.no_grad():
        assert relative_error(reference, folded(x)[-1]) <= 1e-5


def test_conv_bn_pairs_are_found_by_tracing_not_by_names():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4))
    assert find_conv_bn_pairs(net, torch.randn(1, 3, 8, 8)) == [('0', '1')]
    reparam_backbone(net, 'orepa')
    assert isinstance(net[0], OREPA) and isinstance(net[3], nn.Conv2d)
    randomize_scales(net, 1)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = net(x)
        folded = fold_to_stock(copy.deepcopy(net))
        assert folded[0].bias is not None and torch.count_nonzero(folded[0].bias) == 0
        assert relative_error(reference, folded(x)) <= 1e-5


def test_bad_inputs_are_reported():
    from mmpretrain.models import ResNet
    with pytest.raises(ValueError, match="conv_type must be one of \\('acb', 'dbb', 'orepa'\\)"):
        reparam_backbone(ResNet(18), 'repvgg')
    model = reparam_backbone(ResNet(18), 'acb')
    with pytest.raises(ValueError, match='already re-parameterized'):
        reparam_backbone(model, 'acb')
    with pytest.raises(ValueError, match='no conv-BN pair'):
        reparam_backbone(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), 'orepa')
    with pytest.raises(ValueError, match='nothing to fold'):
        fold_to_stock(ResNet(18))
    shared = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
    twice = nn.Sequential(shared, shared)
    with pytest.raises(ValueError, match='run more than once per forward'):
        reparam_backbone(twice, 'orepa')
    only_skipped = reparam_backbone(ResNet(18), 'orepa', skip=['layer4.*'])
    assert set(only_skipped.rep_mm_skipped) == {'layer4.0.conv1', 'layer4.0.conv2',
                                                'layer4.1.conv1', 'layer4.1.conv2'}


def test_cli_folds_a_training_checkpoint_into_a_stock_checkpoint(tmp_path, capsys):
    config = tmp_path / 'cls.py'
    config.write_text(
        "default_scope = 'mmpretrain'\n"
        "model = dict(type='ImageClassifier', backbone=dict(type='rep_mm.ReparamWrapped', "
        "conv_type='orepa', backbone=dict(type='mmpretrain.ResNet', depth=18)), "
        "neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', "
        "num_classes=10, in_channels=512))\n")
    from mmengine.config import Config
    from mmengine.registry import MODELS as ROOT
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    model = randomize_scales(ROOT.build(Config.fromfile(str(config)).model), seed=8)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'train.pth')
    assert main([str(config), str(tmp_path / 'train.pth'), str(tmp_path / 'stock.pth')]) == 0
    stock = ROOT.build(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                            neck=dict(type='GlobalAveragePooling'),
                            head=dict(type='LinearClsHead', num_classes=10, in_channels=512)))
    state = torch.load(tmp_path / 'stock.pth', weights_only=True)
    assert state['meta']['rep_mm_folded'] is True
    stock.load_state_dict(state['state_dict'], strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(model(x, mode='tensor'), stock.eval()(x, mode='tensor')) <= 1e-5
    assert main([str(config), str(tmp_path / 'train.pth'), str(tmp_path / 'stock.pth')]) == 2
    assert 'exists; pass --overwrite' in capsys.readouterr().err
    assert main([str(config), str(tmp_path / 'missing.pth'), str(tmp_path / 'x.pth')]) == 2
