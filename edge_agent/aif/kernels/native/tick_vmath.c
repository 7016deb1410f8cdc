/* The compiled tick's logs and exps over flat arrays (tick.c calls them on a block's
 * values, agent index innermost). This translation unit alone is compiled with -ffast-math
 * (recipe.py: VMATH_CFLAGS): it makes <math.h> declare glibc's vector variants
 * (libmvec, e.g. _ZGVbN2v_log on x86-64; glibc >= 2.38 also on aarch64) and lets gcc call them,
 * two or four values a call, for these loops; where the C library has none the loops stay
 * glibc's scalar log and exp. libmvec's log and exp are within 4 ulp, far below the 1e-9 the
 * tick is checked to (tick_log_f32, an int8 group's: float's log, within its float32 bound). Nothing else is in this file, so fast-math changes no other arithmetic:
 * each loop is one add and one transcendental per element, nothing to reassociate, and no
 * input is NaN or infinite in a lane whose result is kept. It is linked without -ffast-math, so
 * gcc does not add crtfastmath.o (which would set flush-to-zero for the whole process). */
#include <math.h>
#include <stdint.h>

#include "tick_vmath.h"

/* As tick.c: a baseline and (x86-64) an x86-64-v3 version, chosen at load time. */
#if defined(__x86_64__) && !defined(TICK_BASELINE_ONLY) && (defined(__GNUC__) || defined(__clang__))
#define TARGETS __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TARGETS
#endif

/* x[i] = log(x[i] + add), in place. */
TARGETS void tick_log_inplace(double *x, int64_t n, double add) {
    for (int64_t i = 0; i < n; i++) x[i] = log(x[i] + add);
}

/* y[i] = log(x[i] + add). */
TARGETS void tick_log(const double *restrict x, double *restrict y, int64_t n, double add) {
    for (int64_t i = 0; i < n; i++) y[i] = log(x[i] + add);
}

/* x[i] = exp(x[i]), in place. */
TARGETS void tick_exp_inplace(double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = exp(x[i]);
}

/* y[i] = logf((float)(x[i] + add)): float's log, for an int8 group's predicted outcomes (numpy's
 * int8 arithmetic is float32); 8 values a call with AVX2 (libmvec's _ZGVdN8v_logf), not 4. */
TARGETS void tick_log_f32(const double *restrict x, double *restrict y, int64_t n, double add) {
    for (int64_t i = 0; i < n; i++) y[i] = (double)logf((float)(x[i] + add));
}
