/* The compiled tick's logs and exps over flat arrays (tick_vmath.c, the one unit compiled with
 * -ffast-math), as tick.c calls them. */
#ifndef EDGE_TICK_VMATH_H
#define EDGE_TICK_VMATH_H

#include <stdint.h>

/* x[i] = log(x[i] + add), in place. */
void tick_log_inplace(double *x, int64_t n, double add);
/* y[i] = log(x[i] + add). */
void tick_log(const double *restrict x, double *restrict y, int64_t n, double add);
/* y[i] = logf((float)(x[i] + add)): float's log. */
void tick_log_f32(const double *restrict x, double *restrict y, int64_t n, double add);
/* x[i] = exp(x[i]), in place. */
void tick_exp_inplace(double *x, int64_t n);

#endif
