"""Re-parameterizable blocks: each trains with linear branches and folds into one operator."""
from .conv_bn import ConvBN
from .repvgg import RepVGGBlock
from .se import SEBlock

__all__ = ['ConvBN', 'RepVGGBlock', 'SEBlock']
