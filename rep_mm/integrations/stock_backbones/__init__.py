"""Re-param ANY backbone: train a stock model's kxk conv-BN pairs as ACB / DBB / OREPA blocks and
fold them back into the stock layers, so the deploy checkpoint has exactly the stock keys.

Training form (:func:`reparam_backbone`, or ``type='rep_mm.ReparamWrapped'`` in a config): a
forward pass on a small example input finds every BatchNorm whose input is the output of a
``Conv2d`` (hooks, no knowledge of the backbone's code). Each such conv with an odd square
kernel ``k > 1`` is replaced by a re-param block that contains its own BN, and the BN by a
:class:`SwappedNorm` placeholder (identity that forwards ``train()`` / ``eval()`` to the block's
BNs, so the stock ``_freeze_stages`` / ``norm_eval`` logic still reaches them). ``conv_type``:

* ``'acb'``: :class:`~rep_mm.blocks.ACBlock`; ``'dbb'``: :class:`~rep_mm.blocks.DiverseBranchBlock`
  (only ``dilation 1`` and ``padding k // 2``; other convs stay stock and are listed as skipped);
* ``'orepa'``: :class:`~rep_mm.blocks.OREPA` for ``k = 3``, the deep linear stem
  :class:`~rep_mm.blocks.OREPALargeConv` for ``k > 3`` (ResNet's 7x7 stem), as in OREPA's ResNets.

Stock form (:func:`fold_to_stock`, :func:`export_stock_checkpoint`): every block becomes the
original ``Conv2d`` + BatchNorm again. OREPA blocks compute ``BN(conv(x, W))``, so the conv gets
the generated kernel ``W`` and the BN keeps the block's own statistics (bit-for-bit the training
computation). ACB / DBB blocks (and blocks already converted by :func:`rep_mm.reparameterize`)
fold to one ``(K, b)``: the conv gets ``K`` and the BN becomes ``y = x + b`` with
``running_mean = 0``, ``running_var = 1``, ``weight = sqrt(1 + eps)``, ``bias = b``. A stock conv
bias (conv followed by BN) is set to zero. The result loads into the stock toolbox model with
``strict=True`` and needs no rep_mm at all.

Limits: the conv's output must feed only its BN (true for conv-BN pairs in ResNets and mmcv
``ConvModule``); a conv or BN run twice per forward is refused. The stock init (``Kaiming`` on
``Conv2d``) also reaches the blocks' inner convs; DBB's identity-based 1x1 convs are reset to
zero after ``init_weights()``; ``zero_init_residual`` does not reach the block's BN.

Modules (one job each): :mod:`.tracing` (finding the conv-BN pairs), :mod:`.swapping` (the
pairs replaced by blocks), :mod:`.folding` (the blocks folded back, the stock checkpoint),
:mod:`.wrapper` (the registered ``rep_mm.ReparamWrapped`` config entry) and :mod:`.cli`
(``rep-mm fold-stock`` = ``python -m rep_mm.integrations.stock_backbones CONFIG CHECKPOINT OUT``;
imported only by those commands).
"""
from .folding import export_stock_checkpoint, fold_to_stock, stock_state_dict
from .swapping import CONV_TYPES, Swap, SwappedNorm, reparam_backbone
from .tracing import find_conv_bn_pairs
from .wrapper import build_reparam_wrapped

__all__ = ['CONV_TYPES', 'SwappedNorm', 'Swap', 'find_conv_bn_pairs', 'reparam_backbone',
           'build_reparam_wrapped', 'fold_to_stock', 'stock_state_dict',
           'export_stock_checkpoint']
