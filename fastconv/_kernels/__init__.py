"""Compiled kernels. Private: they assume validated, contiguous input and never raise."""
