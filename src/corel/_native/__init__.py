"""corel's C kernels (``kernels.c``, compiled as ``_ext``) and their one Python caller, ``_kernels``."""
