"""RepMLPNet int8 (issue 13, item 5) on the digits RepMLPNet
(configs/repmlpnet/repmlpnet-tiny_1xb32_digits.py):

* the insert-BN step of flow A on the converted model puts a BN after the fc3 of each of the 5
  RepMLP blocks, and nothing else, and is exact (randomised BN statistics, real batches);
* the authors' recipe config (configs/quantization/repmlpnet-tiny_bn-after-fc3_digits.py)
  trains with tools/train.py from a training-form checkpoint, its Runner checkpoint folds with
  ``rep-mm qat-fold`` into a deploy-form checkpoint that loads strictly into the deploy-form
  RepMLPNet and computes what the trained model computes; ``model.fake_quant=False`` is the
  float-only fine-tune;
* ``rep-mm quantize`` (PTQ) of a briefly trained RepMLPNet: every Conv runs as ``QLinearConv``
  in onnxruntime, the report's fp32 / int8 top-1 equal top-1 recomputed with onnxruntime
  without mm code.
"""
import copy
import json
from pathlib import Path

import torch
from torch import nn

from rep_mm import reparameterize
from rep_mm.io import extract_state_dict, load_checkpoint_file
from rep_mm.quantization.qat import (fake_quant_disabled, fold_bn, insert_bn,
                                     inserted_bn_modules, with_deploy)
from rep_mm.verify import randomize_bn_statistics

from ..conftest import REPO_ROOT, relative_error
from ..helpers import load_train_tool, run_python
from .test_qat_insert_bn import TOLERANCE, digits_batches, logits
from .test_qat_train import TINY

CONFIG = REPO_ROOT / 'configs' / 'repmlpnet' / 'repmlpnet-tiny_1xb32_digits.py'
BN_AFTER_FC3 = REPO_ROOT / 'configs' / 'quantization' / 'repmlpnet-tiny_bn-after-fc3_digits.py'
# the RepMLP blocks of the digits arch (num_blocks=(1, 1, 2, 1)): their fused operator is fc3
FC3 = [f'backbone.stages.{s}.{b}.repmlp_block.fc3'
       for s, b in ((0, 0), (1, 0), (2, 0), (2, 1), (3, 0))]


def onnx_predictions(onnx_path, data_root, mean=78.9, std=89.0):
    """``(predicted, true)`` class of every digits test image by an ONNX classifier, computed
    with cv2 + numpy + onnxruntime (no mm code; as test_quantize.independent_top1)."""
    import cv2
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    test = Path(data_root) / 'test'
    predicted, labels = [], []
    for label, name in enumerate(sorted(p.name for p in test.iterdir() if p.is_dir())):
        for image in sorted((test / name).glob('*.png')):
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR).astype(np.float32)
            x = ((bgr - mean) / std).transpose(2, 0, 1)[None]
            predicted.append(int(session.run(None, {'input': x})[0][0].argmax()))
            labels.append(label)
    return predicted, labels


def stock_model_cfg():
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return cfg.model


def build(model_cfg) -> nn.Module:
    from mmengine.registry import MODELS, init_default_scope
    import rep_mm.quantization.qat  # noqa: F401 - registers rep_mm.QATModel
    init_default_scope('mmpretrain')
    return MODELS.build(copy.deepcopy(model_cfg))


def test_insert_bn_after_fc3_is_exact(data_root):
    torch.manual_seed(0)
    model = build(stock_model_cfg())
    model.init_weights()
    randomize_bn_statistics(model, seed=1)
    reparameterize(model)
    converted = model.eval()
    batches = digits_batches(data_root, 3)
    with torch.no_grad():
        reference = [logits(converted, x) for x in batches]
    qat = copy.deepcopy(converted)
    report = insert_bn(qat, batches[:2], logits)
    # exactly the fc3 of every RepMLP block: the conv-BN layers (embedding, FFN), the
    # global-perceptron convs and the stand-alone BNs are not re-param blocks
    assert report['names'] == FC3 and [n for n, _ in inserted_bn_modules(qat)] == FC3
    assert report['max_rel_error'] <= TOLERANCE
    for name in FC3:
        bn = qat.get_submodule(name).bn
        assert float((bn.weight.detach() - 1).abs().max()) > 0.1  # measured, not the identity
        assert float(bn.running_mean.abs().max()) > 1e-3
    with torch.no_grad(), fake_quant_disabled(qat):
        # also on a batch the statistics were not measured on
        for ref, x in zip(reference, batches):
            assert relative_error(ref, logits(qat, x)) <= TOLERANCE
    with torch.no_grad():  # fake quantization of the fc3 weights / inputs does change them
        assert relative_error(reference[2], logits(qat, batches[2])) > 1e-4
    # folding back gives a model of the stock deploy-form config, same outputs
    fold_bn(qat)
    deploy = build(with_deploy(stock_model_cfg(), True)).eval()
    deploy.load_state_dict(qat.state_dict(), strict=True)
    with torch.no_grad():
        for ref, x in zip(reference, batches):
            assert relative_error(ref, logits(deploy, x)) <= TOLERANCE


def test_float_finetune_is_one_key():
    from mmengine.config import Config
    cfg = Config.fromfile(str(BN_AFTER_FC3))
    quantized = build(cfg.model)
    assert [n for n, m in inserted_bn_modules(quantized) if m.input_quant is not None] == FC3
    cfg.merge_from_dict({'model.fake_quant': False})
    floating = build(cfg.model)
    assert [n for n, _ in inserted_bn_modules(floating)] == FC3
    assert all(m.input_quant is None and not m.fake_quant
               for _, m in inserted_bn_modules(floating))
    assert floating.qat_config['fake_quant'] is False


def _train_stock(work_dir, data_root, epochs: int = 2) -> str:
    """A briefly trained training-form RepMLPNet checkpoint (stock config, all train images)."""
    tool = load_train_tool()
    assert tool.main([str(CONFIG), '--work-dir', str(work_dir), '--cfg-options',
                      f'data_root={data_root}', f'train_cfg.max_epochs={epochs}',
                      f'train_cfg.val_interval={epochs}', 'randomness.seed=0']) == 0
    return str(work_dir / f'epoch_{epochs}.pth')


def test_bn_after_fc3_config_trains_and_folds(data_root, tmp_path):
    # a training-form checkpoint (random weights, randomised BN statistics)
    torch.manual_seed(3)
    stock = build(stock_model_cfg())
    stock.init_weights()
    randomize_bn_statistics(stock, seed=3)
    training = tmp_path / 'training_form.pth'
    torch.save(dict(state_dict=stock.state_dict()), training)
    assert any('fc3_bn' in k for k in stock.state_dict())

    work = tmp_path / 'qat'
    result = run_python([REPO_ROOT / 'tools' / 'train.py', BN_AFTER_FC3, '--work-dir', work,
                         '--cfg-options', f'data_root={data_root}', f'load_from={training}',
                         *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'QATHook: converted the training-form checkpoint (5 block(s))' in log
    assert 'QATHook: inserted BN after 5 fused conv(s)' in log
    assert '(PASS at tolerance 1e-05)' in log and 'Epoch(train) [1][2/2]' in log
    state = extract_state_dict(load_checkpoint_file(work / 'epoch_1.pth'))
    assert sorted({k.rsplit('.bn.', 1)[0] for k in state if '.bn.' in k and 'fc3' in k}) == FC3
    assert sorted({k.split('.input_quant.')[0] for k in state if '.input_quant.' in k}) == FC3

    out = tmp_path / 'folded.pth'
    from rep_mm.cli import main as rep_mm_main
    assert rep_mm_main(['qat-fold', str(BN_AFTER_FC3), str(work / 'epoch_1.pth'),
                        str(out)]) == 0
    checkpoint = load_checkpoint_file(out)
    assert checkpoint['meta']['rep_mm_form'] == 'deploy'
    folded = extract_state_dict(checkpoint)
    deploy = build(with_deploy(stock_model_cfg(), True)).eval()
    deploy.load_state_dict(folded, strict=True)  # a plain deploy-form RepMLPNet
    # the same weights as the qat_deploy.pth QATHook wrote after training
    written = extract_state_dict(load_checkpoint_file(work / 'qat_deploy.pth'))
    assert written.keys() == folded.keys()
    assert all(torch.equal(written[k], v) for k, v in folded.items())

    # the folded model computes what the trained model computes in fp32
    from mmengine.config import Config
    trained = build(Config.fromfile(str(BN_AFTER_FC3)).model)
    trained.load_state_dict(state, strict=True)
    trained.eval()
    converted = copy.deepcopy(stock)
    reparameterize(converted)
    converted.eval()
    x = digits_batches(data_root, 1)[0]
    with torch.no_grad():
        with fake_quant_disabled(trained):
            expected = logits(trained, x)
        assert relative_error(expected, logits(deploy, x)) <= TOLERANCE
        # and two steps of training changed the converted stock model
        assert relative_error(logits(converted, x), logits(deploy, x)) > 1e-4
    for name in FC3:
        assert not torch.equal(folded[f'{name}.weight'], converted.state_dict()[f'{name}.weight'])


def test_ptq_of_the_converted_repmlpnet(data_root, tmp_path):
    from rep_mm.quantization import EXIT_OK, main
    checkpoint = _train_stock(tmp_path / 'stock', data_root)
    work = tmp_path / 'int8'
    assert main([str(CONFIG), checkpoint, '--work-dir', str(work), '--calib', '64',
                 '--runs', '5', '--quiet', '--cfg-options', f'data_root={data_root}']) == EXIT_OK
    report = json.loads((work / 'quant_report.json').read_text())
    assert report['task'] == 'classification' and report['export']['passed']
    assert report['calibration']['used'] == 64
    # the folded graph: 5 fused fc3; the stand-alone BNs of RepMLPNet's deploy form (prebn1 /
    # prebn2 of the 5 units, head_norm) follow residual sums and stay (float) in the graph
    export = json.loads((work / 'report.json').read_text())['graph']
    assert sorted(export['fused_operators']) == [n.rsplit('.', 1)[0] for n in FC3]
    for op in export['fused_operators'].values():
        assert op['op'] == 'Conv' and len(op['nodes']) == 1
        assert op['nodes'][0].endswith('/repmlp_block/fc3/Conv')
    assert len(export['standalone_batch_norms']) == 11 and export['batch_norm_nodes'] == 0
    assert report['fp32_graph']['batch_norm_nodes'] == 0
    # every Conv (patch embedding, fc3, global perceptron, FFN, embeds) runs int8
    kernels = report['int8_kernels']
    assert kernels['int8_kernels']['QLinearConv'] == report['fp32_graph']['conv_nodes'] == 29
    assert kernels['float_compute_ops'] == {'Gemm': 1}
    # the report's metrics are those of the graphs, recomputed in onnxruntime without mm code
    evaluation = report['evaluation']
    assert set(evaluation['metrics']) == {'fp32', 'int8'} and evaluation['images'] == 360
    predictions = {}
    for name in ('fp32', 'int8'):
        predicted, labels = onnx_predictions(work / f'end2end{"_int8" * (name == "int8")}.onnx',
                                             data_root)
        assert len(predicted) == 360
        correct = sum(p == t for p, t in zip(predicted, labels))
        # mmpretrain's Accuracy computes in float32: the same count of correct images
        assert round(evaluation['metrics'][name]['accuracy/top1'] * 360 / 100) == correct
        predictions[name] = predicted
    same = sum(a == b for a, b in zip(predictions['fp32'], predictions['int8']))
    assert evaluation['agreement']['int8']['fraction'] == same / 360
    # a trained model (2 epochs, 92.8 % when measured), not chance; int8 changed at most a
    # few of its predictions (2 of 360 when measured)
    assert evaluation['metrics']['fp32']['accuracy/top1'] > 80 and same >= 342
