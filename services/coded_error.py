"""Errors named by their code, so an operation that fails with one reports ``error.type`` = the code.

``AudioError("corrupt_audio", ...)`` is an instance of a class ``corrupt_audio`` (a subclass of
``AudioError``, made once per code); it still pickles as ``AudioError(code, message)``.
"""

from __future__ import annotations

import functools
from typing import Any


class CodedError(Exception):
    """Base of the errors raised as a subclass named by their machine-readable ``code``."""

    code: str = "error"

    def __new__(cls, code: str, message: str) -> Any:
        return super().__new__(_coded(_family(cls), code))

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return _family(type(self)), (self.code, self.message)


def _family(cls: type) -> type:
    """The class a coded subclass was made from (the class itself when it is not one)."""
    family: type = cls.__dict__.get("_family", cls)
    return family


@functools.cache
def _coded(base: type, code: str) -> type:
    return type(code, (base,), {"code": code, "__qualname__": code, "_family": base})
