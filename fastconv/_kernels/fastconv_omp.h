/* OpenMP when the build has it, one thread otherwise: the kernels never include omp.h directly. */
#ifndef FASTCONV_OMP_H
#define FASTCONV_OMP_H
#ifdef _OPENMP
#include <omp.h>
static int fc_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static int fc_omp_max_threads(void) { return 1; }
#endif
#ifndef FASTCONV_COMPILE_ARGS
#define FASTCONV_COMPILE_ARGS ""
#endif
#ifndef FASTCONV_OPENMP
#define FASTCONV_OPENMP 0
#endif
#endif
