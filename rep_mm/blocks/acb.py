"""ACNet's asymmetric convolution block: kxk + kx1 + 1xk conv-BN branches, one kxk conv at deploy.

Training-time computation (https://arxiv.org/abs/1908.03930)::

    y = act(BN_sq(conv_kxk(x)) + BN_ver(conv_kx1(x')) + BN_hor(conv_1xk(x'')))

The vertical ``k x 1`` and horizontal ``1 x k`` kernels are the centre column and centre row of
the square kernel's window: their padding is chosen (or, when ``padding < d * (k // 2)``, the
input is cropped) so that every output sees the same pixels. Hence (``fusion.py``)::

    K = fuse_bn(K_sq, BN_sq) + pad(fuse_bn(K_ver, BN_ver), k) + pad(fuse_bn(K_hor, BN_hor), k)
"""
from typing import Optional

from torch import Tensor, nn

from ..fusion import KernelBias, fuse_bn, sum_branches
from ..reparam import ReparamBlock
from .conv_bn import build_batch_norm
from .nonlinear import Nonlinear, build_nonlinear
from ._checks import check_conv_args, check_odd_kernel, check_ratio


class ACBlock(ReparamBlock):
    """Asymmetric convolution block (ACNet), official parameter names.

    Keys: ``square_conv``, ``square_bn``, ``ver_conv``, ``hor_conv``, ``ver_bn``, ``hor_bn``;
    deploy: ``fused_conv`` (with bias). The activation keeps the official argument name
    ``nonlinear`` (it also takes an act_cfg dict).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): odd square kernel size ``k``.
        stride (int): stride of all branches. Default 1.
        padding (int): padding of the square conv (any value >= 0; below
            ``dilation * (k // 2)`` the asymmetric branches crop their input). Default 0.
        dilation (int): dilation of all branches. Default 1.
        groups (int): groups of all branches. Default 1.
        padding_mode (str): as in ``nn.Conv2d``. Default ``'zeros'``.
        deploy (bool): build the fused conv directly. Default False.
        use_affine (bool): affine BatchNorms. Default True.
        reduce_gamma (bool): initialise every BN weight to 1/3 (the sum starts like one BN).
            Default False.
        gamma_init (float, optional): initial value of every BN weight. Default None.
        nonlinear: activation after the sum (``nn.Module``, act_cfg dict, type name, or None).
        norm_cfg (dict): BatchNorm config of the branches. Default ``dict(type='BN')``.
    """

    fused_name = 'fused_conv'
    branch_names = ('square_conv', 'square_bn', 'ver_conv', 'hor_conv', 'ver_bn', 'hor_bn')

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1,
                 padding_mode: str = 'zeros', deploy: bool = False, use_affine: bool = True,
                 reduce_gamma: bool = False, gamma_init: Optional[float] = None,
                 nonlinear: Nonlinear = None, norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        check_conv_args('ACBlock', in_channels, out_channels, kernel_size, stride, dilation, groups,
                        padding)
        if gamma_init is not None:
            check_ratio('ACBlock', 'gamma_init', gamma_init, allow_zero=True)
        # channels % groups and padding >= 0: checked by check_conv_args above
        check_odd_kernel('ACBlock', kernel_size, 'the kx1 and 1xk kernels need a centre')
        if reduce_gamma and gamma_init is not None:
            raise ValueError('give either reduce_gamma=True or gamma_init, not both')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.padding_mode = dilation, groups, padding_mode
        self.deploy = deploy
        self.nonlinear = build_nonlinear(nonlinear)
        if deploy:
            self._init_deploy_form()
            return

        def conv(size, pad):
            return nn.Conv2d(in_channels, out_channels, size, stride, pad, dilation, groups,
                             bias=False, padding_mode=padding_mode)

        def norm():
            bn_cfg = dict(norm_cfg or dict(type='BN'))
            bn_cfg.setdefault('affine', use_affine)
            return build_batch_norm(bn_cfg, out_channels)

        centre = dilation * (kernel_size // 2)
        self.crop = max(centre - padding, 0)
        # the side of the 1-wide kernel is padded as the square conv pads its centre row/column
        side = max(padding - centre, 0)
        self.square_conv = conv(kernel_size, padding)
        self.square_bn = norm()
        self.ver_conv = conv((kernel_size, 1), (padding, side) if not self.crop else (padding, 0))
        self.hor_conv = conv((1, kernel_size), (side, padding) if not self.crop else (0, padding))
        self.ver_bn = norm()
        self.hor_bn = norm()
        if reduce_gamma:
            gamma_init = 1.0 / 3
        if gamma_init is not None:
            for bn in (self.square_bn, self.ver_bn, self.hor_bn):
                if bn.weight is not None:
                    nn.init.constant_(bn.weight, gamma_init)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.nonlinear(self.fused_conv(x))
        square = self.square_bn(self.square_conv(x))
        crop = self.crop
        ver_in = x[:, :, :, crop:-crop] if crop else x
        hor_in = x[:, :, crop:-crop, :] if crop else x
        out = square + self.ver_bn(self.ver_conv(ver_in)) + self.hor_bn(self.hor_conv(hor_in))
        return self.nonlinear(out)

    def _fold_branches(self) -> KernelBias:
        return sum_branches([fuse_bn(self.square_conv.weight, self.square_bn),
                             fuse_bn(self.ver_conv.weight, self.ver_bn),
                             fuse_bn(self.hor_conv.weight, self.hor_bn)], self.kernel_size)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel_size}, '
                f's={self.stride}, p={self.padding}, d={self.dilation}, g={self.groups}, '
                f'deploy={self.deploy}')
