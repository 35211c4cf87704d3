/* fused.c -- whole passes of the batch-normalization layer (see darknet_bn.h for each contract).
 *
 * Per channel, the statistics in double; then one multiply-add per element with per-channel
 * coefficients. The derivation of the backward coefficients is in docs/backward.md.
 */
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>

void dbn_forward_train(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       int nthreads)
{
    (void)nthreads;
    const int64_t n = batch * spatial;
    const double mom = flavor->momentum;
    for (int64_t f = 0; f < c; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = x + (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) sum += p[s];
        }
        const double m = sum / (double)n;
        double ss = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = x + (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) {
                const double d = (double)p[s] - m;
                ss += d * d;
            }
        }
        const double var_unbiased = ss / (double)(n - 1);
        const double var = flavor->unbiased ? var_unbiased : ss / (double)n;
        mean[f] = (float)m;
        variance[f] = (float)var;
        rolling_mean[f] = (float)((1.0 - mom) * rolling_mean[f] + mom * m);
        rolling_variance[f] = (float)((1.0 - mom) * rolling_variance[f] + mom * var_unbiased);

        const double alpha = scales[f] / dbn_denominator(var, flavor->eps, flavor->eps_in_sqrt);
        const double beta = biases[f];
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) out[o + s] = (float)(((double)x[o + s] - m) * alpha + beta);
        }
    }
}

void dbn_forward_infer(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < c; ++f) {
        const double m = rolling_mean[f];
        const double alpha = scales[f] / dbn_denominator(rolling_variance[f], flavor->eps, flavor->eps_in_sqrt);
        const double beta = biases[f];
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) out[o + s] = (float)(((double)x[o + s] - m) * alpha + beta);
        }
    }
}

void dbn_backward(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict mean, const float *restrict variance,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  int nthreads)
{
    (void)nthreads;
    const double n = (double)batch * (double)spatial;
    for (int64_t f = 0; f < c; ++f) {
        const double m = mean[f];
        const double var = variance[f];
        const double scale = scales[f];
        /* Pass 1: the two per-channel sums every term needs. */
        double sum_d = 0.0, sum_dx = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) {
                sum_d += delta[o + s];
                sum_dx += (double)delta[o + s] * ((double)x[o + s] - m);
            }
        }
        const double fwd_denominator = dbn_denominator(var, flavor->eps, flavor->eps_in_sqrt);
        bias_updates[f] = (float)((double)bias_updates[f] + sum_d);
        scale_updates[f] = (float)((double)scale_updates[f] + sum_dx / fwd_denominator);
        /* delta_in = delta * a + (x - mean) * bcoef + ccoef */
        double a, bcoef, ccoef;
        if (train) {
            const double vs = var + flavor->stat_eps;
            const double md = -scale * sum_d / sqrt(vs);
            const double vd = scale * sum_dx * -0.5 * pow(vs, -1.5);
            mean_delta[f] = (float)md;
            variance_delta[f] = (float)vd;
            a = scale / dbn_denominator(var, flavor->bwd_eps, flavor->bwd_eps_in_sqrt);
            bcoef = 2.0 * vd / n;
            ccoef = md / n;
        } else {
            mean_delta[f] = 0.0f;
            variance_delta[f] = 0.0f;
            a = scale / fwd_denominator;
            bcoef = 0.0;
            ccoef = 0.0;
        }
        /* Pass 2: the input's delta. */
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) {
                const float d = (float)((double)delta[o + s] * a + ((double)x[o + s] - m) * bcoef + ccoef);
                delta[o + s] = d;
                if (net_delta) net_delta[o + s] = d;
            }
        }
    }
}

void dbn_normalize_into(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t c, int64_t spatial,
                        double eps, int eps_in_sqrt, int nthreads)
{
    (void)nthreads;
    for (int64_t f = 0; f < c; ++f) {
        const double m = mean[f];
        const double inv = 1.0 / dbn_denominator(variance[f], eps, eps_in_sqrt);
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) x_norm[o + s] = (float)(((double)x[o + s] - m) * inv);
        }
    }
}

void dbn_update(float *restrict scales, float *restrict scale_updates, float *restrict biases,
                float *restrict bias_updates, int64_t c, double rate, double momentum)
{
    for (int64_t f = 0; f < c; ++f) {
        biases[f] = (float)(biases[f] + rate * bias_updates[f]);
        bias_updates[f] = (float)(bias_updates[f] * momentum);
        scales[f] = (float)(scales[f] + rate * scale_updates[f]);
        scale_updates[f] = (float)(scale_updates[f] * momentum);
    }
}
