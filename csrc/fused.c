/* fused.c -- whole passes of the batch-normalization layer (see darknet_bn.h for each contract).
 *
 * Training forward: one reduction (sums around a shift near the mean) and one map,
 *   out = (x - mean_hi) * alpha + beta'   (mean_hi the float nearest the mean, beta' absorbing the rest),
 * back to back per channel group. Backward: one reduction (sum delta, sum delta*(x - mean)) and one map,
 *   delta_in = delta * A + (x - mean) * B + C.
 * The derivation of the coefficients is in docs/backward.md; reference.c has plain versions.
 */
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>

typedef struct {
    const float *scales, *biases;
    float *mean, *variance, *rolling_mean, *rolling_variance;     /* forward (train: written) */
    const float *stat_mean, *stat_var;                            /* backward, infer, x_norm: read */
    float *scale_updates, *bias_updates, *mean_delta, *variance_delta;
    const dbn_flavor *fl;
    double n;                                                     /* values per channel */
    double eps;
    int eps_in_sqrt, train;
} fctx;

#define CTX(job) ((const fctx *)(job)->ctx)

/* Map coefficients for y = scale * (x - m) / d + bias with m in double: the float m_hi = (float)m
 * shifts exactly (x - m_hi is exact near the mean), the rest of m goes into the constant term. */
static void affine_coef(double m, double alpha, double beta, float *k, float *p, float *q)
{
    const float m_hi = (float)m;
    *k = m_hi;
    *p = (float)alpha;
    *q = (float)(beta - (m - (double)m_hi) * alpha);
}

static void coef_forward_train(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                               float *k, float *p, float *q, float *r)
{
    const fctx *cx = CTX(job);
    const dbn_flavor *fl = cx->fl;
    const double N = cx->n, mom = fl->momentum;
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        /* sums of d = x - k: mean = k + sum d / N; M2 = sum d^2 - (sum d)^2 / N */
        const double m = (double)k[j] + s0[j] / N;
        double m2 = s1[j] - s0[j] * s0[j] / N;
        if (m2 < 0.0) m2 = 0.0;   /* rounding of a constant channel */
        const double var_unbiased = m2 / (N - 1.0);
        const double var = fl->unbiased ? var_unbiased : m2 / N;
        cx->mean[c] = (float)m;
        cx->variance[c] = (float)var;
        cx->rolling_mean[c] = (float)((1.0 - mom) * (double)cx->rolling_mean[c] + mom * m);
        cx->rolling_variance[c] = (float)((1.0 - mom) * (double)cx->rolling_variance[c] + mom * var_unbiased);
        const double alpha = (double)cx->scales[c] / dbn_denominator(var, fl->eps, fl->eps_in_sqrt);
        affine_coef(m, alpha, cx->biases[c], k + j, p + j, q + j);
        r[j] = 0.0f;
    }
}

void dbn_forward_train(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .mean = mean, .variance = variance,
                .rolling_mean = rolling_mean, .rolling_variance = rolling_variance, .fl = flavor,
                .n = (double)batch * (double)spatial};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.reduce = DBN_R_SUM2;
    job.shift_mode = DBN_SHIFT_ESTIMATE;
    job.map = DBN_M_AFFINE;
    job.a = x;
    job.out = out;
    job.coef = coef_forward_train;
    job.ctx = &ctx;
    job.nt = (double)batch * (double)c * (double)spatial * 4.0 > 16.0 * 1024 * 1024;
    dbn_run(&job, exec);
}

/* y = scale * (x - stat_mean) / denominator(stat_var) + bias (inference), or with scale = 1, bias = 0
 * (x_norm) */
static void coef_affine_stats(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                              float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const fctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        const double d = dbn_denominator(cx->stat_var[c], cx->eps, cx->eps_in_sqrt);
        const double scale = cx->scales ? cx->scales[c] : 1.0, bias = cx->biases ? cx->biases[c] : 0.0;
        k[j] = cx->stat_mean[c];
        p[j] = (float)(scale / d);
        q[j] = (float)bias;
        r[j] = 0.0f;
    }
}

void dbn_forward_infer(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .stat_mean = rolling_mean, .stat_var = rolling_variance,
                .eps = flavor->eps, .eps_in_sqrt = flavor->eps_in_sqrt};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.map = DBN_M_AFFINE;
    job.a = x;
    job.out = out;
    job.coef = coef_affine_stats;
    job.ctx = &ctx;
    job.nt = x != out && (double)batch * (double)c * (double)spatial * 4.0 > 12.0 * 1024 * 1024;
    dbn_run(&job, exec);
}

void dbn_normalize_into(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t c, int64_t spatial,
                        double eps, int eps_in_sqrt, const dbn_exec *exec)
{
    fctx ctx = {.stat_mean = mean, .stat_var = variance, .eps = eps, .eps_in_sqrt = eps_in_sqrt};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.map = DBN_M_AFFINE;
    job.a = x;
    job.out = x_norm;
    job.coef = coef_affine_stats;
    job.ctx = &ctx;
    dbn_run(&job, exec);
}

static void coef_backward(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                          float *k, float *p, float *q, float *r)
{
    const fctx *cx = CTX(job);
    const dbn_flavor *fl = cx->fl;
    const double N = cx->n;
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        const double var = cx->stat_var[c], scale = cx->scales[c];
        const double sum_d = s0[j], sum_dx = s1[j];     /* sum delta, sum delta*(x - mean) */
        const double d_fwd = dbn_denominator(var, fl->eps, fl->eps_in_sqrt);
        cx->bias_updates[c] = (float)((double)cx->bias_updates[c] + sum_d);
        cx->scale_updates[c] = (float)((double)cx->scale_updates[c] + sum_dx / d_fwd);
        k[j] = cx->stat_mean[c];
        if (cx->train) {
            const double vs = var + fl->stat_eps;
            const double md = -scale * sum_d / sqrt(vs);
            const double vd = scale * sum_dx * -0.5 * pow(vs, -1.5);
            cx->mean_delta[c] = (float)md;
            cx->variance_delta[c] = (float)vd;
            p[j] = (float)(scale / dbn_denominator(var, fl->bwd_eps, fl->bwd_eps_in_sqrt));
            q[j] = (float)(2.0 * vd / N);
            r[j] = (float)(md / N);
        } else {
            cx->mean_delta[c] = 0.0f;
            cx->variance_delta[c] = 0.0f;
            p[j] = (float)(scale / d_fwd);
            q[j] = 0.0f;
            r[j] = 0.0f;
        }
    }
}

void dbn_backward(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict mean, const float *restrict variance,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .stat_mean = mean, .stat_var = variance, .scale_updates = scale_updates,
                .bias_updates = bias_updates, .mean_delta = mean_delta, .variance_delta = variance_delta,
                .fl = flavor, .n = (double)batch * (double)spatial, .train = train};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.reduce = DBN_R_DOT2;
    job.shift_mode = DBN_SHIFT_GIVEN;
    job.shift = mean;
    job.map = DBN_M_BWD;
    job.a = x;
    job.b = delta;
    job.out = delta;
    job.out2 = net_delta;
    job.coef = coef_backward;
    job.ctx = &ctx;
    job.nt = (double)batch * (double)c * (double)spatial * 4.0 > 8.0 * 1024 * 1024;
    dbn_run(&job, exec);
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
