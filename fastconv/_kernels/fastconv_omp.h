/* OpenMP when the build has it, one thread otherwise (the kernels never include omp.h
 * directly), and what the CPU can run. */
#ifndef FASTCONV_OMP_H
#define FASTCONV_OMP_H
#ifdef _OPENMP
#include <omp.h>
static int fc_omp_max_threads(void) { return omp_get_max_threads(); }
static int fc_omp_thread_num(void) { return omp_get_thread_num(); }
static int fc_omp_team_size(void) { return omp_get_num_threads(); }
#else
static int fc_omp_max_threads(void) { return 1; }
static int fc_omp_thread_num(void) { return 0; }
static int fc_omp_team_size(void) { return 1; }
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
static void fc_keep_off_cpu(const int *allowed, int n, int cpu) {
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
static int fc_current_cpu(void) { return sched_getcpu(); }
static int fc_may_run_on(int cpu) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0 || cpu < 0 || cpu >= CPU_SETSIZE) return -1;
    return CPU_ISSET(cpu, &set) != 0;
}
#else
static void fc_keep_off_cpu(const int *allowed, int n, int cpu) {
    (void)allowed; (void)n; (void)cpu;
}
static int fc_current_cpu(void) { return -1; }
static int fc_may_run_on(int cpu) { (void)cpu; return -1; }
#endif

#ifndef FASTCONV_COMPILE_ARGS
#define FASTCONV_COMPILE_ARGS ""
#endif
#ifndef FASTCONV_OPENMP
#define FASTCONV_OPENMP 0
#endif

/* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
static int fc_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int fc_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return fc_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq");
}
#else
static int fc_cpu_has_avx2(void) { return 0; }
static int fc_cpu_has_avx512(void) { return 0; }
#endif
#endif
