"""Loss operators: the public nt_xent and its backends."""

from fastclr.ops.nt_xent import nt_xent

__all__ = ["nt_xent"]
