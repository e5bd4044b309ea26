"""Backbones assembled from re-parameterizable blocks, registered as ``rep_mm.<Name>``."""
from .repmlpnet import RepMLPNet
from .reparam_resnet import ReparamResNet
from .repvgg import RepVGG
from .repvggplus import RepVGGplus

__all__ = ['RepMLPNet', 'RepVGG', 'RepVGGplus', 'ReparamResNet']
