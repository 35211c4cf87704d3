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
 * - `exec` (last argument): how to run -- threads and instruction set; NULL means the defaults.
 *   Results do not depend on it: the work is split by shape only, and partial sums are combined in
 *   a fixed order, so any thread count gives the same bits (for a given instruction set).
 * - Statistics are accumulated in double. Darknet accumulates in float, which is badly wrong on large
 *   channels (see README, "Accuracy").
 *
 * The backward derivation behind mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu and
 * dbn_backward is written down once, in docs/backward.md.
 */
#ifndef DARKNET_BN_H
#define DARKNET_BN_H

#include <stdint.h>

/* How to run a call. */
typedef struct dbn_exec {
    int nthreads;        /* OpenMP team size; 0: the OpenMP default (OMP_NUM_THREADS or the cores) */
    int isa;             /* widest instruction set to use: 0 the best the CPU has, 1 baseline,
                            2 AVX2+FMA (x86-64-v3), 3 AVX-512 (x86-64-v4); capped at what the CPU has */
    int plain_stores;    /* 1: plain stores only; 0 (default): outputs above a size (internal.h) are
                            written with non-temporal stores. Speed only: the results are the same bits */
} dbn_exec;

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
 * differ) the variant, then exec. Each computes what Darknet's does, with accurate sums.
 */

/* x: [batch, filters, spatial] -> mean: [filters]; mean = sum / (batch*spatial). */
void mean_cpu(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
              float *restrict mean, const dbn_exec *exec);

/* x: [batch, filters, spatial], mean: [filters] -> variance: [filters];
 * variance = sum (x - mean)^2 / (batch*spatial - 1)   (unbiased, as Darknet). */
void variance_cpu(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                  int64_t spatial, float *restrict variance, const dbn_exec *exec);

/* x: [batch, filters, spatial], in place; mean, variance: [filters].
 * x = (x - mean) / sqrt(variance + eps)   if eps_in_sqrt (AlexeyAB: eps = 1e-5f)
 * x = (x - mean) / (sqrt(variance) + eps) otherwise      (pjreddie: eps = 1e-6f) */
void normalize_cpu(float *restrict x, const float *restrict mean, const float *restrict variance,
                   int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                   const dbn_exec *exec);

/* output: [batch, n, size], in place; scales: [n]. output *= scales. */
void scale_bias(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                int64_t size, const dbn_exec *exec);

/* output: [batch, n, size], in place; biases: [n]. output += biases. */
void add_bias(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
              int64_t size, const dbn_exec *exec);

/* delta: [batch, n, size] -> bias_updates: [n]; bias_updates += sum of delta (adds, as Darknet). */
void backward_bias(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                   int64_t size, const dbn_exec *exec);

/* x_norm, delta: [batch, n, size] -> scale_updates: [n]; scale_updates += sum delta*x_norm (adds). */
void backward_scale_cpu(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                        int64_t n, int64_t size, float *restrict scale_updates, const dbn_exec *exec);

/* delta: [batch, filters, spatial], variance: [filters] -> mean_delta: [filters];
 * mean_delta = -sum(delta) / sqrt(variance + 1e-5f). */
void mean_delta_cpu(const float *restrict delta, const float *restrict variance, int64_t batch,
                    int64_t filters, int64_t spatial, float *restrict mean_delta, const dbn_exec *exec);

/* x, delta: [batch, filters, spatial]; mean, variance: [filters] -> variance_delta: [filters];
 * variance_delta = sum(delta * (x - mean)) * -1/2 * (variance + 1e-5f)^(-3/2). */
void variance_delta_cpu(const float *restrict x, const float *restrict delta, const float *restrict mean,
                        const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                        float *restrict variance_delta, const dbn_exec *exec);

/* x, delta: [batch, filters, spatial]; the rest [filters]; delta in place, N = batch*spatial:
 * delta = delta / denominator(variance, eps) + variance_delta * 2 (x - mean) / N + mean_delta / N
 * with denominator sqrt(variance + eps) if eps_in_sqrt (pjreddie: 1e-5f), else sqrt(variance) + eps
 * (AlexeyAB: 1e-5f). */
void normalize_delta_cpu(const float *restrict x, const float *restrict mean, const float *restrict variance,
                         const float *restrict mean_delta, const float *restrict variance_delta,
                         int64_t batch, int64_t filters, int64_t spatial, float *restrict delta,
                         float eps, int eps_in_sqrt, const dbn_exec *exec);

/* ---------------------------------------------------------------------------------------------------
 * Activations: Darknet's element-wise activations (AlexeyAB's src/activations.h) and two of PyTorch's,
 * applied by the passes below in the same pass as the normalization (forward) and its derivative inside
 * the backward's passes:
 * linear x; leaky x > 0 ? x : alpha x (Darknet: alpha = .1f); relu x*(x > 0); relu6 min(max(x, 0), 6);
 * logistic 1/(1 + e^-x); tanh; elu x >= 0 ? x : e^x - 1; selu 1.0507 (x >= 0 ? x : 1.6732 (e^x - 1));
 * gelu .5x (1 + tanh(.797885x + .035677x^3)); swish x logistic(x); mish x tanh(softplus(x))
 * (x above 20: x); hard_mish x > 0 ? x : x > -2 ? x^2/2 + x : 0;
 * hardswish x min(max(x + 3, 0), 6) / 6 (torch.nn.Hardswish); gelu_erf .5x (1 + erf(x / sqrt 2))
 * (torch.nn.GELU(), approximate='none').
 * Derivatives (docs/backward.md): Darknet takes linear, leaky, relu, relu6, logistic, tanh, elu and selu
 * from the activation's OUTPUT (gradient_array on l.output) -- mathematically right, kept; gelu, swish,
 * mish, hard_mish, hardswish and gelu_erf are taken from the activation's INPUT (Darknet takes mish and
 * hard_mish from the input too; swish from the output and the saved logistic -- the same values; gelu
 * from the output, which is wrong: here the derivative at the input). */
enum dbn_activation {
    DBN_ACT_LINEAR = 0, DBN_ACT_LEAKY, DBN_ACT_RELU, DBN_ACT_RELU6, DBN_ACT_LOGISTIC, DBN_ACT_TANH,
    DBN_ACT_ELU, DBN_ACT_SELU, DBN_ACT_GELU, DBN_ACT_SWISH, DBN_ACT_MISH, DBN_ACT_HARD_MISH,
    DBN_ACT_HARDSWISH = 12, DBN_ACT_GELU_ERF = 13
};

typedef struct dbn_act {
    int kind;      /* DBN_ACT_* ; a NULL dbn_act pointer means DBN_ACT_LINEAR */
    float alpha;   /* DBN_ACT_LEAKY: the negative slope (Darknet's leaky: 0.1f); ignored by the other kinds */
} dbn_act;

/* Darknet's activate_array: x = act(x), in place over n values. */
void activate_array(float *x, int64_t n, const dbn_act *a, const dbn_exec *exec);

/* Darknet's gradient_array: delta *= the activation's derivative, over n values. x is the activation's
 * OUTPUT for the kinds Darknet differentiates from the output (linear, leaky, relu, relu6, logistic,
 * tanh, elu, selu; leaky from the output needs alpha >= 0) and its INPUT for the others (gelu, swish,
 * mish, hard_mish, hardswish, gelu_erf). x and delta must not overlap. */
void gradient_array(const float *x, int64_t n, const dbn_act *a, float *delta, const dbn_exec *exec);

/* ---------------------------------------------------------------------------------------------------
 * Whole passes of the layer (what darknet_bn.Layer calls). Shapes: x, out, delta, net_delta, x_norm:
 * [batch, c, spatial]; every other array: [c].
 */

/* Batch renormalization (Ioffe 2017, arXiv:1702.03275) in a training forward. Per channel, with
 * sigma_B the batch's denominator (the flavor's) and sigma = denominator(rolling_variance) taken
 * before the rolling update:
 *   r = clip(sigma_B / sigma, 1/rmax, rmax),  d = clip((mean - rolling_mean) / sigma, -dmax, dmax),
 *   x_hat = (x - mean) / sigma_B * r + d,  out = scales * x_hat + biases.
 * r and d ([c]) are written for the backward, which treats them as constants. rmax = 1, dmax = 0 is
 * plain batch normalization, bit for bit. */
typedef struct dbn_renorm {
    double rmax, dmax;
    float *r, *d;
} dbn_renorm;

/* Training forward. Writes mean and variance (the batch variance that normalizes, by the flavor's
 * divisor), updates rolling_mean and rolling_variance (with the unbiased variance) and writes
 * out = act(scales * (x - mean) / denominator(variance, eps) + biases) -- or, with renorm (not NULL),
 * act of the renormalized form above. act NULL: linear. With an activation other than linear the map's
 * per-channel coefficients are computed from the stored float mean, variance, r and d (so that the
 * backward recomputes the pre-activation with the same bits); linear keeps the double-precision mean's
 * residual. Requires batch*spatial >= 2. */
void dbn_forward_train(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                       const dbn_renorm *restrict renorm, const dbn_act *act, const dbn_exec *exec);



/* Inference forward, in one pass with the activation:
 * out = act(scales * (x - rolling_mean) / denominator(rolling_variance, eps) + biases).
 * out may be x (in place); otherwise the two must not overlap. */
void dbn_forward_infer(const float *x, float *out, const float *restrict scales,
                       const float *restrict biases, const float *restrict rolling_mean,
                       const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_act *act, const dbn_exec *exec);

/* Backward. delta holds the output's delta on entry and the input's delta on return (as Darknet's
 * l.delta); net_delta, when not NULL, receives the input's delta too. mean and variance are the
 * statistics the forward normalized with; r and d the renormalization's (NULL: plain BN).
 * train = 1: Darknet's training backward for the flavor (mean_delta, variance_delta written), with
 * r and d as constants. train = 0: the exact gradient of the inference forward (mean and variance are
 * the rolling statistics, constants: mean_delta = variance_delta = 0; r and d are ignored).
 * scale_updates += sum delta * x_hat, bias_updates += sum delta, in both modes.
 * act (NULL: linear): the activation the forward applied. delta on entry is then the delta of the
 * activation's output; the activation's derivative is applied inside the passes (the pre-activation
 * recomputed from x, mean, variance, scales, biases, r and d with the forward's coefficients -- no
 * tensor-sized buffer): the result is Darknet's gradient_array followed by backward_batchnorm_layer
 * (with the derivatives of docs/backward.md). biases is read only with an activation (may be NULL
 * without one). */
void dbn_backward(const float *restrict x, float *restrict delta, float *restrict net_delta,
                  const float *restrict scales, const float *restrict biases, const float *restrict mean,
                  const float *restrict variance, const float *restrict r, const float *restrict d,
                  float *restrict scale_updates, float *restrict bias_updates,
                  float *restrict mean_delta, float *restrict variance_delta,
                  int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                  const dbn_act *act, const dbn_exec *exec);

/* dbn_backward out of place: reads delta (the output's delta, left unchanged) and writes the input's
 * delta into dx, the same bits as dbn_backward leaves in delta. dx must not overlap x or delta. */
void dbn_backward_into(const float *restrict x, const float *restrict delta, float *restrict dx,
                       const float *restrict scales, const float *restrict biases, const float *restrict mean,
                       const float *restrict variance, const float *restrict r, const float *restrict d,
                       float *restrict scale_updates, float *restrict bias_updates,
                       float *restrict mean_delta, float *restrict variance_delta,
                       int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                       const dbn_act *act, const dbn_exec *exec);

/* The same three passes with their per-layer arguments in one struct (all but the tensors that change
 * from call to call and the activation): a caller that repeats its calls -- a layer, every step --
 * fills each struct once and passes it by pointer. Results are those of the calls above with the
 * struct's fields as arguments. (Why: a binding converts each argument on every call; through cffi,
 * 15-20 arguments cost more than a 256x32 pass's arithmetic.) */
typedef struct dbn_train_call {
    float *out;
    const float *scales, *biases;
    float *mean, *variance, *rolling_mean, *rolling_variance;
    int64_t batch, c, spatial;
    const dbn_flavor *flavor;
    const dbn_renorm *renorm;
    const dbn_exec *exec;
} dbn_train_call;
void dbn_forward_train_with(const float *x, const dbn_train_call *args, const dbn_act *act);

typedef struct dbn_infer_call {
    float *out;
    const float *scales, *biases, *rolling_mean, *rolling_variance;
    int64_t batch, c, spatial;
    const dbn_flavor *flavor;
    const dbn_exec *exec;
} dbn_infer_call;
void dbn_forward_infer_with(const float *x, const dbn_infer_call *args, const dbn_act *act);

/* dbn_backward's arguments after net_delta (mean, variance: the statistics the forward used) */
typedef struct dbn_backward_call {
    const float *scales, *biases, *mean, *variance, *r, *d;
    float *scale_updates, *bias_updates, *mean_delta, *variance_delta;
    int64_t batch, c, spatial;
    const dbn_flavor *flavor;
    int train;
    const dbn_exec *exec;
} dbn_backward_call;
void dbn_backward_with(const float *x, float *delta, float *net_delta, const dbn_backward_call *args,
                       const dbn_act *act);

/* x_norm = (x - mean) / denominator(variance, eps) * r + d, out of place (the layer's x_norm on
 * demand); r and d may be NULL (1 and 0). */
void dbn_normalize_into(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                        const float *restrict variance, const float *restrict r, const float *restrict d,
                        int64_t batch, int64_t c, int64_t spatial, double eps, int eps_in_sqrt,
                        const dbn_exec *exec);

/* ---------------------------------------------------------------------------------------------------
 * Synchronized batch normalization (darknet_bn.distributed): the training passes in two halves around
 * a reduction across processes. Each half is one pass over memory.
 *
 * moments [3c]: per channel (count, mean, M2 = sum of squared deviations from the mean), in double --
 * exact and mergeable (Chan, Golub and LeVeque); dbn_merge_moments is the reduction.
 * sums [2c]: per channel (sum delta, sum delta * (x - mean)). */
void dbn_forward_moments(const float *restrict x, int64_t batch, int64_t c, int64_t spatial,
                         double *restrict moments, const dbn_exec *exec);
/* a = merge(a, b): the moments of the union of the two sets of values, per channel. */
void dbn_merge_moments(double *restrict a, const double *restrict b, int64_t c);
/* The training forward's outputs from the (global) moments: as dbn_forward_train. Requires a count
 * >= 2 per channel. */
void dbn_forward_apply(const float *restrict x, float *restrict out, const float *restrict scales,
                       const float *restrict biases, float *restrict mean, float *restrict variance,
                       float *restrict rolling_mean, float *restrict rolling_variance,
                       const double *restrict moments, int64_t batch, int64_t c, int64_t spatial,
                       const dbn_flavor *restrict flavor, const dbn_renorm *restrict renorm,
                       const dbn_act *act, const dbn_exec *exec);
/* This process's sums [2c] of the training backward. With an activation (act not NULL nor linear) the
 * sums are of the delta times the activation's derivative (the pre-activation recomputed as in
 * dbn_backward: scales, biases, variance, r, d and flavor are read only then; they may be NULL without
 * one). */
void dbn_backward_sums(const float *restrict x, const float *restrict delta, const float *restrict scales,
                       const float *restrict biases, const float *restrict mean, const float *restrict variance,
                       const float *restrict r, const float *restrict d, int64_t batch, int64_t c,
                       int64_t spatial, double *restrict sums, const dbn_flavor *restrict flavor,
                       const dbn_act *act, const dbn_exec *exec);
/* The training backward from this process's sums (local: scale_updates and bias_updates, this
 * process's contribution) and the sums over all processes (global, with the global count of values
 * per channel: mean_delta, variance_delta and the input's delta), as dbn_backward with train = 1. */
void dbn_backward_apply(const float *restrict x, float *restrict delta, float *restrict net_delta,
                        const float *restrict scales, const float *restrict biases, const float *restrict mean,
                        const float *restrict variance, const float *restrict r, const float *restrict d,
                        const double *restrict local_sums, const double *restrict global_sums, double count,
                        float *restrict scale_updates, float *restrict bias_updates,
                        float *restrict mean_delta, float *restrict variance_delta,
                        int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor,
                        const dbn_act *act, const dbn_exec *exec);

/* Darknet's update_batchnorm_layer on [c] arrays, with rate = learning_rate / batch:
 * biases += rate * bias_updates; bias_updates *= momentum; scales += rate * scale_updates;
 * scale_updates *= momentum. */
void dbn_update(float *restrict scales, float *restrict scale_updates, float *restrict biases,
                float *restrict bias_updates, int64_t c, double rate, double momentum);

/* ---------------------------------------------------------------------------------------------------
 * Plain references (reference.c): every kernel above, written as straightforward loops (one channel at
 * a time, double accumulators, one thread), with the same contract. The tests compare the fast
 * kernels with them; the benchmark measures them as the baseline. */
void mean_cpu_ref(const float *restrict x, int64_t batch, int64_t filters, int64_t spatial,
                  float *restrict mean, const dbn_exec *exec);
void variance_cpu_ref(const float *restrict x, const float *restrict mean, int64_t batch, int64_t filters,
                      int64_t spatial, float *restrict variance, const dbn_exec *exec);
void normalize_cpu_ref(float *restrict x, const float *restrict mean, const float *restrict variance,
                       int64_t batch, int64_t filters, int64_t spatial, float eps, int eps_in_sqrt,
                       const dbn_exec *exec);
void scale_bias_ref(float *restrict output, const float *restrict scales, int64_t batch, int64_t n,
                    int64_t size, const dbn_exec *exec);
void add_bias_ref(float *restrict output, const float *restrict biases, int64_t batch, int64_t n,
                  int64_t size, const dbn_exec *exec);
void backward_bias_ref(float *restrict bias_updates, const float *restrict delta, int64_t batch, int64_t n,
                       int64_t size, const dbn_exec *exec);
void backward_scale_cpu_ref(const float *restrict x_norm, const float *restrict delta, int64_t batch,
                            int64_t n, int64_t size, float *restrict scale_updates, const dbn_exec *exec);
void mean_delta_cpu_ref(const float *restrict delta, const float *restrict variance, int64_t batch,
                        int64_t filters, int64_t spatial, float *restrict mean_delta, const dbn_exec *exec);
void variance_delta_cpu_ref(const float *restrict x, const float *restrict delta, const float *restrict mean,
                            const float *restrict variance, int64_t batch, int64_t filters, int64_t spatial,
                            float *restrict variance_delta, const dbn_exec *exec);
void normalize_delta_cpu_ref(const float *restrict x, const float *restrict mean,
                             const float *restrict variance, const float *restrict mean_delta,
                             const float *restrict variance_delta, int64_t batch, int64_t filters,
                             int64_t spatial, float *restrict delta, float eps, int eps_in_sqrt,
                             const dbn_exec *exec);
void dbn_forward_train_ref(const float *restrict x, float *restrict out, const float *restrict scales,
                           const float *restrict biases, float *restrict mean, float *restrict variance,
                           float *restrict rolling_mean, float *restrict rolling_variance, int64_t batch,
                           int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, const dbn_exec *exec);
void dbn_forward_infer_ref(const float *x, float *out, const float *restrict scales,
                           const float *restrict biases, const float *restrict rolling_mean,
                           const float *restrict rolling_variance, int64_t batch, int64_t c, int64_t spatial,
                           const dbn_flavor *restrict flavor, const dbn_exec *exec);
void dbn_backward_ref(const float *restrict x, float *restrict delta, float *restrict net_delta,
                      const float *restrict scales, const float *restrict mean,
                      const float *restrict variance, float *restrict scale_updates,
                      float *restrict bias_updates, float *restrict mean_delta, float *restrict variance_delta,
                      int64_t batch, int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train,
                      const dbn_exec *exec);
void dbn_normalize_into_ref(const float *restrict x, float *restrict x_norm, const float *restrict mean,
                            const float *restrict variance, int64_t batch, int64_t c, int64_t spatial,
                            double eps, int eps_in_sqrt, const dbn_exec *exec);

/* Darknet's layer passes as Darknet writes them -- the plain kernels in sequence, with Darknet's copies
 * of the input into output, x and x_norm, and of delta into net_delta (net_delta may be NULL). With the
 * flavor's constants; Darknet's training mean_delta/variance_delta use 1e-5f whatever the flavor. The
 * benchmark's "plain" baseline. */
void forward_batchnorm_layer_ref(const float *restrict input, float *restrict output, float *restrict x,
                                 float *restrict x_norm, const float *restrict scales,
                                 const float *restrict biases, float *restrict mean, float *restrict variance,
                                 float *restrict rolling_mean, float *restrict rolling_variance, int64_t batch,
                                 int64_t c, int64_t spatial, const dbn_flavor *restrict flavor, int train);
void backward_batchnorm_layer_ref(const float *restrict x, const float *restrict x_norm, float *restrict delta,
                                  float *restrict net_delta, const float *restrict scales,
                                  const float *restrict mean, const float *restrict variance,
                                  float *restrict scale_updates, float *restrict bias_updates,
                                  float *restrict mean_delta, float *restrict variance_delta, int64_t batch,
                                  int64_t c, int64_t spatial, const dbn_flavor *restrict flavor);

/* Darknet's activations one value at a time (libm), in place over n values: act is a DBN_ACT_*
 * (leaky: Darknet's .1f). */
void dbn_activate_ref(float *x, int64_t n, int act);
/* activate_array and gradient_array one value at a time (libm), with the same contracts. */
void activate_array_ref(float *x, int64_t n, const dbn_act *a);
void gradient_array_ref(const float *x, int64_t n, const dbn_act *a, float *delta);

/* ---------------------------------------------------------------------------------------------------
 * Memory bandwidth, for the benchmark's roofline: a STREAM-style triad a = b + scalar*c over n floats
 * with the given exec (plain stores, as STREAM). Counted as 12 bytes per element. */
void dbn_triad(float *restrict a, const float *restrict b, const float *restrict c, int64_t n, float scalar,
               const dbn_exec *exec);

/* ---------------------------------------------------------------------------------------------------
 * Build and machine facts. */

/* How the kernels split a [batch, c, spatial] tensor (by its shape only), for tests and the benchmark.
 * bytes_per_value: 0 for a map alone, 4 for a reduction of one input (forward), 8 of two (backward). */
typedef struct dbn_plan_info {
    int fused;           /* 1: channel groups reduce and map back to back; 0: three phases */
    int reduce_flat;     /* three phases: the reduction walks the tensor in memory order */
    int expand;          /* three phases: the map uses per-element coefficients */
    int64_t tile;        /* channels per group (1: lane mode, planes walked run by run) */
    int64_t ntiles, nchunks, nflat;
} dbn_plan_info;
void dbn_describe_plan(int64_t batch, int64_t c, int64_t spatial, int bytes_per_value, dbn_plan_info *info);

/* The OpenMP default team size, or 1 when built without OpenMP. */
int dbn_max_threads(void);
/* 1 when built with OpenMP. */
int dbn_has_openmp(void);
/* The instruction set exec selects on this CPU: 1 baseline, 2 AVX2+FMA, 3 AVX-512. */
int dbn_isa_selected(const dbn_exec *exec);
/* The widest instruction set this build can use on this CPU (1, 2 or 3). */
int dbn_isa_available(void);

#endif /* DARKNET_BN_H */
