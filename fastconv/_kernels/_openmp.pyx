"""What the build has (OpenMP or not, compiler flags) and what the CPU can run."""

from cython.parallel cimport parallel
from libc.stdlib cimport calloc, malloc, free

from fastconv._kernels._share cimport fc_share, fc_share_next, share_items

cdef extern from "fastconv_omp.h":
    int fc_omp_max_threads() noexcept nogil
    int fc_omp_thread_num() noexcept nogil
    int fc_omp_team_size() noexcept nogil
    int fc_cpu_has_avx2() noexcept nogil
    int fc_cpu_has_avx512() noexcept nogil
    void fc_keep_off_cpu(const int* allowed, int n, int cpu) noexcept nogil
    int fc_current_cpu() noexcept nogil
    int fc_may_run_on(int cpu) noexcept nogil
    void fc_note_done(int* done) noexcept nogil
    void fc_wait_for(const int* done, int count, double ms) noexcept nogil
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


def shared_items(Py_ssize_t n, int num_threads, int late_thread=-1, double late_ms=0):
    """Which thread of a region of num_threads threads computed each of the items [0, n),
    shared out as the kernels share theirs (fastconv_omp.h's fc_share): -1 for an item no
    thread computed, -2 for one computed more than once. Thread `late_thread` starts only
    once the others have run out of items, or after late_ms milliseconds (as if the OS had
    descheduled it). The tests' view of the work sharing."""
    if n < 0 or num_threads < 1:
        raise ValueError(f"shared_items: expected n >= 0 and num_threads >= 1, but got n={n}, "
                         f"num_threads={num_threads}")
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0, item
    cdef int done = 0, team = 1, t, me = 0
    cdef int* done_ptr = &done
    cdef int* team_ptr = &team
    # each thread counts the items it computed in its own row: no two threads write a count
    cdef int* counts = <int*> calloc(max(n * num_threads, 1), sizeof(int))
    if counts == NULL or share_items(&share, n, num_threads):
        free(counts)
        raise MemoryError()
    with nogil, parallel(num_threads=num_threads):
        me = fc_omp_thread_num()
        if me == 0:
            team_ptr[0] = fc_omp_team_size()
        if me == late_thread:
            fc_wait_for(done_ptr, fc_omp_team_size() - 1, late_ms)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for item in range(share_first, share_end):
                counts[me * n + item] += 1
        if me != late_thread:
            fc_note_done(done_ptr)
    result = []
    for item in range(n):
        times = [counts[t * n + item] for t in range(team)]
        result.append(times.index(1) if sum(times) == 1 else -1 if not any(times) else -2)
    free(counts)
    free(share.taken)
    return result
