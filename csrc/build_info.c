/* build_info.c -- what this build of the kernels can do. */
#include "darknet_bn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int dbn_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int dbn_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
