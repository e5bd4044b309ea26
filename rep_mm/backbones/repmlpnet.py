"""RepMLPNet backbone (https://arxiv.org/abs/2112.11081) for classification and dense prediction.

``conv_embedding`` (patchify conv-BN-ReLU) -> for each stage: ``stages[i]`` (RepMLPNet units:
``x + RepMLPBlock(BN(x))`` then ``x + FFN(BN(x))``) -> ``embeds[i]`` (2x2 stride-2 conv-BN-ReLU)
-> ``head_norm`` on the last stage. Names follow the official code so released checkpoints load
with ``strict=True``. Unlike mmpretrain's RepMLPNet, every input size works that the network
itself tiles, so it serves segmentation and detection: the stage maps are computed with the
convs' own arithmetic (stem ``floor(H / p)``, each embedding ``floor(H_i / 2)``, so odd sizes
round down as in the original code) and each must be a positive multiple of its partition
size. Other sizes get an error naming the first stage that fails and sizes that work.
"""
import math
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn
from torch.utils import checkpoint as cp

from ..blocks import ConvBN, RepMLPBlock
from ..blocks._checks import is_int
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


def _stage_lengths(length: int, patch: int, num_stages: int) -> List[int]:
    """One side of every stage map: ``floor(L / patch)`` after the stem, then halved (floor)."""
    lengths = [(length - patch) // patch + 1 if length >= patch else 0]
    for _ in range(num_stages - 1):
        lengths.append((lengths[-1] - 2) // 2 + 1 if lengths[-1] >= 2 else 0)
    return lengths


def _first_untiled(length: int, patch: int, parts: Sequence[int]) -> Optional[int]:
    """Index of the first stage whose side is not a positive multiple of its partition."""
    for i, (side, part) in enumerate(zip(_stage_lengths(length, patch, len(parts)), parts)):
        if side < part or side % part:
            return i
    return None


def _positive_ints(values) -> bool:
    return all(is_int(v) for v in values)


def check_arch_values(arch: dict, patch_size: Tuple[int, ...], in_channels: int,
                      globalperceptron_reduce: int) -> None:
    """Reject arch values that would divide by zero or build nothing, naming the key and stage.

    ``channels``, ``hs``, ``ws``, ``num_blocks``, ``sharesets_nums``, the patch size,
    ``in_channels`` and ``globalperceptron_reduce`` must be positive ints; ``channels[i]`` must
    be divisible by ``sharesets_nums[i]`` and at least ``globalperceptron_reduce``;
    ``reparam_conv_k`` holds positive odd ints.
    """
    for key in ('channels', 'hs', 'ws', 'num_blocks', 'sharesets_nums'):
        if not _positive_ints(arch[key]):
            raise ValueError(f'RepMLPNet arch[{key!r}] must hold positive ints (one per stage), '
                             f'got {tuple(arch[key])}')
    if len(patch_size) != 2 or not _positive_ints(patch_size):
        raise ValueError(f'patch_size must be a positive int or a pair of them, got '
                         f'{tuple(patch_size)}')
    if not _positive_ints([in_channels]):
        raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
    if not _positive_ints([globalperceptron_reduce]):
        raise ValueError(f'globalperceptron_reduce must be a positive int (the bottleneck ratio '
                         f'of the global perceptrons), got {globalperceptron_reduce!r}')
    for i, (channels, sharesets) in enumerate(zip(arch['channels'], arch['sharesets_nums'])):
        if channels % sharesets:
            raise ValueError(f'RepMLPNet stage {i}: channels ({channels}) must be divisible by '
                             f'sharesets_nums ({sharesets})')
        if channels < globalperceptron_reduce:
            raise ValueError(f'RepMLPNet stage {i}: channels ({channels}) // '
                             f'globalperceptron_reduce ({globalperceptron_reduce}) leaves no '
                             f'channel in the global perceptron; use at least '
                             f'{globalperceptron_reduce} channels or a smaller reduce ratio')
    kernels = tuple(arch.get('reparam_conv_k') or ())
    if not _positive_ints(kernels) or any(k % 2 == 0 for k in kernels):
        raise ValueError(f"RepMLPNet arch['reparam_conv_k'] must hold positive odd ints (the "
                         f"local-perceptron kernels), got {kernels}")


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

    Shapes: ``(N, in_channels, H, W)`` -> tuple of ``(N, C_i, H_i, W_i)`` (``out_indices``) with
    ``H_0 = floor(H / p_h)`` (the stem) and ``H_{i+1} = floor(H_i / 2)`` (the embeddings), the
    same for ``W``; every ``H_i`` must be a positive multiple of ``hs[i]`` and every ``W_i`` of
    ``ws[i]`` (:meth:`stage_sizes`, :meth:`valid_input_sizes`). All multiples of
    :meth:`input_size_multiple` work; so do some other sizes (e.g. a 3-stage arch with
    ``hs = (5, 5, 2)`` and patch 4 tiles 40: maps 10, 5, 2).

    Raises:
        ValueError: at construction, for arch values that make no sense (partition sizes,
            share-sets, widths, block counts or ``globalperceptron_reduce`` below 1, channels
            not divisible by the share-sets, even local-conv kernels); in ``forward``, for an
            input size whose stage maps the partitions do not tile.
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
        check_arch_values(arch, patch_size, in_channels, globalperceptron_reduce)
        self.arch, self.patch_size = arch, patch_size
        self.out_stage_names = tuple(f'stages.{i}' for i in range(num_stages))
        self.out_indices = self._check_out_indices(out_indices)
        self.frozen_stages, self.norm_eval, self.deploy = frozen_stages, norm_eval, deploy
        self.with_cp = with_cp
        channels = arch['channels']
        # a square patch as an int (ConvBN checks int kernel sizes), a non-square one as a pair
        patch = patch_size[0] if patch_size[0] == patch_size[1] else patch_size
        self.conv_embedding = ConvBNReLU(in_channels, channels[0], patch, stride=patch,
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
        """``(m_h, m_w)``: every multiple of these tiles (``lcm_i(p * 2**i * h_i)``); a sufficient
        condition only: :meth:`valid_input_sizes` lists every size that works."""
        def multiple(sizes, patch):
            return math.lcm(*(patch * 2 ** i * s for i, s in enumerate(sizes)))
        return (multiple(self.arch['hs'], self.patch_size[0]),
                multiple(self.arch['ws'], self.patch_size[1]))

    def stage_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """The ``(H_i, W_i)`` map of every stage for an ``height x width`` input, by the convs'
        arithmetic: the stem (kernel = stride = patch, no padding) gives ``floor(H / p)``
        (0 if ``H < p``), each 2x2 stride-2 embedding ``floor(H_i / 2)``."""
        return list(zip(_stage_lengths(height, self.patch_size[0], len(self.stages)),
                        _stage_lengths(width, self.patch_size[1], len(self.stages))))

    def valid_input_sizes(self, limit: int, axis: int = 0) -> List[int]:
        """Every input height (``axis=0``) or width (``axis=1``) up to ``limit`` that tiles."""
        parts = self.arch['hs'] if axis == 0 else self.arch['ws']
        return [n for n in range(1, limit + 1)
                if _first_untiled(n, self.patch_size[axis], parts) is None]

    def _sizes_near(self, size: int, axis: int, count: int = 5) -> List[int]:
        """``count`` sizes that tile along ``axis``, the nearest to ``size`` first (ascending)."""
        step = self.input_size_multiple()[axis]
        # holds at least two multiples of ``step`` (capped: this runs only on the error path)
        limit = min(max(size, step) + 2 * step, 200_000)
        valid = self.valid_input_sizes(limit, axis)
        return sorted(sorted(valid, key=lambda n: (abs(n - size), n))[:count])

    def _check_input_size(self, height: int, width: int) -> None:
        """Raise if the partitions do not tile some stage map of an ``height x width`` input."""
        failed_h = _first_untiled(height, self.patch_size[0], self.arch['hs'])
        failed_w = _first_untiled(width, self.patch_size[1], self.arch['ws'])
        if failed_h is None and failed_w is None:
            return
        stage = min(i for i in (failed_h, failed_w) if i is not None)
        map_h, map_w = self.stage_sizes(height, width)[stage]
        part_h, part_w = self.arch['hs'][stage], self.arch['ws'][stage]
        how = (f'stem /{self.patch_size[0]}x{self.patch_size[1]}' +
               (f' and {stage} stride-2 embedding(s)' if stage else ''))
        mult_h, mult_w = self.input_size_multiple()
        raise ValueError(
            f'RepMLPNet cannot tile a {height}x{width} input: stage {stage} gets a '
            f'{map_h}x{map_w} map ({how}, rounding down), which its {part_h}x{part_w} partitions '
            f'do not tile (each side must be a positive multiple of the partition). Heights '
            f'that work: {self._sizes_near(height, 0)}; widths that work: '
            f'{self._sizes_near(width, 1)}; all multiples of {mult_h} (height) and of {mult_w} '
            f'(width) work. Resize or pad the input, or choose partition sizes that divide '
            f'your maps')

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
