"""The compression methods, registered by name (:mod:`nash_core.methods.base` says how).

    from nash_core.methods import get_method
    get_method("nash").plan_masks(...)

Adding a method: a config class for its arm options in nash_core/config.py (a member of the
``ArmConfig`` union, ``method: Literal["<name>"]``), a module here with a
:class:`~nash_core.methods.base.PruningMethod` subclass decorated with ``@register``, and its
import below. Nothing else branches on a method's name.
"""

from __future__ import annotations

from nash_core.methods import cofi, magnitude, nash, sft  # noqa: F401  (they register)
from nash_core.methods.base import METHODS, PruningMethod, Student, register

__all__ = ["METHODS", "PruningMethod", "Student", "get_method", "register"]


def get_method(name: str) -> PruningMethod:
    """The registered method ``name`` (a ValueError naming the registered ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown compression method {name!r}; registered: {', '.join(METHODS)}"
        ) from None
