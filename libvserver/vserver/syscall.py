import ctypes, os, errno
_libc = ctypes.CDLL(None, use_errno=True)
def available() -> bool:
    r = _libc.syscall(236, 0, 0, None)
    return r >= 0
