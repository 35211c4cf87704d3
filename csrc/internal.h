/* internal.h -- what the .c files of csrc/ share and the API (darknet_bn.h) does not show:
 * the tuning constants, the work plan, the job the engine runs, and small numeric helpers.
 *
 * How a pass runs (driver.c): a job is a reduction (two sums per channel, in double), a coef()
 * callback that turns the sums into per-channel coefficients and outputs (means, variances, rolling
 * statistics, ...), and a map (one multiply-add form per element with those coefficients). The driver
 * plans the tasks by the shape only (dbn_make_plan, below), picks the engine compiled for the best
 * instruction set (engine.inc, built three times by simd_*.c) and runs the tasks on the OpenMP team in
 * static blocks; partial sums are combined in a fixed order, so results do not depend on the thread
 * count.
 *
 * The files of csrc/, each including only what is below it (a DAG; "->" = includes / calls):
 *
 *   kernels.c  fused.c      the named kernels, the whole passes: fill a job  -> internal.h; call driver.c
 *   reference.c             plain references                                 -> internal.h
 *   driver.c                plan, engine choice, OpenMP team, scratch        -> internal.h; calls the
 *                                                                               engines and shift.c
 *   simd_base.c simd_avx2.c simd_avx512.c   one engine each                  -> internal.h, engine.inc
 *     engine.inc            the engine's loops (a template: DBN_ENGINE, DBN_VBYTES) -> vec_math.h;
 *                                                                               calls shift.c
 *       vec_math.h          exp, expm1, logistic, tanh, Darknet's activations -> vec.h
 *       vec.h               vector types, load/store/splat, alignment, partial vectors (DBN_VBYTES)
 *   shift.c                 the per-channel shifts the sums are taken around -> internal.h
 *   internal.h              this file                                        -> darknet_bn.h
 *   stream.c  build_info.c  the triad, build facts                           -> darknet_bn.h
 *   darknet_bn.h            the public C API (cffi reads it)
 *
 * The one call upward is by pointer: the engine calls the job's coef() (kernels.c, fused.c), which the
 * caller passed down in the job.
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
 * Tuning constants: every number that decides how the work is cut, stored or accumulated, in one place.
 * The plan's constants decide the order of the sums, so results are pinned to them (bit-identical
 * across thread counts, not across other values of these); the store and thread constants change
 * speed only. "PERFORMANCE.md" is /work/shared/PERFORMANCE.md's prototype measurements on this machine
 * kind (2 cores, AVX-512); "not measured" means the value was set with the engine (commit dfd78f3) and
 * no measurement of it is recorded.
 */

/* The plan (dbn_make_plan, driver.c). */
#define DBN_LANE_MIN_SPATIAL 256   /* planes of at least this many values run lane mode (per channel, run by
                                      run), smaller ones block mode (rows of a tile of channels): rows were
                                      2.5-3.7x faster on 7x7 and 36-93x on 1x1 (PERFORMANCE.md); the cut
                                      itself (16 AVX-512 vectors a run) not measured */
#define DBN_TILE_MAX 1024          /* block mode: values per row of a tile of channels, sized so the block's
                                      accumulators (3 float + 2 double arrays: 28 KB) stay in a 32 KB L1d;
                                      not measured */
#define DBN_FUSED_MIN_TILES 8      /* the fused plan needs this many channel groups (4 per thread on two
                                      cores, for balance); not measured */
#ifndef DBN_STREAM_MAX              /* (-D overrides it: benchmarks/engine_nt.py builds variants) */
#define DBN_STREAM_MAX (24 << 20)  /* a reduction reading more bytes than this runs fused (reduce and map
                                      each channel group back to back: 1.07-1.23x beyond the cache,
                                      PERFORMANCE.md); at most this, three phases. The value not measured */
#endif
#ifndef DBN_FUSED_TASK_MAX           /* (-D overrides it: benchmarks/engine_planes.py builds variants) */
#define DBN_FUSED_TASK_MAX (1536 << 10) /* a pass with a map over at least DBN_FUSED_MIN_TILES channel groups
                                      runs fused also below DBN_STREAM_MAX when each group's reduction
                                      reads at most this many bytes (about an L2): the map's second read
                                      then comes from L2, not from L3 (on this Intel VM L3 reads run at
                                      about DRAM speed, ~24 GB/s a thread: docs/performance.md section 8) */
#endif
#ifndef DBN_NARROW_ROW             /* (-D overrides them: benchmarks/engine_rows.py compares variants) */
#define DBN_NARROW_ROW 64         /* narrow fused tiles (below) over planes of at most 16 values: at most this
                                     many values a row (4 AVX-512 vectors: the reduction's accumulators and the
                                     map's coefficients held in registers, engine.inc's small-row loops, and a
                                     task's input fits L1 between its reduction and its map; 128x1024x1x1:
                                     16 tiles of 64 channels instead of 8 of 128, docs/performance.md section 7;
                                     0: the tiles of 1/8 of the channels, -1: no narrow tiles, for benchmarks) */
#endif
#ifndef DBN_NARROW_ROW_4K
#define DBN_NARROW_ROW_4K 128     /* ... and this many when a row of the tensor (c * spatial floats) is a multiple
                                     of 4 KiB: then every row of a tile falls in the same L1 sets (the set index
                                     repeats every 4 KiB) and 64-value rows thrash them. AMD EPYC (Zen 5), 2
                                     threads: 128x1024x1x1 forward 28.8 -> 17.3 us, backward 32.6 -> 23.4;
                                     256x1024, 128x2048, 300x256x2x2 0.60-0.82x; rows off 4 KiB keep 64, which
                                     wins there (128x1032 forward 18.1 us against 20.1, backward 18.2 against
                                     27.9; docs/performance.md section 20) */
#endif
#ifndef DBN_GRID_ROW
#define DBN_GRID_ROW 64           /* three-phase maps in block mode over rows of at most this many values run as
                                     the reduction's grid tasks (driver.c map_grid; engine.inc's small-row loops
                                     for rows of at most 4 AVX-512 vectors; docs/performance.md section 7) */
#endif
#define DBN_NARROW_ROW_MIN 128    /* block mode, a reduction with a map (a training forward, a backward) whose */
#define DBN_NARROW_TASK_MAX (1 << 20) /* tiles are fewer than DBN_FUSED_MIN_TILES: cut into that many
                                      narrower tiles and run fused, when each task's rows stay at least
                                      this many values wide and its data (4 or 8 bytes a value) at most this
                                      many bytes (an L2). 128x1024x1x1 training forward, 2 threads, this
                                      Intel VM: 24.3 us against 32.1 three-phase (docs/performance.md 7) */
#ifndef DBN_NARROW_BWD             /* (-D 0: the backward keeps three phases there, for A/B) */
#define DBN_NARROW_BWD 1           /* the backward (two inputs) too: session 20 measured it losing at 2 threads
                                      (37.0 against 34.6 us, linear, before the small-row loops of session
                                      21); on one thread now the linear backward is even (61.5 against 61.6)
                                      and the leaky one 1.10x faster (70.5 against 77.6, docs/performance.md
                                      section 14); the two-thread figure is still to be taken */
#endif
#define DBN_SMALL 65536            /* tensors with fewer values: one fused task per channel group, no
                                      scratch, no second parallel region; not measured */
#define DBN_CHUNK 65536            /* task size: values per task when a channel group or the flat tensor is
                                      split ... */
#define DBN_MAX_CHUNKS 256         /* ... into at most this many tasks; not measured */
#define DBN_EXPAND_SPATIAL 8       /* three-phase maps over planes smaller than this, or over rows of */
#define DBN_EXPAND_MAX 1024        /* c*spatial <= this many values (their coefficients fit L1), use
                                      per-element coefficients; others splat per plane; not measured */

/* Threads (driver.c). */
#define DBN_MIN_PER_THREAD 16384   /* fewer values than this per thread: fewer threads (a 2-thread call
                                      on a tiny tensor costs more than it saves); not measured */

/* Non-temporal stores (fused.c): outputs above these sizes bypass the cache. PERFORMANCE.md: turning
 * them off was 1.08-1.8x slower from 21 MB up, forcing them on an 11 MB tensor 1.3-1.8x slower; the
 * threshold differs per pass (about 16 / 32 / 8 MB measured for training forward / inference /
 * backward); re-measured on the Intel VM (docs/performance.md section 4) and on an AMD EPYC (section 20). */
#ifndef DBN_NT_TRAIN_BYTES          /* (-D overrides them: benchmarks/engine_nt.py builds variants) */
#define DBN_NT_TRAIN_BYTES (10.0 * 1024 * 1024)     /* training forward's output: 10, not 16: streaming 12-16
                                                       MiB outputs took 0.66-0.76x the time on an AMD EPYC
                                                       (1 and 2 threads) and 0.75-0.90x on the Intel VM; at
                                                       8 MiB it lost on the EPYC (1.17x; docs/performance.md 20) */
#endif
#ifndef DBN_NT_INFER_BYTES
#define DBN_NT_INFER_BYTES (20.0 * 1024 * 1024)     /* inference forward's output (not in place): 20, not 12:
                                                       on the Intel VM (2 threads) streaming lost at 16 MiB
                                                       (0.63 ms plain vs 0.90) and won from 24 (1.14-1.39x);
                                                       the AMD optimum was about 32 MB (docs/performance.md) */
#endif
#ifndef DBN_NT_BACKWARD_BYTES
#define DBN_NT_BACKWARD_BYTES (8.0 * 1024 * 1024)   /* backward's input delta, out of place only (fused.c's
                                                       backward_job: an in-place backward never streams) */
#endif

/* The engine's loops (engine.inc). */
#define DBN_PEEL_MIN_VECTORS 8     /* runs of fewer vectors do not peel to align their stores (a split store
                                      costs two); not measured */
#define DBN_FOLD 32                /* accuracy: float adds per lane before folding into the double lanes
                                      (32 lanes folded every ~1024 values beat pure-double sums 1.1-1.5x in
                                      cache, PERFORMANCE.md) */
#define DBN_FOLD_ROWS 32           /* accuracy: block mode, rows between folds into double */
#define DBN_SHIFT_SAMPLES 16       /* accuracy: the shift of a channel is the mean of its first values (of
                                      the first rows: 1.7e-7 against 1.7e-6 relative variance error with
                                      one sample, PERFORMANCE.md) */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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
 *   cache, for tiny tensors (no scratch, no second parallel region), and for a one-input pass over a
 *   few wide tiles (many channels of tiny planes), cut into DBN_FUSED_MIN_TILES narrower tiles.
 * - otherwise three phases: reduce (grid tasks, or flat tasks with per-task partial sums per channel),
 *   combine the partial sums in task order, coefficients for all channels, map (flat tasks; in block mode
 *   the reduction's grid tasks again, so each thread maps the rows it reduced).
 * The sizes that decide among them are the plan's tuning constants above.
 */
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
    int map_grid;       /* three phases: the map runs as the reduction's grid tasks (block mode, rows of at most
                           DBN_GRID_ROW values: each task maps the rows it reduced, with the coefficients in
                           registers), else as flat tasks (wider rows: the grid map lost there, docs section 7) */
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
enum { DBN_M_NONE, DBN_M_AFFINE, DBN_M_BWD, DBN_M_GRAD };
/* AFFINE: out = act((a - k)*p + q)                      BWD: out = g*p + (a - k)*q + r
 * GRAD: out = b * gradient_array's factor at a (vec_math.h vgrad_arr)
 * with g = b, or with an activation (job.act) g = b * act'((a - k)*pf + qf), the forward's pre-activation
 * from its coefficients pf, qf (also the w of a DOT2 reduction with an activation).
 * (out2, when not NULL, receives the same values; out may be a or b: in place) */
enum { DBN_SHIFT_ZERO, DBN_SHIFT_GIVEN, DBN_SHIFT_ESTIMATE };
enum { DBN_PHASE_FUSED, DBN_PHASE_REDUCE_GRID, DBN_PHASE_REDUCE_FLAT, DBN_PHASE_MAP_FLAT, DBN_PHASE_MAP_GRID };

struct dbn_job;
/* Per-channel coefficients for channels [c0, c0+n): from the sums s0, s1 (NULL when the job has no
 * reduction) and the shift k the sums were taken around, write the map's k, p, q, r (arrays of n;
 * k arrives filled with the shift and may be rewritten) and the pass's own per-channel outputs. */
typedef void (*dbn_coef_fn)(const struct dbn_job *job, int64_t c0, int64_t n, const double *s0,
                            const double *s1, float *k, float *p, float *q, float *r);
/* The forward's coefficients pf, qf (arrays of n) of channels [c0, c0+n), for a backward with an
 * activation: called before the reduction (per channel group, or for all channels by the driver). */
typedef void (*dbn_pre_fn)(const struct dbn_job *job, int64_t c0, int64_t n, float *pf, float *qf);

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
    int act;                     /* AFFINE maps: the activation applied to each output (DBN_ACT_*); BWD maps
                                    and DOT2 reductions: the activation whose derivative applies; GRAD */
    float alpha;                 /* DBN_ACT_LEAKY's slope */
    dbn_pre_fn pre;              /* BWD/DOT2 with an activation: the forward's coefficients (else NULL) */
    const float *pf, *qf;        /* three phases: the driver's [c] (expanded: [c*spatial]) from pre */
    int store_g;                 /* DOT2 + BWD with an activation: the reduction stores g into out and the
                                    map reads it from there (one derivative per value instead of two) */
} dbn_job;

/* Run tasks [t0, t1) of a job (engine.inc, compiled once per instruction set by simd_*.c). */
void dbn_run_tasks_base(const dbn_job *job, int64_t t0, int64_t t1);
void dbn_run_tasks_avx2(const dbn_job *job, int64_t t0, int64_t t1);
void dbn_run_tasks_avx512(const dbn_job *job, int64_t t0, int64_t t1);

/* A job over a [batch, c, spatial] tensor with everything empty; dbn_run plans it (driver.c). */
void dbn_job_init(dbn_job *job, int64_t batch, int64_t c, int64_t spatial);

/* Run a whole job with exec's threads and instruction set (driver.c). */
void dbn_run(dbn_job *job, const dbn_exec *exec);

/* shift.c: the shifts of channels [c0, c0+nc) for DBN_SHIFT_ESTIMATE, into k[0..nc): the mean of each
 * channel's first values -- of the first ceil(16/spatial) rows, at most 16 per row -- rounded to float. Close to
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
