"""pcf-api: a GraphQL notes service built to be run on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pcf-api")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree without install
    __version__ = "0.0.0+unknown"
