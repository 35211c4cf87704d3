/* fused.c -- whole passes of the batch-normalization layer (see darknet_bn.h for each contract).
 *
 * Training forward: one reduction (sums around a shift near the mean) and one map,
 *   out = (x - mean_hi) * alpha + beta'   (mean_hi the float nearest the mean, beta' absorbing the rest),
 * back to back per channel group. Backward: one reduction (sum delta, sum delta*(x - mean)) and one map,
 *   delta_in = delta * A + (x - mean) * B + C.
 * The per-channel arithmetic lives in forward_channel() and backward_channel(); the fused passes and the
 * halves of synchronized BN differ only in where their sums come from. The plain training forward and
 * backward (no renormalization) run vectorizable twins of them (forward_channels_k, backward_channels_k)
 * with the same expressions in the same order: the same bits, because nothing in this file is contracted
 * into FMAs (below), whatever the target or the user's -march.
 * The derivation of the coefficients is in docs/backward.md; reference.c has plain versions.
 */
/* No floating-point contraction anywhere in this file: a*b + c fused in one function (or one clone) and
 * not in its twin would round differently, and the per-channel work here is a few operations a channel,
 * so FMAs buy nothing. GCC does not implement the standard pragma; clang does. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>
#include <stddef.h>

typedef struct {
    const float *scales, *biases;
    float *mean, *variance, *rolling_mean, *rolling_variance;     /* forward (train: written) */
    const float *stat_mean, *stat_var;                            /* backward, infer, x_norm: read */
    const float *r, *d;                                           /* backward, x_norm: renormalization */
    float *scale_updates, *bias_updates, *mean_delta, *variance_delta;
    const dbn_flavor *fl;
    const dbn_renorm *renorm;                                     /* forward: NULL for plain BN */
    double *moments;                                              /* forward_moments: written */
    const double *gmoments;                                       /* forward_apply: read */
    double *sums;                                                 /* backward_sums: written */
    const double *lsums, *gsums;                                  /* backward_apply: read */
    double n;                                                     /* values per channel (global) */
    double eps;
    int eps_in_sqrt, train;
    int akind;                                                    /* the activation (DBN_ACT_*) */
} fctx;

#define CTX(job) ((const fctx *)(job)->ctx)

static inline double clamp(double v, double lo, double hi) { return fmin(fmax(v, lo), hi); }

/* The bytes of a [batch, c, spatial] float tensor, against the non-temporal thresholds (DBN_NT_*). */
static inline double out_bytes(int64_t batch, int64_t c, int64_t spatial)
{
    return (double)batch * (double)c * (double)spatial * 4.0;
}

/* Map coefficients for y = alpha * (x - m) + beta with m in double: the float m_hi = (float)m shifts
 * exactly (x - m_hi is exact near the mean), the rest of m goes into the constant term. */
static void affine_coef(double m, double alpha, double beta, float *k, float *p, float *q)
{
    const float m_hi = (float)m;
    *k = m_hi;
    *p = (float)alpha;
    *q = (float)(beta - (m - (double)m_hi) * alpha);
}

static inline int act_kind(const dbn_act *a) { return a ? a->kind : DBN_ACT_LINEAR; }
static inline float act_alpha(const dbn_act *a) { return a ? a->alpha : 0.0f; }

/* Map coefficients for y = scale * ((x - mean) / denominator(var) * r + d) + bias from per-channel floats:
 * what an inference forward maps with, what a training forward with an activation maps with (from its
 * stored mean, variance, r and d), and what a backward with an activation recomputes -- one expression,
 * so the three agree bit for bit. */
static void stat_coef(double scale, double bias, float mean, float var, double r, double d, double eps,
                      int eps_in_sqrt, float *k, float *p, float *q)
{
    const double den = dbn_denominator(var, eps, eps_in_sqrt);
    *k = mean;
    *p = (float)(scale * r / den);
    *q = (float)(bias + scale * d);
}

/* One channel of a training forward, from its count, mean and M2: the layer's per-channel outputs
 * and the map's coefficients. */
static void forward_channel(const fctx *cx, int64_t c, double n, double m, double m2, float *k, float *p,
                            float *q)
{
    const dbn_flavor *fl = cx->fl;
    const double mom = fl->momentum;
    if (m2 < 0.0) m2 = 0.0;   /* rounding of a constant channel */
    /* by reciprocals of the count (the same for every channel of a pass: the compiler takes them out of the
     * callers' loops): a division costs the throughput of ~4 multiplies, and the coefficients were 12-15 % of
     * a 128x1024x1x1 forward (docs/performance.md section 7); within an ulp of double of the quotients */
    const double var_unbiased = m2 * (1.0 / (n - 1.0));
    const double var = fl->unbiased ? var_unbiased : m2 * (1.0 / n);
    const double sigma_b = dbn_denominator(var, fl->eps, fl->eps_in_sqrt);
    double r = 1.0, d = 0.0;
    if (cx->renorm) {   /* against the rolling statistics before this batch updates them */
        const double sigma = dbn_denominator(cx->rolling_variance[c], fl->eps, fl->eps_in_sqrt);
        const double rmax = cx->renorm->rmax, dmax = cx->renorm->dmax;
        r = clamp(sigma_b / sigma, 1.0 / rmax, rmax);
        d = clamp((m - (double)cx->rolling_mean[c]) / sigma, -dmax, dmax);
        cx->renorm->r[c] = (float)r;
        cx->renorm->d[c] = (float)d;
    }
    cx->mean[c] = (float)m;
    cx->variance[c] = (float)var;
    cx->rolling_mean[c] = (float)((1.0 - mom) * (double)cx->rolling_mean[c] + mom * m);
    cx->rolling_variance[c] = (float)((1.0 - mom) * (double)cx->rolling_variance[c] + mom * var_unbiased);
    const double scale = cx->scales[c];
    if (cx->akind != DBN_ACT_LINEAR) {   /* from the stored floats: the backward recomputes these bits */
        const double rs = cx->renorm ? (double)cx->renorm->r[c] : 1.0, ds = cx->renorm ? (double)cx->renorm->d[c] : 0.0;
        stat_coef(scale, cx->biases[c], cx->mean[c], cx->variance[c], rs, ds, fl->eps, fl->eps_in_sqrt, k, p, q);
        return;
    }
    affine_coef(m, scale * r / sigma_b, (double)cx->biases[c] + scale * d, k, p, q);
}

/* The per-channel coefficient loops below (forward_channels_plain, backward_channels_plain,
 * pre_channels_plain) cloned for x86-64-v4: 8 double lanes a root or division where the baseline has 2.
 * Every clone gives the same bits as the scalar forward_channel / backward_channel / stat_coef: roots and
 * divisions are correctly rounded at any width, and contraction is off in them as in the whole file
 * (the v4 clone has FMA, and a*b + c fused there would round once where the baseline rounds twice; the
 * attribute repeats the file's pragma, which a target clone might not inherit). */
#if DBN_MULTI_ISA
#define DBN_COEF_CLONES __attribute__((target_clones("default", "arch=x86-64-v4"), optimize("fp-contract=off")))
#else
#define DBN_COEF_CLONES
#endif

/* forward_channel over n channels of a training forward without renormalization, vectorizable (restrict
 * arrays, the flavor's choices and the activation's presence constants of the instantiations below):
 * the same expressions in the same order on the same values (r = 1, d = 0 kept as constants), so the
 * same bits as forward_channel. 256x32: the scalar loop was ~0.18 us of a ~1.5 us training forward. */
static inline __attribute__((always_inline)) void
forward_channels_k(const int eis, const int unb, const int act, int64_t n, double N, double eps, double mom,
                   const double *restrict s0, const double *restrict s1, const float *restrict scale,
                   const float *restrict bias, float *restrict mean, float *restrict variance,
                   float *restrict rmean, float *restrict rvar, float *restrict k, float *restrict p,
                   float *restrict q, float *restrict r)
{
    const double iN = 1.0 / N, iN1 = 1.0 / (N - 1.0), rr = 1.0, dd = 0.0;
    for (int64_t j = 0; j < n; ++j) {
        const double m = (double)k[j] + s0[j] * iN;
        double m2 = s1[j] - s0[j] * s0[j] * iN;
        if (m2 < 0.0) m2 = 0.0;   /* rounding of a constant channel */
        const double vu = m2 * iN1;
        const double var = unb ? vu : m2 * iN;
        const double sigma_b = eis ? sqrt(var + eps) : sqrt(var) + eps;
        const float mf = (float)m, vfl = (float)var;
        mean[j] = mf;
        variance[j] = vfl;
        rmean[j] = (float)((1.0 - mom) * (double)rmean[j] + mom * m);
        rvar[j] = (float)((1.0 - mom) * (double)rvar[j] + mom * vu);
        const double sc = scale[j];
        if (act) {   /* stat_coef from the stored floats (the backward recomputes these bits) */
            const double den = eis ? sqrt((double)vfl + eps) : sqrt((double)vfl) + eps;
            k[j] = mf;
            p[j] = (float)(sc * rr / den);
            q[j] = (float)((double)bias[j] + sc * dd);
        } else {     /* affine_coef */
            const double al = sc * rr / sigma_b, be = (double)bias[j] + sc * dd;
            const float mh = (float)m;
            k[j] = mh;
            p[j] = (float)al;
            q[j] = (float)(be - (m - (double)mh) * al);
        }
        r[j] = 0.0f;
    }
}

DBN_COEF_CLONES
static void forward_channels_plain(const fctx *cx, int64_t c0, int64_t n, const double *s0, const double *s1,
                                   float *k, float *p, float *q, float *r)
{
    const dbn_flavor *fl = cx->fl;
#define K(E, U, A)                                                                                              \
    forward_channels_k(E, U, A, n, cx->n, fl->eps, fl->momentum, s0, s1, cx->scales + c0, cx->biases + c0,     \
                       cx->mean + c0, cx->variance + c0, cx->rolling_mean + c0, cx->rolling_variance + c0, k, p, \
                       q, r)
    const int act = cx->akind != DBN_ACT_LINEAR;
    if (fl->eps_in_sqrt) {
        if (fl->unbiased) {
            if (act) K(1, 1, 1); else K(1, 1, 0);
        } else {
            if (act) K(1, 0, 1); else K(1, 0, 0);
        }
    } else {
        if (fl->unbiased) {
            if (act) K(0, 1, 1); else K(0, 1, 0);
        } else {
            if (act) K(0, 0, 1); else K(0, 0, 0);
        }
    }
#undef K
}

/* sums of d = x - k: mean = k + sum d / N, M2 = sum d^2 - (sum d)^2 / N */
static void coef_forward_train(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                               float *k, float *p, float *q, float *r)
{
    const fctx *cx = CTX(job);
    if (!cx->renorm) {
        forward_channels_plain(cx, c0, n, s0, s1, k, p, q, r);
        return;
    }
    const double N = cx->n, iN = 1.0 / N;   /* coef_forward_moments: the same expressions */
    for (int64_t j = 0; j < n; ++j) {
        forward_channel(cx, c0 + j, N, (double)k[j] + s0[j] * iN, s1[j] - s0[j] * s0[j] * iN, k + j, p + j, q + j);
        r[j] = 0.0f;
    }
}

static void coef_forward_apply(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                               float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const fctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        const double *mo = cx->gmoments + 3 * (c0 + j);
        forward_channel(cx, c0 + j, mo[0], mo[1], mo[2], k + j, p + j, q + j);
        r[j] = 0.0f;
    }
}

static void coef_forward_moments(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                                 float *k, float *p, float *q, float *r)
{
    (void)p; (void)q; (void)r;
    const fctx *cx = CTX(job);
    const double N = cx->n, iN = 1.0 / N;   /* as coef_forward_train */
    for (int64_t j = 0; j < n; ++j) {
        double *mo = cx->moments + 3 * (c0 + j);
        const double m2 = s1[j] - s0[j] * s0[j] * iN;
        mo[0] = N;
        mo[1] = N > 0 ? (double)k[j] + s0[j] * iN : 0.0;
        mo[2] = m2 > 0.0 ? m2 : 0.0;
    }
}

static void forward_job(dbn_job *job, const float *x, float *out, int64_t batch, int64_t c, int64_t spatial,
                        const fctx *ctx, const dbn_act *act)
{
    dbn_job_init(job, batch, c, spatial);
    job->a = x;
    job->out = out;
    job->map = out ? DBN_M_AFFINE : DBN_M_NONE;
    job->act = act_kind(act);
    job->alpha = act_alpha(act);
    job->ctx = ctx;
    job->nt = out_bytes(batch, c, spatial) > DBN_NT_TRAIN_BYTES;
}

void dbn_forward_train(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       const dbn_renorm *restrict renorm, const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .mean = mean, .variance = variance,
                .rolling_mean = rolling_mean, .rolling_variance = rolling_variance, .fl = flavor,
                .renorm = renorm, .n = (double)batch * (double)spatial, .akind = act_kind(act)};
    dbn_job job;
    forward_job(&job, x, out, batch, c, spatial, &ctx, act);
    job.reduce = DBN_R_SUM2;
    job.shift_mode = DBN_SHIFT_ESTIMATE;
    job.coef = coef_forward_train;
    dbn_run(&job, exec);
}

void dbn_forward_moments(const float *restrict x, int64_t batch, int64_t c, int64_t spatial,
                         double *restrict moments, const dbn_exec *exec)
{
    fctx ctx = {.moments = moments, .n = (double)batch * (double)spatial};
    dbn_job job;
    forward_job(&job, x, NULL, batch, c, spatial, &ctx, NULL);
    job.reduce = DBN_R_SUM2;
    job.shift_mode = DBN_SHIFT_ESTIMATE;
    job.coef = coef_forward_moments;
    dbn_run(&job, exec);
}

void dbn_merge_moments(double *restrict a, const double *restrict b, int64_t c)
{
    for (int64_t j = 0; j < c; ++j) {
        double *x = a + 3 * j;
        const double *y = b + 3 * j;
        const double n = x[0] + y[0];
        if (y[0] == 0.0) continue;
        if (x[0] == 0.0) {
            x[0] = y[0];
            x[1] = y[1];
            x[2] = y[2];
            continue;
        }
        const double delta = y[1] - x[1];
        x[2] = x[2] + y[2] + delta * delta * (x[0] * y[0] / n);
        x[1] = x[1] + delta * (y[0] / n);
        x[0] = n;
    }
}

void dbn_forward_apply(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       const double *restrict moments, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_renorm *restrict renorm,
                       const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .mean = mean, .variance = variance,
                .rolling_mean = rolling_mean, .rolling_variance = rolling_variance, .fl = flavor,
                .renorm = renorm, .gmoments = moments, .akind = act_kind(act)};
    dbn_job job;
    forward_job(&job, x, out, batch, c, spatial, &ctx, act);
    job.coef = coef_forward_apply;
    dbn_run(&job, exec);
}

/* y = scale * ((x - stat_mean) / denominator(stat_var) * r + d) + bias: inference (scale, bias; r = 1,
 * d = 0), or x_norm (scale 1, bias 0; the forward's r and d). */
static void coef_affine_stats(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                              float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const fctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        const double scale = cx->scales ? cx->scales[c] : 1.0, bias = cx->biases ? cx->biases[c] : 0.0;
        const double rr = cx->r ? cx->r[c] : 1.0, dd = cx->d ? cx->d[c] : 0.0;
        stat_coef(scale, bias, cx->stat_mean[c], cx->stat_var[c], rr, dd, cx->eps, cx->eps_in_sqrt, k + j, p + j, q + j);
        r[j] = 0.0f;
    }
}

void dbn_forward_infer(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .stat_mean = rolling_mean, .stat_var = rolling_variance,
                .eps = flavor->eps, .eps_in_sqrt = flavor->eps_in_sqrt};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.map = DBN_M_AFFINE;
    job.act = act_kind(act);
    job.alpha = act_alpha(act);
    job.a = x;
    job.out = out;
    job.coef = coef_affine_stats;
    job.ctx = &ctx;
    job.nt = x != out && out_bytes(batch, c, spatial) > DBN_NT_INFER_BYTES;
    dbn_run(&job, exec);
}

void dbn_normalize_into(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, const float *restrict r, const float *restrict d,
                        int64_t batch, int64_t c, int64_t spatial, double eps, int eps_in_sqrt,
                        const dbn_exec *exec)
{
    fctx ctx = {.stat_mean = mean, .stat_var = variance, .r = r, .d = d, .eps = eps, .eps_in_sqrt = eps_in_sqrt};
    dbn_job job;
    dbn_job_init(&job, batch, c, spatial);
    job.map = DBN_M_AFFINE;
    job.a = x;
    job.out = x_norm;
    job.coef = coef_affine_stats;
    job.ctx = &ctx;
    dbn_run(&job, exec);
}

/* One channel of a backward: from this process's sums (ls1 = sum delta, ls2 = sum delta*(x - mean))
 * the parameter updates; from the global ones (gs1, gs2, over cx->n values) the statistics' deltas and
 * the map's coefficients. */
static void backward_channel(const fctx *cx, int64_t c, double ls1, double ls2, double gs1, double gs2, float *k,
                             float *p, float *q, float *r)
{
    const dbn_flavor *fl = cx->fl;
    const double N = cx->n;
    const double var = cx->stat_var[c], scale = cx->scales[c];
    const double d_fwd = dbn_denominator(var, fl->eps, fl->eps_in_sqrt);
    /* the flavors mostly take the same root three times (sqrt(var + eps)): computed once when it is the same
     * expression on the same values (the same bits) */
    const int same_bwd = fl->bwd_eps == fl->eps && fl->bwd_eps_in_sqrt == fl->eps_in_sqrt;
    const int same_stat = fl->eps_in_sqrt && fl->stat_eps == fl->eps;
    const double rr = cx->train && cx->r ? cx->r[c] : 1.0, dd = cx->train && cx->d ? cx->d[c] : 0.0;
    cx->bias_updates[c] = (float)((double)cx->bias_updates[c] + ls1);
    cx->scale_updates[c] = (float)((double)cx->scale_updates[c] + (rr * ls2 / d_fwd + dd * ls1));
    k[0] = cx->stat_mean[c];
    if (cx->train) {
        const double se = scale * rr;   /* renormalization scales the normalized input by r */
        const double vs = var + fl->stat_eps;
        const double sv = same_stat ? d_fwd : sqrt(vs);   /* vs^-1.5 as 1/(vs sqrt vs): a few ulps of double
                                                                from pow, 5x cheaper */
        const double md = -se * gs1 / sv;
        const double vd = se * gs2 * -0.5 / (vs * sv);
        cx->mean_delta[c] = (float)md;
        cx->variance_delta[c] = (float)vd;
        p[0] = (float)(se / (same_bwd ? d_fwd : dbn_denominator(var, fl->bwd_eps, fl->bwd_eps_in_sqrt)));
        q[0] = (float)(2.0 * vd / N);
        r[0] = (float)(md / N);
    } else {
        cx->mean_delta[c] = 0.0f;
        cx->variance_delta[c] = 0.0f;
        p[0] = (float)(scale / d_fwd);
        q[0] = 0.0f;
        r[0] = 0.0f;
    }
}

/* backward_channel over n channels of a training backward without renormalization, written so that the
 * compiler vectorizes it: restrict arrays, the flavor's choices (eis: eps in the forward's root; bis: in
 * the direct term's; same_bwd, same_stat: that root is the forward's, as backward_channel decides) made
 * constants by the instantiations below. The same expressions in the same order on the same values
 * (rr = 1, dd = 0 kept as constants), so the same bits as backward_channel; 256x32: the coefficients'
 * roots and divisions were ~0.3 us of a 1.6 us backward, scalar (docs/performance.md section 11). */
static inline __attribute__((always_inline)) void
backward_channels_k(const int eis, const int bis, const int same_bwd, const int same_stat, const int p2, int64_t n,
                    double N,
                    const dbn_flavor *fl, const double *restrict ls1, const double *restrict ls2,
                    const float *restrict var, const float *restrict scale, const float *restrict mean,
                    float *restrict bias_updates, float *restrict scale_updates, float *restrict mean_delta,
                    float *restrict variance_delta, float *restrict k, float *restrict p, float *restrict q,
                    float *restrict r)
{
    const double rr = 1.0, dd = 0.0, eps = fl->eps, beps = fl->bwd_eps, seps = fl->stat_eps, iN = 1.0 / N;
    for (int64_t j = 0; j < n; ++j) {
        const double v = var[j], sc = scale[j];
        const double d_fwd = eis ? sqrt(v + eps) : sqrt(v) + eps;
        bias_updates[j] = (float)((double)bias_updates[j] + ls1[j]);
        scale_updates[j] = (float)((double)scale_updates[j] + (rr * ls2[j] / d_fwd + dd * ls1[j]));
        k[j] = mean[j];
        const double se = sc * rr;
        const double vs = v + seps;
        const double sv = same_stat ? d_fwd : sqrt(vs);
        const double md = -se * ls1[j] / sv;
        const double vd = se * ls2[j] * -0.5 / (vs * sv);
        mean_delta[j] = (float)md;
        variance_delta[j] = (float)vd;
        p[j] = (float)(se / (same_bwd ? d_fwd : bis ? sqrt(v + beps) : sqrt(v) + beps));
        /* p2: N a power of two, so 1/N is exact and x * (1/N) is x / N correctly rounded, the same bits
         * (two of the loop's six divisions a channel; 256x32: N = 256) */
        q[j] = (float)(p2 ? 2.0 * vd * iN : 2.0 * vd / N);
        r[j] = (float)(p2 ? md * iN : md / N);
    }
}

/* The backward's coefficient loop without renormalization (the clones: above). 128x1024x1x1: 1024
 * channels' roots and divisions, ~5 us of a ~60 us backward on one thread, baseline. */
DBN_COEF_CLONES
static void backward_channels_plain(const fctx *cx, int64_t c0, int64_t n, const double *s0, const double *s1,
                                    float *k, float *p, float *q, float *r)
{
    const dbn_flavor *fl = cx->fl;
    {
        const int eis = fl->eps_in_sqrt, bis = fl->bwd_eps_in_sqrt;
        const int same_bwd = fl->bwd_eps == fl->eps && bis == eis, same_stat = eis && fl->stat_eps == fl->eps;
        int e2;
        const int p2 = frexp(cx->n, &e2) == 0.5;   /* N a power of two (exactly) */
#define K(E, B, SB, SS)                                                                                         \
    do {                                                                                                        \
        if (p2) K2(E, B, SB, SS, 1); else K2(E, B, SB, SS, 0);                                                  \
    } while (0)
#define K2(E, B, SB, SS, P2)                                                                                    \
    backward_channels_k(E, B, SB, SS, P2, n, cx->n, fl, s0, s1, cx->stat_var + c0, cx->scales + c0,             \
                        cx->stat_mean + c0, cx->bias_updates + c0, cx->scale_updates + c0, cx->mean_delta + c0, \
                        cx->variance_delta + c0, k, p, q, r)
        if (same_bwd) {   /* bis == eis */
            if (eis && same_stat) K(1, 1, 1, 1);
            else if (eis) K(1, 1, 1, 0);
            else K(0, 0, 1, 0);
        } else if (eis) {
            if (same_stat && bis) K(1, 1, 0, 1);
            else if (same_stat) K(1, 0, 0, 1);
            else if (bis) K(1, 1, 0, 0);
            else K(1, 0, 0, 0);
        } else {
            if (bis) K(0, 1, 0, 0);
            else K(0, 0, 0, 0);
        }
#undef K2
#undef K
    }
}

static void coef_backward(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                          float *k, float *p, float *q, float *r)
{
    const fctx *cx = CTX(job);
    if (cx->train && !cx->r && !cx->d) {
        backward_channels_plain(cx, c0, n, s0, s1, k, p, q, r);
        return;
    }
    for (int64_t j = 0; j < n; ++j) backward_channel(cx, c0 + j, s0[j], s1[j], s0[j], s1[j], k + j, p + j, q + j, r + j);
}

static void coef_backward_sums(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                               float *k, float *p, float *q, float *r)
{
    (void)k; (void)p; (void)q; (void)r;
    for (int64_t j = 0; j < n; ++j) {
        CTX(job)->sums[2 * (c0 + j)] = s0[j];
        CTX(job)->sums[2 * (c0 + j) + 1] = s1[j];
    }
}

static void coef_backward_apply(const dbn_job *job, int64_t c0, int64_t n, const double *s0, const double *s1,
                                float *k, float *p, float *q, float *r)
{
    (void)s0; (void)s1;
    const fctx *cx = CTX(job);
    for (int64_t j = 0; j < n; ++j) {
        const double *l = cx->lsums + 2 * (c0 + j), *g = cx->gsums + 2 * (c0 + j);
        backward_channel(cx, c0 + j, l[0], l[1], g[0], g[1], k + j, p + j, q + j, r + j);
    }
}

/* pre_backward without renormalization, vectorizable (as backward_channels_k): stat_coef's
 * expressions with r = 1, d = 0. */
DBN_COEF_CLONES
static void pre_channels_plain(int64_t n, double eps, int eps_in_sqrt, const float *restrict scale,
                               const float *restrict bias, const float *restrict var, float *restrict pf,
                               float *restrict qf)
{
    const double rr = 1.0, dd = 0.0;
    if (eps_in_sqrt) {
        for (int64_t j = 0; j < n; ++j) {
            pf[j] = (float)((double)scale[j] * rr / sqrt((double)var[j] + eps));
            qf[j] = (float)((double)bias[j] + (double)scale[j] * dd);
        }
    } else {
        for (int64_t j = 0; j < n; ++j) {
            pf[j] = (float)((double)scale[j] * rr / (sqrt((double)var[j]) + eps));
            qf[j] = (float)((double)bias[j] + (double)scale[j] * dd);
        }
    }
}

/* The forward's coefficients of channels [c0, c0+n) for a backward with an activation: what the training
 * forward (from the stored mean, variance, r, d) or the inference forward (rolling statistics) mapped
 * with, from the same floats by the same expression (stat_coef). */
static void pre_backward(const dbn_job *job, int64_t c0, int64_t n, float *pf, float *qf)
{
    const fctx *cx = CTX(job);
    const dbn_flavor *fl = cx->fl;
    if (!(cx->train && cx->r) && !(cx->train && cx->d)) {
        pre_channels_plain(n, fl->eps, fl->eps_in_sqrt, cx->scales + c0, cx->biases + c0, cx->stat_var + c0, pf, qf);
        return;
    }
    for (int64_t j = 0; j < n; ++j) {
        const int64_t c = c0 + j;
        const double rr = cx->train && cx->r ? cx->r[c] : 1.0, dd = cx->train && cx->d ? cx->d[c] : 0.0;
        float k;
        stat_coef(cx->scales[c], cx->biases[c], cx->stat_mean[c], cx->stat_var[c], rr, dd, fl->eps, fl->eps_in_sqrt,
                  &k, pf + j, qf + j);
    }
}

/* Activations whose derivative costs more than a store and a load of g (exp, divisions): the backward's
 * reduction stores g into the output for the map (whose plain stores the output takes anyway) instead of
 * the map evaluating the derivative again. The cheap ones (selects, a multiply-add) are recomputed. */
static int costly_derivative(int kind)
{
    switch (kind) {
    case DBN_ACT_LINEAR: case DBN_ACT_LEAKY: case DBN_ACT_RELU: case DBN_ACT_RELU6: case DBN_ACT_HARD_MISH:
    case DBN_ACT_HARDSWISH:
        return 0;
    default:
        return 1;
    }
}

static void backward_job(dbn_job *job, const float *x, const float *delta, float *out, float *out2,
                         const float *mean, int64_t batch, int64_t c, int64_t spatial, const fctx *ctx,
                         const dbn_act *act)
{
    dbn_job_init(job, batch, c, spatial);
    job->act = act_kind(act);
    job->alpha = act_alpha(act);
    job->pre = job->act != DBN_ACT_LINEAR ? pre_backward : NULL;
    job->shift_mode = DBN_SHIFT_GIVEN;
    job->shift = mean;
    job->map = out ? DBN_M_BWD : DBN_M_NONE;
    job->a = x;
    job->b = delta;
    job->out = out;
    job->out2 = out2;
    job->ctx = ctx;
    /* in place (out == delta: the lines written were just read, so streaming saves no read-for-ownership
     * and only evicts them) never streams: 0.81-0.95x the streamed time from 14 MiB on an AMD EPYC (1.01-1.05x
     * at 10-12), 0.60-0.65x on the Intel VM (docs/performance.md sections 4 and 20) */
    job->nt = out != delta && out_bytes(batch, c, spatial) > DBN_NT_BACKWARD_BYTES;
}

/* The costly derivatives' g stored by the backward's reduction for tensors of at most this many values
 * (beyond, the map evaluates the derivative again). -D for experiments (docs/performance.md, section 9). */
#ifndef DBN_STORE_G_MAX
#define DBN_STORE_G_MAX 1e300
#endif
#ifndef DBN_STORE_G_CHEAP_MAX   /* the same for the cheap ones (leaky, relu, ...) */
#define DBN_STORE_G_CHEAP_MAX DBN_SMALL
#endif

/* Both backwards: the input's delta into out (and out2 when not NULL); delta and out may be one buffer. */
static void run_backward(const float *x, const float *delta, float *out, float *out2, const float *scales,
                         const float *biases, const float *mean, const float *variance, const float *r,
                         const float *d, float *scale_updates, float *bias_updates, float *mean_delta,
                         float *variance_delta, int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *flavor,
                         int train, const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .stat_mean = mean, .stat_var = variance, .r = r, .d = d,
                .scale_updates = scale_updates, .bias_updates = bias_updates, .mean_delta = mean_delta,
                .variance_delta = variance_delta, .fl = flavor, .n = (double)batch * (double)spatial,
                .train = train};
    dbn_job job;
    backward_job(&job, x, delta, out, out2, mean, batch, c, spatial, &ctx, act);
    job.reduce = DBN_R_DOT2;
    job.coef = coef_backward;
    /* g stored also for the cheap derivatives when the tensor is small enough for one fused task (its
     * data in cache: the store of g, to lines the map writes anyway, costs less than the map evaluating
     * the derivative again); the same bits either way */
    const double values = (double)batch * (double)c * (double)spatial;
    job.store_g = job.act != DBN_ACT_LINEAR &&
                  values <= (costly_derivative(job.act) ? DBN_STORE_G_MAX : DBN_STORE_G_CHEAP_MAX);
    /* g stored: the map's stores land on the lines the reduction just wrote (dirty in the cache), where a
     * non-temporal store first evicts the line (a write-back) and then writes it again: plain stores
     * (docs/performance.md, section 5: fwd+bwd with swish on 16x128x52x52, one thread, 1.6x -> 1.3x of
     * the plain passes from this alone) */
    if (job.store_g) job.nt = 0;
    dbn_run(&job, exec);
}

void dbn_backward(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict biases, const float *restrict mean,
                  const float *restrict variance, const float *restrict r, const float *restrict d,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  const dbn_act *act, const dbn_exec *exec)
{
    run_backward(x, delta, delta, net_delta, scales, biases, mean, variance, r, d, scale_updates, bias_updates,
                 mean_delta, variance_delta, batch, c, spatial, flavor, train, act, exec);
}

void dbn_forward_train_with(const float *x, const dbn_train_call *a, const dbn_act *act)
{
    dbn_forward_train(x, a->out, a->scales, a->biases, a->mean, a->variance, a->rolling_mean, a->rolling_variance,
                      a->batch, a->c, a->spatial, a->flavor, a->renorm, act, a->exec);
}

void dbn_forward_infer_with(const float *x, const dbn_infer_call *a, const dbn_act *act)
{
    dbn_forward_infer(x, a->out, a->scales, a->biases, a->rolling_mean, a->rolling_variance, a->batch, a->c,
                      a->spatial, a->flavor, act, a->exec);
}

void dbn_backward_with(const float *x, float *delta, float *net_delta, const dbn_backward_call *a,
                       const dbn_act *act)
{
    dbn_backward(x, delta, net_delta, a->scales, a->biases, a->mean, a->variance, a->r, a->d, a->scale_updates,
                 a->bias_updates, a->mean_delta, a->variance_delta, a->batch, a->c, a->spatial, a->flavor, a->train,
                 act, a->exec);
}

void dbn_backward_into(const float *restrict x, const float *restrict delta, float *restrict dx,
                       const float *restrict scales, const float *restrict biases, const float *restrict mean,
                       const float *restrict variance, const float *restrict r, const float *restrict d,
                       float *restrict scale_updates, float *restrict bias_updates,
                       float *restrict mean_delta, float *restrict variance_delta,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                       const dbn_act *act, const dbn_exec *exec)
{
    run_backward(x, delta, dx, NULL, scales, biases, mean, variance, r, d, scale_updates, bias_updates, mean_delta,
                 variance_delta, batch, c, spatial, flavor, train, act, exec);
}

void dbn_backward_sums(const float *restrict x, const float *restrict delta, const float *restrict scales,
                       const float *restrict biases, const float *restrict mean, const float *restrict variance,
                       const float *restrict r, const float *restrict d, int64_t batch, int64_t c,
                       int64_t spatial, double *restrict sums, const dbn_flavor *restrict flavor,
                       const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.sums = sums, .scales = scales, .biases = biases, .stat_mean = mean, .stat_var = variance,
                .r = r, .d = d, .fl = flavor, .train = 1};
    dbn_job job;
    backward_job(&job, x, delta, NULL, NULL, mean, batch, c, spatial, &ctx, act);
    job.reduce = DBN_R_DOT2;
    job.coef = coef_backward_sums;
    dbn_run(&job, exec);
}

void dbn_backward_apply(const float *restrict x, float *restrict delta, float *restrict net_delta,
                        const float *restrict scales, const float *restrict biases, const float *restrict mean,
                        const float *restrict variance, const float *restrict r, const float *restrict d,
                        const double *restrict local_sums, const double *restrict global_sums, double count,
                        float *restrict scale_updates, float *restrict bias_updates,
                        float *restrict mean_delta, float *restrict variance_delta,
                        int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                        const dbn_act *act, const dbn_exec *exec)
{
    fctx ctx = {.scales = scales, .biases = biases, .stat_mean = mean, .stat_var = variance, .r = r, .d = d,
                .scale_updates = scale_updates, .bias_updates = bias_updates, .mean_delta = mean_delta,
                .variance_delta = variance_delta, .fl = flavor, .lsums = local_sums, .gsums = global_sums,
                .n = count, .train = 1};
    dbn_job job;
    backward_job(&job, x, delta, delta, net_delta, mean, batch, c, spatial, &ctx, act);
    job.coef = coef_backward_apply;
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
