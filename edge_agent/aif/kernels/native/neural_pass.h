/* A neural group's work around its model's run, compiled (edge_agent/neural/native_pass.py
 * binds it; neural_pass.c says how): the tick's observations in one pass, the actions out of
 * the logits in another. Plain arguments, no structs: nothing here is in the tick's layout
 * table. Built into the same library as the tick (recipe.py). */
#ifndef EDGE_NEURAL_PASS_H
#define EDGE_NEURAL_PASS_H

#include <stdint.h>

/* The tick's observations obs (n, f), float32, C-contiguous, in one pass over the agents:
 * each agent's row copied to newest + i * stride (its window's newest step in the model's
 * input), the whole block to ring when ring is not NULL (a history ring's row), and,
 * when low is not NULL, compared with low (f) and high (f): rows[i] = 1 when a value of
 * agent i is below low or above high (NaN is in range), else 0. Returns how many agents
 * are out (0 when low is NULL; rows is then not written). */
int64_t edge_neural_observe(const float *obs, int64_t n, int64_t f, float *newest,
                            int64_t stride, float *ring, const float *low, const float *high,
                            uint8_t *rows);

/* One step of every agent's window into the history ring's row: n rows of f values, a row
 * every stride values from src (the window's step in the model's (N, T, F) input), into dst
 * (n, f), contiguous. */
void edge_neural_gather(const float *src, int64_t n, int64_t f, int64_t stride, float *dst);

/* The index of each row's largest value of x (n, a), float32, C-contiguous, into actions (n):
 * numpy's argmax (the first of equal values; the first NaN when a row has one). */
void edge_neural_argmax(const float *x, int64_t n, int64_t a, int64_t *actions);

#endif
