"""RepPAFPN: shapes, exact conversion, and use inside an mmdet detector."""
import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.necks import RepPAFPN
from rep_mm.verify.bn_statistics import randomize_bn_statistics


def features(sizes=((16, 24), (8, 12), (4, 6)), channels=(8, 16, 32)):
    return tuple(torch.randn(2, c, h, w) for c, (h, w) in zip(channels, sizes))


def test_shapes_and_extra_levels():
    neck = RepPAFPN([8, 16, 32], 12, num_outs=5, num_repeats=2).eval()
    outs = neck(features())
    assert [tuple(o.shape) for o in outs] == [(2, 12, 16, 24), (2, 12, 8, 12), (2, 12, 4, 6),
                                              (2, 12, 2, 3), (2, 12, 1, 2)]


def test_odd_sizes_are_aligned():
    neck = RepPAFPN([8, 16], 8).eval()
    outs = neck(features(sizes=((15, 9), (8, 5)), channels=(8, 16)))
    assert [tuple(o.shape[-2:]) for o in outs] == [(15, 9), (8, 5)]


@pytest.mark.parametrize('dtype, tolerance', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_conversion_is_exact(dtype, tolerance):
    neck = randomize_bn_statistics(RepPAFPN([8, 16, 32], 12, num_outs=4, num_repeats=2), 3)
    neck = neck.to(dtype)
    inputs = tuple(f.to(dtype) for f in features())
    report = reparameterize(neck, verify=lambda m: m(inputs))
    assert report.max_rel_error <= tolerance
    assert len(report.converted) == 2 * 2 + 2 + 2 * 2 + 1 and neck.deploy
    blocks = [m for m in neck.modules() if hasattr(m, 'rbr_dense')]
    assert blocks == []


def test_deploy_built_neck_loads_converted_weights():
    neck = randomize_bn_statistics(RepPAFPN([8, 16, 32], 12), 4).eval()
    neck.switch_to_deploy()
    direct = RepPAFPN([8, 16, 32], 12, deploy=True).eval()
    direct.load_state_dict(neck.state_dict(), strict=True)
    x = features()
    with torch.no_grad():
        for a, b in zip(neck(x), direct(x)):
            assert torch.equal(a, b)


def test_bad_configuration_is_explained():
    with pytest.raises(ValueError, match='at least 2 input levels'):
        RepPAFPN([8], 8)
    with pytest.raises(ValueError, match='num_outs'):
        RepPAFPN([8, 16, 32], 8, num_outs=2)
    with pytest.raises(ValueError, match='built for 3 levels'):
        RepPAFPN([8, 16, 32], 8)(features()[:2])


def test_registered_for_mmdet_configs():
    from mmengine.registry import MODELS
    import rep_mm  # noqa: F401
    neck = MODELS.build(dict(type='rep_mm.RepPAFPN', in_channels=[8, 16], out_channels=8))
    assert isinstance(neck, RepPAFPN) and isinstance(neck, nn.Module)
