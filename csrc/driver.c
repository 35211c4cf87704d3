/* driver.c -- plans a job by its shape, picks the engine for the CPU, runs the tasks on the OpenMP team
 * (see internal.h for the whole story). Calls down only: the engines (simd_*.c) and the shifts (shift.c).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void dbn_make_plan(dbn_plan *pl, int64_t batch, int64_t c, int64_t spatial, int bytes_per_value, int has_map)
{
    const int64_t n = batch * spatial, total = n * c;   /* values per channel, in all */
    memset(pl, 0, sizeof *pl);
    pl->batch = batch;
    pl->c = c;
    pl->spatial = spatial;
    pl->tile = spatial >= DBN_LANE_MIN_SPATIAL ? 1 : max64(1, min64(c, DBN_TILE_MAX / max64(spatial, 1)));
    pl->ntiles = c > 0 ? ceil_div(c, pl->tile) : 0;
    pl->expand = spatial < DBN_EXPAND_SPATIAL || (spatial < DBN_LANE_MIN_SPATIAL && c * spatial <= DBN_EXPAND_MAX);
    pl->flat_chunk = (max64(DBN_CHUNK, ceil_div(total, DBN_MAX_CHUNKS)) + 15) / 16 * 16;
    pl->nflat = total > 0 ? ceil_div(total, pl->flat_chunk) : 0;
    pl->chunk = max64(n, 1);             /* grid: whole channels, unless split below */
    pl->nchunks = 1;
    if (total <= DBN_SMALL) {
        pl->fused = 1;                   /* tiny: one phase, no scratch */
    } else if (bytes_per_value == 0) {
        pl->fused = 0;                   /* a map alone: flat, in memory order */
    } else if (has_map && (double)bytes_per_value * (double)total > DBN_STREAM_MAX
               && pl->ntiles >= DBN_FUSED_MIN_TILES) {
        pl->fused = 1;                   /* beyond the cache: reduce and map each channel group back to back */
    } else if (has_map && pl->ntiles >= DBN_FUSED_MIN_TILES
               && (double)bytes_per_value * (double)n * (double)pl->tile <= DBN_FUSED_TASK_MAX) {
        pl->fused = 1;                   /* each channel group's data fits L2: the same, the map reading L2 */
    } else if (has_map && (bytes_per_value == 4 || (bytes_per_value == 8 && DBN_NARROW_BWD)) && DBN_NARROW_ROW >= 0
               && pl->tile > 1 && pl->ntiles < DBN_FUSED_MIN_TILES
               && ceil_div(c, DBN_FUSED_MIN_TILES) * spatial >= DBN_NARROW_ROW_MIN
               && (double)ceil_div(c, DBN_FUSED_MIN_TILES) * (double)n * bytes_per_value <= DBN_NARROW_TASK_MAX) {
        pl->fused = 1;                   /* a few wide tiles (many channels of tiny planes, the MLP case):
                                            narrower tiles, fused, one parallel region; over planes of at
                                            most 16 values, rows of at most DBN_NARROW_ROW values
                                            (DBN_NARROW_ROW_4K where rows are a multiple of 4 KiB) */
        pl->tile = ceil_div(c, DBN_FUSED_MIN_TILES);
        if (spatial <= 16 && DBN_NARROW_ROW > 0) {
            const int aliased = (c * spatial * (int64_t)sizeof(float)) % 4096 == 0;   /* rows a multiple of 4 KiB */
            const int64_t row = aliased ? DBN_NARROW_ROW_4K : DBN_NARROW_ROW;
            pl->tile = max64(2, min64(pl->tile, row / spatial));
        }
        pl->ntiles = ceil_div(c, pl->tile);
    } else {
        pl->fused = 0;
        pl->reduce_flat = pl->tile == 1;
        if (!pl->reduce_flat && pl->ntiles < DBN_FUSED_MIN_TILES) {   /* few tiles: split their rows */
            int64_t rows = max64(1, DBN_CHUNK / (pl->tile * spatial));
            rows = max64(rows, ceil_div(batch, DBN_MAX_CHUNKS));
            pl->chunk = rows * spatial;
            pl->nchunks = ceil_div(n, pl->chunk);
        }
        pl->map_grid = !pl->reduce_flat && has_map && pl->tile * spatial <= DBN_GRID_ROW;
    }
    pl->ntasks = pl->ntiles * pl->nchunks;
}

void dbn_describe_plan(int64_t batch, int64_t c, int64_t spatial, int bytes_per_value, dbn_plan_info *info)
{
    dbn_plan pl;
    dbn_make_plan(&pl, batch, c, spatial, bytes_per_value, 1);
    info->fused = pl.fused;
    info->reduce_flat = pl.reduce_flat;
    info->expand = pl.expand;
    info->tile = pl.tile;
    info->ntiles = pl.ntiles;
    info->nchunks = pl.nchunks;
    info->nflat = pl.nflat;
}

void dbn_job_init(dbn_job *job, int64_t batch, int64_t c, int64_t spatial)
{
    memset(job, 0, sizeof *job);
    job->plan.batch = batch;
    job->plan.c = c;
    job->plan.spatial = spatial;
}

/* ------------------------------------------------------------------------------------------------ */

int dbn_isa_available(void)
{
#if DBN_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 3;
    if (__builtin_cpu_supports("x86-64-v3")) return 2;
#endif
    return 1;
}

int dbn_isa_selected(const dbn_exec *exec)
{
    const int avail = dbn_isa_available();
    const int want = exec ? exec->isa : 0;
    return want <= 0 || want > avail ? avail : want;
}

typedef void (*engine_fn)(const dbn_job *, int64_t, int64_t);

static engine_fn engine_for(int isa)
{
#if DBN_MULTI_ISA
    if (isa >= 3) return dbn_run_tasks_avx512;
    if (isa == 2) return dbn_run_tasks_avx2;
#else
    (void)isa;
#endif
    return dbn_run_tasks_base;
}

static int team_size(const dbn_exec *exec, int64_t ntasks, int64_t values)
{
#ifdef _OPENMP
    int64_t n = exec && exec->nthreads > 0 ? exec->nthreads : omp_get_max_threads();
    n = min64(n, ntasks);
    n = min64(n, max64(1, values / DBN_MIN_PER_THREAD));
    return (int)max64(n, 1);
#else
    (void)exec; (void)ntasks; (void)values;
    return 1;
#endif
}

/* Tasks [0, ntasks) in contiguous static blocks, one per thread: which thread runs a task never
 * changes a result. */
static void run_tasks(engine_fn fn, const dbn_job *job, int64_t ntasks, int nth)
{
    if (nth <= 1 || ntasks <= 1) {
        fn(job, 0, ntasks);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nth)
    {
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        const int64_t a = ntasks * t / T, b = ntasks * (t + 1) / T;
        if (a < b) fn(job, a, b);
    }
#endif
}

/* The fused plan of the same shape on one thread: what runs when the scratch cannot be allocated. */
static void run_fused_serial(engine_fn fn, dbn_job *job)
{
    dbn_plan *pl = &job->plan;
    pl->fused = 1;
    pl->chunk = max64(pl->batch * pl->spatial, 1);
    pl->nchunks = 1;
    pl->ntasks = pl->ntiles;
    job->phase = DBN_PHASE_FUSED;
    fn(job, 0, pl->ntasks);
}

/* ------------------------------------------------------------------------------------------------
 * Three phases in one parallel region. Each thread t of T runs, separated by barriers:
 *   1. the shifts of its channels [C t/T, C (t+1)/T),
 *   2. its static block of the reduction's tasks,
 *   3. for its channels: the partial sums combined in task order, the coefficients (job->coef), the
 *      per-element coefficients when the plan expands them,
 *   4. its static block of the map's flat tasks.
 * Every per-channel step is computed by one thread from the same inputs in the same order whatever T,
 * and the tasks are the plan's: the bits do not depend on the thread count. One region instead of
 * one per phase, and the per-channel work (shifts, combining, coefficients: a few thousand channels'
 * divisions and square roots) spread over the team instead of run on one thread. */
typedef struct {
    engine_fn fn;
    dbn_job *job;
    float *kc, *pc, *qc, *rc;   /* coefficients [C] */
    float *pfc, *qfc;           /* with job->pre: the forward's coefficients [C] (else NULL) */
    float *e;                   /* per-element coefficients [nco C S] (plan.expand), else NULL */
    double *s0, *s1;            /* combined sums [C] */
    int64_t nreduce;            /* tasks of the reduction (0: none) */
} three_phase;

static void tp_shifts(const three_phase *tp, int64_t t, int64_t T)
{
    const int64_t C = tp->job->plan.c, c0 = C * t / T, c1 = C * (t + 1) / T;
    if (c0 >= c1) return;
    dbn_fill_shifts(tp->job, c0, c1 - c0, tp->kc + c0);
    if (tp->job->pre) tp->job->pre(tp->job, c0, c1 - c0, tp->pfc + c0, tp->qfc + c0);
}

static void tp_reduce(const three_phase *tp, int64_t t, int64_t T)
{
    const int64_t a = tp->nreduce * t / T, b = tp->nreduce * (t + 1) / T;
    if (a < b) tp->fn(tp->job, a, b);
}

static void tp_coef(const three_phase *tp, int64_t t, int64_t T)
{
    const dbn_job *job = tp->job;
    const dbn_plan *pl = &job->plan;
    const int64_t C = pl->c, S = pl->spatial, c0 = C * t / T, c1 = C * (t + 1) / T;
    if (c0 >= c1) return;
    double *s0 = tp->s0, *s1 = tp->s1;
    if (tp->nreduce) {
        for (int64_t ch = c0; ch < c1; ++ch) s0[ch] = s1[ch] = 0.0;
        if (pl->reduce_flat) {   /* partials [task][channel], combined in task order */
            for (int64_t u = 0; u < pl->nflat; ++u)
                for (int64_t ch = c0; ch < c1; ++ch) {
                    s0[ch] += job->part0[u * C + ch];
                    s1[ch] += job->part1[u * C + ch];
                }
        } else {                 /* partials [task][channel in tile], combined in chunk order */
            for (int64_t ti = c0 / pl->tile; ti * pl->tile < c1; ++ti) {
                const int64_t base = ti * pl->tile, ja = max64(c0, base) - base, jb = min64(c1, base + pl->tile) - base;
                double *restrict a0 = s0 + base, *restrict a1 = s1 + base;
                for (int64_t u = 0; u < pl->nchunks; ++u) {
                    const double *p0 = job->part0 + (ti * pl->nchunks + u) * pl->tile;
                    const double *p1 = job->part1 + (ti * pl->nchunks + u) * pl->tile;
                    for (int64_t j = ja; j < jb; ++j) {
                        a0[j] += p0[j];
                        a1[j] += p1[j];
                    }
                }
            }
        }
    }
    job->coef(job, c0, c1 - c0, tp->nreduce ? s0 + c0 : NULL, s1 + c0, tp->kc + c0, tp->pc + c0, tp->qc + c0,
              tp->rc + c0);
    if (tp->e && job->map != DBN_M_NONE) {   /* per-element coefficients for one row of C*S values */
        float *e = tp->e;
        for (int64_t ch = c0; ch < c1; ++ch)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t at = ch * S + s;
                e[at] = tp->kc[ch];
                e[C * S + at] = tp->pc[ch];
                e[2 * C * S + at] = tp->qc[ch];
                e[3 * C * S + at] = tp->rc[ch];
                if (tp->pfc) {
                    e[4 * C * S + at] = tp->pfc[ch];
                    e[5 * C * S + at] = tp->qfc[ch];
                }
            }
    }
}

static void tp_map(const three_phase *tp, int64_t t, int64_t T)
{
    const dbn_plan *pl = &tp->job->plan;
    const int64_t n = pl->map_grid ? pl->ntasks : pl->nflat, a = n * t / T, b = n * (t + 1) / T;
    if (a < b) tp->fn(tp->job, a, b);
}

static void run_three_phases(three_phase *tp, int nth)
{
    dbn_job *job = tp->job;
    const dbn_plan *pl = &job->plan;
    job->k = tp->kc;   /* the reduction reads the shifts from here, and the forward's coefficients */
    job->pf = tp->pfc;
    job->qf = tp->qfc;
    job->phase = pl->reduce_flat ? DBN_PHASE_REDUCE_FLAT : DBN_PHASE_REDUCE_GRID;
    /* The map phase's view of the job: a copy, so that no thread changes what another still reads. */
    dbn_job mapjob = *job;
    mapjob.phase = pl->map_grid ? DBN_PHASE_MAP_GRID : DBN_PHASE_MAP_FLAT;
    if (tp->e) {
        const int64_t CS = pl->c * pl->spatial;
        mapjob.k = tp->e;
        mapjob.p = tp->e + CS;
        mapjob.q = tp->e + 2 * CS;
        mapjob.r = tp->e + 3 * CS;
        if (tp->pfc) {
            mapjob.pf = tp->e + 4 * CS;
            mapjob.qf = tp->e + 5 * CS;
        }
    } else {
        mapjob.k = tp->kc;
        mapjob.p = tp->pc;
        mapjob.q = tp->qc;
        mapjob.r = tp->rc;
    }
    three_phase tm = *tp;
    tm.job = &mapjob;
    if (nth <= 1) {
        tp_shifts(tp, 0, 1);
        if (tp->nreduce) tp_reduce(tp, 0, 1);
        tp_coef(tp, 0, 1);
        if (job->map != DBN_M_NONE) tp_map(&tm, 0, 1);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nth)
    {
        const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        tp_shifts(tp, t, T);
#pragma omp barrier
        if (tp->nreduce) {
            tp_reduce(tp, t, T);
#pragma omp barrier
        }
        tp_coef(tp, t, T);
        if (job->map != DBN_M_NONE) {
#pragma omp barrier
            tp_map(&tm, t, T);
        }
    }
#endif
}

void dbn_run(dbn_job *job, const dbn_exec *exec)
{
    const engine_fn fn = engine_for(dbn_isa_selected(exec));
    dbn_plan *pl = &job->plan;
    if (exec && exec->plain_stores) job->nt = 0;
    const int bpv = job->reduce == DBN_R_DOT2 ? 8 : job->reduce == DBN_R_SUM2 ? 4 : 0;
    if (pl->c == 1) {   /* one channel: its batch*spatial values are contiguous, one long plane */
        pl->spatial *= pl->batch;
        pl->batch = pl->batch > 0 ? 1 : 0;
    }
    dbn_make_plan(pl, pl->batch, pl->c, pl->spatial, bpv, job->map != DBN_M_NONE);
    const int64_t C = pl->c, S = pl->spatial, values = pl->batch * C * S;
    if (C == 0) return;
    if (values == 0) {   /* channels without values: sums of nothing, nothing to map */
        float k[DBN_TILE_MAX], p[DBN_TILE_MAX], q[DBN_TILE_MAX], r[DBN_TILE_MAX];
        double zero[DBN_TILE_MAX] = {0};
        for (int64_t c0 = 0; c0 < C; c0 += DBN_TILE_MAX) {
            const int64_t nc = min64(DBN_TILE_MAX, C - c0);
            dbn_fill_shifts(job, c0, nc, k);
            job->coef(job, c0, nc, job->reduce != DBN_R_NONE ? zero : NULL, zero, k, p, q, r);
        }
        return;
    }
    if (pl->fused) {
        /* a forward in place and fused below the streaming size (tiny, narrow tiles, groups in L2): the map
         * rewrites lines the reduction just brought into cache, where a non-temporal store only evicts them
         * (measured on the backward, when this rule also covered it: 1x16x416x416, 1 thread, 2.43 ms
         * streaming, 1.41 plain; docs/performance.md 8). An in-place backward (out == b) now never streams
         * at any size: fused.c's backward_job decides it. */
        if (job->out == job->a && (double)bpv * (double)values <= DBN_STREAM_MAX) job->nt = 0;
        job->phase = DBN_PHASE_FUSED;
        run_tasks(fn, job, pl->ntasks, team_size(exec, pl->ntasks, values));
        return;
    }

    /* Three phases. Scratch: coefficients [4c] (+ per element [4 c*spatial]), sums [2c] + partials;
     * with job->pre, 2 more coefficients (the forward's pf, qf). */
    const int has_reduce = job->reduce != DBN_R_NONE;
    const int64_t nco = job->pre ? 6 : 4;
    const int expand = pl->expand && !pl->map_grid;   /* grid maps expand per task, in the engine */
    const int64_t ncoef = nco * C + (expand ? nco * C * S : 0);
    const int64_t npart = !has_reduce ? 0 : pl->reduce_flat ? pl->nflat * C : pl->ntasks * pl->tile;
    float *coef = malloc((size_t)ncoef * sizeof *coef);
    double *sums = malloc((size_t)(2 * C + 2 * npart) * sizeof *sums);
    if (!coef || !sums) {
        free(coef);
        free(sums);
        run_fused_serial(fn, job);
        return;
    }
    three_phase tp = {.fn = fn, .job = job, .kc = coef, .pc = coef + C, .qc = coef + 2 * C, .rc = coef + 3 * C,
                      .pfc = job->pre ? coef + 4 * C : NULL, .qfc = job->pre ? coef + 5 * C : NULL,
                      .e = expand ? coef + nco * C : NULL, .s0 = sums, .s1 = sums + C,
                      .nreduce = !has_reduce ? 0 : pl->reduce_flat ? pl->nflat : pl->ntasks};
    job->part0 = sums + 2 * C;
    job->part1 = sums + 2 * C + npart;
    const int64_t nmap = job->map == DBN_M_NONE ? 0 : pl->map_grid ? pl->ntasks : pl->nflat;
    const int64_t most = max64(max64(tp.nreduce, nmap), 1);
    run_three_phases(&tp, team_size(exec, most, values));
    free(coef);
    free(sums);
}
