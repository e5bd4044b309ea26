"""RepVGGplusClsHead: official outputs, official keys, weighted auxiliary losses, deploy form."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.structures import DataSample

import rep_mm  # noqa: F401  (registers rep_mm's modules)
from rep_mm import reparameterize
from rep_mm.heads import RepVGGplusClsHead
from rep_mm.verify.bn_statistics import randomize_bn_statistics
from tests.conftest import load_golden, load_manifest, relative_error

# the arch of the golden case (channels 8, 8, 16, 16, 32)
TINY_ARCH = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.125, 0.125, 0.0625, 0.0625))
TINY_IN_CHANNELS = (8, 16, 16, 32)
AUX_LOSS_KEYS = ('loss_aux_stage1', 'loss_aux_stage2', 'loss_aux_stage3_first')


def classifier_cfg(arch=TINY_ARCH, in_channels=TINY_IN_CHANNELS, num_classes=10):
    return dict(
        type='ImageClassifier',
        backbone=dict(type='rep_mm.RepVGGplus', arch=arch, out_indices=(0, 1, 2, 4)),
        neck=None,
        head=dict(type='rep_mm.RepVGGplusClsHead', num_classes=num_classes,
                  in_channels=in_channels))


def build_classifier(**kwargs):
    init_default_scope('mmpretrain')
    return MODELS.build(classifier_cfg(**kwargs))


def samples(labels):
    return [DataSample().set_gt_label(label) for label in labels]


def split_official(state_dict):
    """Official RepVGGplus keys -> (backbone part, head part)."""
    head = {k: v for k, v in state_dict.items() if k.startswith('linear.') or '_aux.' in k}
    body = {k: v for k, v in state_dict.items() if k not in head}
    return body, head


def test_reproduces_official_outputs_train_and_deploy():
    golden = load_golden('repvggplus_small')
    model = build_classifier()
    body, head = split_official(golden['train_state_dict'])
    model.backbone.load_state_dict(body, strict=True)
    model.head.load_state_dict(head, strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model.head.forward_all(model.backbone(golden['input']))
    assert set(outputs) == set(golden['train_output']) == {
        'main', 'stage1_aux', 'stage2_aux', 'stage3_first_aux'}
    for name, expected in golden['train_output'].items():
        torch.testing.assert_close(outputs[name], expected, rtol=1e-5, atol=1e-5)

    reparameterize(model)
    assert not model.head.has_aux and model.head.deploy
    deploy_keys = ([f'backbone.{k}' for k in golden['deploy_state_dict']
                    if not k.startswith('linear.')] +
                   [f'head.{k}' for k in golden['deploy_state_dict'] if k.startswith('linear.')])
    assert sorted(model.state_dict()) == sorted(deploy_keys)
    with torch.no_grad():
        main = model(golden['input'], mode='tensor')
        deployed = model.head.forward_all(model.backbone(golden['input']))
    assert set(deployed) == {'main'}
    torch.testing.assert_close(main, golden['deploy_output']['main'], rtol=1e-5, atol=1e-5)


def test_training_loss_is_main_plus_weighted_aux_terms():
    torch.manual_seed(0)
    model = build_classifier().train()
    inputs = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([3, 7])
    losses = model(inputs, samples(labels), mode='loss')
    assert set(losses) == {'loss', *AUX_LOSS_KEYS}

    with torch.no_grad():  # the same train-mode forward by hand (batch statistics again)
        outputs = model.head.forward_all(model.backbone(inputs))
    expected = {'loss': F.cross_entropy(outputs['main'], labels)}
    for key, name in zip(AUX_LOSS_KEYS, ('stage1_aux', 'stage2_aux', 'stage3_first_aux')):
        expected[key] = 0.1 * F.cross_entropy(outputs[name], labels)
    for key, value in expected.items():
        torch.testing.assert_close(losses[key].detach(), value, rtol=1e-6, atol=1e-7)
    total, _ = model.parse_losses(losses)
    hand_sum = (F.cross_entropy(outputs['main'], labels) + 0.1 * sum(
        F.cross_entropy(outputs[n], labels) for n in ('stage1_aux', 'stage2_aux',
                                                       'stage3_first_aux')))
    torch.testing.assert_close(total.detach(), hand_sum, rtol=1e-6, atol=1e-7)
    assert total.item() > 0

    # every auxiliary classifier receives gradient from its weighted loss
    total.backward()
    for name in ('stage1_aux', 'stage2_aux', 'stage3_first_aux'):
        grad = getattr(model.head, name)[3].weight.grad
        assert grad is not None and grad.abs().sum().item() > 0


def test_aux_loss_weight_is_configurable():
    torch.manual_seed(1)
    head = RepVGGplusClsHead(10, TINY_IN_CHANNELS, aux_loss_weight=0.5)
    feats = (torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4),
             torch.randn(2, 32, 2, 2))
    labels = torch.tensor([1, 2])
    losses = head.loss(feats, samples(labels))
    with torch.no_grad():
        aux = head.forward_aux(feats)
    torch.testing.assert_close(losses['loss_aux_stage2'].detach(),
                               0.5 * F.cross_entropy(aux['stage2_aux'], labels))


def test_converted_classifier_predicts_identically():
    torch.manual_seed(2)
    model = randomize_bn_statistics(build_classifier(), seed=3).eval()
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(inputs, mode='tensor')
        labels = [s.pred_label.item() for s in model(inputs, mode='predict')]
    report = reparameterize(model, verify=lambda m: m(inputs, mode='tensor'))
    assert report.passed and report.max_rel_error <= 1e-5
    with torch.no_grad():
        converted = model(inputs, mode='tensor')
        predictions = model(inputs, mode='predict')
    assert relative_error(logits, converted) <= 1e-5
    assert [s.pred_label.item() for s in predictions] == labels
    assert not any(name.startswith('head.stage') for name in model.state_dict())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.head.modules())
    # deploy form still trains on the main output only
    losses = model.train()(inputs, samples(torch.tensor([0, 1])), mode='loss')
    assert set(losses) == {'loss'}


def test_switch_to_deploy_is_idempotent_and_deploy_build_matches():
    head = RepVGGplusClsHead(10, TINY_IN_CHANNELS)
    head.switch_to_deploy()
    head.switch_to_deploy()
    built = RepVGGplusClsHead(10, 32, deploy=True)
    assert list(head.state_dict()) == list(built.state_dict()) == ['linear.weight', 'linear.bias']
    assert built.load_state_dict(head.state_dict(), strict=True)


@pytest.mark.parametrize('form', ['train', 'deploy'])
def test_l2pse_keys_match_official_manifest(form):
    model = build_classifier(arch='L2pse', in_channels=(160, 320, 640, 2560), num_classes=1000)
    if form == 'deploy':
        reparameterize(model)
    manifest = load_manifest(f'RepVGGplus-L2pse__{form}')
    expected = {(f'head.{k}' if k.startswith('linear.') or '_aux.' in k else f'backbone.{k}'):
                shape for k, shape in manifest}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(actual) == len(manifest) == {'train': 1009, 'deploy': 290}[form]
    assert actual == expected


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='only allowed with deploy=True'):
        RepVGGplusClsHead(10, 2560)
    with pytest.raises(ValueError, match='needs 4 entries'):
        RepVGGplusClsHead(10, (160, 320, 2560))
    with pytest.raises(ValueError, match='positive int'):
        RepVGGplusClsHead(0, TINY_IN_CHANNELS)
    head = RepVGGplusClsHead(10, TINY_IN_CHANNELS)
    with pytest.raises(ValueError, match=r'out_indices=\(0, 1, 2, 4\)'):
        head.loss((torch.randn(2, 32, 2, 2), ), samples(torch.tensor([0, 1])))
