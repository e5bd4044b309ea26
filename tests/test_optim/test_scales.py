"""Released scales files: load by name for their archs, build maps; clear errors otherwise."""
import pytest
import torch

from rep_mm.backbones import RepOptGhostNet, RepOptVGG
from rep_mm.optim import (RepOptGhostNetHandler, RepOptVGGHandler, ScalesError, build_handler,
                          extract_scales, load_scales)

from ..conftest import reference_path

RELEASED = [('RepOpt-VGG-B1-scales.pth', 'B1'), ('RepOpt-VGG-B2-scales.pth', 'B2'),
            ('RepOpt-VGG-L1-scales.pth', 'L1'), ('RepOpt-VGG-L2-scales.pth', 'L2'),
            ('RepOptGhostNet_0_5x_scales.pth', '0.5x')]


def build(arch, mode='target', device='meta'):
    with torch.device(device):
        if arch == '0.5x':
            return RepOptGhostNet(arch, mode=mode)
        return RepOptVGG(arch, mode=mode)


@pytest.mark.parametrize('filename,arch', RELEASED)
def test_released_scales_build_maps_for_their_arch(filename, arch):
    """Every kernel of the arch gets a map entry of its shape (models on the meta device)."""
    scales = load_scales(reference_path('repopt_scales', filename))
    model = build(arch)
    handler = build_handler(model, scales)
    for rule in ('sgd', 'adamw'):
        mults = handler.grad_mults(rule)
        kernels = [handler.kernel_param(b) for b in handler.blocks.values()]
        blocks = 32 if arch == '0.5x' else sum(RepOptVGG.arch_settings[arch]['num_blocks']) + 1
        assert len(kernels) == blocks
        assert [id(p) for p in mults] == [id(p) for p in kernels]
        assert all(m.shape == p.shape for p, m in mults.items())
    names = sorted(f'{n}.{s}' for n, b in handler.blocks.items() for s in b.scale_names())
    assert names == sorted(scales)


@pytest.mark.parametrize('filename,arch', [RELEASED[0], RELEASED[4]])
def test_released_scales_values_drive_the_maps(filename, arch):
    """On real tensors: the SGD mult of one identity block is s_conv^2 + s_1x1^2 + 1."""
    scales = load_scales(reference_path('repopt_scales', filename))
    model = build(arch).to_empty(device='cpu')  # mults depend on shapes and scales only
    handler = build_handler(model, scales)
    mults = handler.grad_mults('sgd')
    if arch == 'B1':
        block = model.stage1[1]
        mult = mults[block.conv.weight]
        s_conv, s_1x1 = scales['stage1.1.scale_conv.weight'], scales['stage1.1.scale_1x1.weight']
        assert torch.equal(mult[5, 7, 0, 2], s_conv[5] ** 2)
        assert torch.equal(mult[5, 7, 1, 1], s_conv[5] ** 2 + s_1x1[5] ** 2)
        assert torch.equal(mult[5, 5, 1, 1], s_conv[5] ** 2 + s_1x1[5] ** 2 + 1)
    else:
        module = model.blocks[3][0].ghost1
        mult = mults[module.cheap_operation[0].weight]
        s = scales['blocks.3.0.ghost1.cheap_operation.1.weight']
        assert torch.equal(mult[4, 0, 0, 0], s[4] ** 2)
        assert torch.equal(mult[4, 0, 1, 1], s[4] ** 2 + 1)
    # scales files load in any key order (B1 lists 1x1 first, L1 conv first)
    shuffled = dict(reversed(list(scales.items())))
    again = build_handler(model, shuffled).grad_mults('sgd')
    assert all(torch.equal(mults[p], again[p]) for p in mults)


def tiny_vgg(mode='target'):
    return RepOptVGG(dict(num_blocks=(1, 2, 1, 1), width_factor=(0.125,) * 4), mode=mode)


def tiny_scales():
    hs = tiny_vgg('hs')
    return {k: v.detach().clone() for k, v in hs.state_dict().items() if '.scale_' in k}


def test_missing_extra_and_misshaped_keys_are_named():
    scales = tiny_scales()
    model = tiny_vgg()
    missing = {k: v for k, v in scales.items() if k != 'stage2.1.scale_identity.weight'}
    with pytest.raises(ScalesError, match=r'1 missing key\(s\): stage2\.1\.scale_identity'):
        RepOptVGGHandler(model, missing)
    with pytest.raises(ScalesError, match=r'1 unexpected key\(s\): stage9\.0\.scale_conv'):
        RepOptVGGHandler(model, {**scales, 'stage9.0.scale_conv.weight': torch.ones(8)})
    wrong = {**scales, 'stage0.scale_conv.weight': torch.ones(3)}
    with pytest.raises(ScalesError, match=r'stage0\.scale_conv\.weight: file \(3,\) vs model '
                                          r'\(8,\)'):
        RepOptVGGHandler(model, wrong)
    with pytest.raises(ScalesError, match='is it the arch the scales were searched for'):
        RepOptVGGHandler(RepOptVGG('B1'), scales)


def test_wrong_model_and_wrong_file_errors(tmp_path):
    with pytest.raises(ScalesError, match='build RepOptVGG with mode="target"'):
        RepOptVGGHandler(tiny_vgg('hs'), tiny_scales())
    with pytest.raises(ScalesError, match='no RepOptGhostNet found'):
        RepOptGhostNetHandler(tiny_vgg(), tiny_scales())
    with pytest.raises(ScalesError, match='does not exist'):
        load_scales(tmp_path / 'nope.pth')
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(ScalesError, match='not a dict of tensors'):
        load_scales(tmp_path / 'list.pth')


def test_extract_scales_from_a_hyper_search_checkpoint(tmp_path):
    hs = tiny_vgg('hs')
    with torch.no_grad():
        for name, param in hs.named_parameters():
            if '.scale_' in name:
                param.uniform_(0.2, 1.2)
    path = tmp_path / 'hs.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in hs.state_dict().items()},
                'meta': {'epoch': 3}}, path)
    scales = extract_scales(path)
    assert sorted(scales) == sorted(k for k in hs.state_dict() if '.scale_' in k)
    handler = RepOptVGGHandler(tiny_vgg(), scales)
    assert torch.equal(handler.scales['stage2.1.scale_identity.weight'],
                       hs.stage2[1].scale_identity.weight.detach())


@pytest.mark.parametrize('filename,arch', RELEASED)
def test_released_scales_drive_a_training_step_of_their_arch(filename, arch):
    """Full-size model + released file through the constructor: re-init, one RepOptSGD step.

    With momentum and weight decay off, the first update of every kernel is exactly
    ``-lr * M * grad`` (M the grad-mult map built from the file), and the other parameters take
    plain SGD steps.
    """
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
    torch.manual_seed(0)
    model = build(arch, device='cpu')
    lr = 0.1
    wrapper = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='rep_mm.RepOptOptimWrapperConstructor',
        optim_wrapper_cfg=dict(scales=str(reference_path('repopt_scales', filename)),
                               optimizer=dict(type='RepOptSGD', lr=lr, momentum=0.0,
                                              weight_decay=0.0))))(model)
    handler = wrapper.repopt_handler
    handler.reinitialize(torch.Generator().manual_seed(0))  # the rule of initialisation
    mults = handler.grad_mults('sgd')
    assert len(mults) == len([b for b in handler.blocks.values()]) > 0
    model.train()
    before = {p: p.detach().clone() for p in model.parameters()}
    out = model(torch.randn(2, 3, 32, 32))
    out = out[-1] if isinstance(out, (tuple, list)) else out
    wrapper.backward(out.square().mean())
    grads = {p: p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
    wrapper.step()
    # compared on the parameters (p_new - p_old in float32 would lose digits to cancellation):
    # the fused foreach update and this expression differ only by their roundings, bounded by
    # a few float32 eps of the operands' magnitude |p| + |step|
    eps = torch.finfo(torch.float32).eps
    resolvable = 0  # kernels whose step is not lost below float32 resolution
    for p, mult in mults.items():
        step = -lr * (grads[p] * mult)
        bound = 4 * eps * (before[p].abs() + step.abs())
        assert ((p.detach() - (before[p] + step)).abs() <= bound).all()
        resolvable += bool((step.abs() > bound).any())
    assert resolvable >= len(mults) // 2  # the check above is not vacuous
    plain = [p for p in grads if p not in mults]
    assert plain and all(torch.allclose(p.detach() - before[p], -lr * grads[p], rtol=1e-4,
                                        atol=1e-7) for p in plain)
