"""Squeeze-and-excitation with global pooling (works for any H x W, unlike the original)."""
from torch import Tensor, nn
from torch.nn import functional as F

from ._checks import check_ints


class SEBlock(nn.Module):
    """``y = x * sigmoid(up(relu(down(mean_hw(x)))))``, shapes ``(N, C, H, W) -> (N, C, H, W)``.

    Parameter names (``down``, ``up``: 1x1 convs with bias) are those of the original RepVGG
    code, so released D2se / RepVGGplus checkpoints load. The original pools with
    ``avg_pool2d(kernel_size=W)``, which is wrong when ``H != W``; this pools globally.

    Args:
        channels (int): input and output channels ``C``.
        internal_channels (int): channels of the bottleneck.
    """

    def __init__(self, channels: int, internal_channels: int) -> None:
        super().__init__()
        check_ints('SEBlock', 1, channels=channels)
        if internal_channels < 1:
            raise ValueError(f'SE bottleneck must have at least 1 channel, got {internal_channels} '
                             f'(channels={channels}); lower the reduction ratio')
        self.down = nn.Conv2d(channels, internal_channels, kernel_size=1, bias=True)
        self.up = nn.Conv2d(internal_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        weight = F.adaptive_avg_pool2d(x, 1)
        weight = self.up(F.relu(self.down(weight))).sigmoid()
        return x * weight

