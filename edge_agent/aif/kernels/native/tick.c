/* The tick compiled (edge_agent/aif/kernels/native: tick.h declares its structs, limits and
 * functions; recipe.py is how it is built, by setup.py into the package and by the tests and
 * benchmarks for their other builds): one pass per tick over a group's agents, whether they
 * learn or not; those that learn likelihood counts (pA) or transition counts (pB) each their own
 * or all one set (shared counts: every agent infers and teaches them, the tables follow once,
 * every agent plans with them), with pymdp 0.0.7.1's maths as edge_agent/aif/per_agent.py
 * batches them (edge_agent/aif/reference.py writes them out):
 *
 *   prior     B[f][:, :, a_f] @ qs[f] after an action, D[f] at an episode's start (or the
 *             prior the caller keeps: prior_given)
 *   states    softmax(ln L + ln prior) for one factor, else the vanilla fixed-point iteration,
 *             each agent stopping when its free energy moves by less than dF_tol
 *   learning  pA[m][o_m, s] += lr * (prior counts > 0)[o_m, s] * q(s); the learned A[m] its
 *             counts' expectation (every column); pB[f][s', s, a_f] += lr_B * mask * q(s')
 *             q_prev(s) for the action a_f that led here, the columns of a_f their counts'
 *             expectation; what every agent added summed (experience)
 *   planning  one-step policies: utility q . sum_m ln C_m . A_m and the state information gain
 *             over the joint outcomes some state can produce (pymdp's exp(-16) threshold);
 *             two-step policies (a group that learns nothing): each step's, on the mean-field
 *             predicted states, summed (plan_two_steps: the work policies share done once)
 *   acting    q_pi = softmax(gamma G + ln E), the first maximum of each factor's action marginal
 *
 * The state (beliefs, priors, G, q_pi) is read and written in double or, for an int8 group, in
 * float (state_f32: the group's arrays as they are, no copy); the arithmetic is double either
 * way, on the tables the caller decoded (an int8 group's codes decoded as its numpy kernels
 * decode them), but for an int8 group's logs of its policies' predicted outcomes, taken in float
 * (tick_log_f32: its numpy twin's arithmetic is float32).
 *
 * Agents in blocks of BLK (8), the agent index innermost: inside a block every temporary is
 * x[i][b], value i of the block's agent b, so each loop over the model's dimensions (states,
 * factors, outcomes, entries, policies) does the BLK agents at once and its inner b loop, a
 * constant 8, is what gcc vectorises (-O3). Per-agent control flow becomes masks and selects:
 * the fixed-point iteration runs while any agent of the block still moves, and an agent whose
 * dF < dF_tol keeps its q (each agent stops exactly where it would alone); the zero-skips of
 * p ln p become plain products (a 0 times ln(0 + eps), finite, adds exactly 0). The last block
 * may be partial: its lanes past N repeat the block's first agent, are computed, and are never
 * written back. What stays per agent, scalar: gathering the prior (each agent its own action)
 * and likelihood (for a model nobody learns, its logs: one row of tick_model.lnL, the log
 * likelihood of every joint outcome made once by the binding, in place of the modalities'
 * product and S logs per agent and tick; and, more than one factor, one row of tick_model.lnQ1,
 * the mean-field iteration's first step of every joint outcome, edge_tick_first_step's, made
 * once: the iteration starts from uniform beliefs), the learning of each agent's own counts (row-major,
 * as stored; its table made in the block's lanes, the rows moved four values of four agents at
 * a time: rows_into_lanes, lanes_into_rows) and writing the results back; an agent's own transitions are gathered into the block's lanes value by
 * value where they are applied. A policy's predicted joint outcomes are summed outcome by
 * outcome over their entries (index_outcomes' order, once a call), each in registers: no
 * read-modify-write of a row per entry. The logs and exps are batched over flat arrays of a block's values
 * and done in tick_vmath.c, the one unit compiled with -ffast-math, where gcc calls
 * glibc's vector log/exp (libmvec, within 4 ulp); this unit keeps IEEE arithmetic.
 *
 * Flags (recipe.py): -O3 (gcc 12's -O2 vectorises with its "very cheap" cost model and
 * leaves most b loops scalar: 1.12 us per agent-tick against 0.81 at -O3, baseline version,
 * T-maze, N = 1,000, one session; glibc's scalar log/exp in the vectorised loops instead of
 * libmvec: ~1.05), -std=c11, no -march (the baseline instruction set a package ships: SSE2 on
 * x86-64, 2 doubles a vector, NEON on aarch64). On x86-64 the passes (tick_own and tick_shared,
 * every helper inlined into each) are also compiled for x86-64-v3 (AVX2 and FMA, 4 doubles a
 * vector; two functions each, edge_tick asking the CPU: the x86-64-v3 ones call libmvec's AVX2
 * log and exp themselves, vm_log's comment), tick_vmath.c's logs and exps with target_clones (an
 * ifunc): one .so, the CPU choosing, as numpy dispatches; 0.64 us per agent-tick against 0.81
 * for the baseline version on the same machine. -DTICK_BASELINE_ONLY builds the baseline version alone (the tests run both).
 * Temporaries: the caller's scratch (edge_tick_scratch_doubles(model) doubles, sized by the
 * model, carved once per tick) and small per-block arrays on the stack, sized by tick.h's
 * limits (the binding refuses a model above one); no allocation.
 * What it leaves out of pymdp's arithmetic, each a difference far below rounding of the free
 * energy it feeds: ln(q + 1e-16) of a softmax is taken as the log-softmax (the term
 * q ln(q + 1e-16) moves by at most 1e-16). C11 and <math.h>, with GCC's (and clang's)
 * always_inline, target, noplt, __builtin_cpu_supports and ivdep.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tick.h"
#include "tick_vmath.h"

static const double EPS = 1e-16;
static const double EXP_M16 = 1.1253517471925912e-07; /* exp(-16) */

/* An agent's values of a block: x[i][b] is agent b's value i. */
#ifndef BLK
#define BLK 8
#endif
typedef double lane[BLK];
/* A loop over the block's agents. Its accesses are all x[i][b]: two rows of one array are
 * either the same (the same element each b) or BLK apart, so no b depends on another and gcc
 * need not check the rows' overlap before vectorising (ivdep). */
#define LANES _Pragma("GCC ivdep") for (int b = 0; b < BLK; b++)
/* Four doubles as one value (GCC's and clang's vector extensions: an AVX2 vector in the
 * x86-64-v3 clone; two SSE2 or NEON ones as the compiler lowers them on the baseline and
 * aarch64), a block's lanes as QUADS of them: for the loops gcc leaves scalar written as LANES,
 * a sum kept in registers over an inner loop (gcc kept eight scalar accumulators, one a lane:
 * predict_outcome's sums, ~24 instructions an entry), a maximum, a loop whose outer index gcc
 * vectorised instead of the lanes (softmax_lanes' log-softmax, with transposes). Each
 * operation is the same IEEE operation lane by lane as the LANES loop it replaces (no
 * contraction: -std=c11 is -ffp-contract=off): the same bits. (One vector of all eight lanes
 * is kept in memory where the machine has no register that wide.) Locals only, moved with
 * memcpy (QUAD_AT, QUAD_TO: no alignment asked; macros, not functions: a quad passed by value
 * changes the ABI without AVX). */
typedef double quad __attribute__((vector_size(4 * sizeof(double))));
typedef int64_t quad_index __attribute__((vector_size(4 * sizeof(int64_t))));
typedef float quad_f32 __attribute__((vector_size(4 * sizeof(float))));  /* the state's
                                                                          * floats */
#define QUADS (BLK / 4)
#define QUAD_AT(v, p) memcpy(&(v), (p), sizeof(quad))
#define QUAD_TO(p, v) memcpy((p), &(v), sizeof(quad))
/* x, a block's lanes, into quads q[QUADS], and back */
#define LANE_AT(q, x) do { for (int h_ = 0; h_ < QUADS; h_++) QUAD_AT((q)[h_], &(x)[4 * h_]); } while (0)
#define LANE_TO(x, q) do { for (int h_ = 0; h_ < QUADS; h_++) QUAD_TO(&(x)[4 * h_], (q)[h_]); } while (0)

/* The kernel is compiled for the baseline instruction set and, on x86-64, once more for
 * x86-64-v3 (AVX2, FMA: 4 doubles a vector), the CPU choosing (edge_tick); every helper is
 * inlined into the two passes (own_pass, shared_pass: edge_tick calls one version of one) so
 * that each whole pass is in each version. */
#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__) && !defined(TICK_BASELINE_ONLY) && (defined(__GNUC__) || defined(__clang__))
#define TICK_V3 1
#else
#define TICK_V3 0
#endif

/* The logs and exps a pass calls (its vm argument, a constant each pass's version folds):
 * VM_CALL tick_vmath.c's loops (the baseline version; every other platform), VM_AVX2 libmvec's
 * AVX2 variants called from the x86-64-v3 version four values a call (_ZGVdN4v_log and
 * _ZGVdN4v_exp, as tick_vmath.c's x86-64-v3 loops call them for every whole quad: the same
 * function on the same values, the same bits; a count that is not whole quads goes to
 * tick_vmath.c, whose tail takes other variants). Each call into tick_vmath.c cost a call, a
 * loop set-up and a tail test and clobbered every vector register of the pass, ~45
 * instructions, for 8 to 100 values. The two versions are two functions (own_pass' and
 * shared_pass' callers below), not target_clones' one body: a body compiled once cannot call
 * the AVX2 variants in one version only. */
enum { VM_CALL = 0, VM_AVX2 = 1 };
#if TICK_V3
/* A quad in and out of a function is in an AVX register in the x86-64-v3 version and in memory
 * in the baseline one (the warning -Wpsabi gives where this is read); only the x86-64-v3
 * functions below call these, through the GOT (noplt: a jump less a call). */
#if defined(__clang__)
#define NOPLT /* clang has no noplt attribute (-fno-plt) */
#else
#define NOPLT __attribute__((noplt))
#endif
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
NOPLT quad _ZGVdN4v_log(quad x);
NOPLT quad _ZGVdN4v_exp(quad x);
#pragma GCC diagnostic pop
#undef NOPLT
/* Not inlined into the pass: there gcc kept the pass's values in registers a call clobbers and
 * moved them around every call of a loop. A lane (two quads) a step: every count is whole
 * lanes. */
#define V3_LEAF static __attribute__((noinline, target("arch=x86-64-v3")))
/* y[i] = log(x[i] + add), n whole lanes of values (y may be x). */
V3_LEAF void log_lanes_v3(const double *x, double *y, int64_t n, double add) {
    for (int64_t i = 0; i < n; i += BLK) {
        quad u, v;
        QUAD_AT(u, x + i);
        QUAD_AT(v, x + i + 4);
        u = _ZGVdN4v_log(u + add);
        QUAD_TO(y + i, u);
        v = _ZGVdN4v_log(v + add);
        QUAD_TO(y + i + 4, v);
    }
}
/* y[i] = log(x[i] + EPS), n whole lanes of values (y may be x); a quad of zeros (+0 or -0)
 * takes zero_log, log(0 + EPS) in each lane as _ZGVdN4v_log makes it (the pass's first call:
 * the same function of the same four values, the same bits), without a call. */
V3_LEAF void log_eps_lanes_v3(const double *x, double *y, int64_t n, const double *zero_log) {
    quad zero;
    QUAD_AT(zero, zero_log);
    for (int64_t i = 0; i < n; i += 4) {
        quad u;
        QUAD_AT(u, x + i);
        if (__builtin_ia32_movmskpd256((quad)(u == 0.0)) == 15)
            u = zero;
        else
            u = _ZGVdN4v_log(u + EPS);
        QUAD_TO(y + i, u);
    }
}
/* log(0 + EPS), four lanes (log_eps_lanes_v3's zero_log). */
V3_LEAF void log_eps_of_zero_v3(double *zero_log) {
    const quad zero = {0.0, 0.0, 0.0, 0.0}, v = _ZGVdN4v_log(zero + EPS);
    QUAD_TO(zero_log, v);
}
/* x[i] = exp(x[i]), n whole lanes of values. */
V3_LEAF void exp_lanes_v3(double *x, int64_t n) {
    for (int64_t i = 0; i < n; i += BLK) {
        quad u, v;
        QUAD_AT(u, x + i);
        u = _ZGVdN4v_exp(u);
        QUAD_TO(x + i, u);
        QUAD_AT(v, x + i + 4);
        v = _ZGVdN4v_exp(v);
        QUAD_TO(x + i + 4, v);
    }
}
#undef V3_LEAF
#endif
/* tick_vmath.c's tick_log_inplace, tick_log and tick_exp_inplace, the pass's version's */
INLINE void vm_log_inplace(int vm, double *x, int64_t n, double add) {
#if TICK_V3
    if (vm == VM_AVX2 && n % BLK == 0) {
        log_lanes_v3(x, x, n, add);
        return;
    }
#endif
    (void)vm;
    tick_log_inplace(x, n, add);
}
INLINE void vm_log(int vm, const double *restrict x, double *restrict y, int64_t n, double add) {
#if TICK_V3
    if (vm == VM_AVX2 && n % BLK == 0) {
        log_lanes_v3(x, y, n, add);
        return;
    }
#endif
    (void)vm;
    tick_log(x, y, n, add);
}
/* y[i] = log(x[i] + EPS) (y may be x): vm_log's, a quad of zeros without a call in the
 * x86-64-v3 pass (log_eps_lanes_v3: 30% of the closed loop's quads of the prior, likelihood and
 * predicted outcomes, per-agent pA T-maze N = 1,000, 19% open) */
INLINE void vm_log_eps(int vm, const double *x, double *y, int64_t n, const double *zero_log) {
#if TICK_V3
    if (vm == VM_AVX2 && n % BLK == 0) {
        log_eps_lanes_v3(x, y, n, zero_log);
        return;
    }
#endif
    (void)vm, (void)zero_log;
    if (x == y)
        tick_log_inplace(y, n, EPS);
    else
        tick_log(x, y, n, EPS);
}
INLINE void vm_exp_inplace(int vm, double *x, int64_t n) {
#if TICK_V3
    if (vm == VM_AVX2 && n % BLK == 0) {
        exp_lanes_v3(x, n);
        return;
    }
#endif
    (void)vm;
    tick_exp_inplace(x, n);
}

/* A value of the state (tick_state's void pointers): float for an int8 group (state_f32), else
 * double. */
INLINE double state_get(const void *a, int64_t i, int64_t f32) {
    return f32 ? (double)((const float *)a)[i] : ((const double *)a)[i];
}
INLINE void state_put(void *a, int64_t i, double v, int64_t f32) {
    if (f32)
        ((float *)a)[i] = (float)v;
    else
        ((double *)a)[i] = v;
}
/* k values from a[at ..] into lane b of x, and back: state_get's and state_put's conversions,
 * the float-or-double choice made once for the k values (it was taken per value: an int8
 * group's kept prior's gather and the posteriors', G's and q_pi's write-back, ~3% of its
 * tick, T-maze N = 1,000). */
INLINE void state_get_lanes(const void *a, int64_t at, lane *x, int64_t k, int64_t b,
                            int64_t f32) {
    if (f32) {
        const float *from = (const float *)a + at;
        for (int64_t i = 0; i < k; i++) x[i][b] = (double)from[i];
    } else {
        const double *from = (const double *)a + at;
        for (int64_t i = 0; i < k; i++) x[i][b] = from[i];
    }
}
INLINE void state_put_lanes(void *a, int64_t at, const lane *x, int64_t k, int64_t b,
                            int64_t f32) {
    if (f32) {
        float *to = (float *)a + at;
        for (int64_t i = 0; i < k; i++) to[i] = (float)x[i][b];
    } else {
        double *to = (double *)a + at;
        for (int64_t i = 0; i < k; i++) to[i] = x[i][b];
    }
}

/* Four agents' four values at a time, GCC's vector extensions (x86-64-v3: AVX2's unpacks and
 * lane permutes; the baseline and aarch64 as the compiler lowers them): four rows of four
 * values transposed in registers. Moving rows into the block's lanes value by value took ~3.8
 * instructions a value (eight scalar loads, or stores, a lane); this ~1.5. Data moved, no
 * arithmetic: the same bits. */
#ifdef __clang__
#define SHUFFLE_QUADS(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define SHUFFLE_QUADS(a, b, i, j, k, l) __builtin_shuffle(a, b, (quad_index){i, j, k, l})
#endif
/* r0..r3 (quads, rows) become their columns */
#define TRANSPOSE_QUADS(r0, r1, r2, r3)                                                    \
    do {                                                                                   \
        const quad t0 = SHUFFLE_QUADS(r0, r1, 0, 4, 2, 6);                                 \
        const quad t1 = SHUFFLE_QUADS(r0, r1, 1, 5, 3, 7);                                 \
        const quad t2 = SHUFFLE_QUADS(r2, r3, 0, 4, 2, 6);                                 \
        const quad t3 = SHUFFLE_QUADS(r2, r3, 1, 5, 3, 7);                                 \
        r0 = SHUFFLE_QUADS(t0, t2, 0, 1, 4, 5);                                            \
        r1 = SHUFFLE_QUADS(t1, t3, 0, 1, 4, 5);                                            \
        r2 = SHUFFLE_QUADS(t0, t2, 2, 3, 6, 7);                                            \
        r3 = SHUFFLE_QUADS(t1, t3, 2, 3, 6, 7);                                            \
    } while (0)


/* Four values of four of the block's rows (from[h + j] + e, j = 0..3) into the lanes h..h + 3
 * of x0..x3 (x_i: the value e + i's lanes), through one four-by-four transpose. */
INLINE void four_into_lanes(lane *x0, lane *x1, lane *x2, lane *x3,
                            const double *const *from, int64_t e, int h) {
    quad r0, r1, r2, r3;
    QUAD_AT(r0, from[h] + e);
    QUAD_AT(r1, from[h + 1] + e);
    QUAD_AT(r2, from[h + 2] + e);
    QUAD_AT(r3, from[h + 3] + e);
    TRANSPOSE_QUADS(r0, r1, r2, r3);
    QUAD_TO(&(*x0)[h], r0);
    QUAD_TO(&(*x1)[h], r1);
    QUAD_TO(&(*x2)[h], r2);
    QUAD_TO(&(*x3)[h], r3);
}

/* The reverse of four_into_lanes: the lanes h..h + 3 of x0..x3 into four values of four rows
 * (to[h + j] + e). */
INLINE void four_into_rows(double *const *to, int64_t e, int h, const lane *x0,
                           const lane *x1, const lane *x2, const lane *x3) {
    quad r0, r1, r2, r3;
    QUAD_AT(r0, &(*x0)[h]);
    QUAD_AT(r1, &(*x1)[h]);
    QUAD_AT(r2, &(*x2)[h]);
    QUAD_AT(r3, &(*x3)[h]);
    TRANSPOSE_QUADS(r0, r1, r2, r3);
    QUAD_TO(to[h] + e, r0);
    QUAD_TO(to[h + 1] + e, r1);
    QUAD_TO(to[h + 2] + e, r2);
    QUAD_TO(to[h + 3] + e, r3);
}

/* k values of each of the block's agents (agent first + b's at a[(first + b) k ..], rows of
 * the state one after the other) into the block's lanes x, and back (count agents): a whole
 * block value by value, the conversions of its 8 lanes at once and each agent's value k apart
 * (state_get_lanes and state_put_lanes, agent by agent, moved one agent's k values at a time:
 * ~8 instructions a value; the same conversions). A partial block agent by agent, the lanes
 * past count repeating agent first. */
INLINE void state_get_block(const void *a, int64_t first, lane *x, int64_t k, int64_t count,
                            int64_t f32) {
    if (count < BLK) {
        for (int b = 0; b < BLK; b++)
            state_get_lanes(a, (first + (b < count ? b : 0)) * k, x, k, b, f32);
        return;
    }
    if (f32) {  /* four agents' value converted at once (a quad: as LANES, gcc converted
                 * them through transposes, ~4.7 instructions a value, T-maze) */
        const float *from = (const float *)a + first * k;
        for (int64_t i = 0; i < k; i++)
            for (int h = 0; h < BLK; h += 4) {
                const float *at = from + h * k + i;
                const quad_f32 v = {at[0], at[k], at[2 * k], at[3 * k]};
                const quad d = __builtin_convertvector(v, quad);
                QUAD_TO(&x[i][h], d);
            }
    } else {
        const double *from = (const double *)a + first * k;
        for (int64_t i = 0; i < k; i++)
            for (int b = 0; b < BLK; b++) x[i][b] = from[b * k + i];
    }
}
INLINE void state_put_block_vm(void *a, int64_t first, const lane *x, int64_t k,
                               int64_t count, int64_t f32, int vm) {
    if (count < BLK) {
        for (int64_t b = 0; b < count; b++) state_put_lanes(a, (first + b) * k, x, k, b, f32);
        return;
    }
    if (f32) {  /* four agents' value converted at once (a quad: as LANES, gcc converted
                 * them one by one, ~4 instructions a value, T-maze) */
        float *to = (float *)a + first * k;
        for (int64_t i = 0; i < k; i++)
            for (int h = 0; h < BLK; h += 4) {
                quad d;
                QUAD_AT(d, &x[i][h]);
                const quad_f32 v = __builtin_convertvector(d, quad_f32);
                float *at = to + h * k + i;
                at[0] = v[0];
                at[k] = v[1];
                at[2 * k] = v[2];
                at[3 * k] = v[3];
            }
        return;
    }
    double *to = (double *)a + first * k;
    int64_t i = 0;
    /* the x86-64-v3 pass: whole quads of values four of four agents at a time (as
     * four_into_rows; value by value ~2.3 instructions a value: the plan's G, a factor of 4
     * states' posteriors and next prior, T-maze); the baseline version's frame has no room
     * for them (gcc keeps its quads on the stack, each inlined place its own, past
     * -Wframe-larger-than's 16 KiB) */
    for (; vm == VM_AVX2 && i + 4 <= k; i += 4)
        for (int h = 0; h < BLK; h += 4) {
            quad r0, r1, r2, r3;  /* values i .. i + 3 of agents h .. h + 3 */
            QUAD_AT(r0, &x[i][h]);
            QUAD_AT(r1, &x[i + 1][h]);
            QUAD_AT(r2, &x[i + 2][h]);
            QUAD_AT(r3, &x[i + 3][h]);
            TRANSPOSE_QUADS(r0, r1, r2, r3);
            QUAD_TO(to + h * k + i, r0);
            QUAD_TO(to + (h + 1) * k + i, r1);
            QUAD_TO(to + (h + 2) * k + i, r2);
            QUAD_TO(to + (h + 3) * k + i, r3);
        }
    for (; i < k; i++)
        for (int b = 0; b < BLK; b++) to[b * k + i] = x[i][b];
}
/* (value by value: the baseline's, and the prior's write in infer_block) */
INLINE void state_put_block(void *a, int64_t first, const lane *x, int64_t k, int64_t count,
                            int64_t f32) {
    state_put_block_vm(a, first, x, k, count, f32, VM_CALL);
}

/* Agent n's values of factor f's transitions: its own or the group's learned ones (B_values),
 * else the table's. */
INLINE const double *b_values(const tick_model *m, int64_t f, int64_t n) {
    const double *own = m->B_values[f];
    return own == NULL ? m->B[f].value : own + n * m->B_agent_stride[f];
}

/* The block's temporaries, carved from the caller's scratch (edge_tick_scratch_doubles). */
typedef struct {
    lane *log_prior, *cur, *nxt, *log_cur, *log_nxt, *qL; /* (sum S_f) */
    lane *step1;  /* (sum S_f): the first step's values, less the log prior (lnQ1's rows) */
    lane *log_lik, *joint, *weighted, *utility, *neg_entropy, *qj; /* (S) */
    lane *value, *log_value;                                   /* (E) */
    lane *moved;                                               /* (sum_f U_f S_f) */
    lane *moved2;            /* (sum_f K_f S_f): the second-step nodes' (policy_len 2) */
    lane *node;              /* (J1 + J2): the joint nodes' values (policy_len 2) */
    lane *qo, *log_qo;       /* (P, K); policy_len 2: (J1 + J2, K) */
    lane *G, *x, *q_pi;                                        /* (P) */
    int64_t *outcome_start;                                    /* (K + 1) */
    int64_t *outcome_entry;                                    /* (E): outcome by outcome */
    int64_t *entry_slot;     /* (E; a learned table's only): its value's slot (index_slots) */
    int64_t slots;           /* the distinct values of the entries (index_slots) */
    int64_t *packed_at;      /* (K): the node's packed row of each outcome, -1 dropped (a
                              * twin's, tick_model.outcome_twin, is its first's) */
    int64_t *term;           /* (planned K): each node's terms' packed rows, in order */
    double log_uniform[MAX_F]; /* ln(1 / S_f + eps): infer_states' first beliefs' logs */
    double log_eps_zero[4];    /* the x86-64-v3 pass's log(0 + EPS), 4 lanes (vm_log_eps) */
    /* the tables each agent's likelihood row and first step's row are gathered from (NULL:
     * made per agent): the model's (tick_model.lnL, lnQ1: a frozen group's) or the tick's */
    const double *lnL, *lnQ1;
    double *made_lnL, *made_lnQ1;  /* (shared_tables) the tick's (shared_likelihood), whole
                                    * lanes: (prod_m O_m, S), (prod_m O_m, sum S_f) */
    lane *A[MAX_M];                                            /* (O_m S) learned tables */
} block_scratch;

/* Whether the model plans two-step policies (a frozen group's; tick_model.policy_len). */
static int two_step(const tick_model *m) { return m->policy_len == 2; }

static int64_t width_of(const tick_model *m) {
    int64_t w = 0;
    for (int64_t f = 0; f < m->factors; f++) w += m->num_states[f];
    return w;
}

/* The joint outcomes: prod_m O_m (lnL's rows). */
static int64_t joint_observations(const tick_model *m) {
    int64_t rows = 1;
    for (int64_t k = 0; k < m->modalities; k++) rows *= m->num_obs[k];
    return rows;
}

/* Lays the block's temporaries out from base (NULL: only counts); returns the lanes used. */
static int64_t carve(const tick_model *m, lane *base, block_scratch *sc) {
    const int64_t W = width_of(m), S = m->joint, E = m->entries, P = m->policies;
    int64_t used = 0, moved = 0, moved2 = 0, nodes = 0, planned = P;
    for (int64_t f = 0; f < m->factors; f++) moved += m->num_controls[f] * m->num_states[f];
    if (two_step(m)) {  /* the joint nodes' values and outcomes, each factor's nodes' states */
        nodes = m->first_joints + m->second_joints;
        planned = nodes;
        for (int64_t f = 0; f < m->factors; f++)
            moved2 += (m->second_start[f + 1] - m->second_start[f]) * m->num_states[f];
    }
#define TAKE(field, count) do { if (base) sc->field = base + used; used += (count); } while (0)
    TAKE(log_prior, W); TAKE(log_lik, S);  /* one after the other: their logs in one call */
    TAKE(cur, W); TAKE(nxt, W); TAKE(log_cur, W); TAKE(log_nxt, W);
    TAKE(qL, W); TAKE(step1, W);
    TAKE(joint, S); TAKE(weighted, S); TAKE(utility, S);
    TAKE(neg_entropy, S); TAKE(qj, S);
    TAKE(value, E); TAKE(log_value, E);
    TAKE(moved, moved);
    TAKE(qo, planned * m->outcomes); TAKE(log_qo, planned * m->outcomes);
    TAKE(G, P); TAKE(x, P); TAKE(q_pi, P);
    TAKE(moved2, moved2); TAKE(node, nodes);  /* none: one-step policies */
    /* the entries outcome by outcome (index_outcomes, once a call): int64s in whole lanes */
    if (base) {
        sc->outcome_start = (int64_t *)(base + used);
        sc->outcome_entry = sc->outcome_start + m->outcomes + 1;
    }
    int64_t learned = 0;  /* a learned table: each entry's slot too (index_slots) */
    for (int64_t k = 0; k < m->modalities; k++) learned |= m->pA[k] != NULL;
    if (base) {
        sc->entry_slot = learned ? sc->outcome_entry + E : NULL;
        sc->packed_at = sc->outcome_entry + E + (learned ? E : 0);
        sc->term = sc->packed_at + m->outcomes;
    }
    /* and each outcome's packed row, each node's terms' rows (outcome twins) */
    used += (m->outcomes + 1 + E + (learned ? E : 0) + m->outcomes + planned * m->outcomes +
             BLK - 1) / BLK;
    for (int64_t k = 0; k < m->modalities; k++) {
        if (base) sc->A[k] = NULL;
        if (m->pA[k] != NULL) TAKE(A[k], m->num_obs[k] * S);
    }
    if (base) sc->made_lnL = sc->made_lnQ1 = NULL;
    if (m->shared_tables) {  /* the tick's lnL and lnQ1 (shared_likelihood), whole lanes */
        const int64_t rows = joint_observations(m);
        if (base) sc->made_lnL = base[used];
        used += (rows * S + BLK - 1) / BLK;
        if (m->factors > 1) {
            if (base) sc->made_lnQ1 = base[used];
            used += (rows * W + BLK - 1) / BLK;
        }
    }
#undef TAKE
    return used;
}

/* The doubles of scratch edge_tick needs (tick_model.scratch), alignment slack included.
 * Its twin in Python, scratch_doubles in __init__.py, plans the bytes without the library
 * (a group that steps with numpy never loads it): change carve and BLK there too
 * (test_binding.py compares the two). */
int64_t edge_tick_scratch_doubles(const tick_model *m) {
    return (carve(m, NULL, NULL) + 1) * BLK;
}

/* out = softmax(x) over k values of each agent; log_out (may be NULL) its log-softmax,
 * (x - top) - ln(total): the difference x - top kept from before the exps (the same value
 * made once), ln(total) taken after. In quads: gcc left the maximum scalar and vectorised the
 * log-softmax's loop over i with transposes (~40% of the softmaxes' own instructions but the
 * exps and logs, T-maze N = 1,000). */
INLINE void softmax_lanes(const lane *x, lane *out, lane *log_out, int64_t k, int vm) {
    quad top[QUADS], row[QUADS], total[QUADS], scale[QUADS];
    LANE_AT(top, x[0]);
    for (int64_t i = 1; i < k; i++) {  /* x > top ? x : top, lane by lane */
        LANE_AT(row, x[i]);
        for (int h = 0; h < QUADS; h++) {
            const quad_index above = (quad_index)(row[h] > top[h]);
            top[h] = (quad)((above & (quad_index)row[h]) | (~above & (quad_index)top[h]));
        }
    }
    for (int64_t i = 0; i < k; i++) {
        LANE_AT(row, x[i]);
        for (int h = 0; h < QUADS; h++) row[h] -= top[h];
        LANE_TO(out[i], row);
        if (log_out != NULL) LANE_TO(log_out[i], row);
    }
    vm_exp_inplace(vm, &out[0][0], k * BLK);
    for (int h = 0; h < QUADS; h++) total[h] = (quad){0.0, 0.0, 0.0, 0.0};
    for (int64_t i = 0; i < k; i++) {
        LANE_AT(row, out[i]);
        for (int h = 0; h < QUADS; h++) total[h] += row[h];
    }
    for (int h = 0; h < QUADS; h++) scale[h] = 1.0 / total[h];
    for (int64_t i = 0; i < k; i++) {
        LANE_AT(row, out[i]);
        for (int h = 0; h < QUADS; h++) row[h] *= scale[h];
        LANE_TO(out[i], row);
    }
    if (log_out != NULL) {
        lane log_total;
        LANE_TO(log_total, total);
        vm_log_inplace(vm, log_total, BLK, 0.0);
        quad shift[QUADS];
        LANE_AT(shift, log_total);
        for (int64_t i = 0; i < k; i++) {
            LANE_AT(row, log_out[i]);
            for (int h = 0; h < QUADS; h++) row[h] -= shift[h];
            LANE_TO(log_out[i], row);
        }
    }
}

/* The joint over the factors (q[f]: factor f's lanes), C order (last factor fastest): the
 * product from 1 of each state's factors, in factor order. The first two factors' products are
 * written directly (1 x q_0 is q_0), the others expand them in place. */
INLINE void joint_of(const tick_model *m, lane *const *q, lane *out) {
    const int64_t s0 = m->num_states[0];
    if (m->factors == 1) {
        for (int64_t i = 0; i < s0; i++) LANES out[i][b] = q[0][i][b];
        return;
    }
    const int64_t s1 = m->num_states[1];
    for (int64_t i = 0; i < s0; i++) {
        lane a;  /* a copy: the stores below cannot change it (no reload per j) */
        LANES a[b] = q[0][i][b];
        lane *row = out + i * s1;
        for (int64_t j = 0; j < s1; j++) LANES row[j][b] = a[b] * q[1][j][b];
    }
    int64_t size = s0 * s1;
    for (int64_t f = 2; f < m->factors; f++) {
        int64_t s_f = m->num_states[f];
        for (int64_t i = size - 1; i >= 0; i--) {
            lane v;
            LANES v[b] = out[i][b];
            for (int64_t j = s_f - 1; j >= 0; j--) LANES out[i * s_f + j][b] = v[b] * q[f][j][b];
        }
        size *= s_f;
    }
}

/* y = B[:, :, u] @ x for every agent of the block, lane b's values vals[b] (the same for every
 * lane: shared). */
INLINE void apply_b(const sparse_b *bm, const double *const *vals, int shared, int64_t u,
                    const lane *x, lane *y, int64_t s_f) {
    for (int64_t i = 0; i < s_f; i++) LANES y[i][b] = 0.0;
    if (shared) {
        const double *value = vals[0];
        for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++) {
            double v = value[e];
            const double *src = x[bm->col[e]];
            double *dst = y[bm->row[e]];
            lane s, t;  /* every load before the store: gcc vectorises the lanes (the
                         * read-modify-write through two pointers stayed scalar) */
            LANES { s[b] = src[b]; t[b] = dst[b]; }
            LANES dst[b] = t[b] + v * s[b];
        }
        return;
    }
    for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++) {
        lane v, s, t;
        for (int b = 0; b < BLK; b++) v[b] = vals[b][e];
        const double *src = x[bm->col[e]];
        double *dst = y[bm->row[e]];
        LANES { s[b] = src[b]; t[b] = dst[b]; }
        LANES dst[b] = t[b] + v[b] * s[b];
    }
}

/* The columns of action u of a learned factor's transitions (values, in its sparse_b's order)
 * become their counts' expectation: each entry over its column's sum (pymdp's B = pB / pB.sum(0);
 * the counts are 0 off the support; a pad stays 0). */
static void normalise_b(const sparse_b *bm, const int64_t *flat, const double *counts,
                        double *values, int64_t u, int64_t s_f) {
    double total[MAX_S];
    for (int64_t i = 0; i < s_f; i++) total[i] = 0.0;
    for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++)
        if (flat[e] >= 0) total[bm->col[e]] += counts[flat[e]];
    for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++)
        values[e] = flat[e] >= 0 ? counts[flat[e]] / total[bm->col[e]] : 0.0;
}

/* An int8 group's twin (tick_model.quantise): count values (each its counts' expectation; entry
 * j in column col[j], or j % columns when col is NULL: a dense (O, S) table's) become what its
 * numpy twin keeps: each column's log-u8 codes (edge_agent/aif/quant.py's encode_log_u8: top
 * the log of its largest value, the floor the log of its smallest non-zero one but at most
 * Q_RANGE below, 254 steps between, codes rounded half to even; top and step kept as float)
 * decoded and renormalised (decode_log_u8). A zero value (a pad) has the zero code and stays 0.
 * The logs and exps are tick_vmath's (libmvec, within 4 ulp), Q_CHUNK entries at a time: the
 * same codes as numpy's but where a value lies within a few ulp of the edge between two codes
 * (then one step apart: inside the int8 path's bound). */
#define Q_RANGE 24.0
#define Q_MAX_CODE 254.0
#define Q_CHUNK 256
/* (not inlined: once a tick, and its MAX_S arrays would be in the shared pass's frame) */
static __attribute__((noinline)) void quantise_columns(double *values, const int64_t *col, int64_t count,
                             int64_t columns) {
    double largest[MAX_S], smallest[MAX_S], top[MAX_S], low[MAX_S], step[MAX_S];
    double top32[MAX_S], step32[MAX_S], total[MAX_S], logs[Q_CHUNK];
#define Q_COLUMN(e) (col != NULL ? col[e] : (e) % columns)
    for (int64_t i = 0; i < columns; i++) {
        largest[i] = 0.0;
        smallest[i] = 0.0;
        total[i] = 0.0;
    }
    for (int64_t e = 0; e < count; e++) {
        const double v = values[e];
        const int64_t c = Q_COLUMN(e);
        if (v > 0.0) {
            if (v > largest[c]) largest[c] = v;
            if (smallest[c] == 0.0 || v < smallest[c]) smallest[c] = v;
        }
    }
    for (int64_t i = 0; i < columns; i++)  /* a column without entries: logs of 1, unused */
        if (largest[i] <= 0.0) largest[i] = smallest[i] = 1.0;
    tick_log(largest, top, columns, 0.0);
    tick_log(smallest, low, columns, 0.0);
    for (int64_t i = 0; i < columns; i++) {
        if (low[i] < top[i] - Q_RANGE) low[i] = top[i] - Q_RANGE;
        step[i] = (top[i] - low[i]) / Q_MAX_CODE;
        top32[i] = (double)(float)top[i];
        step32[i] = (double)(float)step[i];
    }
    for (int64_t first = 0; first < count; first += Q_CHUNK) {
        const int64_t chunk = count - first < Q_CHUNK ? count - first : Q_CHUNK;
        double *v = values + first;
        /* a pad (0) is logged as 1 and written back 0 */
        for (int64_t j = 0; j < chunk; j++) logs[j] = v[j] > 0.0 ? v[j] : 1.0;
        tick_log_inplace(logs, chunk, 0.0);
        for (int64_t j = 0; j < chunk; j++) {
            const int64_t c = Q_COLUMN(first + j);
            const double logp = logs[j] < low[c] ? low[c] : logs[j];
            double code = rint((top[c] - logp) / (step[c] > 0.0 ? step[c] : 1.0));
            if (code > Q_MAX_CODE) code = Q_MAX_CODE;
            logs[j] = top32[c] - code * step32[c];
        }
        tick_exp_inplace(logs, chunk);
        for (int64_t j = 0; j < chunk; j++) {
            v[j] = v[j] > 0.0 ? logs[j] : 0.0;
            total[Q_COLUMN(first + j)] += v[j];
        }
    }
    for (int64_t e = 0; e < count; e++)
        if (values[e] > 0.0) values[e] /= total[Q_COLUMN(e)];
#undef Q_COLUMN
}

/* The columns of action u of a learned factor's transitions (values, in its sparse_b's order),
 * rounded as its int8 twin keeps them (quantise_columns). */
static void quantise_b(const sparse_b *bm, double *values, int64_t u, int64_t s_f) {
    const int64_t first = bm->start[u];
    quantise_columns(values + first, bm->col + first, bm->start[u + 1] - first, s_f);
}

/* pymdp's calc_free_energy of the factors' q (log_q: their logs), without the likelihood term
 * when log_lik is NULL; joint: scratch. */
INLINE void free_energy(const tick_model *m, lane *const *q, lane *const *log_q,
                        lane *const *log_prior, const lane *log_lik, lane *joint, double *vfe) {
    LANES vfe[b] = 0.0;
    for (int64_t f = 0; f < m->factors; f++)
        for (int64_t i = 0; i < m->num_states[f]; i++)
            LANES vfe[b] += q[f][i][b] * (log_q[f][i][b] - log_prior[f][i][b]);
    if (log_lik != NULL) {
        lane acc;
        joint_of(m, q, joint);
        LANES acc[b] = 0.0;
        for (int64_t s = 0; s < m->joint; s++) LANES acc[b] += joint[s][b] * log_lik[s][b];
        LANES vfe[b] -= acc[b];
    }
}

/* The block's posteriors into sc->cur: each agent iterates until its own free energy moves by
 * less than dF_tol (a stopped agent keeps its q while the others go on). */
INLINE void infer_states(const tick_model *m, block_scratch *sc, const int64_t *offset,
                         int tabled, int vm) {
    const int64_t F = m->factors, S = m->joint;
    if (F == 1) {
        for (int64_t s = 0; s < S; s++)
            LANES sc->qL[s][b] = sc->log_lik[s][b] + sc->log_prior[s][b];
        softmax_lanes(sc->qL, sc->cur, NULL, S, vm);
        return;
    }
    lane *cur[MAX_F], *nxt[MAX_F], *log_cur[MAX_F], *log_nxt[MAX_F], *log_prior[MAX_F];
    for (int64_t f = 0; f < F; f++) {
        cur[f] = sc->cur + offset[f];
        nxt[f] = sc->nxt + offset[f];
        log_cur[f] = sc->log_cur + offset[f];
        log_nxt[f] = sc->log_nxt + offset[f];
        log_prior[f] = sc->log_prior + offset[f];
        double uniform = 1.0 / (double)m->num_states[f], log_uniform = sc->log_uniform[f];
        for (int64_t i = 0; i < m->num_states[f]; i++) {
            LANES cur[f][i][b] = uniform;
            LANES log_cur[f][i][b] = log_uniform;
        }
    }
    lane prev, dF, vfe;
    int64_t active[BLK];
    /* sc->joint is the joint of cur: the last iteration's free energy made it of nxt, and every
     * lane took nxt (the same products of the same values: no joint_of of cur again) */
    int joint_of_cur = 0;
    free_energy(m, cur, log_cur, log_prior, NULL, sc->joint, prev);
    LANES dF[b] = 1.0;
    for (int64_t it = 0; it < m->num_iter; it++) {
        int64_t any = 0, all = 1;
        LANES { active[b] = !(dF[b] < m->dF_tol); any |= active[b]; }
        for (int b = 0; b < BLK; b++) all &= active[b];
        if (!any) break;
        /* the first step from uniform beliefs depends on the observation alone but for the log
         * prior: a model nobody learns has it made once (lnQ1, its rows in sc->step1), a
         * shared pass once a tick (shared_likelihood), the same sums in the same order
         * (edge_tick_first_step) */
        const int from_table = tabled && it == 0 && sc->lnQ1 != NULL;
        if (!from_table) {
            if (!joint_of_cur) joint_of(m, cur, sc->joint);
            for (int64_t s = 0; s < S; s++)
                LANES sc->weighted[s][b] = sc->log_lik[s][b] * sc->joint[s][b];
        }
        /* each factor's values into its rows of sc->qL, then each factor's softmax (nxt[f]
         * and log_nxt[f] are the factors' rows of one buffer each: they swap together; one
         * softmax of every factor at once measured no cheaper over softmax_lanes' quads) */
        for (int64_t f = 0; f < F; f++) {
            lane *qL = sc->qL + offset[f];
            int64_t s_f = m->num_states[f];
            if (from_table) {
                const lane *step = sc->step1 + offset[f];
                for (int64_t i = 0; i < s_f; i++) LANES qL[i][b] = step[i][b] + log_prior[f][i][b];
                continue;
            }
            const int64_t *index = m->state_index + f * S;
            for (int64_t i = 0; i < s_f; i++) LANES qL[i][b] = 0.0;
            for (int64_t s = 0; s < S; s++) {
                lane w, t;  /* every load before the store: gcc vectorises the lanes (the
                             * read-modify-write through two pointers stayed scalar) */
                double *to = qL[index[s]];
                LANES { w[b] = sc->weighted[s][b]; t[b] = to[b]; }
                LANES to[b] = t[b] + w[b];
            }
            for (int64_t i = 0; i < s_f; i++)
                LANES qL[i][b] = qL[i][b] / cur[f][i][b] + log_prior[f][i][b];
        }
        for (int64_t f = 0; f < F; f++)
            softmax_lanes(sc->qL + offset[f], nxt[f], log_nxt[f], m->num_states[f], vm);
        free_energy(m, nxt, log_nxt, log_prior, sc->log_lik, sc->joint, vfe);
        /* the agents still iterating take the new q; the others keep theirs (every agent
         * iterating: the buffers swap, nothing copied) */
        for (int64_t f = 0; f < F && all; f++) {
            lane *q = cur[f], *log_q = log_cur[f];
            cur[f] = nxt[f], log_cur[f] = log_nxt[f];
            nxt[f] = q, log_nxt[f] = log_q;
        }
        for (int64_t f = 0; f < F && !all; f++)
            for (int64_t i = 0; i < m->num_states[f]; i++)
                LANES {
                    cur[f][i][b] = active[b] ? nxt[f][i][b] : cur[f][i][b];
                    log_cur[f][i][b] = active[b] ? log_nxt[f][i][b] : log_cur[f][i][b];
                }
        LANES {
            dF[b] = active[b] ? fabs(prev[b] - vfe[b]) : dF[b];
            prev[b] = active[b] ? vfe[b] : prev[b];
        }
        joint_of_cur = (int)all;
    }
    /* the posteriors in sc->cur (an odd number of swaps left them in sc->nxt) */
    if (cur[0] != sc->cur + offset[0])
        memcpy(sc->cur, sc->nxt, (size_t)width_of(m) * sizeof(lane));
}

/* x[i][b] = from[b][i] for the block's eight rows' first k values. */
INLINE void rows_into_lanes(lane *x, const double *const *from, int64_t k) {
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int h = 0; h < BLK; h += 4)
            four_into_lanes(&x[i], &x[i + 1], &x[i + 2], &x[i + 3], from, i, h);
    for (; i < k; i++) LANES x[i][b] = from[b][i];
}

/* to[b][i] = x[i][b] for the block's eight rows' first k values (rows that are the same row
 * take the same values: a padding lane's). */
INLINE void lanes_into_rows(double *const *to, const lane *x, int64_t k) {
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int h = 0; h < BLK; h += 4)
            four_into_rows(to, i, h, &x[i], &x[i + 1], &x[i + 2], &x[i + 3]);
    for (; i < k; i++)
        for (int b = 0; b < BLK; b++) to[b][i] = x[i][b];
}

/* Modality k's learned table as each agent keeps it on its prior's support (tick.h's A_kept:
 * the row starts, then each value's cell), or NULL: kept whole. */
INLINE const int64_t *kept_of(const tick_model *m, int64_t k) {
    return m->A_kept != NULL ? m->A_kept[k] : NULL;
}

/* x[cell[e]][b] = from[b][e] for the block's eight tables kept on their support, their K
 * values (cell: each value's cell), the other cells of x's first k 0 (the number a table kept
 * whole holds there): four values of four tables at a time, as rows_into_lanes. */
INLINE void support_into_lanes(lane *x, const double *const *from, const int64_t *cell,
                               int64_t K, int64_t k) {
    for (int64_t i = 0; i < k; i++) LANES x[i][b] = 0.0;
    int64_t e = 0;
    for (; e + 4 <= K; e += 4)
        for (int h = 0; h < BLK; h += 4)
            four_into_lanes(&x[cell[e]], &x[cell[e + 1]], &x[cell[e + 2]], &x[cell[e + 3]],
                            from, e, h);
    for (; e < K; e++) LANES x[cell[e]][b] = from[b][e];
}

/* to[b][e] = x[cell[e]][b]: the block's eight tables kept on their support, their K values
 * (the other cells' lanes hold 0: a pA update is masked by the support, and the counts there
 * are 0), four values of four tables at a time, as lanes_into_rows (rows that are the same row
 * take the same values: a padding lane's). */
INLINE void lanes_into_support(double *const *to, const lane *x, const int64_t *cell,
                               int64_t K) {
    int64_t e = 0;
    for (; e + 4 <= K; e += 4)
        for (int h = 0; h < BLK; h += 4)
            four_into_rows(to, e, h, &x[cell[e]], &x[cell[e + 1]], &x[cell[e + 2]],
                           &x[cell[e + 3]]);
    for (; e < K; e++)
        for (int b = 0; b < BLK; b++) to[b][e] = x[cell[e]][b];
}

/* Each agent's observed row of modality k's table (agent n's at table + n stride: stride 0,
 * one every agent's; kept non-NULL: kept on its support, kept_of) into the block's lanes
 * (row: S lanes; the lanes past count agent first's): the rows found, then moved four values
 * of four agents at a time (rows_into_lanes; agent by agent, each row's values strided into
 * the lanes, they were ~7 instructions a value, value by value over the lanes ~5); a table
 * kept on its support, the lanes 0 and each lane's row's values there (cell by cell, with a
 * select, it was ~130 instructions an agent-step, per-agent pA T-maze N = 1,000). */
INLINE void gather_rows(const tick_model *m, const tick_state *st, int64_t k,
                        const double *table, int64_t stride, const int64_t *kept,
                        int64_t first, int64_t count, lane *row) {
    const int64_t M = m->modalities, S = m->joint;
    const double *from[BLK];
    if (kept != NULL) {
        const int64_t *cell = kept + m->num_obs[k] + 1;
        for (int64_t s = 0; s < S; s++) LANES row[s][b] = 0.0;
        for (int b = 0; b < BLK; b++) {
            const int64_t n = first + (b < count ? b : 0), o = st->obs[n * M + k];
            const double *values = table + n * stride;
            for (int64_t e = kept[o]; e < kept[o + 1]; e++) row[cell[e] - o * S][b] = values[e];
        }
        return;
    }
    for (int b = 0; b < BLK; b++) {
        const int64_t n = first + (b < count ? b : 0);
        from[b] = table + n * stride + st->obs[n * M + k] * S;
    }
    rows_into_lanes(row, from, S);
}

/* The likelihood of a model with tables (no lnL), the modalities' observed rows multiplied in
 * modality order, and (asked for) p(o_m), each row against the prior's joint (sc->log_prior's
 * lanes, not yet logs) in state order: each modality's row gathered once into the block's lanes
 * (sc->qj, free until the plan; p(o_m) under the float tables, A_float, their rows), both in
 * lanes; the same products and sums as agent by agent (they were scalar, agent by agent, ~8%
 * of the per-agent pA tick). */
INLINE void likelihood_lanes(
    const tick_model *m, const tick_state *st, block_scratch *sc, int64_t first, int64_t count,
    const int64_t *offset) {
    const int64_t F = m->factors, M = m->modalities, S = m->joint;
    if (st->p_obs != NULL) {
        lane *p[MAX_F] = {0};
        for (int64_t f = 0; f < F; f++) p[f] = sc->log_prior + offset[f];
        joint_of(m, p, sc->joint);
    }
    lane *row = sc->qj;
    const int inferred = sc->lnL == NULL, floats = m->A_float != NULL;
    for (int64_t k = 0; k < M; k++) {
        /* the rows of the tables the agents infer with: the product's (no lnL) */
        if (inferred) {
            gather_rows(m, st, k, m->A[k], m->A_agent_stride[k], kept_of(m, k), first, count,
                        row);
            if (k == 0)
                for (int64_t s = 0; s < S; s++) LANES sc->log_lik[s][b] = row[s][b];
            else
                for (int64_t s = 0; s < S; s++) LANES sc->log_lik[s][b] *= row[s][b];
        }
        if (st->p_obs == NULL) continue;
        /* p(o_m): each lane's sum in state order of its row of the float tables (A_float) or
         * of the tables inferred with (gathered above unless lnL), the same sums as agent by
         * agent (the float tables' were, scalar, ~5% of the int8 shared pA tick, T-maze
         * N = 1,000) */
        if (floats)
            gather_rows(m, st, k, m->A_float[k], 0, NULL, first, count, row);
        else if (!inferred)
            gather_rows(m, st, k, m->A[k], m->A_agent_stride[k], kept_of(m, k), first, count,
                        row);
        lane total;
        LANES total[b] = 0.0;
        for (int64_t s = 0; s < S; s++) LANES total[b] += row[s][b] * sc->joint[s][b];
        double *p_obs = st->p_obs + first * M + k;
        if (count == BLK)  /* a whole block's eight stores (to count: a loop, ~6 instructions a
                            * store, per-agent pA T-maze N = 1,000) */
            for (int b = 0; b < BLK; b++) p_obs[b * M] = total[b];
        else
            for (int64_t b = 0; b < count; b++) p_obs[b * M] = total[b];
    }
}

/* Health's measures of a sampled agent (tick_state.measure_rows; edge_agent/aif/health.py's
 * tick_measures, scalar: a few dozen agents a measured tick): row o of the table agent n
 * infers with, as health's likelihood reads it (an int8 group's its codes decoded, not
 * A_float: the float tables are learning's surprise's, not health's); a table kept on its
 * support, its row made in out (S values). */
INLINE const double *measured_row(const tick_model *m, int64_t k, int64_t n, int64_t o,
                                  double *out) {
    const int64_t S = m->joint;
    const double *table = m->A[k] + n * m->A_agent_stride[k];
    const int64_t *kept = kept_of(m, k);
    if (kept == NULL) return table + o * S;
    const int64_t *cell = kept + m->num_obs[k] + 1;
    for (int64_t s = 0; s < S; s++) out[s] = 0.0;
    for (int64_t e = kept[o]; e < kept[o + 1]; e++) out[cell[e] - o * S] = table[e];
    return out;
}

/* The joint over the states of the factors' values v[(offset[f] + i) * stride] (a block's
 * lanes: &lanes[0][b], BLK), C order (last factor fastest), into out. */
INLINE void measured_joint(const tick_model *m, const double *v, int64_t stride,
                           const int64_t *offset, double *out) {
    for (int64_t s = 0; s < m->joint; s++) {
        double p = v[(offset[0] + m->state_index[s]) * stride];
        for (int64_t f = 1; f < m->factors; f++)
            p *= v[(offset[f] + m->state_index[f * m->joint + s]) * stride];
        out[s] = p;
    }
}

/* Sampled agent i (lane b): its surprise -sum_m ln p(o_m) and excess surprise (less the
 * predicted distributions' entropy), p(o_m) = sum_s A_m(o_m | s) prior(s), from the block's
 * prior (sc->log_prior's lanes before their log) into measures[0 K + i], measures[K + i]. The
 * outcomes' probabilities of every modality one after the other in a buffer, their logs taken
 * by tick_log (the tick's vector log) a buffer at a time. */
INLINE void predicted_measures(const tick_model *m, tick_state *st, int64_t i,
                               const double *joint) {
    enum { CHUNK = 64 };
    const int64_t M = m->modalities, S = m->joint, K = st->measure_count;
    const int64_t n = st->measure_rows[i];
    double p[CHUNK], lp[CHUNK], surprise = 0.0, plogp = 0.0, made[MAX_S];
    int64_t seen_at[MAX_M], seen = 0, fill = 0;
    for (int64_t k = 0; k < M; k++) {
        const int64_t o_seen = st->obs[n * M + k];
        for (int64_t o = 0; o < m->num_obs[k]; o++) {
            const double *row = measured_row(m, k, n, o, made);
            double total = 0.0;
            for (int64_t s = 0; s < S; s++) total += row[s] * joint[s];
            if (o == o_seen) seen_at[seen++] = fill;
            p[fill++] = total;
            const int last = k == M - 1 && o == m->num_obs[k] - 1;
            if (fill < CHUNK && !last) continue;
            tick_log(p, lp, fill, EPS);
            for (int64_t j = 0; j < fill; j++) plogp += p[j] * lp[j];
            for (int64_t j = 0; j < seen; j++) surprise -= lp[seen_at[j]];
            fill = seen = 0;
        }
    }
    st->measures[i] = surprise;
    st->measures[K + i] = surprise + plogp;
}
INLINE void measure_predictions(const tick_model *m, tick_state *st, const block_scratch *sc,
                                int64_t b, int64_t i, const int64_t *offset) {
    double joint[MAX_S];
    measured_joint(m, &sc->log_prior[0][b], BLK, offset, joint);
    predicted_measures(m, st, i, joint);
}

/* Sampled agent i (lane b), once the block's posteriors are in sc->cur and its log prior in
 * sc->log_prior: the belief change sum_f KL(q_f || prior_f) and the free energy (the change less
 * the accuracy sum_s q(s) sum_m ln(A_m(o_m | s) + eps)), into measures[2 K + i], measures[3 K +
 * i]; an int8 group's posteriors as it keeps them (float32), as health reads them. The logs by
 * tick_log, a factor's and a modality's row at once. */
INLINE void posterior_measures(const tick_model *m, tick_state *st, int64_t i,
                               const double *q, const double *log_prior, int64_t stride,
                               const int64_t *offset) {
    const int64_t M = m->modalities, S = m->joint, K = st->measure_count;
    const int64_t n = st->measure_rows[i];
    double logs[MAX_S], log_lik[MAX_S], joint[MAX_S], made[MAX_S];
    double change = 0.0, accuracy = 0.0;
    for (int64_t f = 0; f < m->factors; f++) {  /* a factor's logs at once */
        const int64_t s_f = m->num_states[f];
        tick_log(q + offset[f], logs, s_f, EPS);
        for (int64_t j = 0; j < s_f; j++)
            change += q[offset[f] + j] * (logs[j] - log_prior[(offset[f] + j) * stride]);
    }
    measured_joint(m, q, 1, offset, joint);
    for (int64_t k = 0; k < M; k++) {  /* a modality's observed row's logs at once */
        tick_log(measured_row(m, k, n, st->obs[n * M + k], made), logs, S, EPS);
        for (int64_t s = 0; s < S; s++) log_lik[s] = k == 0 ? logs[s] : log_lik[s] + logs[s];
    }
    for (int64_t s = 0; s < S; s++) accuracy += joint[s] * log_lik[s];
    st->measures[2 * K + i] = change - accuracy;
    st->measures[3 * K + i] = change;
}
INLINE void measure_posterior(const tick_model *m, tick_state *st, const block_scratch *sc,
                              int64_t b, int64_t i, const int64_t *offset, int64_t width) {
    double q[MAX_F * MAX_S];
    for (int64_t j = 0; j < width; j++)
        q[j] = m->state_f32 ? (double)(float)sc->cur[j][b] : sc->cur[j][b];
    posterior_measures(m, st, i, q, &sc->log_prior[0][b], BLK, offset);
}

/* Whether factor f's transitions are every agent's (a table's, or a learned one shared). */
INLINE int one_b(const tick_model *m, int64_t f) {
    return m->B_values[f] == NULL || m->B_agent_stride[f] == 0;
}

/* Factor f's prior of the block's agents into lp's lanes when its transitions are every
 * agent's (one_b): for each action u some agent of the block took after acting, B[f][:, :, u]
 * @ qs[f] for every lane (apply_b: its entries summed in their order from 0, each lane's the
 * numbers agent by agent makes; the posteriors, q, as the state keeps them), each agent taking
 * its own action's; D[f] for an agent that did not act. (Agent by agent, each value of the
 * state converted on its own: ~120 instructions an agent-step, T-maze N = 1,000.) y: s_f lanes
 * of scratch. */
INLINE void prior_lanes(const tick_model *m, const tick_state *st, block_scratch *sc, int64_t f,
                        int64_t first, int64_t count, const int64_t *agent,
                        const int64_t *acted, lane *lp, lane *q, lane *y) {
    const int64_t s_f = m->num_states[f], F = m->factors;
    int64_t u_of[BLK], any = 0;
    uint8_t taken[MAX_U] = {0};
    for (int b = 0; b < BLK; b++) {
        /* (the action read whatever acted: every lane's agent has a row, no branch) */
        const int64_t a = st->action[agent[b] * F + f];
        u_of[b] = acted[b] ? a : -1;
    }
    for (int b = 0; b < BLK; b++)
        if (acted[b]) taken[u_of[b]] = 1, any = 1;
    for (int64_t i = 0; i < s_f; i++) {
        const double d = m->D[f][i];
        LANES lp[i][b] = d;
    }
    if (!any) return;
    (void)sc;
    if (!m->state_f32 && s_f % 4 == 0) {  /* whole quads: four values of four agents a move */
        const double *rows[BLK];
        LANES rows[b] = (const double *)st->qs[f] + agent[b] * s_f;
        rows_into_lanes(q, rows, s_f);
    } else {
        state_get_block(st->qs[f], first, q, s_f, count, m->state_f32);
    }
    const double *vals[BLK];
    for (int b = 0; b < BLK; b++) vals[b] = b_values(m, f, agent[b]);
    for (int64_t u = 0; u < m->num_controls[f]; u++) {
        if (!taken[u]) continue;
        apply_b(&m->B[f], vals, 1, u, q, y, s_f);
        for (int64_t i = 0; i < s_f; i++) {
            lane made, kept;  /* every load before the store: gcc vectorises the lanes' select
                               * (through two pointers it stayed scalar, ~3.5 instructions a
                               * value) */
            LANES { made[b] = y[i][b]; kept[b] = lp[i][b]; }
            LANES lp[i][b] = u_of[b] == u ? made[b] : kept[b];
        }
    }
}

/* The block's agents' updates of modality k's counts, in agent order (the lanes past count
 * learn nothing): the counts of the outcome each agent saw, and the group's experience of it,
 * gain lr q(s) (the posterior's joint, sc->joint) where the mask is set, +0 elsewhere. Four
 * states of four agents at a time: the joint's lanes transposed into each agent's states, the
 * mask's four bytes into a quad's bits (the product kept where set, +0.0 where not: the value
 * the select gives), each row's quad loaded, added and stored, an agent's after the one before (a
 * count or the experience gains its agents' values in agent order, as one by one: the same
 * sums). One by one, a select and two read-modify-writes a state, it was ~160 instructions an
 * agent-step, per-agent pA T-maze N = 1,000. States past the last whole quad one by one. */
INLINE void learn_counts(const tick_model *m, const tick_state *st, const block_scratch *sc,
                         int64_t k, const int64_t *agent, int64_t count) {
    const int64_t M = m->modalities, S = m->joint, O = m->num_obs[k];
    double *row[BLK], *seen[BLK];
    const uint8_t *mask[BLK];
    for (int b = 0; b < count; b++) {
        const int64_t n = agent[b], o_seen = st->obs[n * M + k];
        row[b] = m->pA[k] + (m->shared_counts ? 0 : n * O * S) + o_seen * S;
        seen[b] = m->experience[k] + o_seen * S;
        mask[b] = m->pA_mask[k] + o_seen * S;
    }
    const quad lr = {m->lr, m->lr, m->lr, m->lr};
    int64_t s = 0;
    for (; s + 4 <= S; s += 4) {
        quad q[BLK];  /* agent b's q of states s .. s + 3 */
        for (int h = 0; h < BLK; h += 4) {
            quad r0, r1, r2, r3;
            QUAD_AT(r0, &sc->joint[s][h]);
            QUAD_AT(r1, &sc->joint[s + 1][h]);
            QUAD_AT(r2, &sc->joint[s + 2][h]);
            QUAD_AT(r3, &sc->joint[s + 3][h]);
            TRANSPOSE_QUADS(r0, r1, r2, r3);
            q[h] = r0, q[h + 1] = r1, q[h + 2] = r2, q[h + 3] = r3;
        }
        for (int b = 0; b < count; b++) {
            int64_t set[4];  /* all bits where the mask is set (written so, gcc compares the
                              * four bytes at once and widens them: vpcmpeqb, vpmovsxbq) */
            for (int j = 0; j < 4; j++) set[j] = -(int64_t)(mask[b][s + j] != 0);
            quad_index on;
            memcpy(&on, set, sizeof on);
            const quad gain = (quad)((quad_index)(lr * q[b]) & on);
            quad c, e;
            QUAD_AT(c, row[b] + s);
            c += gain;
            QUAD_TO(row[b] + s, c);
            QUAD_AT(e, seen[b] + s);
            e += gain;
            QUAD_TO(seen[b] + s, e);
        }
    }
    for (; s < S; s++)
        for (int b = 0; b < count; b++) {
            const double gain = mask[b][s] ? m->lr * sc->joint[s][b] : 0.0;
            row[b][s] += gain;
            seen[b][s] += gain;
        }
}

/* learn_counts not inlined into the passes, a version each (as they are): inlined, gcc's
 * choices in the rest of the x86-64-v3 pass moved and a frozen group's tick (which learns
 * nothing) took ~5 instructions an agent-step more, T-maze N = 1,000 */
#define LEARN_ARGS const tick_model *m, const tick_state *st, const block_scratch *sc, \
                   int64_t k, const int64_t *agent, int64_t count
static __attribute__((noinline)) void learn_counts_call(LEARN_ARGS) {
    learn_counts(m, st, sc, k, agent, count);
}
#if TICK_V3
static __attribute__((noinline, target("arch=x86-64-v3"))) void learn_counts_v3(LEARN_ARGS) {
    learn_counts(m, st, sc, k, agent, count);
}
#endif
#undef LEARN_ARGS
INLINE void learn_counts_vm(const tick_model *m, const tick_state *st, const block_scratch *sc,
                            int64_t k, const int64_t *agent, int64_t count, int vm) {
#if TICK_V3
    if (vm == VM_AVX2) {
        learn_counts_v3(m, st, sc, k, agent, count);
        return;
    }
#endif
    (void)vm;
    learn_counts_call(m, st, sc, k, agent, count);
}

/* The first half of a tick for agents first .. first + count - 1 (count <= BLK; the lanes
 * past count repeat agent first, computed and never written back): prior, posterior (left in
 * sc->cur) and learning. Each agent its own counts: they learn and the block's lanes of the
 * learned tables (sc->A) become theirs. Shared counts: the agents' updates are added to them
 * (the table follows once every block has, in edge_tick). */
INLINE void infer_block(const tick_model *m, tick_state *st, block_scratch *sc, int64_t first,
                        int64_t count, const int64_t *offset, int64_t width,
                        uint8_t taken[MAX_F][MAX_U], int tabled, int64_t *measured, int vm) {
    const int64_t F = m->factors, M = m->modalities, S = m->joint, f32 = m->state_f32;
    int64_t agent[BLK], acted[BLK];
    const double *lik_row[BLK], *step_row[BLK];  /* each agent's rows of lnL, lnQ1 */
    LANES agent[b] = first + (b < count ? b : 0);

    /* prior (B[f][:, :, a_f] @ qs[f] after an action, else D[f]; or the kept one) and its log.
     * The kept prior, or transitions every agent's: below, the whole block's; the factors
     * whose transitions are each agent's (own_b) made here, agent by agent (none: the loop
     * over the factors not entered, ~25 instructions an agent-step, T-maze N = 1,000) */
    int own_b = 0;
    for (int64_t f = 0; f < F; f++) own_b |= !(m->prior_given || one_b(m, f));
    for (int b = 0; b < BLK; b++) {
        const int64_t n = agent[b];
        acted[b] = st->has_action[n] && !(st->start != NULL && st->start[n]);
        for (int64_t f = 0; f < F && own_b; f++) {
            lane *lp = sc->log_prior + offset[f];
            const int64_t s_f = m->num_states[f];
            if (m->prior_given || one_b(m, f)) continue;
            if (acted[b]) {
                const void *qs = st->qs[f];
                const sparse_b *bm = &m->B[f];
                const double *value = b_values(m, f, n);
                const int64_t u = st->action[n * F + f];
                for (int64_t i = 0; i < s_f; i++) lp[i][b] = 0.0;
                for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++)
                    lp[bm->row[e]][b] += value[e] * state_get(qs, n * s_f + bm->col[e], f32);
            } else {
                for (int64_t i = 0; i < s_f; i++) lp[i][b] = m->D[f][i];
            }
        }
        /* the likelihood of the outcomes over the joint state (and, asked for, each
         * outcome's probability under the prior: the surprise's p(o_m), before learning) */
        const int64_t *obs = st->obs + n * M;
        if (sc->lnL != NULL) {  /* the joint outcome's row of logs (lnL: a frozen group's,
                                 * or a shared pass's made once a tick), and its first step's */
            int64_t j = obs[0];
            for (int64_t k = 1; k < M; k++) j = j * m->num_obs[k] + obs[k];
            lik_row[b] = sc->lnL + j * S;
            if (sc->lnQ1 != NULL) step_row[b] = sc->lnQ1 + j * width;
        }
    }
    /* the rows into the block's lanes, four values of four agents at a time (rows_into_lanes;
     * agent by agent, each row's values strided into the lanes, they were ~7 instructions a
     * value, ~110 an agent-step, T-maze; value by value over the lanes ~3.8 a value) */
    if (sc->lnL != NULL) rows_into_lanes(sc->log_lik, lik_row, S);
    if (sc->lnL != NULL && tabled && sc->lnQ1 != NULL) rows_into_lanes(sc->step1, step_row, width);
    if (m->prior_given) {  /* the prior the caller keeps; D for an agent whose episode starts
                            * (as the state's reset keeps it: an int8 group's float32) */
        int starts = 0;
        for (int b = 0; b < BLK && st->start != NULL; b++) starts |= st->start[agent[b]] != 0;
        for (int64_t f = 0; f < F; f++) {
            lane *lp = sc->log_prior + offset[f];
            state_get_block(st->prior[f], first, lp, m->num_states[f], count, f32);
            for (int64_t i = 0; i < m->num_states[f] && starts; i++) {
                const double d = f32 ? (double)(float)m->D[f][i] : m->D[f][i];
                LANES lp[i][b] = st->start[agent[b]] ? d : lp[i][b];
            }
        }
    } else {
        for (int64_t f = 0; f < F; f++)
            if (one_b(m, f))
                prior_lanes(m, st, sc, f, first, count, agent, acted, sc->log_prior + offset[f],
                            sc->nxt + offset[f], sc->qL);
        /* an int8 group's prior as it would keep it (float32): the same numbers whether the
         * group keeps its prior or makes it here, bit for bit; then written for the group to
         * keep. The block's lanes at once (agent by agent, each value's float-or-double chosen
         * again, they were ~4% of the int8 shared pA tick, T-maze N = 1,000) */
        if (f32)
            for (int64_t i = 0; i < width; i++)
                LANES sc->log_prior[i][b] = (double)(float)sc->log_prior[i][b];
        for (int64_t f = 0; f < F && st->prior != NULL; f++)
            state_put_block(st->prior[f], first, sc->log_prior + offset[f], m->num_states[f],
                            count, f32);
    }
    /* health's sampled agents of the block (measure_rows ascending: those from *measured on
     * below first + count): their predictions under the prior, before its log */
    int64_t from = *measured, to = from;
    while (to < st->measure_count && st->measure_rows[to] < first + count) to++;
    *measured = to;
    for (int64_t i = from; i < to; i++)
        measure_predictions(m, st, sc, st->measure_rows[i] - first, i, offset);
    if (sc->lnL == NULL || st->p_obs != NULL) likelihood_lanes(m, st, sc, first, count, offset);
    /* the log prior's and (made here: no lnL) the likelihood's logs, in one call (carve keeps
     * sc->log_lik just after sc->log_prior; whole lanes: each value's log its own) */
    vm_log_eps(vm, &sc->log_prior[0][0], &sc->log_prior[0][0], (width + (sc->lnL == NULL ? S : 0)) * BLK,
               sc->log_eps_zero);
    infer_states(m, sc, offset, tabled, vm);
    for (int64_t i = from; i < to; i++)
        measure_posterior(m, st, sc, st->measure_rows[i] - first, i, offset, width);

    /* learning, agent by agent: the counts of the outcome seen gain the posterior; each agent
     * its own counts: its table becomes their expectation, kept in the block's layout for
     * planning too (shared counts: the table follows in edge_tick) */
    lane *q[MAX_F] = {0};
    int64_t learns_A = 0;
    for (int64_t k = 0; k < M; k++) learns_A |= m->pA[k] != NULL;
    for (int64_t f = 0; f < F; f++) q[f] = sc->cur + offset[f];
    if (learns_A) joint_of(m, q, sc->joint);
    for (int64_t k = 0; k < M; k++) {
        if (m->pA[k] == NULL) continue;
        const int64_t O = m->num_obs[k];
        lane *Ab = sc->A[k];
        /* the agents' updates, in agent order (the lanes past count learn nothing; shared
         * counts: the table follows once, after every block; each agent its own: below, the
         * block's tables at once) */
        if (m->learn) learn_counts_vm(m, st, sc, k, agent, count, vm);
        if (!m->learn) {  /* frozen: the block's lanes of the agents' tables as they are */
            const double *tables[BLK];
            LANES tables[b] = m->A[k] + agent[b] * m->A_agent_stride[k];
            const int64_t *kept = kept_of(m, k);
            if (kept != NULL)
                support_into_lanes(Ab, tables, kept + O + 1, kept[O], O * S);
            else
                rows_into_lanes(Ab, tables, O * S);
        } else if (!m->shared_counts) {
            /* each agent's table its counts' expectation, made in the block's lanes (the
             * agents' counts moved into them four values of four agents at a time,
             * rows_into_lanes; each column's total summed over the outcomes in order, its
             * reciprocal, the products: the numbers agent by agent makes, lane by lane), then
             * written to each agent's table (lanes_into_rows; a padding lane's agent is the
             * block's first: the same values written twice). Agent by agent, each value
             * made and stored into its lane strided, they were ~320 instructions an
             * agent-step, T-maze N = 1,000; now ~90. */
            const double *counts[BLK];
            double *tables[BLK];
            LANES {
                counts[b] = m->pA[k] + agent[b] * O * S;
                tables[b] = m->A[k] + agent[b] * m->A_agent_stride[k];
            }
            rows_into_lanes(Ab, counts, O * S);
            for (int64_t s = 0; s < S; s++) {
                lane total;
                LANES total[b] = Ab[s][b];
                for (int64_t o = 1; o < O; o++) LANES total[b] += Ab[o * S + s][b];
                LANES total[b] = 1.0 / total[b];
                for (int64_t o = 0; o < O; o++) LANES Ab[o * S + s][b] *= total[b];
            }
            /* (a table kept on its support: its cells there, lanes_into_support) */
            const int64_t *kept = kept_of(m, k);
            if (kept != NULL)
                lanes_into_support(tables, Ab, kept + O + 1, kept[O]);
            else
                lanes_into_rows(tables, Ab, O * S);
        }
    }

    /* a learned factor's transitions, agent by agent (the lanes past count learn nothing): the
     * counts of the action that led here gain q(s') q_prev(s) on the mask; each agent its own
     * counts: that action's columns follow them (every column at the first refresh), before it
     * plans; shared counts: the actions taken are noted, their columns follow after every
     * block (edge_tick) */
    for (int64_t f = 0; f < F && m->learn; f++) {
        if (m->pB[f] == NULL) continue;
        const sparse_b *bm = &m->B[f];
        const int64_t s_f = m->num_states[f], u_f = m->num_controls[f];
        const int64_t *flat = m->B_flat[f];
        const lane *now = sc->cur + offset[f];
        for (int64_t b = 0; b < count; b++) {
            const int64_t n = first + b;
            double *counts = m->pB[f] + (m->shared_counts ? 0 : n * s_f * s_f * u_f);
            double *values = m->B_values[f] + n * m->B_agent_stride[f];
            if (acted[b]) {
                const int64_t u = st->action[n * F + f];
                const uint8_t *mask = m->pB_mask[f];
                double *seen = m->B_experience[f];
                const void *prev = st->qs_prev[f];
                for (int64_t e = bm->start[u]; e < bm->start[u + 1]; e++) {
                    const int64_t at = flat[e];
                    if (at < 0 || !mask[at]) continue;
                    const double gain =
                        m->lr_B * now[bm->row[e]][b] * state_get(prev, n * s_f + bm->col[e], f32);
                    counts[at] += gain;
                    seen[at] += gain;
                }
                if (m->shared_counts)
                    taken[f][u] = 1;
                else if (!m->normalise_all)
                    normalise_b(bm, flat, counts, values, u, s_f);
            }
            if (!m->shared_counts && m->normalise_all)
                for (int64_t u = 0; u < u_f; u++) normalise_b(bm, flat, counts, values, u, s_f);
        }
    }
    /* the posteriors the next tick's transitions learn from (kept while frozen too) */
    if (st->qs_prev != NULL)
        for (int64_t b = 0; b < count; b++)
            for (int64_t f = 0; f < F; f++)
                for (int64_t i = 0; i < m->num_states[f]; i++)
                    state_put(st->qs_prev[f], (first + b) * m->num_states[f] + i,
                              sc->cur[offset[f] + i][b], f32);
}

/* The first step of the mean-field iteration (infer_states) of every joint outcome j, less the
 * log prior, from its log likelihood lnL[j] (NULL: nothing), as infer_states makes it from
 * uniform beliefs: their joint (the same value at every state, the factors' uniforms
 * multiplied in factor order, as joint_of), lnL[j][s] times it summed state by state into each
 * factor's states, each sum over its uniform. Scalar and once (the binding's, at a model's
 * start): prod_m O_m (S + sum S_f) steps. */
static void first_steps(const tick_model *m, const double *table, double *out) {
    const int64_t F = m->factors, S = m->joint, W = width_of(m);
    const int64_t rows = joint_observations(m);
    double joint = 1.0 / (double)m->num_states[0];
    for (int64_t f = 1; f < F; f++) joint = joint * (1.0 / (double)m->num_states[f]);
    for (int64_t j = 0; j < rows; j++) {
        const double *lnL = table + j * S;
        double *row = out + j * W;
        for (int64_t f = 0, at = 0; f < F; at += m->num_states[f], f++) {
            const int64_t s_f = m->num_states[f];
            const int64_t *index = m->state_index + f * S;
            const double uniform = 1.0 / (double)s_f;
            for (int64_t i = 0; i < s_f; i++) row[at + i] = 0.0;
            for (int64_t s = 0; s < S; s++) row[at + index[s]] += lnL[s] * joint;
            for (int64_t i = 0; i < s_f; i++) row[at + i] = row[at + i] / uniform;
        }
    }
}
void edge_tick_first_step(const tick_model *m, double *out) {
    if (m->lnL == NULL || m->factors < 2) return;
    first_steps(m, m->lnL, out);
}

/* Shared counts (tick_model.shared_tables): the log likelihood of every joint outcome under the
 * tables every agent infers with this tick (a learned one as the last tick's refresh left it),
 * into sc->made_lnL, and each one's first step into sc->made_lnQ1 (more than one factor), then
 * the tables the agents' rows are gathered from (sc->lnL, sc->lnQ1), as a frozen group's
 * (tick_model.lnL, lnQ1): no modalities' rows, product and logs per agent. The same
 * numbers as each agent's own, bit for bit: the modalities' rows multiplied in modality order
 * (likelihood_lanes'), log(x + eps) by tick_log_inplace over a whole number of lanes, as a
 * block's S lanes are (its loop's vector body takes every value, 2 or 4 at a time, and a
 * value's log is its own: a count that is not a multiple of the vector ends in a narrower
 * vector log or glibc's scalar one, which need not give the same bits; test_equality.py's
 * test_a_log_is_the_same_bits_wherever_tick_log_inplace_takes_it checks it), the first step
 * edge_tick_first_step's sums. Once a tick: prod_m O_m (M S + sum S_f) steps, prod_m O_m S
 * logs (the T-maze: 24 x 8, where every block takes 8 x 8). */
static void shared_likelihood(const tick_model *m, block_scratch *sc) {
    const int64_t M = m->modalities, S = m->joint, rows = joint_observations(m);
    const int64_t padded = (rows * S + BLK - 1) / BLK * BLK;
    double *lnL = sc->made_lnL;
    for (int64_t j = 0; j < rows; j++) {
        double *row = lnL + j * S;
        int64_t o[MAX_M] = {0}, rest = j;
        for (int64_t k = M - 1; k >= 0; k--) {
            o[k] = rest % m->num_obs[k];
            rest /= m->num_obs[k];
        }
        const double *a0 = m->A[0] + o[0] * S;
        for (int64_t s = 0; s < S; s++) row[s] = a0[s];
        for (int64_t k = 1; k < M; k++) {
            const double *ak = m->A[k] + o[k] * S;
            for (int64_t s = 0; s < S; s++) row[s] *= ak[s];
        }
    }
    for (int64_t i = rows * S; i < padded; i++) lnL[i] = 1.0;  /* the last lane's rest: unread */
    tick_log_inplace(lnL, padded, EPS);
    if (sc->made_lnQ1 != NULL) first_steps(m, lnL, sc->made_lnQ1);
    sc->lnL = lnL;
    sc->lnQ1 = sc->made_lnQ1;
}

/* The joint-outcome entries outcome by outcome (sc->outcome_entry[outcome_start[k] ..
 * outcome_start[k + 1]) are outcome k's), each outcome's in the order of their states: the
 * order a policy's predicted outcome is summed in. Once a call, E + K steps. */
static void index_outcomes(const tick_model *m, block_scratch *sc) {
    const int64_t K = m->outcomes, E = m->entries;
    int64_t *start = sc->outcome_start, *entry = sc->outcome_entry;
    for (int64_t k = 0; k <= K; k++) start[k] = 0;
    for (int64_t e = 0; e < E; e++) start[m->entry_outcome[e] + 1]++;
    for (int64_t k = 0; k < K; k++) start[k + 1] += start[k];
    for (int64_t r = 0; r < E; r++) {  /* the entries state by state: each outcome's in order */
        const int64_t e = m->state_entry[r];
        entry[start[m->entry_outcome[e]]++] = e;
    }
    for (int64_t k = K; k > 0; k--) start[k] = start[k - 1];  /* each cursor ended at k + 1's */
    start[0] = 0;
}

/* A learned table's joint-outcome entries by value (sc->entry_slot, sc->slots; once a call, no
 * learned table: nothing): an entry's value is its shared factor times each learned table's
 * value at its index, so two entries of one state with the same shared factor (its bits) and
 * the same indices have the same value in every lane, every tick (the T-maze: a cue outcome's
 * 0.5 times the learned reward column, 22 entries, 12 values); each distinct value a slot, its
 * p ln p's log taken once (planning_tables). The entries of a state only (an entry's indices
 * name its state): sum_s E_s^2 compares. */
static void index_slots(const tick_model *m, block_scratch *sc) {
    int64_t *slot = sc->entry_slot, slots = 0;
    if (slot == NULL) return;
    for (int64_t s = 0; s < m->joint; s++)
        for (int64_t r = m->state_start[s]; r < m->state_start[s + 1]; r++) {
            const int64_t e = m->state_entry[r];
            slot[e] = -1;
            for (int64_t r2 = m->state_start[s]; r2 < r && slot[e] < 0; r2++) {
                const int64_t e2 = m->state_entry[r2];
                int same = memcmp(&m->entry_shared[e], &m->entry_shared[e2], sizeof(double)) == 0;
                for (int64_t k = 0; k < m->modalities && same; k++)
                    if (m->entry_index[k] != NULL) same = m->entry_index[k][e] == m->entry_index[k][e2];
                if (same) slot[e] = slot[e2];
            }
            if (slot[e] < 0) slot[e] = slots++;
        }
    sc->slots = slots;
}

/* The planning tables of the block's agents, from the lanes of the learned tables in sc->A:
 * utility per state; the non-zero entries of the joint-outcome table and each state's negative
 * entropy over the joint outcomes. */
INLINE void planning_tables(const tick_model *m, block_scratch *sc, int vm) {
    const int64_t M = m->modalities, S = m->joint, E = m->entries;
    lane *utility = sc->utility, *neg_entropy = sc->neg_entropy, *value = sc->value;
    for (int64_t s = 0; s < S; s++) LANES utility[s][b] = m->utility_shared[s];
    if (m->use_utility)
        for (int64_t k = 0; k < M; k++) {
            if (m->pA[k] == NULL) continue;  /* a learned table: its lanes in sc->A */
            for (int64_t o = 0; o < m->num_obs[k]; o++) {
                double c = m->lnC[k][o];
                for (int64_t s = 0; s < S; s++) {
                    lane a, t;  /* loads first, as in apply_b */
                    LANES { a[b] = sc->A[k][o * S + s][b]; t[b] = utility[s][b]; }
                    LANES utility[s][b] = t[b] + c * a[b];
                }
            }
        }
    if (m->use_info_gain) {
        for (int64_t s = 0; s < S; s++) LANES neg_entropy[s][b] = 0.0;
        for (int64_t e = 0; e < E; e++) LANES value[e][b] = m->entry_shared[e];
        int64_t learned = 0;
        for (int64_t k = 0; k < M; k++) learned |= m->entry_index[k] != NULL;
        if (!learned) {
            /* no table learned: the entries are the shared ones, the same in every lane, so
             * their p ln p once (E logs, not E * BLK: grid10's 460 entries at N = 1 were a
             * fifth of the tick), into every lane; sc->log_value as the E values' scratch */
            double *logs = &sc->log_value[0][0];
            tick_log(m->entry_shared, logs, E, EXP_M16);
            for (int64_t e = 0; e < E; e++) {
                const double term = m->entry_shared[e] * logs[e];
                double *to = neg_entropy[m->entry_state[e]];
                LANES to[b] += term;
            }
            return;
        }
        for (int64_t k = 0; k < M; k++) {
            const int64_t *index = m->entry_index[k];
            if (index == NULL) continue;
            for (int64_t e = 0; e < E; e++) {
                lane v, a;  /* every load before the store: gcc vectorises the lanes (the
                             * read-modify-write through two pointers stayed scalar) */
                LANES { v[b] = value[e][b]; a[b] = sc->A[k][index[e]][b]; }
                LANES value[e][b] = v[b] * a[b];
            }
        }
        /* p ln(p + exp(-16)): an entry that is 0 adds 0 (a zero times a finite log); the log
         * of each distinct value once (index_slots: its slot's lanes of sc->log_value), the
         * same terms added in the same order */
        const int64_t *slot = sc->entry_slot;
        if (slot != NULL) {
            lane *logs = sc->log_value;
            for (int64_t e = 0; e < E; e++) {
                lane v;
                LANES v[b] = value[e][b];
                LANES logs[slot[e]][b] = v[b];
            }
            vm_log_inplace(vm, &logs[0][0], sc->slots * BLK, EXP_M16);
            for (int64_t e = 0; e < E; e++) {
                double *to = neg_entropy[m->entry_state[e]];
                const double *ln = logs[slot[e]];
                lane v, l, t;  /* loads first, as above */
                LANES { v[b] = value[e][b]; l[b] = ln[b]; t[b] = to[b]; }
                LANES to[b] = t[b] + v[b] * l[b];
            }
            return;
        }
        vm_log(vm, &value[0][0], &sc->log_value[0][0], E * BLK, EXP_M16);
        for (int64_t e = 0; e < E; e++) {
            double *to = neg_entropy[m->entry_state[e]];
            LANES to[b] += value[e][b] * sc->log_value[e][b];
        }
    }
}

/* Joint outcome k's predicted probability for the block's agents, summed in registers over its
 * entries (their states in order) from the policy's predicted joint qj, packed at
 * sc->qo[*packed] when some agent's is above 0 (else it adds nothing: dropped), and a term of
 * the node (sc->term[*terms]: its packed row). A twin (tick_model.outcome_twin: the same
 * products summed in the same order, the node's earlier outcome's number in every lane) is
 * not summed again: its term is its first's packed row (or dropped with it), the same value
 * and, in outcome_entropy, the same log, subtracted at its own place. */
INLINE void predict_outcome(const tick_model *m, block_scratch *sc, const lane *qj,
                            const lane *value, int64_t k, int64_t *packed, int64_t *terms,
                            const uint8_t *live) {
    if (m->outcome_twin != NULL && m->outcome_twin[k] >= 0) {
        const int64_t at = sc->packed_at[m->outcome_twin[k]];
        if (at >= 0) sc->term[(*terms)++] = at;
        return;
    }
    quad acc[QUADS];  /* in registers (as LANES, gcc kept 8 scalar sums) */
    for (int h = 0; h < QUADS; h++) acc[h] = (quad){0.0, 0.0, 0.0, 0.0};
    for (int64_t r = sc->outcome_start[k]; r < sc->outcome_start[k + 1]; r++) {
        const int64_t e = sc->outcome_entry[r];
        /* live (NULL: none skipped): a state 0 in every lane adds exactly +0 (skipped) */
        if (live != NULL && !live[m->entry_state[e]]) continue;
        quad from[QUADS], v[QUADS];
        LANE_AT(from, qj[m->entry_state[e]]);
        LANE_AT(v, value[e]);
        for (int h = 0; h < QUADS; h++) acc[h] += from[h] * v[h];
    }
    /* some agent's above 0: a sum of products of values >= 0 from +0.0 is never -0.0 (+0 +
     * -0 is +0), so it is above 0 exactly where its bits are not all 0: the bits ORed over the
     * lanes */
    quad_index bits = (quad_index)acc[0];  /* the same bits, as integers */
    for (int h = 1; h < QUADS; h++) bits |= (quad_index)acc[h];
    const int64_t some = bits[0] | bits[1] | bits[2] | bits[3];
    sc->packed_at[k] = some ? *packed : -1;
    if (!some) return;
    LANE_TO(sc->qo[*packed], acc);
    sc->term[(*terms)++] = *packed;
    (*packed)++;
}

/* A joint node's value before its outcomes' entropy, into out: utility and the states'
 * information gain of the joint of the factors' predicted states q; its predicted joint
 * outcomes (reach's reached, ascending; NULL: every outcome) that some agent of the block may
 * see packed at sc->qo[*packed ..] for their logs (outcome_entropy). A one-step policy's, or a
 * two-step policy's step's node (plan_two_steps: sparse, the entries of states 0 in every lane
 * skipped, the same sums: a few agents' predicted states after two steps are mostly 0, grid2f's
 * second-step nodes a third cheaper at N = 1). */
INLINE void node_value(const tick_model *m, block_scratch *sc, lane *const *q,
                       const int64_t *reach, int64_t reached, int64_t *packed, int64_t *terms,
                       double *out, int sparse) {
    const int64_t S = m->joint;
    lane *qj = sc->qj, *utility = sc->utility, *neg_entropy = sc->neg_entropy;
    joint_of(m, q, qj);
    quad g[QUADS], x[QUADS], y[QUADS];  /* in quads (as LANES, the threshold's loop was
                                         * partly scalar) */
    for (int h = 0; h < QUADS; h++) g[h] = (quad){0.0, 0.0, 0.0, 0.0};
    if (m->use_utility)
        for (int64_t s = 0; s < S; s++) {
            LANE_AT(x, qj[s]);
            LANE_AT(y, utility[s]);
            for (int h = 0; h < QUADS; h++) g[h] += x[h] * y[h];
        }
    if (m->use_info_gain) {
        /* the predicted joint above pymdp's threshold (a state below it adds exactly
         * nothing) */
        for (int64_t s = 0; s < S; s++) {
            LANE_AT(x, qj[s]);
            LANE_AT(y, neg_entropy[s]);
            for (int h = 0; h < QUADS; h++) {  /* x > EXP_M16 ? x : +0.0 */
                x[h] = (quad)((quad_index)x[h] & (quad_index)(x[h] > EXP_M16));
                g[h] += x[h] * y[h];
            }
            LANE_TO(qj[s], x);
        }
        /* each joint outcome's predicted probability, summed in registers outcome by outcome
         * over its entries (their states in order), of the outcomes the predicted states can
         * give; the outcomes 0 for every agent of the block (most of them: predicted states
         * reach few outcomes) are dropped (their - qo ln(qo + eps) is exactly 0), the others
         * packed node after node for their logs */
        uint8_t live_states[MAX_S];
        const uint8_t *live = NULL;
        if (sparse) {  /* the states some lane predicts above 0 (their bits not all 0) */
            for (int64_t s = 0; s < S; s++) {
                uint64_t bits[BLK], some = 0;
                memcpy(bits, qj[s], sizeof bits);
                for (int b = 0; b < BLK; b++) some |= bits[b];
                live_states[s] = some != 0;
            }
            live = live_states;
        }
        if (reach != NULL)
            for (int64_t at = 0; at < reached; at++)
                predict_outcome(m, sc, qj, sc->value, reach[at], packed, terms, live);
        else
            for (int64_t k = 0; k < m->outcomes; k++)
                predict_outcome(m, sc, qj, sc->value, k, packed, terms, live);
    }
    LANE_TO(out, g);
}

/* - qo ln(qo + eps) of every node's joint outcomes (node i's terms [begin[i], begin[i + 1]),
 * begin[nodes] set here to terms, each its packed row sc->term[r]) taken from its value
 * (values: nodes lanes), in the terms' order; the packed rows' logs once each; an int8 group's
 * logs in float (its numpy twin's arithmetic is float32, its G kept in float: 7% of its tick,
 * T-maze N = 1,000), a float64 group's in double. */
INLINE void outcome_entropy(const tick_model *m, block_scratch *sc, lane *values,
                            int64_t nodes, int64_t *begin, int64_t packed, int64_t terms,
                            int vm) {
    lane *qo = sc->qo;
    const int64_t *term = sc->term;
    begin[nodes] = terms;
    if (m->state_f32)
        tick_log_f32(&qo[0][0], &sc->log_qo[0][0], packed * BLK, EPS);
    else
        vm_log_eps(vm, &qo[0][0], &sc->log_qo[0][0], packed * BLK, sc->log_eps_zero);
    for (int64_t i = 0; i < nodes; i++) {
        lane g;  /* in registers: a store to values[i] could be a read of qo (no reload per r) */
        LANES g[b] = values[i][b];
        for (int64_t r = begin[i]; r < begin[i + 1]; r++) {
            const double *p = qo[term[r]], *ln = sc->log_qo[term[r]];
            LANES g[b] -= p[b] * ln[b];
        }
        LANES values[i][b] = g[b];
    }
}

/* G of two-step policies (policy_len 2, a frozen group's) into sc->G, as the numpy twin's
 * policy tree (edge_agent/aif/kernels/control.py's evaluate_policies, block.py's
 * evaluate_block): each policy's value is its first step's joint node's plus its second
 * step's, each node's utility and information gain on the mean-field predicted states. The
 * work policies share is done once: the first step's prediction per action of each factor
 * (moved, the next prior's too), each distinct first step's joint node's value once (J1: the
 * policies that start alike share it), each factor's second-step node (first action, second
 * action; the binding merges those whose two steps predict alike from any beliefs) once from
 * its first step's prediction, and each distinct second-step joint node's value once (J2). */
INLINE void plan_two_steps(const tick_model *m, block_scratch *sc, const int64_t *agent,
                           lane *moved[MAX_F][MAX_U], int vm) {
    const int64_t F = m->factors, P = m->policies;
    const int64_t J1 = m->first_joints, J2 = m->second_joints;
    lane *second[MAX_F][MAX_P];  /* each factor's second-step nodes' predicted states */
    lane *at = sc->moved2;
    for (int64_t f = 0; f < F; f++) {
        const double *vals[BLK];
        const int shared = m->B_values[f] == NULL || m->B_agent_stride[f] == 0;
        for (int b = 0; b < BLK; b++) vals[b] = b_values(m, f, agent[b]);
        for (int64_t k = m->second_start[f]; k < m->second_start[f + 1]; k++) {
            second[f][k - m->second_start[f]] = at;
            apply_b(&m->B[f], vals, shared, m->second_action[k], moved[f][m->second_parent[k]],
                    at, m->num_states[f]);
            at += m->num_states[f];
        }
    }
    lane *node = sc->node, *q[MAX_F] = {0};
    int64_t begin[2 * MAX_P + 1], packed = 0, terms = 0;
    for (int64_t j = 0; j < J1; j++) {
        const int64_t p = m->first_policy[j];
        for (int64_t f = 0; f < F; f++) q[f] = moved[f][m->policies_first[p * F + f]];
        const int64_t *reach = m->reach == NULL ? NULL : m->reach + m->reach_start[p];
        const int64_t reached = m->reach == NULL ? 0 : m->reach_start[p + 1] - m->reach_start[p];
        begin[j] = terms;
        node_value(m, sc, q, reach, reached, &packed, &terms, node[j], 1);
    }
    for (int64_t j = 0; j < J2; j++) {
        for (int64_t f = 0; f < F; f++) q[f] = second[f][m->second_joint[j * F + f]];
        const int64_t *reach = m->reach2 == NULL ? NULL : m->reach2 + m->reach2_start[j];
        const int64_t reached =
            m->reach2 == NULL ? 0 : m->reach2_start[j + 1] - m->reach2_start[j];
        begin[J1 + j] = terms;
        node_value(m, sc, q, reach, reached, &packed, &terms, node[J1 + j], 1);
    }
    if (m->use_info_gain) outcome_entropy(m, sc, node, J1 + J2, begin, packed, terms, vm);
    /* the twin's order: G = 0 + the first step's value, then += the second's */
    for (int64_t p = 0; p < P; p++) {
        const double *first = node[m->policy_first_joint[p]];
        const double *then = node[J1 + m->policy_second_joint[p]];
        LANES sc->G[p][b] = first[b] + then[b];
    }
}

/* The second half of a tick for the block's agents (as infer_block): with their posteriors in
 * sc->cur and the block's lanes of the learned tables in sc->A, the planning tables (kept from
 * the block before when tables_ready: shared counts, whose tables are every agent's), G, q_pi,
 * the actions, and everything written back (but the posteriors when kept: st->qs holds them,
 * the shared pass's, whose sc->cur was loaded from there). */
INLINE void plan_block(const tick_model *m, tick_state *st, block_scratch *sc, int64_t first,
                       int64_t count, const int64_t *offset, int tables_ready, int kept, int vm) {
    const int64_t F = m->factors, P = m->policies;
    const int64_t f32 = m->state_f32;
    lane *q[MAX_F] = {0};
    int64_t agent[BLK];
    LANES agent[b] = first + (b < count ? b : 0);

    if (!tables_ready) planning_tables(m, sc, vm);

    /* an int8 group's posteriors as it keeps them (float32): its plan and its next prior are
     * made from the numbers a group that keeps no prior makes its next one from */
    if (f32)
        for (int64_t i = 0, width = width_of(m); i < width; i++)
            LANES sc->cur[i][b] = (double)(float)sc->cur[i][b];

    /* the policies: each factor's predicted states under each action (the next prior too: B
     * of the action chosen times the posterior), then per one-step policy the joint, its
     * utility and information gain (node_value; two-step policies: plan_two_steps) */
    lane *moved[MAX_F][MAX_U];
    {
        lane *at = sc->moved;
        for (int64_t f = 0; f < F; f++) {
            const double *vals[BLK];
            const int shared = m->B_values[f] == NULL || m->B_agent_stride[f] == 0;
            for (int b = 0; b < BLK; b++) vals[b] = b_values(m, f, agent[b]);
            for (int64_t u = 0; u < m->num_controls[f]; u++) {
                moved[f][u] = at;
                apply_b(&m->B[f], vals, shared, u, sc->cur + offset[f], at, m->num_states[f]);
                at += m->num_states[f];
            }
        }
    }
    lane *G = sc->G;
    if (two_step(m)) {
        plan_two_steps(m, sc, agent, moved, vm);
    } else {
        int64_t begin[MAX_P + 1], packed = 0, terms = 0;
        for (int64_t p = 0; p < P; p++) {
            for (int64_t f = 0; f < F; f++) q[f] = moved[f][m->policies_first[p * F + f]];
            /* the outcomes of the policy's predicted states (reach: the others' are exactly 0
             * for every agent, and were dropped below when this loop went over every
             * outcome); NULL: every policy reaches every outcome (grid10), no list read */
            const int64_t *reach = m->reach == NULL ? NULL : m->reach + m->reach_start[p];
            const int64_t reached =
                m->reach == NULL ? 0 : m->reach_start[p + 1] - m->reach_start[p];
            begin[p] = terms;
            node_value(m, sc, q, reach, reached, &packed, &terms, G[p], 0);
        }
        if (m->use_info_gain) outcome_entropy(m, sc, G, P, begin, packed, terms, vm);
    }
    for (int64_t p = 0; p < P; p++) {  /* in quads (as LANES, gcc vectorised over p) */
        quad x[QUADS];
        LANE_AT(x, G[p]);
        for (int h = 0; h < QUADS; h++) x[h] = x[h] * m->gamma + m->lnE[p];
        LANE_TO(sc->x[p], x);
    }
    lane *q_pi = sc->q_pi;
    softmax_lanes(sc->x, q_pi, NULL, P, vm);

    /* each factor's action: the first maximum of its marginal */
    int64_t chosen[MAX_F][BLK];
    for (int64_t f = 0; f < F; f++) {
        const int64_t u_f = m->num_controls[f];
        lane marginal[MAX_U], total, top;
        for (int64_t u = 0; u < u_f; u++) LANES marginal[u][b] = 0.0;
        for (int64_t p = 0; p < P; p++) {
            double *to = marginal[m->policies_first[p * F + f]];
            LANES to[b] += q_pi[p][b];
        }
        LANES total[b] = 0.0;
        for (int64_t u = 0; u < u_f; u++) LANES total[b] += marginal[u][b];
        for (int64_t u = 0; u < u_f; u++) LANES marginal[u][b] /= total[b];
        LANES { chosen[f][b] = 0; top[b] = marginal[0][b]; }
        for (int64_t u = 1; u < u_f; u++)
            LANES {
                const int64_t above = marginal[u][b] > top[b];
                chosen[f][b] = above ? u : chosen[f][b];
                top[b] = above ? marginal[u][b] : top[b];
            }
    }

    /* write back */
    for (int64_t f = 0; f < F && !kept; f++)
        state_put_block_vm(st->qs[f], first, sc->cur + offset[f], m->num_states[f], count, f32,
                           vm);
    state_put_block_vm(st->G, first, G, P, count, f32, vm);
    state_put_block_vm(st->q_pi, first, q_pi, P, count, f32, vm);
    for (int64_t b = 0; b < count; b++) {
        const int64_t n = first + b;
        for (int64_t f = 0; f < F; f++) st->action[n * F + f] = chosen[f][b];
        st->has_action[n] = 1;
    }
    /* the next prior, the chosen action's predicted states: B's entries in the order a group
     * that keeps no prior sums them at the next tick, from the posterior as it is kept (an int8
     * group's float32, rounded above): that prior, bit for bit. Each lane's chosen row moved
     * into one block's lanes (sc->qL: free once the block is inferred), written a block at a
     * time (state_put_block; agent by agent, each agent's values strided out of its lane, it
     * was ~85 instructions an agent-step, int8 shared pA T-maze N = 1,000) */
    for (int64_t f = 0; f < F && st->next_prior != NULL; f++) {
        const int64_t s_f = m->num_states[f];
        lane *rows = sc->qL;
        for (int b = 0; b < BLK; b++) {
            const lane *from = moved[f][chosen[f][b]];
            for (int64_t i = 0; i < s_f; i++) rows[i][b] = from[i][b];
        }
        state_put_block_vm(st->next_prior[f], first, rows, s_f, count, f32, vm);
    }
}

/* Shared counts: each learned table becomes its counts' expectation (once a tick); an int8
 * group's (quantise) is then rounded through its codes, the expectation kept in A_float. */
static void normalise_shared(const tick_model *m) {
    const int64_t S = m->joint;
    for (int64_t k = 0; k < m->modalities; k++) {
        if (m->pA[k] == NULL) continue;
        const int64_t O = m->num_obs[k];
        const double *counts = m->pA[k];
        double *table = m->A[k], total[MAX_S];
        for (int64_t s = 0; s < S; s++) total[s] = counts[s];
        for (int64_t o = 1; o < O; o++)
            for (int64_t s = 0; s < S; s++) total[s] += counts[o * S + s];
        for (int64_t s = 0; s < S; s++) total[s] = 1.0 / total[s];
        for (int64_t o = 0; o < O; o++)
            for (int64_t s = 0; s < S; s++) table[o * S + s] = counts[o * S + s] * total[s];
        if (m->quantise) {  /* an int8 group's: the float table kept for the surprise */
            if (m->A_float != NULL && m->A_float[k] != NULL)
                memcpy(m->A_float[k], table, (size_t)(O * S) * sizeof(double));
            quantise_columns(table, NULL, O * S, S);
        }
    }
}

/* Shared counts, second pass: the block's posteriors back from st->qs into sc->cur (lanes past
 * count repeat agent first) and, with_tables (the first block: no block after it changes them),
 * every learned table, the same for all, into sc->A's lanes. */
INLINE void load_block(const tick_model *m, const tick_state *st, block_scratch *sc,
                       int64_t first, int64_t count, const int64_t *offset, int with_tables) {
    for (int64_t f = 0; f < m->factors; f++)
        state_get_block(st->qs[f], first, sc->cur + offset[f], m->num_states[f], count,
                        m->state_f32);
    for (int64_t k = 0; with_tables && k < m->modalities; k++) {
        if (m->pA[k] == NULL) continue;
        const double *table = m->A[k];
        for (int64_t i = 0; i < m->num_obs[k] * m->joint; i++) LANES sc->A[k][i][b] = table[i];
    }
}

/* Each agent its own counts (or none): a block at a time, whole. Without a learned likelihood
 * every agent plans with the same planning tables: the first block makes them. (The two
 * passes are two functions: gcc compiles each on its own, so that what one gains, e.g. a frozen
 * model's first-step table, does not move the other's code: one function held both and the
 * shared pass's tick took 3-5% longer for a table it never reads.) */
INLINE void own_pass(const tick_model *m, tick_state *st, block_scratch *sc,
                     const int64_t *offset, int64_t width, int vm) {
    uint8_t taken[MAX_F][MAX_U] = {{0}};  /* (shared counts only) */
    /* health's sampled agents done so far (in infer_block, before the agent's update: under
     * the tables it inferred with) */
    int64_t shared_tables = 1, measured = 0;
    for (int64_t k = 0; k < m->modalities; k++) shared_tables &= m->pA[k] == NULL;
    for (int64_t first = 0; first < m->n; first += BLK) {
        int64_t count = m->n - first < BLK ? m->n - first : BLK;
        infer_block(m, st, sc, first, count, offset, width, taken, 1, &measured, vm);
        plan_block(m, st, sc, first, count, offset, shared_tables && first > 0, 0, vm);
    }
}

/* Shared counts: every agent infers and teaches them, the tables follow, every agent plans
 * (with the planning tables the first block makes: a learned table is every agent's). */
INLINE void shared_pass(const tick_model *m, tick_state *st, block_scratch *sc,
                        const int64_t *offset, int64_t width, int vm) {
    uint8_t taken[MAX_F][MAX_U] = {{0}};  /* the actions some agent learned */
    /* health's sampled agents done so far (in infer_block, before the counts' tables follow:
     * under the tables every agent inferred with) */
    int64_t measured = 0;
    /* the likelihood's tables once (shared_tables), when their logs are no more than the
     * blocks' (prod_m O_m rows of S against S lanes a block): every agent infers with the
     * tables as they are until the last block has (they follow after it) */
    const int tables =
        sc->made_lnL != NULL && joint_observations(m) <= (m->n + BLK - 1) / BLK * BLK;
    if (tables) shared_likelihood(m, sc);
    for (int64_t first = 0; first < m->n; first += BLK) {
        int64_t count = m->n - first < BLK ? m->n - first : BLK;
        infer_block(m, st, sc, first, count, offset, width, taken, tables, &measured, vm);
        for (int64_t f = 0; f < m->factors; f++)
            state_put_block(st->qs[f], first, sc->cur + offset[f], m->num_states[f], count,
                            m->state_f32);
    }
    if (m->learn) {
        normalise_shared(m);
        for (int64_t f = 0; f < m->factors; f++) {
            if (m->pB[f] == NULL) continue;
            for (int64_t u = 0; u < m->num_controls[f]; u++)
                if (m->normalise_all || taken[f][u]) {
                    normalise_b(&m->B[f], m->B_flat[f], m->pB[f], m->B_values[f], u,
                                m->num_states[f]);
                    if (m->quantise)
                        quantise_b(&m->B[f], m->B_values[f], u, m->num_states[f]);
                }
        }
    }
    for (int64_t first = 0; first < m->n; first += BLK) {
        int64_t count = m->n - first < BLK ? m->n - first : BLK;
        load_block(m, st, sc, first, count, offset, first == 0);
        /* the posteriors are in st->qs as the first pass wrote them (loaded from there:
         * not written again) */
        plan_block(m, st, sc, first, count, offset, first > 0, 1, vm);
    }
}

/* Each pass in the baseline instruction set and (x86-64) in x86-64-v3, chosen by the CPU at
 * each tick (target_clones' ifunc, which chose it at load before, asks the same: gcc's
 * __builtin_cpu_supports("x86-64-v3")); every helper inlined into each, so each whole pass is
 * in each version. */
#define PASS_ARGS const tick_model *m, tick_state *st, block_scratch *sc, const int64_t *offset, \
                  int64_t width
static void tick_own(PASS_ARGS) { own_pass(m, st, sc, offset, width, VM_CALL); }
static void tick_shared(PASS_ARGS) { shared_pass(m, st, sc, offset, width, VM_CALL); }
#if TICK_V3
#define V3 __attribute__((target("arch=x86-64-v3")))
static V3 void tick_own_v3(PASS_ARGS) {
    log_eps_of_zero_v3(sc->log_eps_zero);
    own_pass(m, st, sc, offset, width, VM_AVX2);
}
static V3 void tick_shared_v3(PASS_ARGS) {
    log_eps_of_zero_v3(sc->log_eps_zero);
    shared_pass(m, st, sc, offset, width, VM_AVX2);
}
#undef V3
#endif
#undef PASS_ARGS

/* Health's fold of the sampled agents, once the tick is stepped (tick_state.measure_entropy,
 * measure_preference, measure_sums): each one's policy entropy (its q_pi as the state keeps it,
 * the logs by tick_log a row at once) and realised preference sum_m lnC_m[o_m] (modality
 * order), then the sum and the sum of squares over the K agents of every row taken (in agent
 * order), the entropy's and the preference's before measures' four: what health's window and
 * drift detector take (edge_agent/core/health.py's _fold_in_tick), one pass over K agents
 * instead of a dozen numpy calls. */
static void fold_measures(const tick_model *m, tick_state *st) {
    const int64_t K = st->measure_count, P = m->policies, M = m->modalities;
    double q[MAX_P], logs[MAX_P];
    if (st->measure_entropy != NULL)
        for (int64_t i = 0; i < K; i++) {
            const int64_t n = st->measure_rows[i];
            double plogp = 0.0;
            for (int64_t p = 0; p < P; p++) q[p] = state_get(st->q_pi, n * P + p, m->state_f32);
            tick_log(q, logs, P, EPS);
            for (int64_t p = 0; p < P; p++) plogp += q[p] * logs[p];
            st->measure_entropy[i] = -plogp;
        }
    if (st->measure_lnC != NULL)
        for (int64_t i = 0; i < K; i++) {
            const int64_t *o = st->obs + st->measure_rows[i] * M;
            double total = 0.0;
            for (int64_t k = 0, at = 0; k < M; at += m->num_obs[k], k++)
                total += st->measure_lnC[at + o[k]];
            st->measure_preference[i] = total;
        }
    if (st->measure_sums == NULL) return;
    const double *row[6];
    int64_t w = 0;
    if (st->measure_entropy != NULL) row[w++] = st->measure_entropy;
    if (st->measure_lnC != NULL) row[w++] = st->measure_preference;
    for (int64_t j = 0; j < 4; j++) row[w++] = st->measures + j * K;
    for (int64_t j = 0; j < w; j++) {
        double total = 0.0, squares = 0.0;
        for (int64_t i = 0; i < K; i++) {
            total += row[j][i];
            squares += row[j][i] * row[j][i];
        }
        st->measure_sums[j] = total;
        st->measure_sums[w + j] = squares;
    }
}

void edge_tick_log_eps(const double *x, double *y, int64_t n) {
    block_scratch sc = {0};
#if TICK_V3
    if (__builtin_cpu_supports("x86-64-v3")) {
        log_eps_of_zero_v3(sc.log_eps_zero);
        vm_log_eps(VM_AVX2, x, y, n, sc.log_eps_zero);
        return;
    }
#endif
    vm_log_eps(VM_CALL, x, y, n, sc.log_eps_zero);
}

void edge_tick(const tick_model *m, tick_state *st) {
    int64_t offset[MAX_F], width = 0;
    for (int64_t f = 0; f < m->factors; f++) { offset[f] = width; width += m->num_states[f]; }
    block_scratch sc = {0};
    lane *base = (lane *)(((uintptr_t)m->scratch + sizeof(lane) - 1) / sizeof(lane) * sizeof(lane));
    carve(m, base, &sc);
    sc.lnL = m->lnL;  /* a frozen group's (a shared pass may make its own: shared_likelihood) */
    sc.lnQ1 = m->lnQ1;
    for (int64_t f = 0; f < m->factors; f++)
        sc.log_uniform[f] = log(1.0 / (double)m->num_states[f] + EPS);
    if (m->use_info_gain) {
        index_outcomes(m, &sc);
        index_slots(m, &sc);
    }
#if TICK_V3
    if (__builtin_cpu_supports("x86-64-v3")) {
        if (m->shared_counts)
            tick_shared_v3(m, st, &sc, offset, width);
        else
            tick_own_v3(m, st, &sc, offset, width);
    } else
#endif
    if (m->shared_counts)
        tick_shared(m, st, &sc, offset, width);
    else
        tick_own(m, st, &sc, offset, width);
    if (st->measure_count > 0) fold_measures(m, st);
}
