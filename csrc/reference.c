/* reference.c -- the plain reference of every fast kernel: straightforward loops, one channel at a
 * time, double accumulators, 64-bit indices. The fast kernels (kernels.c, fused.c on the engine) are
 * tested against these and against the float64 numpy reference; `darknet-bn bench` measures them as
 * the "plain" baseline. Each has the contract of the function of the same name without _ref in
 * darknet_bn.h; the exec argument is ignored (one thread).
 */
#include "darknet_bn.h"
#include "internal.h"

#include <math.h>
#include <stddef.h>

void mean_cpu_ref(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
              float *restrict mean, const dbn_exec *exec)
{
    (void)exec;
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

void variance_cpu_ref(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                  int64_t spatial, float *restrict variance, const dbn_exec *exec)
{
    (void)exec;
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

void normalize_cpu_ref(float *restrict x, const float *restrict mean, const float *restrict variance,
                   int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                   const dbn_exec *exec)
{
    (void)exec;
    for (int64_t f = 0; f < filters; ++f) {
        const double m = mean[f];
        const double inv = 1.0 / dbn_denominator(variance[f], eps, eps_in_sqrt);
        for (int64_t b = 0; b < batch; ++b) {
            float *p = x + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) p[s] = (float)(((double)p[s] - m) * inv);
        }
    }
}

void scale_bias_ref(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                int64_t size, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t f = 0; f < n; ++f) {
            float *p = output + (b * n + f) * size;
            const float k = scales[f];
            for (int64_t s = 0; s < size; ++s) p[s] *= k;
        }
}

void add_bias_ref(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
              int64_t size, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t f = 0; f < n; ++f) {
            float *p = output + (b * n + f) * size;
            const float k = biases[f];
            for (int64_t s = 0; s < size; ++s) p[s] += k;
        }
}

void backward_bias_ref(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                   int64_t size, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t f = 0; f < n; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = delta + (b * n + f) * size;
            for (int64_t s = 0; s < size; ++s) sum += p[s];
        }
        bias_updates[f] = (float)((double)bias_updates[f] + sum);
    }
}

void backward_scale_cpu_ref(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                        int64_t n, int64_t size, float *restrict scale_updates, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t f = 0; f < n; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * n + f) * size;
            for (int64_t s = 0; s < size; ++s) sum += (double)delta[o + s] * (double)x_norm[o + s];
        }
        scale_updates[f] = (float)((double)scale_updates[f] + sum);
    }
}

void mean_delta_cpu_ref(const float *restrict delta, const float *restrict variance, int64_t batch,
                    int64_t filters, int64_t spatial, float *restrict mean_delta, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t f = 0; f < filters; ++f) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; ++b) {
            const float *p = delta + (b * filters + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) sum += p[s];
        }
        mean_delta[f] = (float)(-sum / sqrt((double)variance[f] + DBN_DARKNET_EPS));
    }
}

void variance_delta_cpu_ref(const float *restrict x, const float *restrict delta, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                        float *restrict variance_delta, const dbn_exec *exec)
{
    (void)exec;
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

void normalize_delta_cpu_ref(const float *restrict x, const float *restrict mean, const float *restrict variance,
                         const float *restrict mean_delta, const float *restrict variance_delta,
                         int64_t batch, int64_t filters, int64_t spatial, float *restrict delta,
                         float eps, int eps_in_sqrt, const dbn_exec *exec)
{
    (void)exec;
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

void dbn_forward_train_ref(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       const dbn_exec *exec)
{
    (void)exec;
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

void dbn_forward_infer_ref(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_exec *exec)
{
    (void)exec;
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

void dbn_backward_ref(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict mean, const float *restrict variance,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  const dbn_exec *exec)
{
    (void)exec;
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

void dbn_normalize_into_ref(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t c, int64_t spatial,
                        double eps, int eps_in_sqrt, const dbn_exec *exec)
{
    (void)exec;
    for (int64_t f = 0; f < c; ++f) {
        const double m = mean[f];
        const double inv = 1.0 / dbn_denominator(variance[f], eps, eps_in_sqrt);
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t o = (b * c + f) * spatial;
            for (int64_t s = 0; s < spatial; ++s) x_norm[o + s] = (float)(((double)x[o + s] - m) * inv);
        }
    }
}


/* ------------------------------------------------------------------------------------------------
 * Darknet's layer passes as Darknet writes them: a sequence of the plain kernels above, with its
 * copies (forward_batchnorm_layer and backward_batchnorm_layer of src/batchnorm_layer.c). The
 * benchmark's "plain" baseline. */

static void copy_ref(const float *restrict from, float *restrict to, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) to[i] = from[i];
}

void forward_batchnorm_layer_ref(const float *restrict input, float *restrict output, float *restrict x,
                                 float *restrict x_norm, const float *restrict scales,
                                 const float *restrict biases, float *restrict mean, float *restrict variance,
                                 float *restrict rolling_mean, float *restrict rolling_variance, int64_t batch,
                                 int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train)
{
    const int64_t n = batch * c * spatial, count = batch * spatial;
    copy_ref(input, output, n);
    copy_ref(output, x, n);
    if (train) {
        mean_cpu_ref(output, batch, c, spatial, mean, NULL);
        variance_cpu_ref(output, mean, batch, c, spatial, variance, NULL);
        for (int64_t f = 0; f < c; ++f) {
            const double m = flavor->momentum, v = variance[f];
            rolling_mean[f] = (float)((1.0 - m) * rolling_mean[f] + m * mean[f]);
            rolling_variance[f] = (float)((1.0 - m) * rolling_variance[f] + m * v);
            if (!flavor->unbiased) variance[f] = (float)(v * (double)(count - 1) / (double)count);
        }
        normalize_cpu_ref(output, mean, variance, batch, c, spatial, (float)flavor->eps, flavor->eps_in_sqrt, NULL);
        copy_ref(output, x_norm, n);
    } else {
        normalize_cpu_ref(output, rolling_mean, rolling_variance, batch, c, spatial, (float)flavor->eps,
                          flavor->eps_in_sqrt, NULL);
    }
    scale_bias_ref(output, scales, batch, c, spatial, NULL);
    add_bias_ref(output, biases, batch, c, spatial, NULL);
}

void backward_batchnorm_layer_ref(const float *restrict x, const float *restrict x_norm, float *restrict delta,
                                  float *restrict net_delta, const float *restrict scales,
                                  const float *restrict mean, const float *restrict variance,
                                  float *restrict scale_updates, float *restrict bias_updates,
                                  float *restrict mean_delta, float *restrict variance_delta, int64_t batch,
                                  int64_t c, int64_t spatial, const dbn_flavor *restrict flavor)
{
    backward_bias_ref(bias_updates, delta, batch, c, spatial, NULL);
    backward_scale_cpu_ref(x_norm, delta, batch, c, spatial, scale_updates, NULL);
    scale_bias_ref(delta, scales, batch, c, spatial, NULL);
    mean_delta_cpu_ref(delta, variance, batch, c, spatial, mean_delta, NULL);
    variance_delta_cpu_ref(x, delta, mean, variance, batch, c, spatial, variance_delta, NULL);
    normalize_delta_cpu_ref(x, mean, variance, mean_delta, variance_delta, batch, c, spatial, delta,
                            (float)flavor->bwd_eps, flavor->bwd_eps_in_sqrt, NULL);
    if (net_delta) copy_ref(delta, net_delta, batch * c * spatial);
}

/* Darknet's activations (AlexeyAB's src/activations.h) and PyTorch's hardswish and GELU, one value at a
 * time with libm. */
static float act_one(float v, int kind, float alpha)
{
    switch (kind) {
    case DBN_ACT_LEAKY: return v > 0 ? v : alpha * v;
    case DBN_ACT_RELU: return v * (v > 0);
    case DBN_ACT_RELU6: { const float t = v > 0 ? v : 0; return t < 6 ? t : 6; }
    case DBN_ACT_LOGISTIC: return 1.f / (1.f + expf(-v));
    case DBN_ACT_TANH: return tanhf(v);
    case DBN_ACT_ELU: return v >= 0 ? v : expm1f(v);
    case DBN_ACT_SELU: return v >= 0 ? 1.0507f * v : 1.0507f * 1.6732f * expm1f(v);
    case DBN_ACT_GELU: return (float)(0.5 * v * (1 + tanh(0.797885 * v + 0.035677 * (double)v * v * v)));
    case DBN_ACT_SWISH: return v / (1.f + expf(-v));
    case DBN_ACT_MISH: return v > 20 ? v : v * tanhf(v < -20 ? expf(v) : log1pf(expf(v)));
    case DBN_ACT_HARD_MISH: return v > 0 ? v : v > -2 ? v * v / 2 + v : 0;
    case DBN_ACT_HARDSWISH: {   /* PyTorch's x * min(max(x + 3, 0), 6) / 6, NaN kept */
        float t = v + 3.0f;
        t = t < 0.0f ? 0.0f : t;
        t = 6.0f < t ? 6.0f : t;
        return v * t / 6.0f;
    }
    case DBN_ACT_GELU_ERF: return (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
    default: return v;
    }
}

/* What gradient_array multiplies delta by: Darknet's gradient of the OUTPUT y for linear, leaky, relu,
 * relu6, logistic, tanh, elu, selu (AlexeyAB's *_gradient); the derivative at the INPUT x for the
 * others (mish: AlexeyAB's gradient_array_mish formula; hard_mish: hard_mish_yashas_grad; swish:
 * AlexeyAB's swish + sigmoid * (1 - swish); gelu: the derivative of the forward's formula -- Darknet's
 * gelu_gradient applied to the output is wrong; hardswish, gelu_erf: PyTorch's backward). */
static float grad_one(float v, int kind, float alpha)
{
    switch (kind) {
    case DBN_ACT_LEAKY: return v > 0 ? 1.0f : alpha;
    case DBN_ACT_RELU: return (float)(v > 0);
    case DBN_ACT_RELU6: return (float)(v > 0 && v < 6);
    case DBN_ACT_LOGISTIC: return (1 - v) * v;
    case DBN_ACT_TANH: return 1 - v * v;
    case DBN_ACT_ELU: return (v >= 0) + (v < 0) * (v + 1);
    case DBN_ACT_SELU: return (v >= 0) * 1.0507f + (v < 0) * (v + 1.0507f * 1.6732f);
    case DBN_ACT_GELU: {
        const double x = v, u = 0.797885 * x + 0.035677 * x * x * x, t = tanh(u);
        return (float)(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (0.797885 + 3 * 0.035677 * x * x));
    }
    case DBN_ACT_SWISH: {   /* the swish capped at 2^23 (+inf: 1), and 0 where s is (-inf: 0), the limits, as
                               vec_math.h's (why: there); NaN stays NaN */
        const float s = 1.f / (1.f + expf(-v)), y0 = s > 0 ? v * s : 0.f, y = y0 > 8388608.f ? 8388608.f : y0;
        return y + s * (1 - y);
    }
    case DBN_ACT_MISH: {
        const float sp = v > 20 ? v : v < -20 ? expf(v) : log1pf(expf(v));
        const float grad_sp = 1 - expf(-sp), tsp = tanhf(sp), grad_tsp = (1 - tsp * tsp) * grad_sp;
        return v * grad_tsp + tsp;
    }
    case DBN_ACT_HARD_MISH: return v > 0 ? 1.0f : v > -2 ? v + 1 : 0.0f;
    case DBN_ACT_HARDSWISH: return v < -3.0f ? 0.0f : v <= 3.0f ? v / 3.0f + 0.5f : 1.0f;
    case DBN_ACT_GELU_ERF: {
        const double x = v;
        return (float)(0.5 * (1.0 + erf(x * 0.70710678118654752440)) + x * exp(-0.5 * x * x) * 0.39894228040143267794);
    }
    default: return 1.0f;
    }
}

void dbn_activate_ref(float *x, int64_t n, int act)
{
    for (int64_t i = 0; i < n; ++i) x[i] = act_one(x[i], act, 0.1f);
}

void activate_array_ref(float *x, int64_t n, const dbn_act *a)
{
    const int kind = a ? a->kind : DBN_ACT_LINEAR;
    const float alpha = a ? a->alpha : 0.0f;
    for (int64_t i = 0; i < n; ++i) x[i] = act_one(x[i], kind, alpha);
}

void gradient_array_ref(const float *x, int64_t n, const dbn_act *a, float *delta)
{
    const int kind = a ? a->kind : DBN_ACT_LINEAR;
    const float alpha = a ? a->alpha : 0.0f;
    for (int64_t i = 0; i < n; ++i) delta[i] *= grad_one(x[i], kind, alpha);
}
