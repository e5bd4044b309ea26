"""RepMLPNet backbone (https://arxiv.org/abs/2112.11081) for classification and dense prediction.

``conv_embedding`` (patchify conv-BN-ReLU) -> for each stage: ``stages[i]`` (RepMLPNet units:
``x + RepMLPBlock(BN(x))`` then ``x + FFN(BN(x))``) -> ``embeds[i]`` (2x2 stride-2 conv-BN-ReLU)
-> ``head_norm`` on the last stage. Names follow the official code so released checkpoints load
with ``strict=True``. Unlike mmpretrain's RepMLPNet, any input size works whose stage maps are
tiled by the partitions (multiples of ``patch * 2**i * h_i``), so it serves segmentation and
detection; other sizes get an error that lists the sizes that work.
"""
import math
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn
from torch.utils import checkpoint as cp

from ..blocks import ConvBN, RepMLPBlock
from ..blocks.conv_bn import build_batch_norm
from ..registry import MODELS
from .base import ReparamBackbone, validate_arch


class ConvBNReLU(ConvBN):
    """``relu(BN(conv(x)))`` with the official names ``conv``, ``bn``, ``relu``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class FFNBlock(nn.Module):
    """``fc2(GELU(fc1(x)))`` with 1x1 conv-BN layers ``ffn_fc1`` / ``ffn_fc2``."""

    def __init__(self, channels: int, hidden_channels: int,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.ffn_fc1 = ConvBN(channels, hidden_channels, 1, norm_cfg=norm_cfg)
        self.ffn_fc2 = ConvBN(hidden_channels, channels, 1, norm_cfg=norm_cfg)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_fc2(self.act(self.ffn_fc1(x)))


class RepMLPNetUnit(nn.Module):
    """``y = x + RepMLP(prebn1(x)); z = y + FFN(prebn2(y))`` (official names)."""

    def __init__(self, channels: int, h: int, w: int, reparam_conv_k: Sequence[int],
                 globalperceptron_reduce: int, ffn_expand: int = 4, num_sharesets: int = 1,
                 deploy: bool = False, norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.repmlp_block = RepMLPBlock(channels, channels, h, w, reparam_conv_k,
                                        globalperceptron_reduce, num_sharesets, deploy, norm_cfg)
        self.ffn_block = FFNBlock(channels, channels * ffn_expand, norm_cfg)
        self.prebn1 = build_batch_norm(norm_cfg, channels)
        self.prebn2 = build_batch_norm(norm_cfg, channels)

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.repmlp_block(self.prebn1(x))
        return y + self.ffn_block(self.prebn2(y))


def _arch(channels, hs, num_blocks, sharesets_nums, reparam_conv_k=(1, 3)):
    return dict(channels=channels, hs=hs, ws=hs, num_blocks=num_blocks,
                sharesets_nums=sharesets_nums, reparam_conv_k=reparam_conv_k)


@MODELS.register_module()
class RepMLPNet(ReparamBackbone):
    """RepMLPNet with the official archs T224, B224, T256, B256, D256, L256.

    Args:
        arch (str | dict): a name in ``RepMLPNet.arch_settings`` or a dict with ``channels``,
            ``hs``, ``ws`` (partition sizes), ``num_blocks``, ``sharesets_nums`` (one entry per
            stage) and optionally ``reparam_conv_k`` (default (1, 3)).
        in_channels (int): image channels. Default 3.
        patch_size (int | tuple[int, int]): kernel and stride of the patchify stem. Default 4.
        globalperceptron_reduce (int): bottleneck ratio of the global perceptrons. Default 4.
        out_indices (Sequence[int]): stages whose outputs are returned (the last one after
            ``head_norm``). Default (3,).
        frozen_stages (int): freeze the stem and this many stages (with their embeddings).
        norm_eval (bool): BatchNorms in eval mode while training. Default False.
        norm_cfg (dict): BatchNorm config. Default ``dict(type='BN')``.
        with_cp (bool): gradient checkpointing per unit. Default False.
        deploy (bool): build the locality-injected form directly.
        init_cfg (dict | list, optional): mmengine initialisation config.

    Shapes: ``(N, in_channels, H, W)`` -> tuple of ``(N, C_i, H / (p * 2**i), W / (p * 2**i))``;
    ``H`` and ``W`` must be multiples of ``input_size_multiple()``.
    """

    arch_settings = {
        'T224': _arch((64, 128, 256, 512), (56, 28, 14, 7), (2, 2, 6, 2), (1, 4, 16, 128)),
        'B224': _arch((96, 192, 384, 768), (56, 28, 14, 7), (2, 2, 12, 2), (1, 4, 32, 128)),
        'T256': _arch((64, 128, 256, 512), (64, 32, 16, 8), (2, 2, 6, 2), (1, 4, 16, 128)),
        'B256': _arch((96, 192, 384, 768), (64, 32, 16, 8), (2, 2, 12, 2), (1, 4, 32, 128)),
        'D256': _arch((80, 160, 320, 640), (64, 32, 16, 8), (2, 2, 18, 2), (1, 4, 16, 128)),
        'L256': _arch((96, 192, 384, 768), (64, 32, 16, 8), (2, 2, 18, 2), (1, 4, 32, 256)),
    }
    stage_names = ('conv_embedding',)
    required_keys = ('channels', 'hs', 'ws', 'num_blocks', 'sharesets_nums')

    def __init__(self, arch='T224', in_channels: int = 3, patch_size: int = 4,
                 globalperceptron_reduce: int = 4, out_indices: Sequence[int] = (3,),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 norm_cfg: Optional[dict] = None, with_cp: bool = False, deploy: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = validate_arch(arch, self.arch_settings, self.required_keys, 'RepMLPNet')
        num_stages = len(arch['channels'])
        if any(len(arch[key]) != num_stages for key in self.required_keys):
            raise ValueError(f'every arch entry needs one value per stage ({num_stages}); got '
                             + ', '.join(f'{k}={tuple(arch[k])}' for k in self.required_keys))
        patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.arch, self.patch_size = arch, patch_size
        self.out_stage_names = tuple(f'stages.{i}' for i in range(num_stages))
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        self.with_cp = with_cp
        channels = arch['channels']
        self.conv_embedding = ConvBNReLU(in_channels, channels[0], patch_size, stride=patch_size,
                                         norm_cfg=norm_cfg)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                RepMLPNetUnit(channels[i], arch['hs'][i], arch['ws'][i],
                              arch.get('reparam_conv_k', (1, 3)), globalperceptron_reduce,
                              num_sharesets=arch['sharesets_nums'][i], deploy=deploy,
                              norm_cfg=norm_cfg)
                for _ in range(arch['num_blocks'][i]))
            for i in range(num_stages))
        self.embeds = nn.ModuleList(
            ConvBNReLU(channels[i], channels[i + 1], 2, stride=2, norm_cfg=norm_cfg)
            for i in range(num_stages - 1))
        self.head_norm = build_batch_norm(norm_cfg, channels[-1])
        self.out_channels = tuple(channels)
        self._freeze_stages()

    def input_size_multiple(self) -> Tuple[int, int]:
        """Input heights / widths must be multiples of these for every partition to tile."""
        def multiple(sizes, patch):
            return math.lcm(*(patch * 2 ** i * s for i, s in enumerate(sizes)))
        return (multiple(self.arch['hs'], self.patch_size[0]),
                multiple(self.arch['ws'], self.patch_size[1]))

    def _check_input_size(self, height: int, width: int) -> None:
        mult_h, mult_w = self.input_size_multiple()
        if height % mult_h or width % mult_w:
            raise ValueError(
                f'RepMLPNet cannot tile a {height}x{width} input: with patch size '
                f'{self.patch_size[0]}x{self.patch_size[1]} and partitions hs={tuple(self.arch["hs"])}, '
                f'ws={tuple(self.arch["ws"])}, heights must be multiples of {mult_h} and widths '
                f'multiples of {mult_w} (e.g. {mult_h}x{mult_w}, {2 * mult_h}x{2 * mult_w}); '
                'resize or pad the input, or choose partition sizes that divide your maps')

    def _frozen_modules(self):
        yield self.conv_embedding
        for i in range(min(max(self.frozen_stages, 0), len(self.stages))):
            yield self.stages[i]
            if i < len(self.embeds):
                yield self.embeds[i]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        self._check_input_size(*x.shape[-2:])
        x = self.conv_embedding(x)
        outs = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            for unit in stage:
                use_cp = self.with_cp and x.requires_grad
                x = cp.checkpoint(unit, x, use_reentrant=False) if use_cp else unit(x)
            if i in self.out_indices:
                outs.append(self.head_norm(x) if i == last else x)
            if i < last:
                x = self.embeds[i](x)
        return tuple(outs)

    def locality_injection(self) -> None:
        """The official name of :meth:`switch_to_deploy`."""
        self.switch_to_deploy()
