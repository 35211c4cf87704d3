/* internal.h -- what the .c files of csrc/ share and the API (darknet_bn.h) does not show:
 * the work plan, the job the engine runs, and small numeric helpers.
 *
 * How a pass runs (driver.c): a job is a reduction (two sums per channel, in double), a coef()
 * callback that turns the sums into per-channel coefficients and outputs (means, variances, rolling
 * statistics, ...), and a map (one multiply-add form per element with those coefficients). The driver
 * plans the tasks by the shape only (dbn_make_plan, below), picks the engine compiled for the best
 * instruction set (engine.inc, built three times by simd_*.c) and runs the tasks on the OpenMP team in
 * static blocks; partial sums are combined in a fixed order, so results do not depend on the thread
 * count.
 */
#ifndef DARKNET_BN_INTERNAL_H
#define DARKNET_BN_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "darknet_bn.h"

/* Darknet's .00001f, as C promotes it to double in mean_delta_cpu and variance_delta_cpu. */
#define DBN_DARKNET_EPS ((double)1e-5f)

/* The normalization denominator: sqrt(var + eps) when eps_in_sqrt, else sqrt(var) + eps. */
static inline double dbn_denominator(double var, double eps, int eps_in_sqrt)
{
    return eps_in_sqrt ? sqrt(var + eps) : sqrt(var) + eps;
}

/* ---------------------------------------------------------------------------------------------------
 * Plan: how a [batch, c, spatial] tensor is cut into tasks, by its shape only.
 *
 * Grid tasks cover channels [c0, c0 + tile) and, of each, the channel-local values [i0, i1)
 * (channel-local index i = b*spatial + s). Lane mode (spatial >= DBN_LANE_MIN_SPATIAL): a grid task
 * walks its channels' runs of `spatial` contiguous floats. Block mode (small planes): it walks rows
 * x[b, c0:c0+tile, :] of tile*spatial contiguous floats with per-element accumulators.
 * Flat tasks cover element ranges [e0, e1) of the whole tensor, in memory order.
 *
 * - fused: grid tasks, one per channel group, each reducing, computing its coefficients and mapping
 *   back to back (the second read comes from cache). For passes over tensors beyond the last-level
 *   cache, and for tiny tensors (no scratch, no second parallel region).
 * - otherwise three phases: reduce (grid tasks, or flat tasks with per-task partial sums per channel),
 *   combine the partial sums in task order, coefficients for all channels, map (flat tasks).
 */
#define DBN_LANE_MIN_SPATIAL 256     /* planes at least this large: lane mode */
#define DBN_TILE_MAX 1024            /* block mode: at most this many values per row of a tile */
#define DBN_FUSED_MIN_TILES 8        /* fused needs at least this many channel groups */
#define DBN_STREAM_MAX (24 << 20)    /* bytes a reduction reads at most for the three-phase plan */
#define DBN_SMALL 65536              /* tensors with fewer values: one fused task per channel group */
#define DBN_CHUNK 65536              /* values per task when a channel group is split ... */
#define DBN_MAX_CHUNKS 256           /* ... into at most this many tasks */
#define DBN_EXPAND_SPATIAL 8         /* flat maps over planes smaller than this, or over rows of */
#define DBN_EXPAND_MAX 1024          /* c*spatial <= this many values (their coefficients fit L1),
                                        use per-element coefficients; others splat per plane */
#define DBN_SHIFT_SAMPLES 16         /* the shift of a channel: the mean of its first values */

typedef struct dbn_plan {
    int64_t batch, c, spatial;
    int fused;          /* one phase: grid tasks reduce + coef + map */
    int reduce_flat;    /* three phases: the reduction runs as flat tasks (else as grid tasks) */
    int expand;         /* three phases: the map runs with per-element coefficients (c*spatial) */
    int64_t tile;       /* grid: channels per task */
    int64_t ntiles;     /* grid: ceil(c / tile) */
    int64_t chunk;      /* grid: channel-local values per task (a multiple of spatial in block mode) */
    int64_t nchunks;    /* grid: ceil(batch*spatial / chunk) */
    int64_t ntasks;     /* grid: ntiles * nchunks; task t: tile t / nchunks, chunk t % nchunks */
    int64_t flat_chunk; /* flat: values per task (a multiple of 16) */
    int64_t nflat;      /* flat: number of tasks */
} dbn_plan;

/* bytes_per_value: what the reduction reads per tensor value (0: none, 4: one input, 8: two);
 * has_map: whether a map follows (a reduction alone gains nothing from the fused plan). */
void dbn_make_plan(dbn_plan *plan, int64_t batch, int64_t c, int64_t spatial, int bytes_per_value, int has_map);

/* ---------------------------------------------------------------------------------------------------
 * Job. What a pass asks of the engine. */
enum { DBN_R_NONE, DBN_R_SUM2, DBN_R_DOT2 };
/* SUM2: s0 = sum (a - k), s1 = sum (a - k)^2          DOT2: s0 = sum b, s1 = sum b*(a - k) */
enum { DBN_M_NONE, DBN_M_AFFINE, DBN_M_BWD };
/* AFFINE: out = (a - k)*p + q                           BWD: out = b*p + (a - k)*q + r
 * (out2, when not NULL, receives the same values; out may be a or b: in place) */
enum { DBN_SHIFT_ZERO, DBN_SHIFT_GIVEN, DBN_SHIFT_ESTIMATE };
enum { DBN_PHASE_FUSED, DBN_PHASE_REDUCE_GRID, DBN_PHASE_REDUCE_FLAT, DBN_PHASE_MAP_FLAT };

struct dbn_job;
/* Per-channel coefficients for channels [c0, c0+n): from the sums s0, s1 (NULL when the job has no
 * reduction) and the shift k the sums were taken around, write the map's k, p, q, r (arrays of n;
 * k arrives filled with the shift and may be rewritten) and the pass's own per-channel outputs. */
typedef void (*dbn_coef_fn)(const struct dbn_job *job, int64_t c0, int64_t n, const double *s0,
                            const double *s1, float *k, float *p, float *q, float *r);

typedef struct dbn_job {
    dbn_plan plan;
    int phase;
    int reduce, map, shift_mode;
    const float *a, *b;          /* inputs, [batch, c, spatial] (b: DOT2 and BWD only) */
    float *out, *out2;           /* map outputs */
    const float *shift;          /* DBN_SHIFT_GIVEN: [c] */
    dbn_coef_fn coef;
    const void *ctx;             /* the pass's own data, for coef */
    /* three phases: the driver's scratch */
    double *part0, *part1;       /* partial sums: grid [ntasks*tile], flat [nflat*c] */
    float *k, *p, *q, *r;        /* coefficients [c]; with plan.expand, [c*spatial] per element */
    int nt;                      /* non-temporal stores for the outputs */
    int act;                     /* AFFINE maps: the activation applied to each output (DBN_ACT_*) */
} dbn_job;

/* Run tasks [t0, t1) of a job (engine.inc, one per instruction set). */
void dbn_run_tasks_base(const dbn_job *job, int64_t t0, int64_t t1);
void dbn_run_tasks_avx2(const dbn_job *job, int64_t t0, int64_t t1);
void dbn_run_tasks_avx512(const dbn_job *job, int64_t t0, int64_t t1);

/* A job over a [batch, c, spatial] tensor with everything empty; dbn_run plans it (driver.c). */
void dbn_job_init(dbn_job *job, int64_t batch, int64_t c, int64_t spatial);

/* Run a whole job with exec's threads and instruction set (driver.c). */
void dbn_run(dbn_job *job, const dbn_exec *exec);

/* The shifts of channels [c0, c0+nc) for DBN_SHIFT_ESTIMATE, into k[0..nc): the mean of each channel's
 * first values -- of the first ceil(16/spatial) rows, at most 16 per row -- rounded to float. Close to
 * the channel's mean, it keeps the shifted sums small and accurate. Every plan uses the same shifts. */
void dbn_estimate_shifts(const float *x, int64_t batch, int64_t c, int64_t spatial, int64_t c0, int64_t nc,
                         float *k);

/* The shifts of channels [c0, c0+nc) by the job's shift mode (zero, given, estimated), into k. */
void dbn_fill_shifts(const dbn_job *job, int64_t c0, int64_t nc, float *k);

/* x86-64 builds with GCC 11 or later get the AVX2 and AVX-512 engines and non-temporal stores;
 * everything else -- and a build with DBN_PORTABLE defined (DARKNET_BN_PORTABLE=1 at install) -- runs
 * the baseline engine in plain C. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 11) && !defined(DBN_PORTABLE)
#define DBN_MULTI_ISA 1
#else
#define DBN_MULTI_ISA 0
#endif

#endif
