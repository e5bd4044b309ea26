"""Necks built from re-parameterizable blocks, registered as ``rep_mm.<Name>``."""
from .rep_pafpn import RepPAFPN

__all__ = ['RepPAFPN']
