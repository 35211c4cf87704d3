/* shift.c -- the per-channel shifts the sums are taken around (see internal.h): used by the driver (three
 * phases) and by the engines (fused tasks), below both, so neither calls the other for them.
 * Every engine gets the same shifts (bit for bit, whatever clone of dbn_estimate_shifts runs). Each channel's
 * samples are added in the same order (row by row, in each row in memory order) whatever the loop shape.
 */
#include <math.h>

#include "internal.h"

/* Vectorized across channels only (each lane one channel's sum, in the same order), so every clone
 * gives the same bits; x86-64-v3 gets four double lanes where the baseline has two. */
#if DBN_MULTI_ISA
__attribute__((target_clones("default", "arch=x86-64-v3")))
#endif
void dbn_estimate_shifts(const float *x, int64_t batch, int64_t c, int64_t spatial, int64_t c0, int64_t nc,
                         float *k)
{
    const int64_t per_row = min64(spatial, DBN_SHIFT_SAMPLES);
    const int64_t rows = min64(batch, ceil_div(DBN_SHIFT_SAMPLES, max64(spatial, 1)));
    double sum[DBN_TILE_MAX];
    for (int64_t j0 = 0; j0 < nc; j0 += DBN_TILE_MAX) {
        const int64_t m = min64(DBN_TILE_MAX, nc - j0);
        const float *x0 = x + (c0 + j0) * spatial;   /* row 0 of the tile; row b at x0 + b*c*spatial */
        const int64_t rs = c * spatial;
        int64_t j = 0;
        if (spatial == 1)   /* one value per channel and row: 16 channels at a time, rows inner, in registers */
            for (; j + 16 <= m; j += 16) {
                double t[16] = {0};
                for (int64_t b = 0; b < rows; ++b)
                    for (int q = 0; q < 16; ++q) t[q] += x0[b * rs + j + q];
                for (int q = 0; q < 16; ++q) sum[j + q] = t[q];
            }
        for (; j < m; ++j) {   /* each channel's samples, row by row, in each row in memory order */
            double t = 0.0;
            for (int64_t b = 0; b < rows; ++b)
                for (int64_t s = 0; s < per_row; ++s) t += x0[b * rs + j * spatial + s];
            sum[j] = t;
        }
        for (j = 0; j < m; ++j) {
            const float v = rows * per_row > 0 ? (float)(sum[j] / (double)(rows * per_row)) : 0.0f;
            k[j0 + j] = isfinite(v) ? v : 0.0f;   /* an Inf or NaN among the samples: shifting by it
                                                     would lose the others; sums around 0 keep Inf */
        }
    }
}

void dbn_fill_shifts(const dbn_job *job, int64_t c0, int64_t nc, float *k)
{
    const dbn_plan *pl = &job->plan;
    if (job->shift_mode == DBN_SHIFT_ESTIMATE)
        dbn_estimate_shifts(job->a, pl->batch, pl->c, pl->spatial, c0, nc, k);
    else
        for (int64_t j = 0; j < nc; ++j) k[j] = job->shift_mode == DBN_SHIFT_GIVEN ? job->shift[c0 + j] : 0.0f;
}
