"""`rep-mm export` of one small config of EVERY shipped family, and the family-aware graph checks
(:mod:`rep_mm.deploy.graph`): they pass on the exported converted graph and FAIL on the graph of
the same model left unconverted (exported by the same TorchScript exporter; opset 13, since
OREPA's training-time kernel generation uses einsum, which opset 11 lacks).

Each family is exported once (``rep-mm export CONFIG --random-init``); the tests read its work dir.
"""
import copy
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdeploy')
pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from rep_mm import reparameterize  # noqa: E402
from rep_mm.cli.dispatch import main as cli_main  # noqa: E402
from rep_mm.deploy.graph import TRAINING_BRANCH_NAMES, graph_checks  # noqa: E402
from rep_mm.reparam import ReparamBlock  # noqa: E402
from rep_mm.verify.bn_statistics import randomize_bn_statistics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# family -> (config, fused blocks, stand-alone BatchNorms the deploy form keeps)
FAMILIES = {
    'repvgg': ('configs/repvgg/repvgg-tiny_1xb32_digits.py', 7, 0),
    'repvggplus': ('configs/repvggplus/repvggplus-tiny_1xb32_digits.py', 7, 0),
    # prebn1 + prebn2 of 5 units, head_norm: no linear operator before them to fold into
    'repmlpnet': ('configs/repmlpnet/repmlpnet-tiny_1xb32_digits.py', 5, 11),
    'repopt-vgg': ('configs/repopt/repoptvgg-tiny-target_1xb32_digits.py', 7, 0),
    'repghostnet': ('configs/repghostnet/repghostnet-tiny_1xb32_digits.py', 8, 0),
    'repopt-ghostnet': ('configs/repopt/repoptghostnet-tiny-target_1xb32_digits.py', 8, 0),
    'orepa-repvgg': ('configs/orepa/orepa-repvgg-tiny_1xb32_digits.py', 7, 0),
    'resnet-acb': ('configs/resnet/reparam-resnet-tiny_acb_1xb32_digits.py', None, 0),
    'resnet-dbb': ('configs/resnet/reparam-resnet-tiny_dbb_1xb32_digits.py', None, 0),
    'resnet-orepa': ('configs/resnet/reparam-resnet-tiny_orepa_1xb32_digits.py', None, 0),
}

# OREPA blocks compose their kernel from parameters at every step: the TorchScript exporter
# cannot export that conv ("kernel of unknown shape"), so no unconverted graph exists to check
NO_TRAINING_FORM_GRAPH = {'resnet-orepa'}


def build_model(config: str):
    """The model of ``config`` as the export builds it (root registry, config's scope)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(ROOT / config))
    init_default_scope(cfg.default_scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.get('data_preprocessor', {})))
    return MODELS.build(model_cfg)


class Exported:
    """One family: ``rep-mm export`` exit code and work dir, plus the same model in training form
    (exported by torch.onnx's TorchScript exporter as is) and converted."""

    def __init__(self, family: str, root: Path) -> None:
        config, self.expected_blocks, self.expected_standalone = FAMILIES[family]
        self.work = root / family
        self.code = cli_main(['export', str(ROOT / config), '--random-init', '--work-dir',
                              str(self.work), '--no-sdk', '--quiet'])
        report = self.work / 'report.json'
        self.report = json.loads(report.read_text()) if report.is_file() else None
        self.onnx = self.work / 'end2end.onnx'
        self.training = randomize_bn_statistics(build_model(config), 0).eval()
        self.converted = copy.deepcopy(self.training)
        rep = reparameterize(self.converted)
        self.fused = rep.converted + rep.already_deployed
        self.unconverted_onnx = root / f'{family}_training_form.onnx'
        # a kernel composed at every step from parameters (OREPA's generated-kernel blocks) is
        # a conv "of unknown shape" for the TorchScript exporter: no training-form graph
        self.unconverted_error = None
        try:
            with torch.no_grad():
                torch.onnx.export(self.training, (torch.randn(1, 3, 32, 32),),
                                  str(self.unconverted_onnx), dynamo=False, opset_version=13)
        except torch.onnx.errors.OnnxExporterError as error:
            self.unconverted_error = error


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp('families')
    cache = {}

    def get(family: str) -> Exported:
        if family not in cache:
            cache[family] = Exported(family, root)
        return cache[family]
    return get


@pytest.mark.parametrize('family', FAMILIES)
def test_graph_checks_pass_on_the_exported_converted_model(family, exports):
    exported = exports(family)
    assert exported.onnx.is_file(), f'no graph written (exit code {exported.code})'
    if exported.expected_blocks is not None:
        assert len(exported.fused) == exported.expected_blocks
    graph = graph_checks(exported.onnx, exported.fused, model=exported.converted)
    assert graph['failures'] == [] and graph['passed']
    assert graph['scopes_named'] and graph['checked_with_model']
    assert graph['batch_norm_nodes'] == 0 and graph['blocks_not_one_conv'] == {}
    assert graph['blocks_with_one_conv'] == graph['fused_blocks'] == len(exported.fused)
    # each block's fused operator: one Conv taking the fused weight and bias initializers
    for block in exported.fused:
        info = graph['fused_operators'][block]
        assert info['weight'].startswith(block + '.') and len(info['nodes']) == 1
        assert info['op'] == 'Conv'
    standalone = graph['standalone_batch_norms']
    assert len(standalone) == exported.expected_standalone == graph['batch_norm_nodes_total']
    assert all(not any(item['module'].startswith(b + '.') for b in exported.fused)
               for item in standalone)
    # the graph-side checks alone (no model) pass too
    assert graph_checks(exported.onnx, exported.fused)['failures'] == []


@pytest.mark.parametrize('family', FAMILIES)
def test_graph_checks_fail_on_the_unconverted_model(family, exports):
    """Same model, training form, same exporter: every fused block fails (its fused operator is
    absent or lacks the fused bias; training-time branches and their BNs remain)."""
    exported = exports(family)
    if family in NO_TRAINING_FORM_GRAPH:
        # the training form cannot even be exported (its kernel is generated at run time,
        # "convolution for kernel of unknown shape"): nothing unconverted can reach a graph
        assert exported.unconverted_error is not None
        assert 'kernel of unknown shape' in str(exported.unconverted_error)
        return
    assert exported.unconverted_error is None, exported.unconverted_error
    graph = graph_checks(exported.unconverted_onnx, exported.fused, model=exported.converted)
    assert not graph['passed'] and graph['failures']
    assert set(graph['blocks_not_one_conv']) == set(exported.fused)
    # the deployed model itself, had it not been converted, is caught by its deploy flags
    flags = graph_checks(exported.unconverted_onnx, exported.fused, model=exported.training)
    assert flags['modules_not_deployed'] and not flags['passed']


def test_rep_mm_export_exits_0_for_every_family(exports):
    """``rep-mm export --random-init`` passes for one config of every family. Needs the
    pipeline to judge with rep_mm.deploy.graph.graph_checks(onnx, fused, model=model)."""
    results = {family: exports(family) for family in FAMILIES}
    failed = {f: (e.code, (e.report or {}).get('failures')) for f, e in results.items()
              if e.code != 0}
    assert not failed, failed
    for family, exported in results.items():
        data = exported.report
        assert data['passed'] and data['exporter'] == 'torchscript' and data['opset'] == 11
        assert data['comparisons']['converted_vs_training_form']['max_rel'] <= 1e-5, family
        assert data['comparisons']['onnx_vs_training_form']['max_rel'] <= 1e-4, family


def test_training_branch_names_cover_every_family(exports):
    """The graph-only fallback (no model) knows every distinctively named child module that a
    conversion deletes; generic names (``conv`` / ``bn`` of RepOpt's target blocks and OREPA,
    Sequential indices) would also match kept modules, so only the check with the model, which
    resolves every scope against the converted model, catches those."""
    removed = set()
    for family in FAMILIES:
        exported = exports(family)
        before = dict(exported.training.named_modules())
        after = dict(exported.converted.named_modules())
        for name, module in before.items():
            if isinstance(module, ReparamBlock) or name.endswith('_aux'):
                gone = {child for child, _ in module.named_children()
                        if f'{name}.{child}' not in after}
                removed |= gone
                if name.endswith('_aux'):
                    removed.add(name.split('.')[-1])
    assert removed, 'no conversion deleted a child module'
    # OREPA's kernel factors (weight0..) are modules whose parameters are used, never called
    generic = {n for n in removed if n in ('conv', 'bn') or n.isdigit() or n.startswith('weight')}
    unknown = {n for n in removed - generic if n not in TRAINING_BRANCH_NAMES and
               not n.startswith('repconv')}
    assert removed - generic
    assert not unknown, unknown
