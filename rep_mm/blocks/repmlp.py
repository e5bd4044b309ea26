"""RepMLP block: an FC over each partition plus local convs in training, one FC at deploy.

Training-time computation on ``x`` of shape ``(N, C, H, W)`` with partitions of ``h x w``
and ``S`` share-sets (channel ``c`` uses the weights of share-set ``c mod S``)::

    parts  = partition(x)                       # (N * H/h * W/w * C/S, S, h, w)
    fc     = BN_fc3(FC_fc3(flatten(parts)))     # grouped FC: S groups of (h*w) x (h*w)
    local  = sum_k BN_k(conv_kxk(parts))        # depthwise "same" convs over each partition
    out    = merge(fc + local) * GP(x)          # GP: global perceptron, a channel gate

Each local conv is a linear map on a fixed ``h x w`` partition, hence an FC
(``fusion.conv_to_fc``); after folding the BNs (``fusion.fuse_bn``), ``local_inject()`` /
``switch_to_deploy()`` leaves one FC ``fc3`` with bias. The global perceptron stays.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..fusion import KernelBias, conv_to_fc, fuse_bn, sum_branches
from ..reparam import ReparamBlock
from .conv_bn import ConvBN, build_batch_norm
from ._checks import check_ints, check_odd_kernel


class GlobalPerceptron(nn.Module):
    """Channel gate ``sigmoid(fc2(relu(fc1(mean_hw(x)))))`` of shape ``(N, C, 1, 1)``.

    Official parameter names ``fc1`` / ``fc2`` (1x1 convs with bias). Pools globally, so any
    ``H x W`` works.
    """

    def __init__(self, channels: int, internal_channels: int) -> None:
        super().__init__()
        if internal_channels < 1:
            raise ValueError(f'the global perceptron of {channels} channels has a bottleneck of '
                             f'{internal_channels}; lower globalperceptron_reduce')
        self.fc1 = nn.Conv2d(channels, internal_channels, 1, bias=True)
        self.fc2 = nn.Conv2d(internal_channels, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))).sigmoid()


class RepMLPBlock(ReparamBlock):
    """RepMLP block of RepMLPNet (https://arxiv.org/abs/2112.11081).

    Args:
        in_channels (int): channels ``C`` (= out_channels; kept for the official signature).
        out_channels (int): must equal ``in_channels``.
        h (int): partition height. w (int): partition width.
        reparam_conv_k (Sequence[int], optional): odd kernel sizes of the local perceptron
            convs; None or empty for none. Default None.
        globalperceptron_reduce (int): bottleneck ratio of the global perceptron. Default 4.
        num_sharesets (int): ``S``; ``C`` must be divisible by it. Default 1.
        deploy (bool): build the fused form directly. Default False.
        norm_cfg (dict): BatchNorm config for ``fc3_bn`` and the conv branches.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)`` with ``H % h == 0`` and ``W % w == 0``.
    """

    fused_name = 'fc3'

    @property
    def branch_names(self) -> Tuple[str, ...]:
        return ('fc3_bn',) + tuple(f'repconv{k}' for k in self.reparam_conv_k)

    def __init__(self, in_channels: int, out_channels: int, h: int, w: int,
                 reparam_conv_k: Optional[Sequence[int]] = None,
                 globalperceptron_reduce: int = 4, num_sharesets: int = 1,
                 deploy: bool = False, norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_ints('RepMLPBlock', 1, in_channels=in_channels, out_channels=out_channels, h=h,
                   w=w, globalperceptron_reduce=globalperceptron_reduce,
                   num_sharesets=num_sharesets)
        if in_channels != out_channels:
            raise ValueError(f'RepMLPBlock keeps the channel count: in_channels ({in_channels}) '
                             f'must equal out_channels ({out_channels})')
        if in_channels % num_sharesets:
            raise ValueError(f'channels ({in_channels}) must be divisible by num_sharesets '
                             f'({num_sharesets})')
        kernels = tuple(reparam_conv_k or ())
        for k in kernels:
            check_odd_kernel('RepMLPBlock', k, 'the local convs are "same" convs',
                             name='every reparam_conv_k entry')
        self.channels, self.h, self.w, self.num_sharesets = in_channels, h, w, num_sharesets
        self.reparam_conv_k = kernels
        self.deploy = deploy
        self.gp = GlobalPerceptron(in_channels, in_channels // globalperceptron_reduce)
        if deploy:
            self._init_deploy_form()
            return
        features = h * w * num_sharesets
        self.fc3 = nn.Conv2d(features, features, 1, bias=False, groups=num_sharesets)
        self.fc3_bn = build_batch_norm(norm_cfg, num_sharesets)
        for k in kernels:
            self.add_module(f'repconv{k}', ConvBN(num_sharesets, num_sharesets, k, padding=k // 2,
                                                 groups=num_sharesets, norm_cfg=norm_cfg))

    def _make_fused_conv(self) -> nn.Conv2d:
        """``fc3`` with bias: a grouped 1x1 conv (one FC per share-set) over the
        ``S * h * w`` features of a partition."""
        features = self.h * self.w * self.num_sharesets
        return nn.Conv2d(features, features, 1, bias=True, groups=self.num_sharesets)

    def _partitions(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        if height % self.h or width % self.w:
            raise ValueError(f'RepMLPBlock with {self.h}x{self.w} partitions needs feature maps '
                             f'whose height and width are multiples of {self.h} and {self.w}; '
                             f'got {height}x{width}')
        x = x.reshape(n, c, height // self.h, self.h, width // self.w, self.w)
        return x.permute(0, 2, 4, 1, 3, 5)  # (N, H/h, W/w, C, h, w)

    def forward(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        gate = self.gp(x)
        parts = self._partitions(x)
        rows_h, rows_w = parts.shape[1], parts.shape[2]
        flat = parts.reshape(-1, self.num_sharesets * self.h * self.w, 1, 1)
        out = self.fc3(flat).reshape(-1, self.num_sharesets, self.h, self.w)
        if not self.deploy:
            out = self.fc3_bn(out)
            local = parts.reshape(-1, self.num_sharesets, self.h, self.w)
            for k in self.reparam_conv_k:
                out = out + getattr(self, f'repconv{k}')(local)
        # The official code regroups the (N, H/h, W/w, C/S, S, h, w)-ordered result as
        # (N * C/S, H/h, W/w, S, h, w) before merging; released weights were trained with that
        # ordering, so it is kept (it is the same permutation in training and deploy form).
        out = out.reshape(-1, rows_h, rows_w, self.num_sharesets, self.h, self.w)
        out = out.permute(0, 3, 1, 4, 2, 5)
        return out.reshape(n, c, height, width) * gate

    def _fold_branches(self) -> KernelBias:
        """``(weight, bias)`` of the fused ``fc3``: shapes ``(S*h*w, h*w, 1, 1)``, ``(S*h*w,)``."""
        branches = [fuse_bn(self.fc3.weight, self.fc3_bn, self.fc3.bias,
                            outputs_per_feature=self.h * self.w)]
        if self.reparam_conv_k:
            kernel, conv_bias = sum_branches(
                getattr(self, f'repconv{k}').fused_kernel_bias() for k in self.reparam_conv_k)
            fc_weight, fc_bias = conv_to_fc(kernel, conv_bias, self.h, self.w)
            branches.append((fc_weight.reshape_as(branches[0][0]), fc_bias))
        return sum_branches(branches)

    @torch.no_grad()
    def local_inject(self) -> None:
        """The official name of :meth:`switch_to_deploy` (locality injection)."""
        self.switch_to_deploy()

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, partition={self.h}x{self.w}, '
                f'sharesets={self.num_sharesets}, conv_k={self.reparam_conv_k}, '
                f'deploy={self.deploy}')
