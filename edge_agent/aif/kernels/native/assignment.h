/* The team award's minimum-cost assignment, compiled (edge_agent/coordination/assignment.py
 * binds it and keeps its Python twin, the reference): rows added to a least-cost assignment by
 * shortest augmenting paths, in int64, every tie broken by index as the twin breaks it, so the
 * same rows get the same columns with the same potentials, to the bit, on every CPU. Plain
 * arguments, no structs: nothing here is in the tick's layout table. Built into the same
 * library as the tick (recipe.py). */
#ifndef EDGE_ASSIGNMENT_H
#define EDGE_ASSIGNMENT_H

#include <stdint.h>

/* The arrays of one assignment, in this order in edge_assign_add_slots' arrays, each int64,
 * C-contiguous: the edge lists' indptr (lists + 1), cols and costs (>= 0; edges), each row's
 * list row_list, the potentials u (capacity) and v (n_cols), col4row (capacity), row4col
 * (n_cols), the search's path costs spc (n_cols, EDGE_ASSIGN_UNSEEN where unseen: so between
 * calls) and path (n_cols), and its scratch work (EDGE_ASSIGN_WORK(n_cols, capacity)). */
enum { EDGE_ASSIGN_INDPTR, EDGE_ASSIGN_COLS, EDGE_ASSIGN_COSTS, EDGE_ASSIGN_ROW_LIST,
       EDGE_ASSIGN_U, EDGE_ASSIGN_V, EDGE_ASSIGN_COL4ROW, EDGE_ASSIGN_ROW4COL, EDGE_ASSIGN_SPC,
       EDGE_ASSIGN_PATH, EDGE_ASSIGN_SCRATCH, EDGE_ASSIGN_ARRAYS };

#define EDGE_ASSIGN_UNSEEN (INT64_C(1) << 62)
#define EDGE_ASSIGN_WORK(n_cols, capacity) (3 * (n_cols) + 5 * (capacity))

/* Add up to count rows of edge list g to the assignment holding rows rows (of capacity), one
 * after the other as assignment.py's Assignment.add would, and stop at the first that no
 * augmenting path reaches a free column for (or past capacity): that row is not added and
 * nothing of it stays. Returns how many were added (rows + that is the rows held after). */
int64_t edge_assign_add_slots(int64_t *const *arrays, int64_t n_cols, int64_t capacity,
                              int64_t rows, int64_t g, int64_t count);

#endif
