"""Runner hooks of rep_mm, registered in ``rep_mm.registry.HOOKS``."""
from .reparameterize_hook import ReparameterizeHook

__all__ = ['ReparameterizeHook']
