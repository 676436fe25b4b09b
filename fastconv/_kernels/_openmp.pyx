"""What the build has: OpenMP or not, and the flags it was compiled with."""

cdef extern from "fastconv_omp.h":
    int fc_omp_max_threads() noexcept nogil
    int FASTCONV_OPENMP
    const char* FASTCONV_COMPILE_ARGS


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP)


def max_threads():
    """OpenMP's current default thread count (honours OMP_NUM_THREADS and threadpoolctl)."""
    return fc_omp_max_threads()


def compile_args():
    """The compiler flags the kernels were built with."""
    return FASTCONV_COMPILE_ARGS.decode()
