"""rescompiler: compile declarative residual-CNN specs to PyTorch and Keras models and sources.

Importing this package imports neither torch nor tensorflow; backends load on first use.
"""

from .api import Spec, build, compile_spec, emit, load_spec, transfer_weights
from .errors import Diagnostic, Location, SpecError
from .registry import BackendError
from .summary import Summary, summarize
from .verifier import Report, verify

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Diagnostic",
    "Location",
    "Report",
    "Spec",
    "SpecError",
    "Summary",
    "build",
    "compile_spec",
    "emit",
    "load_spec",
    "summarize",
    "transfer_weights",
    "verify",
]
