"""Re-parameterizable blocks: each trains with linear branches and folds into one operator."""
from .acb import ACBlock
from .conv_bn import ConvBN
from .csla import RepOptGhostModule, RepOptVGGBlock, ScaleLayer
from .dbb import BNAndPadLayer, DiverseBranchBlock, IdentityBasedConv1x1
from .orepa import OREPA, OREPAWeightGenerator
from .orepa_large import OREPA1x1, OREPALargeConv
from .orepa_repvgg import OREPA3x3RepVGG, OREPARepVGGBlock
from .repghost import GhostSqueezeExcite, RepGhostBottleneck, RepGhostModule
from .repmlp import GlobalPerceptron, RepMLPBlock
from .repvgg import RepVGGBlock
from .se import SEBlock

__all__ = ['ConvBN', 'GlobalPerceptron', 'RepMLPBlock', 'RepVGGBlock', 'SEBlock',
           'ACBlock', 'BNAndPadLayer', 'DiverseBranchBlock', 'IdentityBasedConv1x1',
           'OREPA', 'OREPAWeightGenerator', 'OREPA1x1', 'OREPALargeConv', 'OREPA3x3RepVGG',
           'OREPARepVGGBlock',
           'RepOptGhostModule', 'RepOptVGGBlock', 'ScaleLayer', 'GhostSqueezeExcite',
           'RepGhostBottleneck', 'RepGhostModule']
