"""The XDP data plane: the C program, its bcc loader, map layouts and the packet test harness."""

from bpf._kernel_source import KernelHeadersError, ensure_kernel_source

__all__ = ["KernelHeadersError", "ensure_kernel_source"]
