"""What every rep_mm backbone shares: stage freezing, norm_eval, and the deploy protocol."""
import math
from typing import Callable, Optional, Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..blocks._checks import is_int
from ..reparam import reparameterize


class ReparamBackbone(BaseModule):
    """Base of rep_mm backbones.

    Subclasses set ``self.stage_names`` (all stages, stem first, in forward order) and
    ``self.out_stage_names`` (the stages ``out_indices`` select from). Provides:

    * ``switch_to_deploy()``: convert every block (what mmdeploy calls on a backbone);
    * ``frozen_stages``: stem and the first ``frozen_stages`` selectable stages in eval mode with
      ``requires_grad=False``; ``norm_eval``: every BatchNorm in eval mode while training.
    """

    is_reparam_container = True
    stage_names: Tuple[str, ...] = ()
    out_stage_names: Tuple[str, ...] = ()

    def _check_out_indices(self, out_indices: Sequence[int]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        num = len(self.out_stage_names)
        checked = []
        for index in out_indices:
            if not -num <= index < num:
                raise ValueError(f'out_indices entry {index} is out of range: this backbone has '
                                 f'{num} output stages {list(self.out_stage_names)}, '
                                 f'valid indices are 0..{num - 1} (or negative)')
            checked.append(index % num)
        return tuple(checked)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = getattr(self, self.stage_names[0])(x)
        outs = []
        for i, name in enumerate(self.out_stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def custom_l2(self) -> Tensor:
        """Sum of the blocks' ``custom_l2()`` (RepVGGplus's weight decay on fused kernels)."""
        return sum(m.custom_l2() for m in self.modules()
                   if m is not self and callable(getattr(m, 'custom_l2', None)))

    def switch_to_deploy(self) -> None:
        """Fold every re-param block into its deploy operator (idempotent)."""
        reparameterize(self)

    def after_reparameterize(self) -> None:
        self.deploy = True
        if self.frozen_stages >= 0:  # operators built by the conversion stay frozen
            for module in self._frozen_modules():
                for param in module.parameters():
                    param.requires_grad = False

    def _frozen_modules(self):
        stem = self.stage_names[0]
        yield getattr(self, stem)
        for name in self.out_stage_names[:max(self.frozen_stages, 0)]:
            yield getattr(self, name)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ReparamBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


class VGGLayoutBackbone(ReparamBackbone):
    """A stem block ``stage0`` then ``stage1..stage4`` (``nn.Sequential``; the first block of a
    stage strides): RepVGG, OREPA-RepVGG and RepOpt-VGG."""

    stage_names = ('stage0', 'stage1', 'stage2', 'stage3', 'stage4')
    out_stage_names = ('stage1', 'stage2', 'stage3', 'stage4')

    def _add_vgg_stages(self, make_block: Callable[[int, int, int, int, int], nn.Module],
                        in_channels: int, arch: dict, base_channels: Sequence[int],
                        strides: Sequence[int]) -> int:
        """Build the VGG layout ``stage0`` (stem) + ``stage1..stage4`` (``nn.Sequential``).

        The stem has ``min(64, int(64 * w_0))`` channels; stage ``s`` (1..4) has
        ``arch['num_blocks'][s - 1]`` blocks of ``int(base_channels[s - 1] * w_{s-1})``
        channels (``w = arch['width_factor']``), the first with stride ``strides[s]``.
        ``make_block(in_ch, out_ch, stride, stage, layer_index)`` builds one block (stage 0 and
        layer index 0 are the stem; layer indices count blocks in forward order). Sets
        ``self.out_channels`` (widths of stage1..4) and returns the last width.
        """
        channels = min(64, int(64 * arch['width_factor'][0]))
        self.stage0 = make_block(in_channels, channels, strides[0], 0, 0)
        layer_index = 1
        self.out_channels: Tuple[int, ...] = ()
        for stage, name in enumerate(self.out_stage_names):
            width = int(base_channels[stage] * arch['width_factor'][stage])
            blocks = []
            for i in range(arch['num_blocks'][stage]):
                blocks.append(make_block(channels, width, strides[stage + 1] if i == 0 else 1,
                                         stage + 1, layer_index))
                layer_index, channels = layer_index + 1, width
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels += (width,)
        return channels


def check_vgg_layout(arch: dict, strides: Sequence[int], base_channels: Sequence[int],
                     dilations: Optional[Sequence[int]] = None) -> None:
    """Check a stem + 4-stage VGG layout: ``arch['num_blocks']`` (4 positive ints) and
    ``arch['width_factor']`` (4 positive numbers), 5 ``strides`` (and ``dilations`` when
    given), 4 ``base_channels``."""
    for key in ('num_blocks', 'width_factor'):
        if len(arch[key]) != 4:
            raise ValueError(f'arch[{key!r}] must have 4 entries (stage1..4), got {arch[key]}')
    if not all(is_int(n) for n in arch['num_blocks']) or \
            not all(isinstance(w, (int, float)) and not isinstance(w, bool) and
                    math.isfinite(w) and w > 0 for w in arch['width_factor']):
        raise ValueError(f"arch['num_blocks'] must be positive ints and arch['width_factor'] "
                         f"positive numbers; got num_blocks={list(arch['num_blocks'])}, "
                         f"width_factor={list(arch['width_factor'])}")
    if dilations is None:
        if len(strides) != 5 or len(base_channels) != 4:
            raise ValueError(f'strides needs 5 entries (stem + 4 stages) and base_channels 4; '
                             f'got strides={tuple(strides)}, '
                             f'base_channels={tuple(base_channels)}')
    elif len(strides) != 5 or len(dilations) != 5 or len(base_channels) != 4:
        raise ValueError(f'strides and dilations need 5 entries (stem + 4 stages) and '
                         f'base_channels 4; got strides={tuple(strides)}, '
                         f'dilations={tuple(dilations)}, base_channels={tuple(base_channels)}')
    for name, values in (('strides', strides), ('dilations', dilations or ()),
                         ('base_channels', base_channels)):
        if not all(is_int(v) for v in values):
            raise ValueError(f'{name} must be ints >= 1, got {tuple(values)}')
    widths = [min(64, int(64 * arch['width_factor'][0]))] + [
        int(c * w) for c, w in zip(base_channels, arch['width_factor'])]
    if min(widths) < 1:
        raise ValueError(f"arch['width_factor']={list(arch['width_factor'])} gives "
                         f"{widths} channels for stage0..4 (int(base * width_factor), "
                         f"base_channels={tuple(base_channels)}, stem 64): every stage needs at "
                         f"least 1 channel; raise the width factors")


def validate_arch(arch, arch_settings: dict, required_keys: Sequence[str], family: str) -> dict:
    """Resolve ``arch`` (a name in ``arch_settings`` or a dict) into a checked dict."""
    if isinstance(arch, str):
        if arch not in arch_settings:
            raise KeyError(f'unknown {family} arch {arch!r}; choose one of '
                           f'{sorted(arch_settings)} or pass a dict with keys {list(required_keys)}')
        return dict(arch_settings[arch])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
    missing = [key for key in required_keys if key not in arch]
    if missing:
        raise KeyError(f'custom {family} arch is missing keys {missing}; required keys are '
                       f'{list(required_keys)}')
    return dict(arch)

