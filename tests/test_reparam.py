"""rep_mm.reparameterize: walks any model (foreign blocks, wrappers) and verifies honestly."""
import socket

import pytest
import torch
from torch import nn

from rep_mm import ReparamBlock, reparameterize, verify_equivalence
from rep_mm.backbones import RepVGG
from rep_mm.blocks import RepVGGBlock
from rep_mm.reparam import max_errors
from rep_mm.testing import randomize_bn_statistics

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
