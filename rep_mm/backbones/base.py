"""What every rep_mm backbone shares: stage freezing, norm_eval, and the deploy protocol."""
from typing import Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

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

