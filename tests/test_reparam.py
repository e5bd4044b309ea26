"""rep_mm.reparameterize: walks any model (foreign blocks, wrappers) and verifies honestly."""
import math
import socket

import pytest
import torch
from torch import nn

import rep_mm.reparam
from rep_mm import ReparamBlock, reparameterize, verify_equivalence
from rep_mm.backbones import RepVGG
from rep_mm.blocks import RepVGGBlock
from rep_mm.reparam import max_errors
from rep_mm.verify.bn_statistics import randomize_bn_statistics

TINY = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))


def test_report_counts_blocks_and_is_idempotent():
    model = randomize_bn_statistics(nn.Sequential(RepVGG(TINY), ), 0)
    x = torch.randn(1, 3, 32, 32)
    first = reparameterize(model, verify=x)
    assert len(first.converted) == 5 and first.passed
    assert 'converted' in first.summary() and 'PASS' in first.summary()
    second = reparameterize(model, verify=x)
    assert second.converted == [] and len(second.already_deployed) == 5
    assert second.max_abs_error == 0.0


def test_inplace_false_leaves_the_model_untouched():
    model = RepVGG(TINY)
    report = verify_equivalence(model, torch.randn(1, 3, 32, 32))
    assert report.model is not model
    assert hasattr(model.stage1[0], 'rbr_dense') and not model.deploy
    assert hasattr(report.model.stage1[0], 'rbr_reparam')


def test_modes_are_restored_after_verification():
    model = RepVGG(TINY).train()
    reparameterize(model, verify=torch.randn(1, 3, 32, 32))
    assert all(m.training for m in model.modules())
    model = RepVGG(TINY).eval()
    reparameterize(model, verify=torch.randn(1, 3, 32, 32))
    assert not any(m.training for m in model.modules())


def test_verify_detects_a_wrong_conversion():
    class BrokenBlock(RepVGGBlock):
        def equivalent_kernel_bias(self):
            kernel, bias = super().equivalent_kernel_bias()
            return kernel * 1.01, bias

    model = randomize_bn_statistics(nn.Sequential(BrokenBlock(4, 4)), 0)
    report = reparameterize(model, verify=torch.randn(1, 4, 8, 8))
    assert report.passed is False and report.max_rel_error > 1e-3
    assert 'FAIL' in report.summary()


def test_foreign_blocks_are_converted_too():
    from mmpretrain.models import RepVGG as MMPretrainRepVGG
    arch = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.25],
                group_layer_map=None, se_cfg=None)
    model = randomize_bn_statistics(MMPretrainRepVGG(arch), 1)
    report = reparameterize(model, verify=torch.randn(1, 3, 32, 32))
    assert report.passed and len(report.converted) >= 5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_model_without_reparam_blocks_reports_nothing_converted():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    report = reparameterize(model, verify=torch.randn(1, 3, 8, 8))
    assert report.converted == [] and report.max_abs_error == 0.0


def test_callable_verify_and_nested_outputs():
    model = randomize_bn_statistics(RepVGG(TINY, out_indices=(0, 1, 2, 3)), 2)
    x = torch.randn(1, 3, 32, 32)
    report = reparameterize(model, verify=lambda m: {'feats': m(x), 'sum': m(x)[-1].sum()})
    assert report.passed


def test_max_errors_rejects_mismatched_outputs():
    with pytest.raises(ValueError, match='structure'):
        max_errors((torch.zeros(1),), (torch.zeros(1), torch.zeros(1)))
    with pytest.raises(ValueError, match='shapes differ'):
        max_errors(torch.zeros(2), torch.zeros(3))


def test_ddp_wrapped_model_converts_the_inner_module():
    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        model = randomize_bn_statistics(RepVGG(TINY), 3)
        wrapped = nn.parallel.DistributedDataParallel(model)
        report = reparameterize(wrapped, verify=torch.randn(1, 3, 32, 32))
        assert report.passed and len(report.converted) == 5
        assert isinstance(wrapped.module.stage0, ReparamBlock) and wrapped.module.deploy
    finally:
        dist.destroy_process_group()


# -- non-finite models: never PASS, never install a NaN / inf kernel --------------------------
def nan_at(tensor, index=0):
    with torch.no_grad():
        tensor.view(-1)[index] = float('nan')


def test_nan_weight_raises_naming_block_and_parameter_and_leaves_training_form():
    model = randomize_bn_statistics(nn.Sequential(RepVGGBlock(4, 4), RepVGGBlock(4, 4)), 0)
    nan_at(model[1].rbr_1x1.conv.weight, 3)
    with pytest.raises(rep_mm.reparam.ReparamError) as info:
        reparameterize(model)
    text = str(info.value)
    assert "1 (RepVGGBlock)" in text and 'fused kernel' in text
    assert 'rbr_1x1.conv.weight (1 NaN/inf of 16)' in text and 'training form' in text
    assert info.value.report.converted == ['0'] and len(info.value.report.errors) == 1
    assert not model[1].deploy and hasattr(model[1], 'rbr_dense')  # untouched
    assert not hasattr(model[1], 'rbr_reparam')
    assert model[0].deploy  # the healthy block was converted


@pytest.mark.parametrize('buffer, value', [('running_mean', float('inf')),
                                           ('running_var', float('nan')),
                                           ('running_var', -1.0)])
def test_bad_bn_statistics_raise_naming_the_buffer(buffer, value):
    block = randomize_bn_statistics(RepVGGBlock(4, 4), 1)
    with torch.no_grad():
        getattr(block.rbr_identity, buffer)[2] = value
    with pytest.raises(rep_mm.reparam.ReparamError, match=f'rbr_identity.{buffer}'):
        block.switch_to_deploy()
    assert not block.deploy and hasattr(block, 'rbr_identity')


def test_verify_on_a_nan_model_fails_loudly_and_never_passes():
    model = randomize_bn_statistics(nn.Sequential(RepVGGBlock(4, 4)), 0)
    nan_at(model[0].rbr_dense.bn.weight)
    report = verify_equivalence(model, torch.randn(1, 4, 8, 8))
    assert report.passed is False and report.errors
    assert math.isnan(report.max_abs_error) and math.isnan(report.max_rel_error)
    text = report.summary()
    assert 'PASS' not in text and 'FAIL' in text
    assert 'rbr_dense.bn.weight' in text  # the cause
    assert 'reference output itself is not finite' in text  # the training form is NaN already
    assert not report.comparison.reference_finite


def test_nan_outside_the_fused_kernel_fails_the_comparison():
    """A NaN in a layer that is not folded (the classifier) reaches both outputs."""
    model = randomize_bn_statistics(nn.Sequential(RepVGGBlock(4, 4), nn.Conv2d(4, 2, 1)), 0)
    nan_at(model[1].bias, 1)
    report = reparameterize(model, verify=torch.randn(1, 4, 8, 8))
    assert report.errors == [] and report.converted == ['0']
    assert report.passed is False and 'PASS' not in report.summary()
    (finding,) = report.comparison.nonfinite
    assert finding.side == 'both' and finding.count == 64 and finding.first_index == (0, 1, 0, 0)


def test_candidate_nan_is_caught_even_when_conversion_code_is_wrong():
    class NaNBlock(RepVGGBlock):
        def checked_kernel_bias(self):  # a block that skips the checks and installs NaN
            kernel, bias = self.equivalent_kernel_bias()
            kernel = kernel.clone()
            kernel[0, 0, 1, 1] = float('nan')
            return kernel, bias

    model = randomize_bn_statistics(nn.Sequential(NaNBlock(4, 4)), 0)
    report = reparameterize(model, verify=torch.randn(1, 4, 8, 8))
    assert report.passed is False and math.isnan(report.max_rel_error)
    (finding,) = report.comparison.nonfinite
    assert finding.side == 'candidate' and finding.kind == 'NaN'
    assert 'NaN in the candidate only' in report.summary() and 'PASS' not in report.summary()
    assert all(math.isnan(v) for v in max_errors(torch.ones(2), torch.tensor([1., math.nan])))


def test_fp16_overflow_of_the_fused_kernel_raises_and_keeps_the_branches():
    """Every branch fits in fp16 and the training output is finite; the sum does not fit."""
    block = RepVGGBlock(2, 2)
    with torch.no_grad():
        for bn in (block.rbr_dense.bn, block.rbr_1x1.bn, block.rbr_identity):
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
        block.rbr_dense.conv.weight.zero_()
        block.rbr_1x1.conv.weight.zero_()
        block.rbr_dense.conv.weight[0, 0, 1, 1] = 40000.0
        block.rbr_1x1.conv.weight[0, 0, 0, 0] = 40000.0  # centre: 80000 / sqrt(1 + eps) + 1 > 65504
    model = nn.Sequential(block).half().eval()
    x = torch.full((1, 2, 3, 3), 2 ** -10, dtype=torch.float16)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()  # 40000 * 2^-10 twice: the training form is fine
    with pytest.raises(rep_mm.reparam.ReparamError) as info:
        reparameterize(model)
    text = str(info.value)
    assert "0 (RepVGGBlock)" in text and 'fused kernel' in text
    assert 'largest magnitude 80000.6' in text and '65504' in text and 'torch.float16' in text
    assert not block.deploy and hasattr(block, 'rbr_dense') and not hasattr(block, 'rbr_reparam')
    report = verify_equivalence(model, x)
    assert report.passed is False and 'PASS' not in report.summary()
    assert 'could not be converted' in report.summary()


def test_float64_conversion_still_exact():
    model = randomize_bn_statistics(nn.Sequential(RepVGGBlock(4, 4)), 4).double()
    report = reparameterize(model, verify=torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert report.passed and report.max_rel_error <= 1e-10
    assert report.comparison.finite and 'PASS' in report.summary()


@pytest.mark.parametrize('command', ['convert', 'verify'])
def test_cli_on_a_nan_checkpoint_exits_1_and_writes_nothing(command, tmp_path, capsys):
    from rep_mm.cli.dispatch import EXIT_FAILED, build_arch_model, main
    model = randomize_bn_statistics(build_arch_model('RepVGG-A0'), 5)
    state = model.official_state_dict()
    state['stage1.0.rbr_dense.conv.weight'].view(-1)[7] = float('nan')
    source, out = tmp_path / 'nan.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': state}, source)
    paths = [str(source), str(out)] if command == 'convert' else [str(source)]
    code = main([command, '--arch', 'RepVGG-A0', *paths, '--shape', '1x3x32x32'])
    printed = capsys.readouterr().out
    assert code == EXIT_FAILED, printed
    assert 'stage1.0' in printed and 'rbr_dense.conv.weight' in printed
    assert 'PASS' not in printed and 'FAIL' in printed
    assert not out.exists()


class DeclaredConvBN(ReparamBlock):
    """The smallest declared block: ``BN(conv3x3(x))`` folded into the conv ``fused``."""

    fused_name = 'fused'
    branch_names = ('conv', 'bn')
    in_channels = out_channels = 3
    kernel_size, stride, padding, dilation, groups = 3, 1, 1, 1, 1

    def __init__(self, deploy: bool = False) -> None:
        super().__init__()
        self.deploy = deploy
        if deploy:
            self._init_deploy_form()
            return
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.fused(x) if self.deploy else self.bn(self.conv(x))

    def _fold_branches(self):
        return rep_mm.fusion.fuse_bn(self.conv.weight, self.bn)


def test_a_declared_block_gets_the_whole_deploy_protocol():
    block = randomize_bn_statistics(DeclaredConvBN(), 0).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = block(x)
    kernel, bias = block.equivalent_kernel_bias()
    assert kernel.requires_grad  # the training form folds differentiably
    report = reparameterize(block, verify=x)
    assert report.passed and report.converted == ['']
    assert block.deploy and not hasattr(block, 'conv') and not hasattr(block, 'bn')
    assert list(block.state_dict()) == list(DeclaredConvBN(deploy=True).state_dict()) == [
        'fused.weight', 'fused.bias']
    fused_kernel, fused_bias = block.equivalent_kernel_bias()
    assert fused_kernel is block.fused.weight and fused_bias is block.fused.bias
    assert torch.equal(fused_kernel, kernel.detach()) and torch.equal(fused_bias, bias.detach())
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_a_block_without_declarations_says_what_is_missing():
    class Undeclared(ReparamBlock):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

    with pytest.raises(NotImplementedError, match='_fold_branches'):
        Undeclared().switch_to_deploy()
    with pytest.raises(NotImplementedError, match='fused_name'):
        Undeclared()._init_deploy_form()


def _declared_blocks():
    from rep_mm.backbones.reparam_resnet import ConvBNLayer
    from rep_mm.blocks import (OREPA, ACBlock, DiverseBranchBlock, OREPA1x1, OREPALargeConv,
                               OREPARepVGGBlock, RepGhostModule, RepMLPBlock, RepOptGhostModule,
                               RepOptVGGBlock)
    return [
        (RepVGGBlock, dict(in_channels=4, out_channels=4)),
        (ACBlock, dict(in_channels=4, out_channels=4, kernel_size=3, padding=1)),
        (DiverseBranchBlock, dict(in_channels=4, out_channels=4, kernel_size=3)),
        (OREPA, dict(in_channels=4, out_channels=4)),
        (OREPA1x1, dict(in_channels=4, out_channels=8)),
        (OREPALargeConv, dict(in_channels=4, out_channels=4, kernel_size=5)),
        (OREPARepVGGBlock, dict(in_channels=4, out_channels=4)),
        (RepGhostModule, dict(in_channels=4, out_channels=8)),
        (RepOptGhostModule, dict(in_channels=4, out_channels=8, mode='hs')),
        (RepOptVGGBlock, dict(in_channels=4, out_channels=4, mode='csla')),
        (RepMLPBlock, dict(in_channels=4, out_channels=4, h=2, w=2, reparam_conv_k=(1, 3))),
        (ConvBNLayer, dict(in_channels=4, out_channels=4, kernel_size=3, padding=1)),
    ]


@pytest.mark.parametrize('cls, kwargs', _declared_blocks(),
                         ids=[cls.__name__ for cls, _ in _declared_blocks()])
def test_every_block_declares_its_fused_operator_and_branches(cls, kwargs):
    """After conversion the ``branch_names`` are gone, ``fused_name`` is a conv with bias whose
    weight and bias ``equivalent_kernel_bias()`` returns, and the deploy-form constructor
    builds exactly the converted keys."""
    block = randomize_bn_statistics(cls(**kwargs), 1).eval()
    assert block.fused_name and block.branch_names
    trained = set(block.state_dict())
    assert any(key.split('.')[0] in block.branch_names for key in trained)
    x = torch.randn(2, 4, 4, 4)
    report = reparameterize(block, verify=x)
    assert report.passed, report.summary()
    assert not any(hasattr(block, name) for name in block.branch_names
                   if name != block.fused_name)
    fused = getattr(block, block.fused_name)
    assert isinstance(fused, nn.Conv2d) and fused.bias is not None
    kernel, bias = block.equivalent_kernel_bias()
    assert kernel is fused.weight and bias is fused.bias
    assert list(block.state_dict()) == list(cls(**kwargs, deploy=True).state_dict())
