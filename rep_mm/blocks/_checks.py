"""Argument checks shared by the blocks: clear errors instead of ZeroDivisionError / odd shapes."""
import math
from typing import Any, Optional

__all__ = ['is_int', 'check_ints', 'check_conv_args', 'check_ratio', 'check_groups_divide',
           'check_divisible_by_groups', 'check_odd_kernel', 'check_centre_padding']


def is_int(value: Any, minimum: int = 1) -> bool:
    """``value`` is an int (not a bool) >= ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_ints(owner: str, minimum: int = 1, **values: Any) -> None:
    """Every keyword value is an int >= ``minimum`` (channel counts, kernel sizes, strides...)."""
    for name, value in values.items():
        if not is_int(value, minimum):
            raise ValueError(f'{owner}: {name} must be an int >= {minimum}, got {value!r}')


def check_conv_args(owner: str, in_channels: Any, out_channels: Any, kernel_size: Any = 1,
                    stride: Any = 1, dilation: Any = 1, groups: Any = 1,
                    padding: Optional[Any] = None) -> None:
    """Channels, kernel, stride, dilation and groups >= 1, padding >= 0, channels % groups."""
    check_ints(owner, 1, in_channels=in_channels, out_channels=out_channels,
               kernel_size=kernel_size, stride=stride, dilation=dilation, groups=groups)
    if padding is not None:
        check_ints(owner, 0, padding=padding)
    check_groups_divide(in_channels, out_channels, groups)


def check_groups_divide(in_channels: int, out_channels: int, groups: int) -> None:
    """``groups`` divides both channel counts."""
    if in_channels % groups or out_channels % groups:
        raise ValueError(f'in_channels ({in_channels}) and out_channels ({out_channels}) must be '
                         f'divisible by groups ({groups})')


def check_divisible_by_groups(name: str, channels: int, groups: int) -> None:
    """``groups`` divides ``channels`` (e.g. the internal channels of a two-stage branch)."""
    if channels % groups:
        raise ValueError(f'{name} ({channels}) must be divisible by groups ({groups})')


def check_odd_kernel(owner: str, kernel_size: int, why: str, minimum: int = 1,
                     name: str = 'kernel_size') -> None:
    """An odd ``kernel_size`` >= ``minimum`` (its branches need a centre). The error reads
    ``<owner>: <name> must be odd[ and >= <minimum>], got <kernel_size>: <why>``."""
    if kernel_size % 2 == 0 or kernel_size < minimum:
        bound = f' and >= {minimum}' if minimum > 1 else ''
        raise ValueError(f'{owner}: {name} must be odd{bound}, got {kernel_size}: {why}')


def check_centre_padding(owner: str, kernel_size: int, padding: Optional[int],
                         dilation: int) -> int:
    """The kxk padding of a kxk + 1x1 (+ identity) block: odd ``kernel_size``, and ``padding``
    (default the centre padding ``dilation * (k // 2)``) not less than the centre padding, so
    that the 1x1 branch (padded by ``padding - centre``) lines up with the kxk centre."""
    check_odd_kernel(owner, kernel_size, 'the 1x1 branch aligns with its centre')
    centre = dilation * (kernel_size // 2)
    padding = centre if padding is None else padding
    if padding < centre:
        raise ValueError(f'{owner}: padding ({padding}) must be at least dilation * '
                         f'(kernel_size // 2) = {centre} so that the 1x1 branch aligns with '
                         f'the centre')
    return padding


def check_ratio(owner: str, name: str, value: Any, allow_zero: bool = False,
                meaning: str = '') -> float:
    """A finite real ``value`` > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        extra = f' ({meaning})' if meaning else ''
        raise ValueError(f'{owner}: {name} must be a finite number '
                         f'{">= 0" if allow_zero else "> 0"}{extra}, got {value!r}')
    return float(value)
