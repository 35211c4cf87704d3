/* kernels.c -- Darknet's named batch-normalization kernels (see darknet_bn.h for each contract).
 *
 * Plain loops, written to be read: 64-bit indices, double accumulators, one channel at a time.
 */
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>

void mean_cpu(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
              float *restrict mean, int nthreads)
{
    (void)nthreads;
    const double n = (double)batch * (double)spatial;
    for (int64_t f = 0; f < filters; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = x + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) sum += p[s];
        }
        mean[f] = (float)(sum / n);
    }
}

void variance_cpu(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                  int64_t spatial, float *restrict variance, int nthreads)
{
    (void)nthreads;
    const int64_t n = batch * spatial;
    for (int64_t f = 0; f < filters; ++f) {
        const double m = mean[f];
        double ss = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = x + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) {
                const double d = (double)p[s] - m;
                ss += d * d;
            }
        }
        variance[f] = n > 1 ? (float)(ss / (double)(n - 1)) : NAN;
    }
}

void normalize_cpu(float *restrict x, const float *restrict mean, const float *restrict variance,
                   int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                   int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < filters; ++f) {
        const double m = mean[f];
        const double inv = 1.0 / dbn_denominator(variance[f], eps, eps_in_sqrt);
        for (int64_t b = 0; b < batch; ++b) {
            float *p = x + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) p[s] = (float)(((double)p[s] - m) * inv);
        }
    }
}

void scale_bias(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                int64_t size, int nthreads)
{
    (void)nthreads;
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t f = 0; f < n; ++f) {
            float *p = output + (b * n + f) * size;
            const float k = scales[f];
            for (int64_t s = 0; s < size; ++s) p[s] *= k;
        }
}

void add_bias(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
              int64_t size, int nthreads)
{
    (void)nthreads;
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t f = 0; f < n; ++f) {
            float *p = output + (b * n + f) * size;
            const float k = biases[f];
            for (int64_t s = 0; s < size; ++s) p[s] += k;
        }
}

void backward_bias(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                   int64_t size, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < n; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = delta + (b * n + f) * size;
            for (int64_t s = 0; s < size; ++s) sum += p[s];
        }
        bias_updates[f] = (float)((double)bias_updates[f] + sum);
    }
}

void backward_scale_cpu(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                        int64_t n, int64_t size, float *restrict scale_updates, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < n; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * n + f) * size;
            for (int64_t s = 0; s < size; ++s) sum += (double)delta[o + s] * (double)x_norm[o + s];
        }
        scale_updates[f] = (float)((double)scale_updates[f] + sum);
    }
}

void mean_delta_cpu(const float *restrict delta, const float *restrict variance, int64_t batch,
                    int64_t filters, int64_t spatial, float *restrict mean_delta, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < filters; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = delta + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) sum += p[s];
        }
        mean_delta[f] = (float)(-sum / sqrt((double)variance[f] + DBN_DARKNET_EPS));
    }
}

void variance_delta_cpu(const float *restrict x, const float *restrict delta, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                        float *restrict variance_delta, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < filters; ++f) {
        const double m = mean[f];
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) sum += (double)delta[o + s] * ((double)x[o + s] - m);
        }
        variance_delta[f] = (float)(sum * -0.5 * pow((double)variance[f] + DBN_DARKNET_EPS, -1.5));
    }
}

void normalize_delta_cpu(const float *restrict x, const float *restrict mean, const float *restrict variance,
                         const float *restrict mean_delta, const float *restrict variance_delta,
                         int64_t batch, int64_t filters, int64_t spatial, float *restrict delta,
                         float eps, int eps_in_sqrt, int nthreads)
{
    (void)nthreads;
    const double n = (double)batch * (double)spatial;
    for (int64_t f = 0; f < filters; ++f) {
        const double m = mean[f];
        const double a = 1.0 / dbn_denominator(variance[f], eps, eps_in_sqrt);
        const double bcoef = 2.0 * (double)variance_delta[f] / n;
        const double ccoef = (double)mean_delta[f] / n;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s)
                delta[o + s] = (float)((double)delta[o + s] * a + ((double)x[o + s] - m) * bcoef + ccoef);
        }
    }
}
