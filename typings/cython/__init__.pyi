# What iptraf_mp/core uses of Cython's pure-Python mode, typed for mypy: Cython ships no
# stubs. Interpreted, each C type is the Python type that holds its values.
import builtins
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from . import dataclasses as dataclasses

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

compiled: bool

bint: TypeAlias = builtins.bool
uchar: TypeAlias = builtins.int
int: TypeAlias = builtins.int
uint: TypeAlias = builtins.int
longlong: TypeAlias = builtins.int
ulonglong: TypeAlias = builtins.int
Py_ssize_t: TypeAlias = builtins.int
double: TypeAlias = builtins.float
void: TypeAlias = None
# A C pointer into a buffer; interpreted, the buffer itself (bytes, bytearray, mmap or
# memoryview: no one Python type reads and writes them all)
p_uchar: TypeAlias = Any
p_double: TypeAlias = Any
p_ulonglong: TypeAlias = Any

def declare(t: Any, value: _T = ...) -> _T: ...
def cast(t: Any, value: Any) -> Any: ...
def address(value: Any) -> Any: ...
def cfunc(f: _F) -> _F: ...
def ccall(f: _F) -> _F: ...
def inline(f: _F) -> _F: ...
def cclass(c: _T) -> _T: ...
def no_gc(c: _T) -> _T: ...
# `except value` (check=False) or `except? value`; with no value and check=False: noexcept
def exceptval(value: Any = ..., *, check: builtins.bool = ...) -> Callable[[_F], _F]: ...
