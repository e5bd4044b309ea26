"""Backbones assembled from re-parameterizable blocks, registered as ``rep_mm.<Name>``."""
from .orepa_repvgg import OREPARepVGG
from .repghostnet import RepGhostNet, RepOptGhostNet
from .repmlpnet import RepMLPNet
from .reparam_resnet import ReparamResNet
from .repopt_vgg import RepOptVGG
from .repvgg import RepVGG
from .repvggplus import RepVGGplus

__all__ = ['RepMLPNet', 'RepVGG', 'RepVGGplus', 'RepGhostNet', 'RepOptGhostNet', 'RepOptVGG',
           'ReparamResNet', 'OREPARepVGG']
