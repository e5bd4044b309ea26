"""Classification heads that the toolboxes lack (RepVGGplus's auxiliary classifiers).

They build on mmpretrain's ``ClsHead``; without mmpretrain installed nothing is registered.
"""
try:
    from .repvggplus_head import RepVGGplusClsHead
except ImportError:  # mmpretrain is an optional dependency (extra 'pretrain')
    __all__ = []
else:
    __all__ = ['RepVGGplusClsHead']
