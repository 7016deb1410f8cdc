/* A neural group's work around its model's run (neural_pass.h declares it; the group,
 * edge_agent/neural/agents.py, calls it through edge_agent/neural/native_pass.py, whose numpy
 * twins give the same results):
 *
 *   before the run   the tick's observations in one call: each agent's row into its window's
 *                    newest step (the model's (N, T, F) input, a row every T * F values) and,
 *                    on a checked tick, compared with the calibrated range (the agents out
 *                    flagged and counted);
 *   every T ticks    the windows' T steps into T rows of the history ring (a row per call);
 *   after the run    the argmax of each agent's logits into the actions (numpy's rule).
 *
 * numpy does the same in four to six calls (the strided write into the window, the ring's
 * copy, two comparisons, an or and a count; the argmax), each a microsecond or more of its own
 * on a model call of 40 us. The ring's rows, which nothing reads soon, are written with
 * streaming stores where there is SSE2 (no line of a 2 MB ring fetched to be overwritten). The
 * common widths (f features, a actions) are inlined with the width a constant, so that a row's
 * copy is a vector move and the comparisons straight-line code. C11 with GCC's (and clang's)
 * vector extensions and always_inline; no allocation; the caller checks every shape and
 * address before it passes them.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "neural_pass.h"

/* Inlined into each width's case of the switches below. */
#define INLINE static inline __attribute__((always_inline))

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The ring's row of the tick: values values of src into dst, which nothing reads soon (a
 * snapshot, telemetry): with SSE2, streaming stores that bypass the cache (no line of the
 * 64-step ring, 2 MB at 1,000 agents, is fetched to be overwritten), else memcpy. */
INLINE void copy_out(float *dst, const float *src, int64_t values) {
#if defined(__SSE2__)
    int64_t k = 0;
    for (; k < values && ((uintptr_t)(dst + k) & 15) != 0; k++) {
        dst[k] = src[k];
    }
    for (; k + 4 <= values; k += 4) {
        _mm_stream_ps(dst + k, _mm_loadu_ps(src + k));
    }
    for (; k < values; k++) {
        dst[k] = src[k];
    }
    _mm_sfence();
#else
    memcpy(dst, src, (size_t)values * sizeof(float));
#endif
}

/* The ring's row of a window's step: a row every stride values of src into dst, with streaming
 * stores where there is SSE2 (as copy_out). */
INLINE void gather(const float *src, int64_t n, int64_t f, int64_t stride, float *dst) {
#if defined(__SSE2__)
    if (f % 4 == 0 && ((uintptr_t)dst & 15) == 0) {
        for (int64_t i = 0; i < n; i++) {
            const float *s = src + i * stride;
            float *d = dst + i * f;
            for (int64_t j = 0; j < f; j += 4) {
                _mm_stream_ps(d + j, _mm_loadu_ps(s + j));
            }
        }
        _mm_sfence();
        return;
    }
#endif
    const size_t row = (size_t)f * sizeof(float);
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + i * f, src + i * stride, row);
    }
}

#define GATHER_WIDTH(F)                                                                     \
    case F:                                                                                 \
        gather(src, n, F, stride, dst);                                                     \
        return;

void edge_neural_gather(const float *src, int64_t n, int64_t f, int64_t stride, float *dst) {
    switch (f) {
        GATHER_WIDTH(4)
        GATHER_WIDTH(8)
        GATHER_WIDTH(16)
    default:
        gather(src, n, f, stride, dst);
    }
}

INLINE int64_t observe(const float *obs, int64_t n, int64_t f, float *newest, int64_t stride,
                       float *ring, const float *low, const float *high, uint8_t *rows) {
    const size_t row = (size_t)f * sizeof(float);
    for (int64_t i = 0; i < n; i++) {
        memcpy(newest + i * stride, obs + i * f, row);
    }
    if (ring != NULL) {
        copy_out(ring, obs, n * f);
    }
    if (low == NULL) {
        return 0;
    }
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *o = obs + i * f;
        int bad = 0;
        for (int64_t j = 0; j < f; j++) {
            bad |= (o[j] < low[j]) | (o[j] > high[j]);
        }
        rows[i] = (uint8_t)bad;
        out += bad;
    }
    return out;
}

#define OBSERVE_WIDTH(F)                                                                    \
    case F:                                                                                 \
        return observe(obs, n, F, newest, stride, ring, low, high, rows);

int64_t edge_neural_observe(const float *obs, int64_t n, int64_t f, float *newest,
                            int64_t stride, float *ring, const float *low, const float *high,
                            uint8_t *rows) {
    switch (f) {
        OBSERVE_WIDTH(1)
        OBSERVE_WIDTH(2)
        OBSERVE_WIDTH(3)
        OBSERVE_WIDTH(4)
        OBSERVE_WIDTH(6)
        OBSERVE_WIDTH(8)
        OBSERVE_WIDTH(12)
        OBSERVE_WIDTH(16)
    default:
        return observe(obs, n, f, newest, stride, ring, low, high, rows);
    }
}

/* Four rows' values as one vector (GCC's and clang's vector extensions: SSE on x86-64, NEON on
 * aarch64), their comparisons as lanes of all ones or zeros. */
typedef float row4 __attribute__((vector_size(16)));
typedef int32_t mask4 __attribute__((vector_size(16)));

/* Rows one at a time: the last rows of a block, and a block with a NaN. */
INLINE void argmax_rows(const float *x, int64_t n, int64_t a, int64_t *actions) {
    for (int64_t i = 0; i < n; i++) {
        const float *r = x + i * a;
        int64_t best = 0;
        float top = r[0];
        for (int64_t j = 1; j < a; j++) {
            const int above = r[j] > top;
            best = above ? j : best;
            top = above ? r[j] : top;
        }
        for (int64_t j = 0; j < a; j++) { /* numpy's rule: a row's first NaN */
            if (r[j] != r[j]) {
                best = j;
                break;
            }
        }
        actions[i] = best;
    }
}

/* Four rows at a time, value j of each in one vector: a comparison and two selects per j for
 * the four (1.1 us for 1,000 rows of 4 against 2.2 a row at a time, one core of the dev VM).
 * A block with a NaN is done again a row at a time (numpy's rule needs the first NaN). */
INLINE void argmax(const float *x, int64_t n, int64_t a, int64_t *actions) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float *r = x + i * a;
        row4 top = {r[0], r[a], r[2 * a], r[3 * a]};
        mask4 best = {0, 0, 0, 0};
        mask4 nan = top != top;
        for (int64_t j = 1; j < a; j++) {
            const row4 v = {r[j], r[a + j], r[2 * a + j], r[3 * a + j]};
            const mask4 above = v > top;
            const int32_t k = (int32_t)j;
            const mask4 index = {k, k, k, k};
            nan |= v != v;
            best = (index & above) | (best & ~above);
            top = (row4)(((mask4)v & above) | ((mask4)top & ~above));
        }
        if (nan[0] | nan[1] | nan[2] | nan[3]) {
            argmax_rows(r, 4, a, actions + i);
            continue;
        }
        for (int b = 0; b < 4; b++) {
            actions[i + b] = best[b];
        }
    }
    argmax_rows(x + i * a, n - i, a, actions + i);
}

#define ARGMAX_WIDTH(A)                                                                     \
    case A:                                                                                 \
        argmax(x, n, A, actions);                                                           \
        return;

void edge_neural_argmax(const float *x, int64_t n, int64_t a, int64_t *actions) {
    switch (a) {
        ARGMAX_WIDTH(2)
        ARGMAX_WIDTH(3)
        ARGMAX_WIDTH(4)
        ARGMAX_WIDTH(5)
        ARGMAX_WIDTH(6)
        ARGMAX_WIDTH(8)
    default:
        argmax(x, n, a, actions);
    }
}
