"""samsem: multi-scale SAM2 segmentation of metal lines in SEM images of delayered ICs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("samsem")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
