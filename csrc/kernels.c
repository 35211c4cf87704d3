/* kernels.c -- Darknet's named kernels (see darknet_bn.h for each contract), on the engine.
 *
 * Each kernel is a job: a reduction (two sums per channel), a map (one multiply-add form per element),
 * or both, plus a coef() that turns sums into the kernel's outputs or the map's coefficients.
 * Plain versions of the same kernels are in reference.c.
 */
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>
#include <stddef.h>

typedef struct {
    float *out;              /* the per-channel output */
    const float *var;        /* variance, for the kernels that scale by it */
    const float *mean;       /* a map's shift */
    const float *coef;       /* a map's per-channel factor or term */
    const float *md, *vd;    /* normalize_delta_cpu */
    double n;                /* values per channel */
    double eps;
    int eps_in_sqrt;
} kctx;

#define CTX(job) ((const kctx *)(job)->ctx)

/* A reduction of a (and b) around a shift; coef writes the kernel's per-channel output. */
static void reduce(const float *a, const float *b, int kind, int shift_mode, const float *shift, int64_t batch,
                   int64_t c, int64_t spatial, dbn_coef_fn coef, const kctx *ctx, const dbn_exec *exec)
{
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.reduce = kind;
    job.shift_mode = shift_mode;
    job.shift = shift;
    job.a = a;
    job.b = b;
    job.coef = coef;
    job.ctx = ctx;
    dbn_run(&job, exec);
}

/* A map into out (which may be a or b: in place); coef gives the per-channel coefficients. */
static void map(const float *a, const float *b, float *out, int kind, int64_t batch, int64_t c, int64_t spatial,
                dbn_coef_fn coef, const kctx *ctx, const dbn_exec *exec)
{
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.map = kind;
    job.a = a;
    job.b = b;
    job.out = out;
    job.coef = coef;
    job.ctx = ctx;
    dbn_run(&job, exec);
}

/* ---- reductions ---------------------------------------------------------------------------------- */

static void coef_mean(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                      float *k, float *p, float *q, float *r)
{
    (void)s1; (void)p; (void)q; (void)r;
    for (int64_t j = 0; j < n; ++j) CTX(job)->out[c0 + j] = (float)((double)k[j] + s0[j] / CTX(job)->n);
}

void mean_cpu(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
              float *restrict mean, const dbn_exec *exec)
{
    kctx ctx = {.out = mean, .n = (double)batch * (double)spatial};
    reduce(x, NULL, DBN_R_SUM2, DBN_SHIFT_ESTIMATE, NULL, batch, filters, spatial, coef_mean, &ctx, exec);
}

static void coef_variance(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                          float *k, float *p, float *q, float *r)
{
    (void)s0; (void)k; (void)p; (void)q; (void)r;
    for (int64_t j = 0; j < n; ++j)
        CTX(job)->out[c0 + j] = CTX(job)->n > 1 ? (float)(s1[j] / (CTX(job)->n - 1.0)) : NAN;
}

void variance_cpu(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                  int64_t spatial, float *restrict variance, const dbn_exec *exec)
{
    kctx ctx = {.out = variance, .n = (double)batch * (double)spatial};
    reduce(x, NULL, DBN_R_SUM2, DBN_SHIFT_GIVEN, mean, batch, filters, spatial, coef_variance, &ctx, exec);
}

/* out += s0 (backward_bias) */
static void coef_add_s0(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                        float *k, float *p, float *q, float *r)
{
    (void)s1; (void)k; (void)p; (void)q; (void)r;
    for (int64_t j = 0; j < n; ++j) CTX(job)->out[c0 + j] = (float)((double)CTX(job)->out[c0 + j] + s0[j]);
}

void backward_bias(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                   int64_t size, const dbn_exec *exec)
{
    kctx ctx = {.out = bias_updates};
    reduce(delta, NULL, DBN_R_SUM2, DBN_SHIFT_ZERO, NULL, batch, n, size, coef_add_s0, &ctx, exec);
}

/* out += s1 (backward_scale_cpu) */
static void coef_add_s1(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                        float *k, float *p, float *q, float *r)
{
    (void)s0; (void)k; (void)p; (void)q; (void)r;
    for (int64_t j = 0; j < n; ++j) CTX(job)->out[c0 + j] = (float)((double)CTX(job)->out[c0 + j] + s1[j]);
}

void backward_scale_cpu(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                        int64_t n, int64_t size, float *restrict scale_updates, const dbn_exec *exec)
{
    kctx ctx = {.out = scale_updates};
    reduce(x_norm, delta, DBN_R_DOT2, DBN_SHIFT_ZERO, NULL, batch, n, size, coef_add_s1, &ctx, exec);
}

static void coef_mean_delta(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                            float *k, float *p, float *q, float *r)
{
    (void)s1; (void)k; (void)p; (void)q; (void)r;
    const kctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j)
        cx->out[c0 + j] = (float)(-s0[j] / sqrt((double)cx->var[c0 + j] + DBN_DARKNET_EPS));
}

void mean_delta_cpu(const float *restrict delta, const float *restrict variance, int64_t batch,
                    int64_t filters, int64_t spatial, float *restrict mean_delta, const dbn_exec *exec)
{
    kctx ctx = {.out = mean_delta, .var = variance};
    reduce(delta, NULL, DBN_R_SUM2, DBN_SHIFT_ZERO, NULL, batch, filters, spatial, coef_mean_delta, &ctx, exec);
}

static void coef_variance_delta(const dbn_job *job, int64_t c0, int64_t n, const double *s0,
                                const double *s1, float *k, float *p, float *q, float *r)
{
    (void)s0; (void)k; (void)p; (void)q; (void)r;
    const kctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j)
        cx->out[c0 + j] = (float)(s1[j] * -0.5 * pow((double)cx->var[c0 + j] + DBN_DARKNET_EPS, -1.5));
}

void variance_delta_cpu(const float *restrict x, const float *restrict delta, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                        float *restrict variance_delta, const dbn_exec *exec)
{
    kctx ctx = {.out = variance_delta, .var = variance};
    reduce(x, delta, DBN_R_DOT2, DBN_SHIFT_GIVEN, mean, batch, filters, spatial, coef_variance_delta, &ctx, exec);
}

/* ---- maps ---------------------------------------------------------------------------------------- */

/* out = (x - mean) / denominator(variance) */
static void coef_normalize(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                           float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const kctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        k[j] = cx->mean[c0 + j];
        p[j] = (float)(1.0 / dbn_denominator(cx->var[c0 + j], cx->eps, cx->eps_in_sqrt));
        q[j] = 0.0f;
        r[j] = 0.0f;
    }
}

void normalize_cpu(float *restrict x, const float *restrict mean, const float *restrict variance,
                   int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                   const dbn_exec *exec)
{
    kctx ctx = {.mean = mean, .var = variance, .eps = eps, .eps_in_sqrt = eps_in_sqrt};
    map(x, NULL, x, DBN_M_AFFINE, batch, filters, spatial, coef_normalize, &ctx, exec);
}

/* out = x * coef (scale_bias) */
static void coef_scale(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                       float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    for (int64_t j = 0; j < n; ++j) {
        k[j] = 0.0f;
        p[j] = CTX(job)->coef[c0 + j];
        q[j] = 0.0f;
        r[j] = 0.0f;
    }
}

void scale_bias(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                int64_t size, const dbn_exec *exec)
{
    kctx ctx = {.coef = scales};
    map(output, NULL, output, DBN_M_AFFINE, batch, n, size, coef_scale, &ctx, exec);
}

/* out = x * 1 + coef (add_bias) */
static void coef_shift(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                       float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    for (int64_t j = 0; j < n; ++j) {
        k[j] = 0.0f;
        p[j] = 1.0f;
        q[j] = CTX(job)->coef[c0 + j];
        r[j] = 0.0f;
    }
}

void add_bias(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
              int64_t size, const dbn_exec *exec)
{
    kctx ctx = {.coef = biases};
    map(output, NULL, output, DBN_M_AFFINE, batch, n, size, coef_shift, &ctx, exec);
}

/* delta = delta / denominator(variance) + (x - mean) * 2 variance_delta / N + mean_delta / N */
static void coef_normalize_delta(const dbn_job *job, int64_t c0, int64_t n, const double *s0,
                                 const double *s1, float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const kctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        k[j] = cx->mean[c];
        p[j] = (float)(1.0 / dbn_denominator(cx->var[c], cx->eps, cx->eps_in_sqrt));
        q[j] = (float)(2.0 * (double)cx->vd[c] / cx->n);
        r[j] = (float)((double)cx->md[c] / cx->n);
    }
}

void normalize_delta_cpu(const float *restrict x, const float *restrict mean, const float *restrict variance,
                         const float *restrict mean_delta, const float *restrict variance_delta,
                         int64_t batch, int64_t filters, int64_t spatial, float *restrict delta,
                         float eps, int eps_in_sqrt, const dbn_exec *exec)
{
    kctx ctx = {.mean = mean, .var = variance, .md = mean_delta, .vd = variance_delta,
                .n = (double)batch * (double)spatial, .eps = eps, .eps_in_sqrt = eps_in_sqrt};
    map(x, delta, delta, DBN_M_BWD, batch, filters, spatial, coef_normalize_delta, &ctx, exec);
}

/* ---- activations --------------------------------------------------------------------------------- */

/* The identity as the map's form: (a - 0)*1 + -0 is a, bit for bit (-0 keeps a -0). */
static void coef_identity(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                          float *k, float *p, float *q, float *r)
{
    (void)job; (void)c0; (void)s0; (void)s1;
    for (int64_t j = 0; j < n; ++j) {
        k[j] = 0.0f;
        p[j] = 1.0f;
        q[j] = -0.0f;
        r[j] = -0.0f;
    }
}

/* n values as one channel: the driver cuts its one long plane into tasks. */
static void act_job(dbn_job *job, const float *a, const float *b, float *out, int64_t n, int map, const dbn_act *act)
{
    dbn_job_init(job, 1, 1, n);
    job->map = map;
    job->a = a;
    job->b = b;
    job->out = out;
    job->coef = coef_identity;
    job->act = act ? act->kind : DBN_ACT_LINEAR;
    job->alpha = act ? act->alpha : 0.0f;
}

void activate_array(float *x, int64_t n, const dbn_act *a, const dbn_exec *exec)
{
    if (!a || a->kind == DBN_ACT_LINEAR) return;
    dbn_job job;
    act_job(&job, x, NULL, x, n, DBN_M_AFFINE, a);
    dbn_run(&job, exec);
}

void gradient_array(const float *x, int64_t n, const dbn_act *a, float *delta, const dbn_exec *exec)
{
    if (!a || a->kind == DBN_ACT_LINEAR) return;
    dbn_job job;
    act_job(&job, x, delta, delta, n, DBN_M_GRAD, a);
    dbn_run(&job, exec);
}
