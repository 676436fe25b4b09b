"""What the build has (OpenMP or not, compiler flags) and what the CPU can run."""

cdef extern from "fastconv_omp.h":
    int fc_omp_max_threads() noexcept nogil
    int fc_cpu_has_avx2() noexcept nogil
    int fc_cpu_has_avx512() noexcept nogil
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


def cpu_instruction_sets():
    """The instruction sets of fastconv's kernel variants that this CPU (and OS) can run."""
    sets = ["baseline"]
    if fc_cpu_has_avx2():
        sets.append("avx2")
    if fc_cpu_has_avx512():
        sets.append("avx512")
    return sets
