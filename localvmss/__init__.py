"""localvmss: Azure-style virtual machine scale sets on your own Linux hosts."""

__version__ = "0.1.0"
