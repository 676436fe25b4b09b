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
