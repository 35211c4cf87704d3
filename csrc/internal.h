/* internal.h -- small helpers shared by the .c files of csrc/ (not part of the API: darknet_bn.h is). */
#ifndef DARKNET_BN_INTERNAL_H
#define DARKNET_BN_INTERNAL_H

#include <math.h>

/* Darknet's .00001f, as C promotes it to double in mean_delta_cpu and variance_delta_cpu. */
#define DBN_DARKNET_EPS ((double)1e-5f)

/* The normalization denominator: sqrt(var + eps) when eps_in_sqrt, else sqrt(var) + eps. */
static inline double dbn_denominator(double var, double eps, int eps_in_sqrt)
{
    return eps_in_sqrt ? sqrt(var + eps) : sqrt(var) + eps;
}

#endif
