/* stream.c -- a STREAM-style triad, a = b + scalar*c, to measure this machine's memory bandwidth in the
 * same run as the kernels (the benchmark's roofline). Plain stores, static schedule, as STREAM. */
#include "darknet_bn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void dbn_triad(float *restrict a, const float *restrict b, const float *restrict c, int64_t n, float scalar,
               const dbn_exec *exec)
{
#ifdef _OPENMP
    const int nth = exec && exec->nthreads > 0 ? exec->nthreads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nth)
#else
    (void)exec;
#endif
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + scalar * c[i];
}
