"""The Linux-VServer backend: a ctypes binding of sys_vserver."""
