"""Errors of :mod:`rep_mm.quantization`: bad input (exit 2) and a failed run (exit 1)."""

__all__ = ['QuantizationError', 'QuantizationFailed']


class QuantizationError(ValueError):
    """Bad input, found before any output is written: the message says what is wrong and
    what is allowed."""


class QuantizationFailed(RuntimeError):
    """The run itself failed (export check, no int8 kernel in onnxruntime's graph)."""
