"""RepVGG block: 3x3 conv-BN + 1x1 conv-BN + identity-BN in training, one 3x3 conv at deploy.

Training-time computation (``x``: ``(N, C_in, H, W)``)::

    y = act(SE_pre(BN_k(conv_kxk(x)) + BN_1(conv_1x1(x)) + BN_id(x)))      then SE_post(y)

All three branches are linear in ``x`` with aligned centres, so (``fusion.py``)::

    K = fuse_bn(K_kxk, BN_k) + pad(fuse_bn(K_1x1, BN_1), k) + pad(fuse_bn(I, BN_id), k)
    y = act(SE_pre(conv_kxk(x; K, b)))                                        then SE_post(y)

The identity branch exists when ``C_in == C_out`` and the output has the input's size
(stride 1, padding = dilation * (k // 2)); with ``groups > 1`` the identity is a grouped kernel.
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils import checkpoint as cp

from ..fusion import KernelBias, bn_scale_shift, fuse_bn, identity_kernel, sum_branches
from ..reparam import ReparamBlock
from .conv_bn import ConvBN, build_batch_norm
from .nonlinear import build_nonlinear
from .se import SEBlock
from ._checks import check_centre_padding, check_conv_args, check_ints

SE_POSITIONS = (None, 'pre', 'post')


class RepVGGStyleBlock(ReparamBlock):
    """Folding of the blocks with RepVGG's branches (``rbr_dense`` with
    ``fused_kernel_bias()``, ``rbr_1x1`` a :class:`ConvBN`, ``rbr_identity`` a BN or None)
    into one kxk conv ``rbr_reparam``:
    ``K = fuse(dense) + pad(fuse(1x1), k) + pad(fuse_bn(I, BN_id), k)``,
    ``K``: ``(C_out, C_in // g, k, k)``."""

    fused_name = 'rbr_reparam'
    branch_names = ('rbr_dense', 'rbr_1x1', 'rbr_identity')

    def _fold_branches(self) -> KernelBias:
        branches = [self.rbr_dense.fused_kernel_bias(), self.rbr_1x1.fused_kernel_bias()]
        if self.rbr_identity is not None:
            weight = self.rbr_1x1.conv.weight
            eye = identity_kernel(self.in_channels, self.groups, 1, dtype=weight.dtype,
                                  device=weight.device)
            branches.append(fuse_bn(eye, self.rbr_identity))
        return sum_branches(branches, self.kernel_size)


class RepVGGBlock(RepVGGStyleBlock):
    """The RepVGG / RepVGGplus block (https://arxiv.org/abs/2101.03697).

    Parameter names follow the original code: ``rbr_dense`` (kxk ConvBN), ``rbr_1x1`` (1x1
    ConvBN), ``rbr_identity`` (BN), ``rbr_reparam`` (fused conv), ``se`` (SE before the
    activation, RepVGG-D2se) or ``post_se`` (SE after it, RepVGGplus).

    Args:
        in_channels (int): input channels ``C_in``.
        out_channels (int): output channels ``C_out``.
        kernel_size (int): odd size ``k`` of the main conv. Default 3.
        stride (int): stride of all branches. Default 1.
        padding (int, optional): padding of the kxk conv; default ``dilation * (k // 2)``
            (same-size output at stride 1). Must be at least that, so the 1x1 branch can align.
        dilation (int): dilation of the kxk conv. Default 1.
        groups (int): groups of all branches (the identity becomes a grouped kernel). Default 1.
        padding_mode (str): as in ``nn.Conv2d``. Default ``'zeros'``.
        deploy (bool): build the fused form directly. Default False.
        use_identity (bool): add the identity-BN branch where shapes allow it. Default True.
        se_position (str, optional): ``'pre'`` (SE before the activation, D2se), ``'post'``
            (after it, RepVGGplus) or None. Default None.
        se_ratio (int): SE bottleneck = ``C_out // se_ratio``. Default 16.
        norm_cfg (dict): config of the branch norms, a BatchNorm type. Default ``dict(type='BN')``.
        act_cfg (dict, optional): activation config; None for none. Default
            ``dict(type='ReLU', inplace=True)`` (in place: nothing downstream needs the sum).
        with_cp (bool): gradient checkpointing of the branches (saves memory). Default False.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: Optional[int] = None, dilation: int = 1,
                 groups: int = 1, padding_mode: str = 'zeros', deploy: bool = False,
                 use_identity: bool = True, se_position: Optional[str] = None,
                 se_ratio: int = 16, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True),
                 with_cp: bool = False) -> None:
        super().__init__()
        check_conv_args('RepVGGBlock', in_channels, out_channels, kernel_size, stride, dilation,
                        groups, padding)
        if se_position is not None:
            check_ints('RepVGGBlock', 1, se_ratio=se_ratio)
        padding = check_centre_padding('RepVGGBlock', kernel_size, padding, dilation)
        if se_position not in SE_POSITIONS:
            raise ValueError(f'se_position must be one of {SE_POSITIONS}, got {se_position!r}')
        centre_padding = dilation * (kernel_size // 2)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.padding_mode = dilation, groups, padding_mode
        self.with_cp = with_cp
        self.deploy = deploy

        self.nonlinearity = build_nonlinear(act_cfg, 'act_cfg')
        if se_position == 'pre':
            self.se = SEBlock(out_channels, out_channels // se_ratio)
        elif se_position == 'post':
            self.post_se = SEBlock(out_channels, out_channels // se_ratio)
        self.se_position = se_position

        if deploy:
            self._init_deploy_form()
            return
        has_identity = (use_identity and in_channels == out_channels and stride == 1
                        and padding == centre_padding)
        self.rbr_identity = build_batch_norm(norm_cfg, in_channels) if has_identity else None
        self.rbr_dense = ConvBN(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                groups, padding_mode, norm_cfg)
        # padding_mode != 'zeros' pads with data; the 1x1 tap sees the same data at the centre
        self.rbr_1x1 = ConvBN(in_channels, out_channels, 1, stride, padding - centre_padding, 1,
                              groups, padding_mode, norm_cfg)

    def _branches(self, x: Tensor) -> Tensor:
        # accumulate in place into the fresh BN output (BN's backward does not need its output)
        out = self.rbr_dense(x)
        out += self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out += self.rbr_identity(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            out = self.rbr_reparam(x)
        elif self.with_cp and x.requires_grad and torch.is_grad_enabled():
            out = cp.checkpoint(self._branches, x, use_reentrant=False)
        else:
            out = self._branches(x)
        if self.se_position == 'pre':
            out = self.se(out)
        out = self.nonlinearity(out)
        if self.se_position == 'post':
            out = self.post_se(out)
        return out

    def custom_l2(self) -> Tensor:
        """RepVGGplus's weight decay for this block, to use instead of plain L2 on its kernels.

        Plain L2 on ``K_kxk`` and ``K_1x1`` penalises the branches, not the fused kernel. The
        centre tap of the fused kernel is ``c = K_kxk[..., centre] * t_k + K_1x1 * t_1`` with
        ``t = gamma / sqrt(var + eps)`` (treated as constants); this returns the L2 of the
        kxk kernel's off-centre taps plus ``sum(c**2 / (t_k**2 + t_1**2))``, which is the
        ordinary L2 of the equivalent centre normalised to the scale of one branch.
        """
        if self.deploy:
            return (self.rbr_reparam.weight ** 2).sum()
        k_dense, k_1x1 = self.rbr_dense.conv.weight, self.rbr_1x1.conv.weight
        centre = self.kernel_size // 2
        dense_centre = k_dense[:, :, centre:centre + 1, centre:centre + 1]

        def bn_gain(bn: nn.Module) -> Tensor:  # t, treated as a constant
            return bn_scale_shift(bn, k_dense.dtype)[0].reshape(-1, 1, 1, 1).detach()

        t_dense, t_1x1 = bn_gain(self.rbr_dense.bn), bn_gain(self.rbr_1x1.bn)
        off_centre = (k_dense ** 2).sum() - (dense_centre ** 2).sum()
        merged_centre = dense_centre * t_dense + k_1x1 * t_1x1
        return off_centre + (merged_centre ** 2 / (t_dense ** 2 + t_1x1 ** 2)).sum()

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel_size}, '
                f's={self.stride}, d={self.dilation}, g={self.groups}, deploy={self.deploy}')
