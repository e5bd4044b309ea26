"""QAT after conversion (flow A, rep_mm.quantization.qat.insert_bn) on real digits data:
inserting BN is exact, the fake-quantized forward folds BN as documented, folding back is
exact and gives a plain deploy-form model; bad inputs give clear errors.

Also holds the helpers of the other test_qat_* modules (real batches, digits models)."""
import copy

import pytest
import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.quantization.qat import (BNConv2d, QATError, calibrate_inserted_bn,
                                     fake_quant_disabled, fake_quant_weight, fold_bn,
                                     insert_bn, inserted_bn_modules, prepare_eqk_qat,
                                     prepare_insert_bn, with_deploy)
from rep_mm.verify.bn_statistics import randomize_bn_statistics

from ..conftest import REPO_ROOT, relative_error

CONFIG = REPO_ROOT / 'configs' / 'repvgg' / 'repvgg-tiny_1xb32_digits.py'
TOLERANCE = 1e-5


def digits_config():
    """The stock digits config, its top-level ``data_preprocessor`` (mean / std of the
    training split) merged into ``model`` as the Runner does."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return cfg


def build_digits_model(deploy: bool = False, seed: int = 0) -> nn.Module:
    """The 7-block digits classifier of the stock config, random weights and randomised BN
    statistics (so that every fold is non-trivial); converted when ``deploy``."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(digits_config().model))
    model.init_weights()
    randomize_bn_statistics(model, seed)
    if deploy:
        reparameterize(model)
    return model


def build_deploy_config_model() -> nn.Module:
    """The stock model config with ``deploy=True`` (what a deploy-form checkpoint loads into)."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    return MODELS.build(with_deploy(digits_config().model, True))


def digits_batches(data_root: str, count: int, split: str = 'train', batch_size: int = 16):
    """``count`` real preprocessed batches ``(N, 3, 32, 32)`` of the digits ``split``."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('mmpretrain')
    cfg = digits_config()
    loader_cfg = copy.deepcopy(cfg.train_dataloader if split == 'train' else cfg.val_dataloader)
    loader_cfg.dataset.data_root = data_root
    loader_cfg.batch_size = batch_size
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    model = build_digits_model()
    batches = []
    for data in loader:
        batches.append(model.data_preprocessor(data, False)['inputs'])
        if len(batches) == count:
            break
    return batches


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x, mode='tensor')


@pytest.fixture(scope='module')
def batches(data_root):
    return digits_batches(data_root, 4)


def test_insert_bn_is_exact_on_real_data(batches):
    converted = build_digits_model(deploy=True).eval()
    with torch.no_grad():
        reference = [logits(converted, x) for x in batches]
        # the fused convs' outputs on the calibration batches, measured independently
        outputs = []
        handle = converted.backbone.stage2[1].rbr_reparam.register_forward_hook(
            lambda m, i, o: outputs.append(o.double()))
        for x in batches:
            converted.backbone(x)
        handle.remove()
    qat = copy.deepcopy(converted)
    report = insert_bn(qat, batches, logits)
    assert report['convs'] == 7 and report['max_rel_error'] <= TOLERANCE
    assert len(inserted_bn_modules(qat)) == 7
    bn = qat.backbone.stage2[1].rbr_reparam.bn
    y = torch.cat(outputs).transpose(0, 1).flatten(1)
    assert relative_error(y.mean(1), bn.running_mean) <= TOLERANCE
    assert relative_error(y.var(1), bn.running_var) <= TOLERANCE
    assert relative_error(torch.sqrt(y.var(1) + bn.eps), bn.weight) <= TOLERANCE
    assert float((bn.weight.detach() - 1).abs().max()) > 0.1  # the BN is not trivially the identity
    qat.eval()
    with torch.no_grad(), fake_quant_disabled(qat):
        for ref, x in zip(reference, batches):  # every batch, not only the checked one
            assert relative_error(ref, logits(qat, x)) <= TOLERANCE
    with torch.no_grad():  # with fake quantization on, the outputs do change
        assert relative_error(reference[0], logits(qat, batches[0])) > 1e-4


def _train(model: nn.Module, batches, steps: int, lr: float = 0.01) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(steps):
        x = batches[step % len(batches)]
        out = logits(model, x)
        loss = out.logsumexp(1).mean() - out[:, step % 10].mean()  # cross-entropy, label s % 10
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_qat_forward_folds_bn_and_fold_back_is_exact(batches):
    qat = build_digits_model(deploy=True)
    insert_bn(qat, batches[:2], logits)
    before = {n: p.detach().clone() for n, p in qat.named_parameters()}
    _train(qat, batches, 4)
    assert any(not torch.equal(before[n], p) for n, p in qat.named_parameters()
               if '.bn.' in n)  # the inserted BNs train
    module = qat.backbone.stage1[0].rbr_reparam
    assert int(module.bn.num_batches_tracked) == 4
    qat.eval()
    x = batches[3]
    with torch.no_grad():
        fq_out = logits(qat, x)
        with fake_quant_disabled(qat):
            fp_out = logits(qat, x)
    folded = copy.deepcopy(qat)
    assert len(fold_bn(folded)) == 7
    assert not inserted_bn_modules(folded)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.modules())
    with torch.no_grad():
        assert relative_error(fp_out, logits(folded, x)) <= TOLERANCE
        # the kernel the eval forward fake-quantizes is the folded one, bit for bit
        for name, m in inserted_bn_modules(qat):
            kernel, bias = m.folded_weight_bias(m.bn.running_mean, m.bn.running_var)
            plain = folded.get_submodule(name)
            assert type(plain) is nn.Conv2d
            assert torch.equal(kernel, plain.weight) and torch.equal(bias, plain.bias)
            assert torch.equal(fake_quant_weight(kernel), fake_quant_weight(plain.weight))
    # the folded model is a plain deploy-form model: it loads into the deploy=True config
    deploy = build_deploy_config_model().eval()
    deploy.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        assert relative_error(fp_out, logits(deploy, x)) <= TOLERANCE
    assert relative_error(fp_out, fq_out) > 0  # what was trained is the fake-quantized net


def test_float_finetune_of_a_deploy_form_model(batches):
    qat = build_digits_model(deploy=True)
    prepare_insert_bn(qat, fake_quant=False)
    calibrate_inserted_bn(qat, batches[:2], logits)
    assert all(m.input_quant is None for _, m in inserted_bn_modules(qat))
    _train(qat, batches, 3)
    qat.eval()
    folded = copy.deepcopy(qat)
    fold_bn(folded)
    with torch.no_grad():
        assert relative_error(logits(qat, batches[3]), logits(folded, batches[3])) <= TOLERANCE


def test_bad_inputs_give_clear_errors(batches):
    training_form = build_digits_model()
    with pytest.raises(QATError, match=r'needs a converted \(deploy-form\) model, but 7 '
                                       r'block\(s\) are in training form'):
        insert_bn(training_form, batches[:1], logits)
    assert not inserted_bn_modules(training_form)  # nothing was changed
    converted = build_digits_model(deploy=True)
    with pytest.raises(QATError, match='no inserted BN'):
        fold_bn(converted)
    with pytest.raises(QATError, match='no inserted BN'):
        calibrate_inserted_bn(converted, batches[:1], logits)
    with pytest.raises(QATError, match='7 block\\(s\\) are converted'):
        prepare_eqk_qat(copy.deepcopy(converted))
    prepare_insert_bn(converted)
    with pytest.raises(QATError, match='already has inserted BN'):
        prepare_insert_bn(converted)
    with pytest.raises(QATError, match='at least one batch'):
        calibrate_inserted_bn(converted, [], logits)
    with pytest.raises(QATError, match='never calibrated'):
        fold_bn(copy.deepcopy(converted))
    converted.train()
    with pytest.raises(QATError, match='no measured statistics yet'):
        logits(converted, batches[0])
    with pytest.raises(QATError, match='no fused conv'):
        insert_bn(nn.Sequential(nn.Conv2d(3, 3, 3)), batches[:1])
    with pytest.raises(QATError, match="bn_stats must be one of"):
        BNConv2d(nn.Conv2d(3, 3, 3), bn_stats='mean')
