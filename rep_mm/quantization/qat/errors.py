"""The error of the QAT flows."""

__all__ = ['QATError']


class QATError(ValueError):
    """Bad input to a QAT flow (wrong model form, wrong checkpoint, nothing to quantize), or an
    exactness check that failed; the message says what is wrong and what is allowed."""
