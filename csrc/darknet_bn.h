/* darknet_bn.h -- every C entry point of darknet_bn.
 *
 * This is the one declaration of the C API: the cffi build script (darknet_bn/_build.py) reads this file
 * (dropping the preprocessor lines) as its cdef, and every .c file in csrc/ includes it.
 *
 * Conventions
 * - Tensors are flat float32 buffers in NCHW order. A tensor of shape [batch, filters, spatial]
 *   (spatial = h*w) holds element (b, f, s) at index (b*filters + f)*spatial + s.
 * - Per-channel arrays have `filters` (or `n`) elements.
 * - Sizes and indices are int64_t. Callers (the Python layer) have checked every size and pointer;
 *   the C code trusts its arguments.
 * - `nthreads`: OpenMP team size; 0 means the OpenMP default (OMP_NUM_THREADS or the core count).
 *   Without OpenMP every kernel runs on the calling thread.
 * - Statistics are accumulated in double. Darknet accumulates in float, which is badly wrong on large
 *   channels (see README, "Accuracy").
 *
 * The backward derivation behind mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu and
 * dbn_backward is written down once, in docs/backward.md.
 */
#ifndef DARKNET_BN_H
#define DARKNET_BN_H

#include <stdint.h>

/* ---------------------------------------------------------------------------------------------------
 * A flavor: how one implementation of batch normalization reproduces pjreddie's Darknet, AlexeyAB's
 * Darknet or PyTorch. The Python table in darknet_bn/flavors.py fills it.
 * denominators: "in sqrt" means sqrt(var + eps), otherwise sqrt(var) + eps.
 */
typedef struct dbn_flavor {
    double momentum;     /* rolling = (1 - momentum) * rolling + momentum * batch statistic          */
    double eps;          /* forward and inference normalization: (x - mean) / denominator(var, eps) */
    int eps_in_sqrt;
    int unbiased;        /* 1: the batch variance that normalizes divides by N-1 (Darknet); 0: by N  */
    double bwd_eps;      /* backward, the direct term: delta * scale / denominator(var, bwd_eps)     */
    int bwd_eps_in_sqrt;
    double stat_eps;     /* backward, mean_delta and variance_delta: sqrt(var + stat_eps)           */
} dbn_flavor;

/* ---------------------------------------------------------------------------------------------------
 * Darknet's named kernels: Darknet's names and argument order, 64-bit sizes, then (where the forks
 * differ) the variant, then nthreads. Each computes what Darknet's does, with accurate sums.
 */

/* x: [batch, filters, spatial] -> mean: [filters]; mean = sum / (batch*spatial). */
void mean_cpu(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
              float *restrict mean, int nthreads);

/* x: [batch, filters, spatial], mean: [filters] -> variance: [filters];
 * variance = sum (x - mean)^2 / (batch*spatial - 1)   (unbiased, as Darknet). */
void variance_cpu(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                  int64_t spatial, float *restrict variance, int nthreads);

/* x: [batch, filters, spatial], in place; mean, variance: [filters].
 * x = (x - mean) / sqrt(variance + eps)   if eps_in_sqrt (AlexeyAB: eps = 1e-5f)
 * x = (x - mean) / (sqrt(variance) + eps) otherwise      (pjreddie: eps = 1e-6f) */
void normalize_cpu(float *restrict x, const float *restrict mean, const float *restrict variance,
                   int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                   int nthreads);

/* output: [batch, n, size], in place; scales: [n]. output *= scales. */
void scale_bias(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                int64_t size, int nthreads);

/* output: [batch, n, size], in place; biases: [n]. output += biases. */
void add_bias(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
              int64_t size, int nthreads);

/* delta: [batch, n, size] -> bias_updates: [n]; bias_updates += sum of delta (adds, as Darknet). */
void backward_bias(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                   int64_t size, int nthreads);

/* x_norm, delta: [batch, n, size] -> scale_updates: [n]; scale_updates += sum delta*x_norm (adds). */
void backward_scale_cpu(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                        int64_t n, int64_t size, float *restrict scale_updates, int nthreads);

/* delta: [batch, filters, spatial], variance: [filters] -> mean_delta: [filters];
 * mean_delta = -sum(delta) / sqrt(variance + 1e-5f). */
void mean_delta_cpu(const float *restrict delta, const float *restrict variance, int64_t batch,
                    int64_t filters, int64_t spatial, float *restrict mean_delta, int nthreads);

/* x, delta: [batch, filters, spatial]; mean, variance: [filters] -> variance_delta: [filters];
 * variance_delta = sum(delta * (x - mean)) * -1/2 * (variance + 1e-5f)^(-3/2). */
void variance_delta_cpu(const float *restrict x, const float *restrict delta, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                        float *restrict variance_delta, int nthreads);

/* x, delta: [batch, filters, spatial]; the rest [filters]; delta in place, N = batch*spatial:
 * delta = delta / denominator(variance, eps) + variance_delta * 2 (x - mean) / N + mean_delta / N
 * with denominator sqrt(variance + eps) if eps_in_sqrt (pjreddie: 1e-5f), else sqrt(variance) + eps
 * (AlexeyAB: 1e-5f). */
void normalize_delta_cpu(const float *restrict x, const float *restrict mean, const float *restrict variance,
                         const float *restrict mean_delta, const float *restrict variance_delta,
                         int64_t batch, int64_t filters, int64_t spatial, float *restrict delta,
                         float eps, int eps_in_sqrt, int nthreads);

/* ---------------------------------------------------------------------------------------------------
 * Whole passes of the layer (what darknet_bn.Layer calls). Shapes: x, out, delta, net_delta, x_norm:
 * [batch, c, spatial]; every other array: [c].
 */

/* Training forward. Writes mean and variance (the batch variance that normalizes, by the flavor's
 * divisor), updates rolling_mean and rolling_variance (with the unbiased variance) and writes
 * out = scales * (x - mean) / denominator(variance, eps) + biases.
 * Requires batch*spatial >= 2. */
void dbn_forward_train(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       int nthreads);

/* Inference forward: out = scales * (x - rolling_mean) / denominator(rolling_variance, eps) + biases.
 * out may be x (in place); otherwise the two must not overlap. */
void dbn_forward_infer(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, int nthreads);

/* Backward. delta holds the output's delta on entry and the input's delta on return (as Darknet's
 * l.delta); net_delta, when not NULL, receives the input's delta too. mean and variance are the
 * statistics the forward normalized with. train = 1: Darknet's training backward for the flavor
 * (mean_delta, variance_delta written). train = 0: the exact gradient of the inference forward
 * (mean and variance are the rolling statistics, constants: mean_delta = variance_delta = 0).
 * scale_updates += sum delta * x_norm, bias_updates += sum delta, in both modes. */
void dbn_backward(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict mean, const float *restrict variance,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  int nthreads);

/* x_norm = (x - mean) / denominator(variance, eps), out of place (the layer's x_norm on demand). */
void dbn_normalize_into(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t c, int64_t spatial,
                        double eps, int eps_in_sqrt, int nthreads);

/* Darknet's update_batchnorm_layer on [c] arrays, with rate = learning_rate / batch:
 * biases += rate * bias_updates; bias_updates *= momentum; scales += rate * scale_updates;
 * scale_updates *= momentum. */
void dbn_update(float *restrict scales, float *restrict scale_updates, float *restrict biases,
                float *restrict bias_updates, int64_t c, double rate, double momentum);

/* ---------------------------------------------------------------------------------------------------
 * Build facts. */

/* The OpenMP default team size, or 1 when built without OpenMP. */
int dbn_max_threads(void);
/* 1 when built with OpenMP. */
int dbn_has_openmp(void);

#endif /* DARKNET_BN_H */
