"""The bad-input catalogue: each wrong input across the API, the CLI and configs fails clearly.

Every case asserts the error type (or the CLI's exit code 2 = bad input) and that the message
names the problem (``match``), and that no file is left behind in the case's directory
(outputs, temp files). A few inputs that the original code handled wrongly but rep_mm accepts
(non-square SE inputs, converting twice, fp16 models) are checked for correct results at the
end. Library fixes made for this catalogue (clear messages where the error was obscure):
zero-width / zero-block RepVGG archs, ``reparameterize`` given a non-module or a bad
``verify``, a verify input of another dtype than the model, and scales files that are
truncated / corrupted (they now go through the safe checkpoint loader).
"""
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import rep_mm
import rep_mm.io
from rep_mm.backbones import RepMLPNet, RepOptVGG, RepVGG
from rep_mm.blocks import RepMLPBlock, RepVGGBlock, SEBlock
from rep_mm.io import (CheckpointError, load_checkpoint_file, load_weights,
                       save_checkpoint_atomic)
from rep_mm.cli.dispatch import main as cli_main
from rep_mm.fusion import fuse_bn
from rep_mm.hooks import ReparameterizeHook
from rep_mm.optim import RepOptOptimWrapperConstructor, ScalesError, build_handler, load_scales
from rep_mm.verify.bn_statistics import randomize_bn_statistics

REPO = Path(__file__).resolve().parents[2]
TINY = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.25])
OPT_ARCH = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.125, 0.125, 0.125, 0.125))
CLS_CONFIG = """
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier',
             backbone=dict(type='rep_mm.RepVGG', arch=ARCH, deploy=DEPLOY),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels=128))
"""


# ---------------------------------------------------------------------------------- helpers
def tiny_repvgg(deploy=False):
    return randomize_bn_statistics(RepVGG(arch=TINY, deploy=deploy), seed=0).eval()


def write(path, text):
    Path(path).write_text(text)
    return str(path)


def cls_config(directory, deploy=False, arch=TINY, name='cls'):
    text = CLS_CONFIG.replace('ARCH', repr(arch)).replace('DEPLOY', str(deploy))
    return write(Path(directory) / f'{name}{"_deploy" if deploy else ""}.py', text)


def training_checkpoint(directory, name='train.pth'):
    from rep_mm.cli.dispatch import build_config_model
    model = randomize_bn_statistics(build_config_model(cls_config(directory))[0], seed=1)
    path = Path(directory) / name
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, path)
    return str(path)


def deploy_state_dict():
    model = tiny_repvgg()
    rep_mm.reparameterize(model)
    return model.state_dict()


def truncated(directory, name='cut.pth'):
    source = Path(directory) / f'full_{name}'
    torch.save(tiny_repvgg().state_dict(), source)
    data = source.read_bytes()
    source.unlink()
    path = Path(directory) / name
    path.write_bytes(data[:len(data) // 2])
    return str(path)


class Hostile:
    """Unpickling it would create ``marker``: a stand-in for code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def hostile_file(directory):
    path, marker = Path(directory) / 'hostile.pth', Path(directory) / 'PWNED'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': Hostile(str(marker))}, path)
    return str(path), marker


def opt_scales(**change):
    hs = RepOptVGG(OPT_ARCH, mode='hs')
    scales = {k: torch.rand(v.shape) + 0.5 for k, v in hs.state_dict().items() if '.scale_' in k}
    for key, value in change.items():
        key = key.replace('__', '.')
        if value is None:
            scales.pop(key)
        else:
            scales[key] = value
    return scales


def opt_constructor(**wrapper):
    cfg = dict(scales=opt_scales(), optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1))
    cfg.update(wrapper)
    return RepOptOptimWrapperConstructor(cfg)(RepOptVGG(OPT_ARCH, mode='target'))


def build_from_config(path):
    from rep_mm.cli.dispatch import build_config_model
    return build_config_model(path)


# --------------------------------------------------------------------- API and config cases
API_CASES = {
    # architectures and shapes
    'unknown_arch': (lambda d: RepVGG(arch='Z9'), KeyError, r"unknown RepVGG arch 'Z9'.*A0"),
    'arch_of_wrong_type': (lambda d: RepVGG(arch=[1, 2]), TypeError,
                           'arch must be a str or a dict, got list'),
    'arch_missing_key': (lambda d: RepVGG(arch=dict(num_blocks=[1, 1, 1, 1])), KeyError,
                         r"missing keys \['width_factor'\]"),
    'arch_zero_width': (lambda d: RepVGG(arch=dict(num_blocks=[1, 1, 1, 1],
                                                   width_factor=[0, 1, 1, 1])),
                        ValueError, r'width_factor.*positive.*width_factor=\[0, 1, 1, 1\]'),
    'unknown_repmlpnet_arch': (lambda d: RepMLPNet(arch='X'), KeyError,
                               "unknown RepMLPNet arch 'X'"),
    'channels_not_divisible_by_groups': (lambda d: RepVGGBlock(6, 8, groups=4), ValueError,
                                         r'in_channels \(6\) and out_channels \(8\) must be '
                                         r'divisible by groups \(4\)'),
    'even_kernel': (lambda d: RepVGGBlock(8, 8, kernel_size=2), ValueError,
                    'kernel_size must be odd, got 2'),
    'wrong_input_channels': (lambda d: tiny_repvgg()(torch.randn(1, 1, 32, 32)), RuntimeError,
                             'expected input.*to have 3 channels, but got 1'),
    'out_index_out_of_range': (lambda d: RepVGG(arch=TINY, out_indices=(7,)), ValueError,
                               'out_indices entry 7 is out of range'),
    'repmlp_block_changes_channels': (lambda d: RepMLPBlock(8, 16, h=4, w=4), ValueError,
                                      'RepMLPBlock keeps the channel count'),
    'repmlpnet_untileable_input': (lambda d: RepMLPNet(arch='T224').eval()(
        torch.randn(1, 3, 100, 100)), ValueError, 'cannot tile a 100x100 input.*multiples of 224'),
    'se_without_bottleneck': (lambda d: SEBlock(8, 0), ValueError,
                              'SE bottleneck must have at least 1 channel'),
    'bn_without_running_stats': (lambda d: fuse_bn(torch.ones(4, 4, 3, 3),
                                                   nn.BatchNorm2d(4, track_running_stats=False)),
                                 ValueError, 'track_running_stats=False'),
    'unknown_repopt_mode': (lambda d: RepOptVGG(OPT_ARCH, mode='foo'), ValueError,
                            "mode must be one of .*got 'foo'"),
    # conversion
    'reparameterize_a_non_module': (lambda d: rep_mm.reparameterize('model.pth'), TypeError,
                                    'expects an nn.Module.*got str'),
    'verify_of_wrong_type': (lambda d: rep_mm.reparameterize(tiny_repvgg(), verify='x'),
                             TypeError, 'verify must be None, an input tensor or a callable'),
    'fp16_model_verified_on_fp32_input': (lambda d: rep_mm.reparameterize(
        tiny_repvgg().half(), verify=torch.randn(1, 3, 32, 32)), TypeError,
        'verify input is torch.float32 but the model is torch.float16'),
    # checkpoints
    'deploy_checkpoint_into_training_model': (lambda d: load_weights(
        RepVGG(arch=TINY), deploy_state_dict()), CheckpointError,
        'checkpoint is in deploy form .* model is in training form'),
    'training_checkpoint_into_deploy_model': (lambda d: load_weights(
        RepVGG(arch=TINY, deploy=True), tiny_repvgg().state_dict()), CheckpointError,
        'checkpoint is in training form .* model is in deploy form'),
    'checkpoint_of_other_widths': (lambda d: load_weights(
        RepVGG(arch=dict(TINY, width_factor=[0.5] * 4)), tiny_repvgg().state_dict()),
        CheckpointError, r'shape mismatch.*stage0\.rbr_dense\.conv\.weight: checkpoint'),
    'truncated_checkpoint': (lambda d: load_checkpoint_file(truncated(d)), CheckpointError,
                             'cut.pth.* is truncated or corrupted'),
    'garbage_checkpoint': (lambda d: load_checkpoint_file(write(Path(d) / 'junk.pth',
                                                                'not a checkpoint')),
                           CheckpointError, 'junk.pth.* corrupted'),
    'empty_checkpoint': (lambda d: load_checkpoint_file(write(Path(d) / 'empty.pth', '')),
                         CheckpointError, r'is empty \(0 bytes\)'),
    'checkpoint_is_a_directory': (lambda d: load_checkpoint_file(d), CheckpointError,
                                  'is not a file'),
    'missing_checkpoint': (lambda d: load_weights(RepVGG(arch=TINY), Path(d) / 'none.pth'),
                           CheckpointError, 'none.pth.* does not exist'),
    'checkpoint_with_non_tensors': (lambda d: load_weights(
        RepVGG(arch=TINY), {'state_dict': {'a': 1, 'b': 'x'}}), CheckpointError,
        r'not a state dict: 2 entr'),
    'unknown_key_scheme': (lambda d: load_weights(RepVGG(arch=TINY), {}, kind='timm'),
                           ValueError, 'kind must be one of'),
    'save_onto_a_directory': (lambda d: save_checkpoint_atomic({}, d), IsADirectoryError,
                              'is a directory; give a file name'),
    # RepOptimizer scales and optimizer
    'scales_missing_key': (lambda d: build_handler(
        RepOptVGG(OPT_ARCH), opt_scales(stage1__0__scale_conv__weight=None)), ScalesError,
        r'1 missing key\(s\): stage1\.0\.scale_conv\.weight'),
    'scales_extra_key': (lambda d: build_handler(
        RepOptVGG(OPT_ARCH), opt_scales(stage9__0__scale_conv__weight=torch.ones(8))),
        ScalesError, r'1 unexpected key\(s\): stage9\.0\.scale_conv\.weight'),
    'scales_mis_shaped': (lambda d: build_handler(
        RepOptVGG(OPT_ARCH), opt_scales(stage1__0__scale_conv__weight=torch.ones(3))),
        ScalesError, r'shape mismatch.*stage1\.0\.scale_conv\.weight: file \(3,\)'),
    'scales_not_tensors': (lambda d: load_scales({'stage1.0.scale_conv.weight': [1.0]}),
                           ScalesError, 'not a dict of tensors'),
    'scales_file_missing': (lambda d: load_scales(Path(d) / 'none-scales.pth'), ScalesError,
                            'none-scales.pth.* does not exist'),
    'scales_file_truncated': (lambda d: load_scales(truncated(d, 'scales.pth')), CheckpointError,
                              'scales.pth.* is truncated or corrupted'),
    'gradient_clipping_with_repoptimizer': (lambda d: opt_constructor(
        clip_grad=dict(max_norm=1.0)), ValueError, 'clip_grad is refused with RepOptimizer'),
    'repoptimizer_without_scales': (lambda d: RepOptOptimWrapperConstructor(
        dict(optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1))), ValueError,
        'needs optim_wrapper.scales'),
    'repoptimizer_with_plain_sgd': (lambda d: opt_constructor(
        optimizer=dict(type='SGD', lr=0.1)), ValueError,
        r"optimizer type must be one of \['RepOptSGD', 'RepOptAdamW'\].*got 'SGD'"),
    'hook_with_negative_tolerance': (lambda d: ReparameterizeHook(tolerance=-1), ValueError,
                                     'tolerance must be a positive number'),
    # configs
    'config_with_unknown_backbone': (lambda d: build_from_config(write(
        Path(d) / 'typo.py', CLS_CONFIG.replace("'rep_mm.RepVGG'", "'rep_mm.RepVGGG'").replace(
            'ARCH', repr(TINY)).replace('DEPLOY', 'False'))), KeyError,
        'RepVGGG is not in the .*registry'),
    'config_with_unknown_arch': (lambda d: build_from_config(
        cls_config(d, arch='A9')), KeyError, "unknown RepVGG arch 'A9'"),
}


# ------------------------------------------- numbers that reach training or conversion (issue 11)
NAN, INF = float('nan'), float('inf')


def _scales_file(directory, **change):
    path = Path(directory) / 'scales.pth'
    torch.save(opt_scales(**change), path)
    return str(path)


def _stem_constructor(**paramwise):
    from rep_mm.optim import OREPAOptimWrapperConstructor
    return OREPAOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.1,
                                                            weight_decay=1e-4)), paramwise)


def _bad_scale(value, channels=16):
    scale = torch.rand(channels) + 0.5
    scale[1] = value
    return scale


API_CASES.update({
    # RepOpt scales: NaN / Inf / zero never reach the re-initialisation or the grad mults
    'scales_with_nan': (lambda d: build_handler(RepOptVGG(OPT_ARCH), opt_scales(
        stage1__0__scale_conv__weight=_bad_scale(NAN, 8))), ScalesError,
        r'stage1\.0\.scale_conv\.weight: 1 NaN/Inf.*must be finite and non-zero'),
    'scales_file_with_inf': (lambda d: load_scales(_scales_file(
        d, stage0__scale_conv__weight=_bad_scale(INF, 8))), ScalesError,
        r"scales file .*scales\.pth.*stage0\.scale_conv\.weight: 1 NaN/Inf"),
    'scales_with_zero': (lambda d: opt_constructor(scales=opt_scales(
        stage2__0__scale_1x1__weight=_bad_scale(0.0, 8))), ScalesError,
        r'stage2\.0\.scale_1x1\.weight: 1 zero\(s\).*a zero scale freezes its branch'),
    'scales_of_a_non_real_dtype': (lambda d: load_scales(
        {'stage0.scale_conv.weight': torch.ones(8, dtype=torch.bool)}), ScalesError,
        r"scale 'stage0\.scale_conv\.weight' has dtype torch\.bool"),
    # learning-rate / decay multipliers and optimizer numbers
    'stem_lr_mult_nan': (lambda d: _stem_constructor(stem_lr_mult=NAN), ValueError,
                         r'paramwise_cfg\.stem_lr_mult must be >= 0 and a finite number.*got nan'),
    'stem_lr_mult_negative': (lambda d: _stem_constructor(stem_lr_mult=-0.1), ValueError,
                              r'stem_lr_mult must be >= 0 and a finite number.*got -0\.1'),
    'stem_decay_mult_inf': (lambda d: _stem_constructor(stem_decay_mult=INF), ValueError,
                            r'stem_decay_mult must be >= 0 and a finite number.*got inf'),
    'custom_key_lr_mult_nan': (lambda d: _stem_constructor(
        custom_keys={'backbone': dict(lr_mult=NAN)}), ValueError,
        r"custom_keys\['backbone'\]\.lr_mult must be >= 0 and a finite number"),
    'norm_decay_mult_negative': (lambda d: RepOptOptimWrapperConstructor(
        dict(scales=opt_scales(), optimizer=dict(type='rep_mm.RepOptSGD', lr=0.1)),
        dict(norm_decay_mult=-1)), ValueError,
        r'paramwise_cfg\.norm_decay_mult must be >= 0 and a finite number.*got -1'),
    'repopt_lr_nan': (lambda d: opt_constructor(optimizer=dict(type='rep_mm.RepOptSGD', lr=NAN)),
                      ValueError, r'RepOptOptimWrapperConstructor: optimizer\.lr must be >= 0 '
                                  r'and a finite number, got nan'),
    'repopt_weight_decay_negative': (lambda d: opt_constructor(optimizer=dict(
        type='rep_mm.RepOptAdamW', lr=1e-3, weight_decay=-1e-4)), ValueError,
        r'optimizer\.weight_decay must be >= 0 and a finite number'),
    # arch values that divide by zero or make no sense
    'groups_zero': (lambda d: RepVGGBlock(8, 8, groups=0), ValueError,
                    r'RepVGGBlock: groups must be an int >= 1, got 0'),
    'group_layer_map_zero': (lambda d: RepVGG(arch=dict(TINY, group_layer_map={1: 0})),
                             ValueError, r"group_layer_map.*groups \(ints >= 1\), got \{1: 0\}"),
    'se_ratio_zero': (lambda d: RepVGG(arch=dict(TINY, se_position='pre', se_ratio=0)),
                      ValueError, r"arch\['se_ratio'\] must be an int >= 1.*got 0"),
    'se_ratio_zero_in_a_block': (lambda d: RepVGGBlock(8, 8, se_position='post', se_ratio=0),
                                 ValueError, r'RepVGGBlock: se_ratio must be an int >= 1, got 0'),
    'width_factor_nan': (lambda d: RepVGG(arch=dict(TINY, width_factor=[NAN, 1, 1, 1])),
                         ValueError, r'width_factor.*positive numbers'),
    'width_factor_inf': (lambda d: RepOptVGG(dict(OPT_ARCH, width_factor=(1, 1, INF, 1))),
                         ValueError, r'width_factor.*positive numbers'),
    'width_factor_rounds_to_zero_channels': (lambda d: RepVGG(arch=dict(
        TINY, width_factor=[0.25, 0.001, 0.25, 0.25])), ValueError,
        r'gives \[16, 16, 0, 64, 128\] channels.*at least 1 channel'),
    'negative_channels': (lambda d: rep_mm.blocks.ACBlock(-8, 8, 3), ValueError,
                          r'ACBlock: in_channels must be an int >= 1, got -8'),
    'zero_out_channels': (lambda d: rep_mm.blocks.OREPA(8, 0), ValueError,
                          r'OREPA: out_channels must be an int >= 1, got 0'),
    'dbb_groups_zero': (lambda d: rep_mm.blocks.DiverseBranchBlock(8, 8, 3, groups=0),
                        ValueError, r'DiverseBranchBlock: groups must be an int >= 1, got 0'),
    'fractional_channels': (lambda d: rep_mm.blocks.ConvBN(8.5, 8, 3), ValueError,
                            r'ConvBN: in_channels must be an int >= 1, got 8\.5'),
    'negative_stride': (lambda d: RepVGGBlock(8, 8, stride=-1), ValueError,
                        r'stride must be an int >= 1, got -1'),
    'ghost_se_ratio_zero': (lambda d: rep_mm.blocks.GhostSqueezeExcite(16, se_ratio=0), ValueError,
                            r'GhostSqueezeExcite: se_ratio must be a finite number > 0'),
    'ghost_bottleneck_se_ratio_nan': (lambda d: rep_mm.blocks.RepGhostBottleneck(
        8, 16, 8, se_ratio=NAN), ValueError, r'se_ratio must be a finite number >= 0.*got nan'),
    'ghostnet_width_zero': (lambda d: rep_mm.backbones.RepGhostNet(arch=dict(width=0)),
                            ValueError, r"arch\['width'\] must be a finite number > 0.*got 0"),
    'ghostnet_row_with_zero_channels': (lambda d: rep_mm.backbones.RepGhostNet(arch=dict(
        width=0.5, cfgs=[[[3, 16, 0, 0, 1]]])), ValueError,
        r'bad GhostNet bottleneck cfg .*\[3, 16, 0, 0, 1\]'),
    'resnet_stem_channels_zero': (lambda d: rep_mm.backbones.ReparamResNet(stem_channels=0),
                                  ValueError, r"ReparamResNet: .*'stem_channels': 0"),
    'repvggplus_stage3_of_one_block': (lambda d: rep_mm.backbones.RepVGGplus(arch=dict(
        num_blocks=[1, 1, 1, 1], width_factor=[0.25] * 4)), ValueError,
        r"num_blocks'\]\[2\] must be >= 2, got 1"),
    'scale_layer_init_nan': (lambda d: rep_mm.blocks.ScaleLayer(4, init=NAN), ValueError,
                             r'ScaleLayer: init must be a finite number >= 0'),
    # output destinations, checked before any work
    'output_with_a_trailing_slash': (lambda d: _check_out(str(Path(d) / 'out') + '/'),
                                     ValueError, r"ends with '/', i\.e\. names a directory"),
    'output_inside_a_file': (lambda d: _check_out(write(Path(d) / 'afile', 'x') + '/sub/out.pth'),
                             NotADirectoryError, r"afile' is a file, not a directory"),
    'output_name_too_long': (lambda d: _check_out(str(Path(d) / ('n' * 240 + '.pth'))),
                             ValueError, r'file name .* is too long: its temp file .* has 2\d\d '
                                         r'bytes, the file system allows 255'),
    'output_without_the_space': (lambda d: _check_out(str(Path(d) / 'big.pth'), 1 << 60),
                                 rep_mm.io.NoSpaceError,
                                 r'not enough free space .* MiB needed, .* MiB free'),
    'output_is_an_empty_path': (lambda d: _check_out(''), ValueError, 'is empty; give a file name'),
    # configs: one line naming the file, the line and the cause
    'config_with_a_syntax_error': (lambda d: build_from_config(write(
        Path(d) / 'broken.py', "model = dict(type='X',\nfoo = 1\n")), ValueError,
        r"config '.*broken\.py', line \d: syntax error: "),
    'config_with_an_unknown_plugin': (lambda d: build_from_config(write(
        Path(d) / 'plugin.py', "x = 1\ncustom_imports = dict(imports=['rep_mm_no_such_plugin'], "
        "allow_failed_imports=False)\nmodel = dict(type='X')\n")), ValueError,
        r"plugin\.py', line 2: custom_imports names module 'rep_mm_no_such_plugin'"),
    'config_with_a_missing_base': (lambda d: build_from_config(write(
        Path(d) / 'child.py', "\n_base_ = ['./no_such_base.py']\n")), ValueError,
        r"child\.py', line 2: a base config is missing"),
})


def _check_out(out, size_hint=None):
    from rep_mm.io import check_output_path
    return check_output_path(out, (), overwrite=False, size_hint=size_hint)


@pytest.fixture
def case_dir(tmp_path):
    """A directory per case; after the case it must hold only what the case set up."""
    directory = tmp_path / 'case'
    directory.mkdir()
    yield directory


def _files(directory):
    return sorted(p.name for p in Path(directory).iterdir())


@pytest.mark.parametrize('name', list(API_CASES))
def test_bad_input_raises_a_clear_error(name, case_dir):
    action, error, match = API_CASES[name]
    with pytest.raises(error, match=match):
        action(case_dir)
    leftovers = [f for f in _files(case_dir) if f.endswith('.tmp') or f.startswith('.')]
    assert not leftovers, f'files left behind: {leftovers}'


def test_hostile_pickle_is_refused_without_running_it(case_dir):
    path, marker = hostile_file(case_dir)
    with pytest.raises(CheckpointError, match=r'outside the safe allow-list.*io\.open.*'
                                              r'allow_unsafe=True'):
        load_checkpoint_file(path)
    assert not marker.exists(), 'the payload ran'
    with pytest.raises(CheckpointError, match='outside the safe allow-list'):
        load_scales(path)
    assert not marker.exists(), 'the payload ran'


# ------------------------------------------------------------------------------- CLI cases
def _cli_convert_onto_input(d):
    ckpt = training_checkpoint(d)
    return ['convert', cls_config(d), ckpt, ckpt, '--shape', '32', '--overwrite']


def _cli_existing_output(d):
    write(Path(d) / 'out.pth', 'keep')
    return ['convert', cls_config(d), training_checkpoint(d), str(Path(d) / 'out.pth'),
            '--shape', '32']


def _cli_no_reparam_block(d):
    config = write(Path(d) / 'resnet.py', """
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier',
             backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels=64))
""")
    from rep_mm.cli.dispatch import build_config_model
    model = build_config_model(config)[0]
    torch.save({'state_dict': model.state_dict()}, Path(d) / 'resnet.pth')
    return ['convert', config, str(Path(d) / 'resnet.pth'), str(Path(d) / 'out.pth'),
            '--shape', '32']


def _cli_deploy_checkpoint(d):
    from rep_mm.cli.dispatch import build_config_model
    model = build_config_model(cls_config(d))[0]
    rep_mm.reparameterize(model)
    torch.save({'state_dict': model.state_dict()}, Path(d) / 'deploy.pth')
    return ['convert', cls_config(d), str(Path(d) / 'deploy.pth'), str(Path(d) / 'out.pth'),
            '--shape', '32']


def _cli_hostile(d):
    path, _ = hostile_file(d)
    return ['convert', cls_config(d), path, str(Path(d) / 'out.pth'), '--shape', '32']


def _extract_scales_without_scales(d):
    return ['extract-scales', training_checkpoint(d), str(Path(d) / 'scales.pth'),
            '--config', cls_config(d)]


def _extract_scales_onto_input(d):
    ckpt = training_checkpoint(d)
    return ['extract-scales', ckpt, ckpt, '--config', cls_config(d), '--overwrite']


def _extract_scales_hostile(d):
    path, _ = hostile_file(d)
    return ['extract-scales', path, str(Path(d) / 'scales.pth'), '--config', cls_config(d)]


CLI_CASES = {
    'convert_output_is_the_input': (_cli_convert_onto_input, 'is the same file as the input'),
    'convert_output_exists': (_cli_existing_output, 'exists; pass --overwrite'),
    'convert_bad_shape': (lambda d: ['convert', cls_config(d), training_checkpoint(d),
                                     str(Path(d) / 'o.pth'), '--shape', '1x3x32'],
                          '--shape must be N C H W'),
    'convert_unknown_official_arch': (lambda d: ['convert', '--arch', 'RepVGG-Z9',
                                                 training_checkpoint(d), str(Path(d) / 'o.pth')],
                                      "unknown arch 'RepVGG-Z9'"),
    'convert_missing_config': (lambda d: ['convert', str(Path(d) / 'no.py'),
                                          training_checkpoint(d), str(Path(d) / 'o.pth')],
                               'no.py.* does not exist'),
    'convert_config_without_model': (lambda d: ['convert', write(Path(d) / 'empty_cfg.py',
                                                                 'x = 1\n'),
                                                training_checkpoint(d), str(Path(d) / 'o.pth')],
                                     'has no `model` field'),
    'convert_model_without_reparam_block': (_cli_no_reparam_block,
                                            'no re-parameterizable block; nothing to convert'),
    'convert_a_deploy_checkpoint': (_cli_deploy_checkpoint, 'checkpoint is in deploy form'),
    'convert_a_hostile_checkpoint': (_cli_hostile, 'outside the safe allow-list.*--unsafe-load'),
    'convert_wrong_number_of_paths': (lambda d: ['convert', cls_config(d)],
                                      r'expected 3 path\(s\) \(CONFIG CKPT OUT\), got 1'),
    'extract_scales_from_a_model_without_scales': (_extract_scales_without_scales,
                                                   'no scale found in the checkpoint'),
    'extract_scales_onto_its_input': (_extract_scales_onto_input, 'is the same file as the input'),
    'extract_scales_from_a_hostile_checkpoint': (_extract_scales_hostile,
                                                 'outside the safe allow-list'),
}




# ----------------------------------------------------- CLI cases for issue 11 (exit 2, no writes)
def _flipped_checkpoint(d):
    """A training checkpoint with one byte changed inside its largest tensor record."""
    import struct
    import zipfile
    path = training_checkpoint(d, 'flipped.pth')
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if '/data/' in i.filename]
    info = max(infos, key=lambda i: i.file_size)
    data = bytearray(Path(path).read_bytes())
    name_len, extra_len = struct.unpack('<HH', data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 1
    Path(path).write_bytes(bytes(data))
    return path, info.filename


def _cli_flipped(d):
    path, _ = _flipped_checkpoint(d)
    return ['convert', cls_config(d), path, str(Path(d) / 'out.pth'), '--shape', '32']


def _extract_scales_with_nan(d):
    hs = RepOptVGG(OPT_ARCH, mode='hs')
    state = hs.state_dict()
    state['stage1.0.scale_conv.weight'][0] = float('nan')
    torch.save({'state_dict': state}, Path(d) / 'hs.pth')
    config = write(Path(d) / 'target.py', f"""
custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)
model = dict(type='rep_mm.RepOptVGG', arch={dict(OPT_ARCH)!r}, mode='target')
""")
    return ['extract-scales', str(Path(d) / 'hs.pth'), str(Path(d) / 'scales.pth'),
            '--config', config]


CLI_CASES.update({
    'convert_negative_tolerance': (lambda d: ['convert', cls_config(d), training_checkpoint(d),
                                              str(Path(d) / 'o.pth'), '--tolerance=-1e-5'],
                                   r'--tolerance must be a finite number >= 0.*got -1e-05'),
    'verify_nan_tolerance': (lambda d: ['verify', cls_config(d), training_checkpoint(d),
                                        '--tolerance', 'nan', '--shape', '32'],
                             r'--tolerance must be a finite number >= 0.*got nan'),
    'verify_inf_tolerance': (lambda d: ['verify', cls_config(d), training_checkpoint(d),
                                        '--tolerance', 'inf', '--shape', '32'],
                             r'--tolerance must be a finite number >= 0'),
    'convert_shape_of_the_wrong_channel_count': (
        lambda d: ['convert', cls_config(d), training_checkpoint(d), str(Path(d) / 'o.pth'),
                   '--shape', '1x1x32x32'],
        r'--shape 1x1x32x32 has 1 channel\(s\) but the model takes 3.*--shape 1x3x32x32'),
    'verify_zero_size_shape': (lambda d: ['verify', cls_config(d), training_checkpoint(d),
                                          '--shape', '1', '3', '0', '32'],
                               r'--shape must be N C H W .*positive integers'),
    'convert_negative_batch': (lambda d: ['convert', cls_config(d), training_checkpoint(d),
                                          str(Path(d) / 'o.pth'), '--shape=-1x3x32x32'],
                               r'--shape must be .*positive integers'),
    'convert_output_with_trailing_slash': (
        lambda d: ['convert', cls_config(d), training_checkpoint(d), str(Path(d) / 'outdir') + '/',
                   '--shape', '32'], r"ends with '/'"),
    'convert_output_inside_a_file': (
        lambda d: ['convert', cls_config(d), training_checkpoint(d),
                   str(Path(d) / 'train.pth' / 'o.pth'), '--shape', '32'],
        r"train\.pth' is a file, not a directory"),
    'convert_output_name_too_long': (
        lambda d: ['convert', cls_config(d), training_checkpoint(d),
                   str(Path(d) / ('x' * 250 + '.pth')), '--shape', '32'],
        r'file name .* is too long'),
    'convert_a_checkpoint_with_a_flipped_byte': (
        _cli_flipped, r"flipped\.pth', zip member '.*/data/\d+' fails its CRC-32 check"),
    'convert_config_with_a_syntax_error': (
        lambda d: ['convert', write(Path(d) / 'bad.py', 'model = dict(\n  type=\n'),
                   training_checkpoint(d), str(Path(d) / 'o.pth')],
        r"config '.*bad\.py', line \d: syntax error"),
    'verify_config_with_an_unknown_plugin': (
        lambda d: ['verify', write(Path(d) / 'plug.py', "custom_imports = dict(imports=["
                                   "'no_such_rep_mm_plugin'], allow_failed_imports=False)\n"),
                   training_checkpoint(d)],
        r"plug\.py', line 1: custom_imports names module 'no_such_rep_mm_plugin'"),
    'verify_missing_deploy_checkpoint': (
        lambda d: ['verify', cls_config(d), training_checkpoint(d), '--deploy-checkpoint',
                   str(Path(d) / 'gone.pth')], r"--deploy-checkpoint '.*gone\.pth' does not exist"),
    'extract_scales_with_nan_in_the_hs_checkpoint': (
        _extract_scales_with_nan,
        r"Hyper-Search checkpoint '.*hs\.pth' .*stage1\.0\.scale_conv\.weight: 1 NaN/Inf"),
    'extract_scales_config_with_a_syntax_error': (
        lambda d: ['extract-scales', training_checkpoint(d), str(Path(d) / 's.pth'), '--config',
                   write(Path(d) / 'typo.py', 'model = dict(type="X"))\n')],
        r"typo\.py', line 1: syntax error"),
})


@pytest.mark.parametrize('name', list(CLI_CASES))
def test_bad_cli_input_exits_2_and_writes_nothing(name, case_dir, capsys):
    make_args, match = CLI_CASES[name]
    args = make_args(case_dir)
    before = {p.name: p.read_bytes() for p in case_dir.iterdir() if p.is_file()}
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(match, err, re.S), err
    after = {p.name: p.read_bytes() for p in case_dir.iterdir() if p.is_file()}
    assert after == before, f'files changed: {set(after) ^ set(before)}'
    assert not (case_dir / 'PWNED').exists()


def test_backbone_folding_refuses_to_write_onto_its_input(case_dir, capsys):
    from rep_mm.integrations.stock_backbones.cli import main as fold_main
    ckpt = training_checkpoint(case_dir)
    before = (case_dir / 'train.pth').read_bytes()
    assert fold_main([cls_config(case_dir), ckpt, ckpt, '--overwrite']) == 2
    assert 'is the same file as the input' in capsys.readouterr().err
    assert (case_dir / 'train.pth').read_bytes() == before


def test_legacy_checkpoint_needs_the_explicit_opt_in(case_dir, capsys):
    """A trusted legacy file (an argparse.Namespace in its meta, as old mmcv runs saved) is
    refused by default with the global named, and converts with --allow-unsafe-checkpoint."""
    import argparse
    ckpt = training_checkpoint(case_dir)
    legacy = case_dir / 'legacy.pth'
    state = torch.load(ckpt, weights_only=True)
    torch.save(dict(state, meta=dict(args=argparse.Namespace(lr=0.1))), legacy)
    out = case_dir / 'deploy.pth'
    args = ['convert', cls_config(case_dir), str(legacy), str(out), '--shape', '32']
    assert cli_main(args) == 2
    assert re.search('outside the safe allow-list.*argparse.Namespace.*--unsafe-load',
                     capsys.readouterr().err, re.S)
    assert not out.exists()
    assert cli_main(args + ['--allow-unsafe-checkpoint']) == 0
    assert 'rbr_reparam' in ''.join(load_checkpoint_file(out)['state_dict'])


# ---------------------------------------------------------------------------- tools/train.py
def _train_tool():
    spec = importlib.util.spec_from_file_location('rep_mm_tools_train', REPO / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_torchrun_env(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)


TRAIN_CASES = {
    'train_missing_config': (lambda d: [str(Path(d) / 'none.py')], 'none.py.* does not exist'),
    'train_resume_from_missing_checkpoint': (
        lambda d: [cls_config(d), '--resume', str(Path(d) / 'gone.pth'),
                   '--work-dir', str(Path(d) / 'work')], 'gone.pth.* is not a file'),
    'train_pytorch_launcher_without_torchrun': (
        lambda d: [cls_config(d), '--launcher', 'pytorch', '--work-dir', str(Path(d) / 'work')],
        r'needs the torchrun environment.*RANK'),
}


@pytest.mark.parametrize('name', list(TRAIN_CASES))
def test_bad_training_invocation_stops_before_any_work(name, case_dir, monkeypatch, capsys):
    make_args, match = TRAIN_CASES[name]
    _without_torchrun_env(monkeypatch)
    args = make_args(case_dir)
    with pytest.raises(SystemExit) as exit_:
        _train_tool().main(args)
    assert exit_.value.code == 2  # bad input
    assert re.search(match, capsys.readouterr().err)
    assert not (case_dir / 'work').exists()


# -------------------------------------------- inputs the original code got wrong, accepted here
def test_non_square_inputs_to_se_blocks_convert_exactly():
    model = randomize_bn_statistics(RepVGG(arch=dict(TINY, se_position='post', se_ratio=4)),
                                    seed=2).eval()
    report = rep_mm.reparameterize(model, verify=torch.randn(2, 3, 24, 40))
    assert report.converted and report.max_rel_error <= 1e-5, report.summary()


def test_converting_twice_is_a_reported_no_op():
    model = tiny_repvgg()
    first = rep_mm.reparameterize(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    second = rep_mm.reparameterize(model, verify=torch.randn(1, 3, 32, 32))
    assert second.converted == [] and second.already_deployed == first.converted
    assert second.max_abs_error == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_models_convert_within_the_half_tolerance(dtype):
    model = tiny_repvgg().to(dtype)
    report = rep_mm.reparameterize(model, verify=torch.randn(1, 3, 32, 32).to(dtype))
    assert report.passed, report.summary()
    assert report.tolerance == {torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    assert all(p.dtype == dtype for p in model.parameters())


# ------------------------------------------------------- leftover temp files of a killed run
def _gone_pid():
    """The pid of a process that has exited (so no process has it, unless reused meanwhile)."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def _leftover(directory, name, pid, minutes_old, random='a1b2c3d4'):
    import os
    import time
    path = Path(directory) / f'.{name}.{pid}.{random}.tmp'
    path.write_bytes(b'partial')
    stamp = time.time() - minutes_old * 60
    os.utime(path, (stamp, stamp))
    return path


def test_stale_temp_files_are_removed_only_when_provably_stale(case_dir, capsys):
    import os
    gone = _gone_pid()
    stale = _leftover(case_dir, 'out.pth', gone, 30)
    recent = _leftover(case_dir, 'out.pth', gone, 1, random='recent00')
    alive = _leftover(case_dir, 'out.pth', os.getppid(), 30, random='alive000')
    nopid = case_dir / '.out.pth.zz9y8x7w.tmp'  # the older name without a pid
    nopid.write_bytes(b'partial')
    other = _leftover(case_dir, 'other.pth', gone, 30)  # another output's: not looked at
    code = cli_main(['convert', cls_config(case_dir), training_checkpoint(case_dir),
                     str(case_dir / 'out.pth'), '--shape', '32'])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not stale.exists()
    assert re.search(rf'removed a stale temp file .*{stale.name} \(writer pid {gone} gone', err)
    for kept in (recent, alive, nopid, other):
        assert kept.exists(), kept
    assert re.search(rf'kept \(not provably stale\): .*{recent.name}', err)
    assert re.search(rf'{alive.name} \(writer pid {os.getppid()} still running', err)
    assert re.search(rf'{nopid.name} \(no writer pid in its name', err)
    assert other.name not in err
    assert (case_dir / 'out.pth').is_file()


def test_a_failed_check_removes_no_temp_file(case_dir, capsys):
    stale = _leftover(case_dir, 'o.pth', _gone_pid(), 30)
    code = cli_main(['convert', cls_config(case_dir), training_checkpoint(case_dir),
                     str(case_dir / 'o.pth'), '--tolerance', '-1'])
    assert code == 2 and 'tolerance' in capsys.readouterr().err
    assert stale.exists()  # bad input is reported before anything is touched


def test_missing_output_parents_are_created_when_allowed(case_dir, capsys):
    out = case_dir / 'new' / 'deeper' / 'out.pth'
    assert cli_main(['convert', cls_config(case_dir), training_checkpoint(case_dir), str(out),
                     '--shape', '32']) == 0, capsys.readouterr().err
    assert out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ['out.pth']


# ----------------------------------------------------------- tools/test.py and convert_backbone
def _test_tool():
    import sys
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        spec = importlib.util.spec_from_file_location('rep_mm_tools_test', REPO / 'tools' / 'test.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / 'tools'))
    return module


TEST_TOOL_CASES = {
    'test_config_with_a_syntax_error': (
        lambda d: [write(Path(d) / 'oops.py', 'model = dict(\n'), training_checkpoint(d)],
        r"config '.*oops\.py', line 1: syntax error"),
    'test_config_with_an_unknown_plugin': (
        lambda d: [write(Path(d) / 'plugin.py', "\ncustom_imports = dict(imports=['not_a_module_"
                                                "xyz'], allow_failed_imports=False)\n"),
                   training_checkpoint(d)],
        r"plugin\.py', line 2: custom_imports names module 'not_a_module_xyz'"),
    'test_checkpoint_with_a_flipped_byte': (
        lambda d: [cls_config(d), _flipped_checkpoint(d)[0]], r'fails its CRC-32 check'),
    'test_metrics_output_with_trailing_slash': (
        lambda d: [cls_config(d), training_checkpoint(d), '--out', str(Path(d) / 'm') + '/'],
        r"ends with '/'"),
}


@pytest.mark.parametrize('name', list(TEST_TOOL_CASES))
def test_bad_test_tool_input_exits_2_before_the_runner(name, case_dir, capsys):
    make_args, match = TEST_TOOL_CASES[name]
    args = make_args(case_dir)
    before = {p.name: p.read_bytes() for p in case_dir.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        _test_tool().main(args + ['--work-dir', str(case_dir / 'work')])
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err, re.S)
    assert not (case_dir / 'work').exists()
    assert {p.name: p.read_bytes() for p in case_dir.iterdir() if p.is_file()} == before


def test_backbone_folding_reports_bad_inputs_with_exit_2(case_dir, capsys):
    from rep_mm.integrations.stock_backbones.cli import main as fold_main
    flipped, member = _flipped_checkpoint(case_dir)
    out = case_dir / 'stock.pth'
    assert fold_main([cls_config(case_dir), flipped, str(out)]) == 2
    assert f"zip member '{member}' fails its CRC-32 check" in capsys.readouterr().err
    broken = write(case_dir / 'broken.py', 'model = (\n')
    assert fold_main([broken, training_checkpoint(case_dir), str(out)]) == 2
    assert re.search(r"broken\.py', line 1: syntax error", capsys.readouterr().err)
    assert fold_main([cls_config(case_dir), training_checkpoint(case_dir),
                      str(case_dir / 'x') + '/']) == 2
    assert "ends with '/'" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in case_dir.iterdir() if p.name.endswith('.tmp')]
