"""What the build has (OpenMP or not, compiler flags) and what the CPU can run."""

from cython.parallel cimport parallel
from libc.stdlib cimport calloc, malloc, free

cdef extern from "fastconv_omp.h":
    int fc_omp_max_threads() noexcept nogil
    int fc_omp_thread_num() noexcept nogil
    int fc_omp_team_size() noexcept nogil
    int fc_cpu_has_avx2() noexcept nogil
    int fc_cpu_has_avx512() noexcept nogil
    void fc_keep_off_cpu(const int* allowed, int n, int cpu) noexcept nogil
    int fc_current_cpu() noexcept nogil
    int fc_may_run_on(int cpu) noexcept nogil
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


def current_cpu():
    """The CPU the calling thread runs on (-1 where the OS does not say)."""
    return fc_current_cpu()


def keep_workers_off(allowed, int cpu, int n):
    """In a region of n threads, restrict each worker (thread > 0) to the CPUs of `allowed`
    (ints) but `cpu` (fastconv_omp.h says why); nothing where the OS or the build cannot."""
    cpus_list = [int(c) for c in allowed]  # converted first: nothing to free if one fails
    cdef Py_ssize_t count = len(cpus_list), i
    cdef int* cpus = <int*> malloc(max(count, 1) * sizeof(int))
    if cpus == NULL:
        raise MemoryError()
    for i in range(count):
        cpus[i] = cpus_list[i]
    with nogil, parallel(num_threads=n):
        fc_keep_off_cpu(cpus, <int> count, cpu)
    free(cpus)


def workers_may_run_on(int cpu, int n):
    """For each thread of a region of n threads (thread 0 first): whether it may run on
    `cpu` (None where the OS does not say)."""
    cdef int* seen = <int*> malloc(max(n, 1) * sizeof(int))
    cdef int i
    if seen == NULL:
        raise MemoryError()
    for i in range(n):
        seen[i] = -2
    with nogil, parallel(num_threads=n):
        seen[fc_omp_thread_num()] = fc_may_run_on(cpu)
    result = [None if seen[i] == -1 else bool(seen[i]) for i in range(n) if seen[i] != -2]
    free(seen)
    return result
