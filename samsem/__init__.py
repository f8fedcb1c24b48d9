"""samsem: multi-scale SAM2 segmentation of metal lines in SEM images of delayered ICs."""

import os
from importlib.metadata import PackageNotFoundError, version

# PyTorch and Numba each keep an OpenMP thread team; with the default active wait policy the idle team
# spins while the other works, which on a 2-core machine made the pipeline 5-10x slower. Passive
# waiting fixes it; it must be set before either runtime starts (an explicit user setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("samsem")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
