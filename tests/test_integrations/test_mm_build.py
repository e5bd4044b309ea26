"""One way to build and unwrap mm models (rep_mm.integrations.mm_build): wrappers are known by
mmengine's wrapper registry, never by a ``.module`` attribute; ``build_model`` builds in the
config's scope with mmdeploy's options."""
import torch
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn

import rep_mm  # noqa: F401
from rep_mm.integrations.mm_build import build_model, unwrap_model

CLASSIFIER = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                  neck=dict(type='GlobalAveragePooling'),
                  head=dict(type='LinearClsHead', num_classes=10, in_channels=512))


class HasModuleAttribute(nn.Module):
    """A plain model whose sub-network happens to be called ``module``."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


@ROOT_MODELS.register_module(name='RepMMBuildProbe', force=True)
class BuildProbe(nn.Module):
    """Records the keyword arguments it was built with; holds a SyncBatchNorm and weights."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.norm = nn.SyncBatchNorm(4)
        self.weight = nn.Parameter(torch.randn(5))


def test_a_plain_model_with_a_module_attribute_is_not_unwrapped():
    model = HasModuleAttribute()
    assert unwrap_model(model) is model
    plain = nn.Linear(2, 2)
    assert unwrap_model(plain) is plain


def test_registered_wrappers_are_unwrapped(tmp_path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    inner = HasModuleAttribute()
    assert unwrap_model(nn.DataParallel(inner)) is inner  # CPU: no device, no process group
    started = not dist.is_initialized()
    if started:
        dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                                world_size=1)
    try:
        assert unwrap_model(MMDistributedDataParallel(module=inner)) is inner
        assert unwrap_model(nn.parallel.DistributedDataParallel(inner)) is inner
    finally:
        if started:
            dist.destroy_process_group()


def test_build_model_uses_the_config_scope_before_the_default():
    from mmengine.registry import DefaultScope
    from mmpretrain.models import ImageClassifier
    model = build_model(dict(model=CLASSIFIER), default_scope='mmpretrain')
    assert type(model) is ImageClassifier
    assert DefaultScope.get_current_instance().scope_name == 'mmpretrain'
    # the config's own default_scope wins over the argument (mmdet has no ImageClassifier)
    model = build_model(Config(dict(default_scope='mmpretrain', model=CLASSIFIER)),
                        default_scope='mmdet')
    assert type(model) is ImageClassifier


def test_build_model_options_and_the_config_stays_untouched():
    cfg = Config(dict(model=dict(type='RepMMBuildProbe', pretrained='x.pth', depth=3),
                      data_preprocessor=dict(type='ImgDataPreprocessor', mean=[1.0])))
    plain = build_model(cfg)
    assert plain.kwargs == dict(pretrained='x.pth', depth=3)
    assert isinstance(plain.norm, nn.SyncBatchNorm)
    built = build_model(cfg, drop_pretrained=True, with_data_preprocessor=True,
                        revert_sync_bn=True, seed=7)
    assert built.kwargs == dict(depth=3, data_preprocessor=dict(type='ImgDataPreprocessor',
                                                                mean=[1.0]))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in built.modules())
    again = build_model(cfg, model_cfg=dict(type='RepMMBuildProbe', depth=4), seed=7)
    assert again.kwargs == dict(depth=4)
    assert torch.equal(again.weight, built.weight)  # seeded just before building
    assert cfg.model.pretrained == 'x.pth' and 'data_preprocessor' not in cfg.model
