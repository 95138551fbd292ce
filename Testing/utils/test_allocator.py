"""The hypersort process keeps the memory it frees (glibc's mallopt), unless the user chose otherwise."""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import pytest

from HyperSORTLib.utils.allocator import keep_freed_memory

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_the_allocator_settings_apply_on_glibc(monkeypatch):
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    assert keep_freed_memory()

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = Mallinfo2
    mapped = libc.mallinfo2().hblkhd
    block = libc.malloc(20 << 20)  # glibc's default would map a block this size, and unmap it on free
    try:
        assert block
        assert libc.mallinfo2().hblkhd - mapped < 20 << 20  # taken from the heap instead
    finally:
        libc.free(block)


def test_a_user_malloc_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert not keep_freed_memory()
