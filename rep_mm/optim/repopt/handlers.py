"""RepOptimizer handlers: searched scales -> (a) re-initialisation, (b) grad-mult map.

For a CSLA block ``W' = s_conv * W + pad(s_1x1 * K1) [+ s_id * I]`` (``blocks/csla.py``):

* rule of initialisation: the target kernel starts at ``W'`` computed from its own random
  init ``W`` and a random 1x1 kernel ``K1`` (``nn.Conv2d``'s default init,
  :func:`conv_default_weight`);
* grad mults (``p = 2`` for SGD, ``p = 1`` for AdamW): ``s_conv^p`` on every tap,
  ``+ s_1x1^p`` on the centre tap, ``+ 1`` on the identity's diagonal centre (the contribution of
  the trainable identity scale of the CSLA form).

RepOpt-GhostNet is the depthwise case: ``W' = s * W + f * I`` and mults ``s^p + 1`` (centre).
Both are :func:`rep_mm.fusion.csla_kernel`. The map is keyed by ``nn.Parameter``
identity, which survives ``load_state_dict`` (it copies in place), so a map built before the
Runner loads or resumes a checkpoint stays valid.
"""
import math
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from ...blocks.csla import RepOptGhostModule, RepOptVGGBlock
from ...fusion import csla_kernel
from .scales import ScalesError, ScalesSource, load_scales, match_scales

__all__ = ['UPDATE_RULE_POWERS', 'RepOptHandler', 'RepOptVGGHandler', 'RepOptGhostNetHandler',
           'build_handler', 'conv_default_weight']

UPDATE_RULE_POWERS = {'sgd': 2, 'adamw': 1}
GradMultMap = Dict[nn.Parameter, Tensor]


def conv_default_weight(shape: Tuple[int, ...],
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """A float32 CPU conv weight of ``shape`` drawn as ``nn.Conv2d.reset_parameters`` draws it
    (``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), from
    ``generator`` (default: torch's global generator)."""
    weight = torch.empty(shape, dtype=torch.float32)
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)


def _find_backbone(model: nn.Module, types: Tuple[type, ...]) -> nn.Module:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
    names = [t.__name__ for t in types]
    if not found:
        raise ScalesError(f'no {" / ".join(names)} found in {type(model).__name__}: RepOptimizer '
                          f'scales drive only these backbones')
    if len(found) > 1:
        raise ScalesError(f'{len(found)} {" / ".join(names)} modules found '
                          f'({[n or "<root>" for n, _ in found]}); pass the one to handle')
    return found[0][1]


class RepOptHandler:
    """Scales of one target-form backbone inside ``model`` (matched BY NAME, checked).

    Args:
        model (nn.Module): a model containing exactly one backbone of ``backbone_types``
            (the backbone itself, an mm classifier, a DDP wrapper ...), in ``mode='target'``.
        scales (str | dict): a scales file or dict (``rep_mm.optim.repopt.scales``).
        use_identity_scales_for_reinit (bool): add ``s_id * I`` when re-initialising (the
            official default). Default True.

    Raises:
        ScalesError: no / several backbones, a non-target backbone, or scales that miss keys,
            have extra keys or wrong shapes.
    """

    backbone_types: Tuple[Type[nn.Module], ...] = ()
    block_type: Type[nn.Module] = nn.Module
    needs_kernel_1x1 = False  # the re-init draws a 1x1 kernel (VGG) or not (GhostNet)
    _kernel_suffix = ''       # name of the target kernel inside a block

    def __init__(self, model: nn.Module, scales: ScalesSource,
                 use_identity_scales_for_reinit: bool = True) -> None:
        self.backbone = _find_backbone(model, self.backbone_types)
        if getattr(self.backbone, 'mode', 'target') != 'target' or \
                getattr(self.backbone, 'deploy', False):
            raise ScalesError(f'RepOptimizer trains the target form: build '
                              f'{type(self.backbone).__name__} with mode="target" (got '
                              f'mode={self.backbone.mode!r}, deploy={self.backbone.deploy})')
        self.blocks = OrderedDict((name, m) for name, m in self.backbone.named_modules()
                                  if isinstance(m, self.block_type))
        expected = OrderedDict()
        for name, block in self.blocks.items():
            for scale in block.scale_names():
                expected[f'{name}.{scale}'] = torch.Size([block.out_channels])
        self.scales = match_scales(load_scales(scales), expected)
        self.use_identity_scales_for_reinit = use_identity_scales_for_reinit

    def block_scales(self, name: str) -> Tuple[Tensor, ...]:
        """The scales of block ``name`` in the order of its ``scale_names()``."""
        return tuple(self.scales[f'{name}.{s}'] for s in self.blocks[name].scale_names())

    @staticmethod
    def kernel_param(block: nn.Module) -> nn.Parameter:
        """The target kernel that the block's scales act on."""
        raise NotImplementedError

    def _reparam_kernel(self, block: nn.Module, kernel: Tensor, scales: Tuple[Tensor, ...],
                        identity: Optional[Tensor], kernel_1x1: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def grad_mults(self, update_rule: str = 'sgd') -> GradMultMap:
        """``{target kernel Parameter: mult}`` on the parameter's device, float32 or wider."""
        if update_rule not in UPDATE_RULE_POWERS:
            raise ValueError(f'update_rule must be one of {list(UPDATE_RULE_POWERS)}, '
                             f'got {update_rule!r}')
        power = UPDATE_RULE_POWERS[update_rule]
        mults: GradMultMap = {}
        for name, block in self.blocks.items():
            param = self.kernel_param(block)
            dtype = torch.promote_types(param.dtype, torch.float32)
            scales = tuple(s.to(param.device, dtype) ** power for s in self.block_scales(name))
            ones = torch.ones(param.shape, dtype=dtype, device=param.device)
            identity = torch.ones(param.shape[0], dtype=dtype, device=param.device)
            mults[param] = self._reparam_kernel(block, ones, scales, identity, 'ones')
        return mults

    @torch.no_grad()
    def reinitialize(self, generator: Optional[torch.Generator] = None,
                     kernels_1x1: Optional[Mapping[str, Tensor]] = None) -> None:
        """Overwrite every target kernel with its CSLA equivalent (rule of initialisation).

        Args:
            generator: draws the random 1x1 kernels (:func:`conv_default_weight`, the
                default init of ``nn.Conv2d``). Default: torch's global generator.
            kernels_1x1: given 1x1 kernels keyed by the target kernel's name (relative to the
                backbone, e.g. ``stage1.0.conv.weight``), to reproduce a reference exactly.
        """
        for name, block in self.blocks.items():
            param = self.kernel_param(block)
            scales = tuple(s.to(param.device, param.dtype) for s in self.block_scales(name))
            identity = self._identity_scale(scales) if self.use_identity_scales_for_reinit \
                else None
            source = ('random', generator)
            if kernels_1x1 is not None and self.needs_kernel_1x1:
                key = f'{name}.{self._kernel_suffix}'
                if key not in kernels_1x1:
                    raise KeyError(f'kernels_1x1 has no kernel for {key!r}')
                source = kernels_1x1[key].to(param)
            param.copy_(self._reparam_kernel(block, param.detach().clone(), scales, identity,
                                             source))

    @staticmethod
    def _identity_scale(scales: Tuple[Tensor, ...]) -> Optional[Tensor]:
        raise NotImplementedError


class RepOptVGGHandler(RepOptHandler):
    """Handler of RepOpt-VGG: scales ``(scale_conv, scale_1x1[, scale_identity])`` per block."""

    block_type = RepOptVGGBlock
    _kernel_suffix = 'conv.weight'
    needs_kernel_1x1 = True

    def __init__(self, model: nn.Module, scales: ScalesSource, **kwargs) -> None:
        from ...backbones.repopt_vgg import RepOptVGG
        self.backbone_types = (RepOptVGG,)
        super().__init__(model, scales, **kwargs)

    @staticmethod
    def kernel_param(block: RepOptVGGBlock) -> nn.Parameter:
        return block.conv.weight

    @staticmethod
    def _identity_scale(scales):
        return scales[2] if len(scales) == 3 else None

    def _reparam_kernel(self, block, kernel, scales, identity, kernel_1x1):
        if isinstance(kernel_1x1, tuple):  # ('random', generator): nn.Conv2d's default init
            kernel_1x1 = conv_default_weight((kernel.shape[0], kernel.shape[1], 1, 1),
                                             kernel_1x1[1]).to(kernel)
        elif isinstance(kernel_1x1, str):  # 'ones': the grad-mult pattern
            kernel_1x1 = kernel.new_ones((kernel.shape[0], kernel.shape[1], 1, 1))
        identity = identity if block.has_identity else None
        return csla_kernel(kernel, scales[0], kernel_1x1, scales[1], identity)


class RepOptGhostNetHandler(RepOptHandler):
    """Handler of RepOpt-GhostNet: scales ``(fusion_scale, cheap_operation.1)`` per module."""

    block_type = RepOptGhostModule
    _kernel_suffix = 'cheap_operation.0.weight'

    def __init__(self, model: nn.Module, scales: ScalesSource, **kwargs) -> None:
        from ...backbones.repghostnet import RepOptGhostNet
        self.backbone_types = (RepOptGhostNet,)
        super().__init__(model, scales, **kwargs)

    @staticmethod
    def kernel_param(block: RepOptGhostModule) -> nn.Parameter:
        return block.cheap_operation[0].weight

    @staticmethod
    def _identity_scale(scales):
        return scales[0]

    def _reparam_kernel(self, block, kernel, scales, identity, kernel_1x1):
        return csla_kernel(kernel, scales[1], scale_identity=identity, groups=kernel.shape[0])


def build_handler(model: nn.Module, scales: ScalesSource, **kwargs) -> RepOptHandler:
    """The handler for the RepOpt backbone found in ``model`` (VGG or GhostNet)."""
    from ...backbones.repghostnet import RepOptGhostNet
    from ...backbones.repopt_vgg import RepOptVGG
    kinds = [(RepOptVGG, RepOptVGGHandler), (RepOptGhostNet, RepOptGhostNetHandler)]
    present = [handler for cls, handler in kinds
               if any(isinstance(m, cls) for m in model.modules())]
    if len(present) != 1:
        raise ScalesError(f'expected exactly one RepOptVGG or RepOptGhostNet backbone in '
                          f'{type(model).__name__}, found {len(present)} kinds')
    return present[0](model, scales, **kwargs)
