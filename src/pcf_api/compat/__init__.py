"""The only place where pcf-api touches a library's unpublished names.

Each module here wraps what one library does not publish (a private attribute, an ``internal``
module, an undocumented method), says why it is needed, and declares the versions it was tested
on. ``self_check()`` in each module fails loudly at start-up when the installed version is
outside that range or the names are gone, instead of the service misbehaving later.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.specifiers import SpecifierSet


class CompatibilityError(RuntimeError):
    """An installed library is not the one a compatibility module was written for."""


def require_version(distribution: str, supported: str) -> str:
    """The installed version of ``distribution``; CompatibilityError when outside ``supported``."""
    installed = version(distribution)
    if installed not in SpecifierSet(supported):
        raise CompatibilityError(
            f"{distribution} {installed} is installed; pcf-api supports {supported} "
            f"(see {__name__})"
        )
    return installed
