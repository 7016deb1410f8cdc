/* The team award's assignment (assignment.h; edge_agent/coordination/assignment.py is its
 * reference twin and says what it computes): each row added by a shortest augmenting path,
 * Dijkstra on reduced costs with every column at the least distance taken at once, as the twin
 * takes it -- of the rows reached at one distance one per edge list is relaxed (the largest
 * potential, the lower row on a tie), lower rows first, a column keeping the path through the
 * lower row on a tie; of the columns at the least distance a free one ends the search, the
 * lowest; then the potentials and the path, as the twin updates them. Integers only: the same
 * result on every CPU. The search touches only the columns it reaches, and every scratch array
 * is the caller's (no allocation). */
#include "assignment.h"

#include <stdlib.h>

typedef struct {
    int64_t list, u, row;
} row_key;

/* A list's rows in the order _one_per_list takes them: list, then the largest u, then the
 * lower row. */
static int by_list_then_u(const void *pa, const void *pb) {
    const row_key *a = pa, *b = pb;
    if (a->list != b->list) return a->list < b->list ? -1 : 1;
    if (a->u != b->u) return a->u > b->u ? -1 : 1;
    return (a->row > b->row) - (a->row < b->row);
}

static int by_value(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

/* Of the n rows frontier, one per edge list (the largest u, the lower row on a tie), in
 * increasing order, written over frontier's start; returns how many. */
static int64_t one_per_list(int64_t *frontier, int64_t n, const int64_t *row_list,
                            const int64_t *u, row_key *keys) {
    if (n <= 1) return n;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = frontier[k];
        keys[k] = (row_key){row_list[i], u[i], i};
    }
    qsort(keys, (size_t)n, sizeof *keys, by_list_then_u);
    int64_t out = 0;
    for (int64_t k = 0; k < n; k++)
        if (k == 0 || keys[k].list != keys[k - 1].list) frontier[out++] = keys[k].row;
    qsort(frontier, (size_t)out, sizeof *frontier, by_value);
    return out;
}

/* One row of list g added as row cur: 1, or 0 when no free column can be reached (nothing
 * changed but the row's slot, which the caller does not count). */
static int add_one(int64_t *const *a, int64_t n_cols, int64_t capacity, int64_t cur,
                   int64_t g) {
    const int64_t *indptr = a[EDGE_ASSIGN_INDPTR], *cols = a[EDGE_ASSIGN_COLS],
                  *costs = a[EDGE_ASSIGN_COSTS];
    int64_t *row_list = a[EDGE_ASSIGN_ROW_LIST], *u = a[EDGE_ASSIGN_U], *v = a[EDGE_ASSIGN_V],
            *col4row = a[EDGE_ASSIGN_COL4ROW], *row4col = a[EDGE_ASSIGN_ROW4COL],
            *spc = a[EDGE_ASSIGN_SPC], *path = a[EDGE_ASSIGN_PATH];
    int64_t *waiting = a[EDGE_ASSIGN_SCRATCH], *seen = waiting + n_cols, *final = seen + n_cols,
            *visited = final + n_cols, *frontier = visited + capacity;
    row_key *keys = (row_key *)(frontier + capacity);
    row_list[cur] = g;
    col4row[cur] = -1;
    u[cur] = 0;
    int64_t n_front = 1, n_visited = 0, n_final = 0, n_seen = 0, n_waiting = 0;
    int64_t min_val = 0, sink = -1;
    frontier[0] = cur;
    for (;;) {
        n_front = one_per_list(frontier, n_front, row_list, u, keys);
        for (int64_t k = 0; k < n_front; k++) {
            int64_t i = frontier[k], gi = row_list[i], shift = min_val - u[i];
            for (int64_t e = indptr[gi]; e < indptr[gi + 1]; e++) {
                int64_t j = cols[e], r = costs[e] - v[j] + shift;
                if (r < spc[j]) {
                    if (spc[j] == EDGE_ASSIGN_UNSEEN) {
                        seen[n_seen++] = j;
                        waiting[n_waiting++] = j;
                    }
                    spc[j] = r;
                    path[j] = i;
                }
            }
        }
        if (n_waiting == 0) {
            for (int64_t k = 0; k < n_seen; k++) spc[seen[k]] = EDGE_ASSIGN_UNSEEN;
            return 0;
        }
        min_val = spc[waiting[0]];
        for (int64_t k = 1; k < n_waiting; k++)
            if (spc[waiting[k]] < min_val) min_val = spc[waiting[k]];
        /* The ties after the final columns (their place if none is free), the rest kept. */
        int64_t n_ties = 0, kept = 0;
        for (int64_t k = 0; k < n_waiting; k++) {
            int64_t j = waiting[k];
            if (spc[j] == min_val) {
                final[n_final + n_ties++] = j;
                if (row4col[j] < 0 && (sink < 0 || j < sink)) sink = j;
            } else {
                waiting[kept++] = j;
            }
        }
        n_waiting = kept;
        if (sink >= 0) {
            final[n_final++] = sink;
            break;
        }
        for (int64_t k = 0; k < n_ties; k++) {
            int64_t i = row4col[final[n_final + k]];
            frontier[k] = i;
            visited[n_visited++] = i;
        }
        n_final += n_ties;
        n_front = n_ties;
    }
    /* Potentials: every edge's reduced cost stays >= 0, the matched ones at 0. */
    u[cur] += min_val;
    for (int64_t k = 0; k < n_visited; k++) {
        int64_t i = visited[k];
        u[i] += min_val - spc[col4row[i]];
    }
    for (int64_t k = 0; k < n_final; k++) {
        int64_t j = final[k];
        v[j] -= min_val - spc[j];
    }
    for (int64_t k = 0; k < n_seen; k++) spc[seen[k]] = EDGE_ASSIGN_UNSEEN;
    for (int64_t j = sink;;) {
        int64_t i = path[j], next = col4row[i];
        row4col[j] = i;
        col4row[i] = j;
        j = next;
        if (i == cur) break;
    }
    return 1;
}

int64_t edge_assign_add_slots(int64_t *const *arrays, int64_t n_cols, int64_t capacity,
                              int64_t rows, int64_t g, int64_t count) {
    int64_t added = 0;
    while (added < count && rows + added < capacity &&
           add_one(arrays, n_cols, capacity, rows + added, g))
        added++;
    return added;
}
