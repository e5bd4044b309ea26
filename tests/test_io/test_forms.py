"""The form-aware loader: a training-form and a deploy-form checkpoint of EVERY family load into a
training-form model through one function (:func:`rep_mm.io.load_into`), and the form is told
from the model's own keys (:func:`rep_mm.io.checkpoint_form`), never from family names.

Every family: RepVGG, RepVGGplus, RepMLPNet, RepGhostNet, RepOpt-VGG (target and hs),
RepOpt-GhostNet, OREPA-RepVGG, and the ACB / DBB / OREPA ResNets, at tiny sizes. Then the
errors: a wrong ``meta['rep_mm_form']`` tag, keys of neither form, the other form than the one
required, a folded model given training weights.
"""
import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import rep_mm
from rep_mm.backbones import (OREPARepVGG, ReparamResNet, RepGhostNet, RepMLPNet, RepOptGhostNet,
                              RepOptVGG, RepVGG, RepVGGplus)
from rep_mm.io import (FORM_KEY, CheckpointError, CheckpointFormError, checkpoint_form,
                       load_into, load_weights, model_form, save_checkpoint_atomic, tag_form)

from ..helpers import randomize_branches

VGG_ARCH = dict(num_blocks=[1, 2, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.25])
GHOST_ARCH = dict(width=0.5, cfgs=(((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),),
                                   ((5, 72, 40, 0.25, 2),)))
RESNET_ARCH = dict(block='basic', stage_blocks=(1, 1, 1, 1), width=0.25)
FAMILIES = {
    'RepVGG': lambda: RepVGG(arch=dict(VGG_ARCH, se_position='post', se_ratio=4),
                             out_indices=(3,)),
    'RepVGGplus': lambda: RepVGGplus(arch=dict(num_blocks=[1, 1, 2, 1],
                                               width_factor=[0.25] * 4), out_indices=(4,)),
    'RepMLPNet': lambda: RepMLPNet(arch=dict(channels=(8, 16, 32, 32), hs=(4, 4, 2, 1),
                                             ws=(4, 4, 2, 1), num_blocks=(1, 1, 1, 1),
                                             sharesets_nums=(1, 2, 4, 8),
                                             reparam_conv_k=(1, 3)), out_indices=(3,)),
    'RepGhostNet': lambda: RepGhostNet(arch=GHOST_ARCH, out_indices=(-1,)),
    'RepOptVGG-target': lambda: RepOptVGG(arch=VGG_ARCH, mode='target', out_indices=(3,)),
    'RepOptVGG-hs': lambda: RepOptVGG(arch=VGG_ARCH, mode='hs', out_indices=(3,)),
    'RepOptGhostNet': lambda: RepOptGhostNet(arch=GHOST_ARCH, mode='target', out_indices=(-1,)),
    'OREPARepVGG': lambda: OREPARepVGG(arch=VGG_ARCH, out_indices=(3,)),
    'ReparamResNet-acb': lambda: ReparamResNet(arch=RESNET_ARCH, conv_type='acb',
                                               stem_channels=8, out_indices=(3,)),
    'ReparamResNet-dbb': lambda: ReparamResNet(arch=RESNET_ARCH, conv_type='dbb',
                                               stem_channels=8, out_indices=(3,)),
    'ReparamResNet-orepa': lambda: ReparamResNet(arch=RESNET_ARCH, conv_type='orepa',
                                                 stem_channels=8, out_indices=(3,)),
}
INPUT = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def trained(family, seed=1):
    """A training-form model with every branch counting (random BN statistics, scales)."""
    torch.manual_seed(seed)
    return randomize_branches(FAMILIES[family](), seed).eval()


def converted(model):
    folded = copy.deepcopy(model)
    rep_mm.reparameterize(folded)
    return folded


def outputs(model):
    with torch.no_grad():
        return model(INPUT)[-1]


def keys_of(model):
    return list(model.state_dict())


# --------------------------------------------------------------------- every family, both forms
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_training_form_checkpoint_loads_as_is(family):
    source = trained(family)
    target = FAMILIES[family]().eval()
    assert checkpoint_form(source.state_dict(), target) == 'training'
    result = load_into(target, {'state_dict': source.state_dict()})
    assert result.form == 'training' and result.tag is None and result.converted == []
    assert result.report.ok and model_form(target) == 'training'
    assert torch.equal(outputs(target), outputs(source))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_deploy_form_checkpoint_converts_the_model_then_loads(family, tmp_path):
    source = converted(trained(family))
    target = FAMILIES[family]().eval()
    assert model_form(target) == 'training' and model_form(source) == 'deploy'
    assert checkpoint_form(source.state_dict(), target) == 'deploy'
    assert keys_of(target) != keys_of(source)  # checking the form costs the model nothing
    path = tmp_path / 'deploy.pth'
    save_checkpoint_atomic({'state_dict': source.state_dict(),
                            'meta': tag_form({}, 'deploy')}, path)
    result = load_into(target, path)
    assert result.form == 'deploy' and result.tag == 'deploy' and result.converted
    assert result.report.ok and model_form(target) == 'deploy'
    assert keys_of(target) == keys_of(source)
    assert torch.allclose(outputs(target), outputs(source), rtol=1e-5, atol=1e-6)
    assert 'deploy-form checkpoint, tagged' in result.summary()


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_training_weights_for_a_folded_model_say_so(family):
    source = trained(family)
    folded = converted(FAMILIES[family]())
    assert checkpoint_form(source.state_dict(), folded) == 'training'
    for load in (load_into, load_weights):
        with pytest.raises(CheckpointFormError, match='checkpoint is in training form .* but '
                                                      'the model is in deploy form'):
            load(folded, source.state_dict())


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_strict_load_weights_names_the_other_form_for_every_family(family):
    deploy_state = converted(trained(family)).state_dict()
    with pytest.raises(CheckpointFormError, match=r'checkpoint is in deploy form \(.+ keys\) '
                                                  r'but the model is in training form'):
        load_weights(FAMILIES[family](), deploy_state)


def test_a_whole_mm_model_with_auxiliary_heads_loads_either_form():
    """RepVGGplus in an mm classifier: the deploy form also drops the head's auxiliary
    classifiers (keys outside the blocks, inside the head container)."""
    from rep_mm.integrations import build_model
    cfg = dict(default_scope='mmpretrain', model=dict(
        type='ImageClassifier',
        backbone=dict(type='rep_mm.RepVGGplus', arch=dict(num_blocks=[1, 1, 2, 1],
                                                          width_factor=[0.25] * 4),
                      out_indices=(0, 1, 2, 4)),
        head=dict(type='rep_mm.RepVGGplusClsHead', num_classes=3, in_channels=(16, 32, 64, 128))))
    source = randomize_branches(build_model(cfg), 3).eval()
    deploy_state = converted(source).state_dict()
    assert any('_aux' in k for k in source.state_dict())
    assert not any('_aux' in k for k in deploy_state)
    target = build_model(cfg).eval()
    result = load_into(target, deploy_state)
    assert result.form == 'deploy' and result.report.ok
    with torch.no_grad():
        assert torch.allclose(target(INPUT, mode='tensor'), source(INPUT, mode='tensor'),
                              rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointFormError, match=r'training form \(.*stage1_aux.* keys\)'):
        load_weights(converted(build_model(cfg)), source.state_dict())


def test_a_model_without_blocks_has_one_form_and_takes_either_tag():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert model_form(model) == 'plain'
    for tag in ('training', 'deploy'):
        result = load_into(model, {'state_dict': model.state_dict(), 'meta': {FORM_KEY: tag}})
        assert result.form == tag and result.converted == []
    assert load_into(model, model.state_dict(), require='deploy').form == 'training'


# ---------------------------------------------------------------------------------- errors
def test_a_wrong_tag_is_an_error_that_says_so():
    source = trained('RepVGG')
    deploy_state = converted(source).state_dict()
    target = FAMILIES['RepVGG']()
    before = keys_of(target)
    with pytest.raises(CheckpointFormError, match=r"meta\['rep_mm_form'\] says 'training' but "
                                                  r"its keys are those of the deploy form of "
                                                  r"RepVGG \(rbr_reparam keys\): the tag is "
                                                  r"wrong") as info:
        load_into(target, {'state_dict': deploy_state, 'meta': {FORM_KEY: 'training'}})
    assert info.value.form == 'deploy' and info.value.model_form == 'training'
    with pytest.raises(CheckpointFormError, match="says 'deploy' but its keys are those of the "
                                                  "training form"):
        checkpoint_form({'state_dict': source.state_dict(), 'meta': {FORM_KEY: 'deploy'}},
                        target)
    with pytest.raises(CheckpointError, match=r"meta\['rep_mm_form'\] is 'folded'; it must be"):
        load_into(target, {'state_dict': source.state_dict(), 'meta': {FORM_KEY: 'folded'}})
    assert keys_of(target) == before  # nothing was converted


def test_keys_of_neither_form_list_the_differences_against_both():
    target = FAMILIES['ReparamResNet-dbb']()
    foreign = OrderedDict([('fc.weight', torch.zeros(2, 2)), ('fc.bias', torch.zeros(2))])
    with pytest.raises(CheckpointFormError, match=r'fits neither the training form nor the '
                                                  r'deploy form of ReparamResNet: against the '
                                                  r'training form, \d+ missing \(stage0\..*\), '
                                                  r'2 unexpected \(fc\.weight, fc\.bias\); '
                                                  r'against the deploy form') as info:
        load_into(target, foreign)
    assert info.value.form is None
    # half converted: one block folded, the others not
    source = trained('RepVGG')
    source.stage1[0].switch_to_deploy()
    with pytest.raises(CheckpointFormError, match='fits neither'):
        checkpoint_form(source.state_dict(), FAMILIES['RepVGG']())


def test_a_folded_model_given_foreign_keys_says_neither():
    folded = converted(FAMILIES['RepGhostNet']())
    with pytest.raises(CheckpointFormError, match='fits neither the deploy form of RepGhostNet '
                                                  r'\(the model is in deploy form\) nor its '
                                                  'training form'):
        load_into(folded, {'head.weight': torch.ones(1)})


def test_require_and_convert_refuse_the_other_form_without_touching_the_model():
    source = trained('RepMLPNet')
    deploy_state = converted(source).state_dict()
    target = FAMILIES['RepMLPNet']()
    before = keys_of(target)
    with pytest.raises(CheckpointFormError, match=r'checkpoint is in deploy form \(.*fc3.* '
                                                  r'keys\) but the model is in training form .*'
                                                  r'converted already'):
        load_into(target, deploy_state, convert=False)
    with pytest.raises(CheckpointFormError, match='checkpoint is in deploy form .* but a '
                                                  'training-form checkpoint is needed here'):
        load_into(target, deploy_state, require='training')
    with pytest.raises(CheckpointFormError, match=r'checkpoint is in training form \(fc3_bn / '
                                                  r'.* keys\) but a deploy-form \(converted\) '
                                                  r'checkpoint is needed here'):
        load_into(target, source.state_dict(), require='deploy')
    assert keys_of(target) == before
    with pytest.raises(ValueError, match='require must be None or one of'):
        load_into(target, source.state_dict(), require='folded')


def test_right_form_wrong_shapes_is_the_strict_report():
    source = RepVGG(arch=dict(VGG_ARCH, width_factor=[0.5] * 4, se_position='post', se_ratio=4),
                    out_indices=(3,))
    with pytest.raises(CheckpointError, match=r'shape mismatch.*stage0\.rbr_dense\.conv\.weight'):
        load_into(FAMILIES['RepVGG'](), source.state_dict())
    deploy_state = converted(source).state_dict()
    with pytest.raises(CheckpointError, match=r'shape mismatch.*stage0\.rbr_reparam\.weight'):
        load_into(FAMILIES['RepVGG'](), deploy_state)


def test_official_and_mmpretrain_names_are_mapped_before_the_form_is_told():
    """An official deploy-form release (keys without prefix, ``linear.*``) into a classifier."""
    from rep_mm.integrations import build_model
    cfg = dict(default_scope='mmpretrain', model=dict(
        type='ImageClassifier', backbone=dict(type='rep_mm.RepVGG', arch=VGG_ARCH),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=128)))
    source = converted(randomize_branches(build_model(cfg), 4).eval())
    official = OrderedDict((k[len('backbone.'):], v) for k, v in source.state_dict().items()
                           if k.startswith('backbone.'))
    official.update(('linear.' + k.rsplit('.', 1)[1], v) for k, v in
                    source.state_dict().items() if k.startswith('head.fc.'))
    target = build_model(cfg).eval()
    result = load_into(target, {'model': official})
    assert result.form == 'deploy' and result.report.kind == 'official' and result.report.ok
    with torch.no_grad():
        assert torch.allclose(target(INPUT, mode='tensor'), source(INPUT, mode='tensor'),
                              rtol=1e-5, atol=1e-6)


def test_record_form_tags_what_a_writer_saves():
    """What a checkpoint writer (the training hook) calls: the model's own form, no tag for a
    model with one form only."""
    from rep_mm.io import record_form
    model = FAMILIES['OREPARepVGG']()
    checkpoint = {'state_dict': model.state_dict(), 'meta': {'epoch': 2}}
    assert record_form(checkpoint, model) == 'training'
    assert checkpoint['meta'] == {'epoch': 2, FORM_KEY: 'training'}
    assert load_into(FAMILIES['OREPARepVGG'](), checkpoint).tag == 'training'
    folded = converted(model)
    assert record_form(checkpoint, folded) == 'deploy'
    plain = {}
    assert record_form(plain, nn.Conv2d(1, 1, 1)) is None and plain == {}
