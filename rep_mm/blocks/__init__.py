"""Re-parameterizable blocks: each trains with linear branches and folds into one operator."""
from .conv_bn import ConvBN
from .repmlp import GlobalPerceptron, RepMLPBlock
from .repvgg import RepVGGBlock
from .se import SEBlock

__all__ = ['ConvBN', 'GlobalPerceptron', 'RepMLPBlock', 'RepVGGBlock', 'SEBlock']
