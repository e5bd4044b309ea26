"""Conv (no bias) followed by BatchNorm: the branch every re-param block is made of."""
from typing import Optional

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..fusion import KernelBias, fuse_bn
from ._checks import check_conv_args

DEFAULT_NORM_CFG = dict(type='BN')


def build_batch_norm(norm_cfg: Optional[dict], num_features: int) -> _BatchNorm:
    """Build a norm layer from an mm ``norm_cfg`` and check that it can be folded.

    Only BatchNorm variants (``BN``, ``SyncBN``, ...) are linear maps at inference; GroupNorm or
    LayerNorm depend on the input and cannot be folded into a conv.
    """
    from mmcv.cnn import build_norm_layer

    _, layer = build_norm_layer(dict(norm_cfg or DEFAULT_NORM_CFG), num_features)
    if not isinstance(layer, _BatchNorm):
        raise ValueError(f"re-parameterizable branches need a BatchNorm (type 'BN', 'SyncBN', "
                         f"...), got norm_cfg={norm_cfg!r} -> {type(layer).__name__}")
    return layer


class ConvBN(nn.Sequential):
    """``BN(conv(x))`` with sub-modules named ``conv`` and ``bn`` as in the original code.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H', W')``. Folds to one conv with
    :func:`rep_mm.fusion.fuse_bn`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1,
                 padding_mode: str = 'zeros', norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('ConvBN', in_channels, out_channels, kernel_size, stride, dilation, groups,
                        padding)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=False,
                              padding_mode=padding_mode)
        self.bn = build_batch_norm(norm_cfg, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def fused_kernel_bias(self) -> KernelBias:
        """``(kernel, bias)`` of the one conv equal to this conv + BN (running statistics)."""
        return fuse_bn(self.conv.weight, self.bn, self.conv.bias)
