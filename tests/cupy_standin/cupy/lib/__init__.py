"""cupy.lib: only stride_tricks (as_strided)."""
from . import stride_tricks  # noqa: F401
