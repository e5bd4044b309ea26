"""Backbones assembled from re-parameterizable blocks, registered as ``rep_mm.<Name>``."""
from .repmlpnet import RepMLPNet
from .repvgg import RepVGG
from .repvggplus import RepVGGplus

__all__ = ['RepMLPNet', 'RepVGG', 'RepVGGplus']
