"""What the build has (OpenMP or not, compiler flags) and what the CPU can run."""

from cython.parallel cimport parallel

cdef extern from "fastconv_omp.h":
    int fc_omp_max_threads() noexcept nogil
    int fc_omp_thread_num() noexcept nogil
    int fc_omp_team_size() noexcept nogil
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


def team_size(int n):
    """How many threads an OpenMP parallel region asked for n threads really runs (1 without
    OpenMP): the tests' proof that a thread count > 1 reaches the kernels as more than one
    thread (the runtime may give fewer, e.g. under OMP_DYNAMIC or a thread limit)."""
    cdef int size = 1
    cdef int* shared_size = &size  # written through a pointer: parallel blocks privatise locals
    with nogil, parallel(num_threads=n):
        if fc_omp_thread_num() == 0:
            shared_size[0] = fc_omp_team_size()
    return size
