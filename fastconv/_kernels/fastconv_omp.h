/* OpenMP when the build has it, one thread otherwise (the kernels never include omp.h
 * directly), and what the CPU can run. */
#ifndef FASTCONV_OMP_H
#define FASTCONV_OMP_H
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
static inline int fc_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int fc_omp_thread_num(void) { return omp_get_thread_num(); }
static inline int fc_omp_team_size(void) { return omp_get_num_threads(); }
#else
static inline int fc_omp_max_threads(void) { return 1; }
static inline int fc_omp_thread_num(void) { return 0; }
static inline int fc_omp_team_size(void) { return 1; }
#endif
/* Keeping an OpenMP team's workers off the CPU its master thread runs on. On a virtual
 * machine whose idle vCPUs the host has descheduled, Linux wakes a sleeping worker on the
 * waking thread's own CPU (an idle vCPU counts as taken when its host thread is not
 * running); master and worker then take turns on one CPU, each barrier waiting a
 * scheduler tick (measured: the first two empty parallel regions after 50 ms idle took
 * 5.8 and 4.1 ms instead of a few us). A worker that may not run there is woken on
 * another CPU. fc_keep_off_cpu, called by every thread of a region: each worker (thread
 * > 0) may run on the CPUs of `allowed` but `cpu` (when that leaves any).
 * fc_current_cpu: the calling thread's CPU (-1 where unknown). */
#if defined(__linux__) && defined(_OPENMP)
#include <sched.h>
static inline void fc_keep_off_cpu(const int *allowed, int n, int cpu) {
    cpu_set_t set;
    int count = 0;
    if (omp_get_thread_num() == 0) return;
    CPU_ZERO(&set);
    for (int i = 0; i < n; i++)
        if (allowed[i] != cpu && allowed[i] >= 0 && allowed[i] < CPU_SETSIZE) {
            CPU_SET(allowed[i], &set);
            count++;
        }
    if (count > 0) sched_setaffinity(0, sizeof(set), &set);
}
static inline int fc_current_cpu(void) { return sched_getcpu(); }
static inline int fc_may_run_on(int cpu) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0 || cpu < 0 || cpu >= CPU_SETSIZE) return -1;
    return CPU_ISSET(cpu, &set) != 0;
}
#else
static inline void fc_keep_off_cpu(const int *allowed, int n, int cpu) {
    (void)allowed; (void)n; (void)cpu;
}
static inline int fc_current_cpu(void) { return -1; }
static inline int fc_may_run_on(int cpu) { (void)cpu; return -1; }
#endif

/* Work items [0, n) of a parallel region, shared out as a static schedule would and taken
 * over where a thread falls behind. The items are cut into `chunks` equal runs (in order),
 * each thread of the team owning an equal contiguous run of chunks, which it takes front
 * to back: on an idle machine each thread computes about the contiguous share that
 * schedule(static) would give it, from the same kernel to the next (its caches hold that
 * part of the data), unlike schedule(dynamic) (MobileNetV2 at batch 1 ran 18% slower with
 * it, AMD EPYC Zen 4). A thread done with its own chunks then takes the others' untaken
 * chunks, from their back (whenever it is ahead): when the OS has descheduled a thread
 * (another process on its core), the others finish its share instead of waiting at the
 * region's end for it. Each chunk is taken once (an atomic flag), every item is computed
 * by one thread from start to end, so results do not depend on who takes it. `taken` holds
 * `chunks` zeroed bytes; chunks = FC_CHUNKS_PER_THREAD x the threads asked for (at most n);
 * a smaller team than asked shares them just the same.
 *
 * In each thread of the region: ptrdiff_t cursor = 0, first, end;
 *     while (fc_share_next(&share, &cursor, &first, &end)) for (i = first; i < end; i++) ...
 */
#define FC_CHUNKS_PER_THREAD 8
typedef struct {
    ptrdiff_t n, chunks;
    unsigned char *taken;
} fc_share;

static inline ptrdiff_t fc_share_chunks(ptrdiff_t n, int threads) {
    ptrdiff_t chunks = (ptrdiff_t)FC_CHUNKS_PER_THREAD * (threads > 1 ? threads : 1);
    return n < chunks ? n : chunks;
}

/* The first item of chunk c (c = chunks: n): c * n / chunks without its overflow. */
static inline ptrdiff_t fc_share_bound(const fc_share *share, ptrdiff_t c) {
    return share->n / share->chunks * c + share->n % share->chunks * c / share->chunks;
}

/* Whether the caller set *flag (0 before): one of the threads asking gets it. */
static inline int fc_take(unsigned char *flag) {
#if defined(__GNUC__) || defined(__clang__)
    return !__atomic_load_n(flag, __ATOMIC_RELAXED) && !__atomic_exchange_n(flag, 1, __ATOMIC_ACQ_REL);
#else
    int won = 0;
#pragma omp critical(fc_share)
    {
        if (!*flag) { *flag = 1; won = 1; }
    }
    return won;
#endif
}

/* The `cursor`-th chunk the calling thread tries: its own chunks front to back, then the
 * others' from the last chunk down; 0 once it has tried them all, else 1 with
 * [*first, *end) taken for it. Thread t owns chunks [t*chunks/team, (t+1)*chunks/team). */
static inline int fc_share_next(fc_share *share, ptrdiff_t *cursor, ptrdiff_t *first, ptrdiff_t *end) {
    const ptrdiff_t chunks = share->chunks;
    const int team = fc_omp_team_size(), me = fc_omp_thread_num();
    const ptrdiff_t own_first = me * chunks / team, own_end = (me + 1) * chunks / team;
    while (*cursor < chunks) {
        const ptrdiff_t j = (*cursor)++, k = j - (own_end - own_first);
        const ptrdiff_t chunk = k < 0 ? own_first + j                       /* own */
                              : k < chunks - own_end ? chunks - 1 - k         /* after own */
                              : own_first - 1 - (k - (chunks - own_end));     /* before own */
        if (!fc_take(&share->taken[chunk])) continue;
        *first = fc_share_bound(share, chunk);
        *end = fc_share_bound(share, chunk + 1);
        return 1;
    }
    return 0;
}

/* The tests' stand-in for a thread the OS has descheduled: fc_wait_for spins until *done
 * reaches `count` (each other thread's fc_note_done once its work is over) or `ms`
 * milliseconds pass. */
static inline void fc_note_done(int *done) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_fetch_add(done, 1, __ATOMIC_RELEASE);
#else
#pragma omp atomic
    (*done)++;
#endif
}
static inline void fc_wait_for(const int *done, int count, double ms) {
#ifdef _OPENMP
    const double until = omp_get_wtime() + ms / 1000;
    for (;;) {
#if defined(__GNUC__) || defined(__clang__)
        if (__atomic_load_n(done, __ATOMIC_ACQUIRE) >= count) return;
#else
        int seen;
#pragma omp atomic read
        seen = *done;
        if (seen >= count) return;
#endif
        if (omp_get_wtime() >= until) return;
    }
#else
    (void)done; (void)count; (void)ms;
#endif
}

#ifndef FASTCONV_COMPILE_ARGS
#define FASTCONV_COMPILE_ARGS ""
#endif
#ifndef FASTCONV_OPENMP
#define FASTCONV_OPENMP 0
#endif

/* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
static inline int fc_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static inline int fc_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return fc_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq");
}
#else
static inline int fc_cpu_has_avx2(void) { return 0; }
static inline int fc_cpu_has_avx512(void) { return 0; }
#endif
#endif
