"""Backbones assembled from re-parameterizable blocks, registered as ``rep_mm.<Name>``."""
from .repghostnet import RepGhostNet, RepOptGhostNet
from .repmlpnet import RepMLPNet
from .reparam_resnet import ReparamResNet
from .repopt_vgg import RepOptVGG
from .repvgg import RepVGG
from .repvggplus import RepVGGplus

__all__ = ['RepMLPNet', 'RepVGG', 'RepVGGplus', 'RepGhostNet', 'RepOptGhostNet', 'RepOptVGG']
__all__ += ['ReparamResNet']
from .orepa_repvgg import OREPARepVGG  # noqa: E402
__all__ += ['OREPARepVGG']
from ..integrations.stock_backbones import build_reparam_wrapped  # noqa: E402,F401 (registers rep_mm.ReparamWrapped)
