/* The compiled tick's contract with its binding (edge_agent/aif/kernels/native/__init__.py):
 * the limits of its stack arrays, the structs the caller fills and the functions the library
 * exports. tick.c and tick_layout.c include it; nothing else declares these.
 *
 * Each struct's fields and each limit are one list below (an X-macro: X(type, name) per field,
 * X(name, value) per limit), from which the struct and the layout table the library reports
 * (tick_layout.c, edge_tick_layout) are both made: a field or a limit added here is in the
 * table with nothing else to write, and the binding refuses the library (the group then steps
 * with numpy and says why) until its own declaration (the ctypes fields beside these, LIMITS)
 * says the same. A field's type is int64_t, double or a pointer (tick_layout.c reports each
 * kind; another type needs its kind there and in the binding).
 */
#ifndef EDGE_TICK_H
#define EDGE_TICK_H

#include <stdint.h>

/* The sizes the pass's stack arrays hold: a model above one steps with numpy. */
#define TICK_LIMITS(X)                                                                    \
    X(MAX_F, 4)   /* state factors */                                                     \
    X(MAX_S, 128) /* joint states: the product of the factors' states */                  \
    X(MAX_M, 8)   /* modalities */                                                        \
    X(MAX_P, 64)  /* policies (one or two steps: an action of every factor each) */      \
    X(MAX_U, 16)  /* controls of a factor */

#define TICK_LIMIT_ENUM(name, value) name = (value),
enum { TICK_LIMITS(TICK_LIMIT_ENUM) };
#undef TICK_LIMIT_ENUM

#define TICK_DECLARE_FIELD(type, name) type name;

/* A factor's transitions as their entries, action by action: entries [start[u], start[u + 1])
 * of row/col/value are B[row, col, u] (the non-zero ones of a table nobody learns; a learned
 * table's support, whose values are tick_model.B_values', value then pointing at the first
 * agent's). */
#define TICK_SPARSE_B_FIELDS(X)                                                           \
    X(const int64_t *, start) /* (U + 1) */                                               \
    X(const int64_t *, row)   /* (nnz) */                                                 \
    X(const int64_t *, col)   /* (nnz) */                                                 \
    X(const double *, value)  /* (nnz) */

typedef struct {
    TICK_SPARSE_B_FIELDS(TICK_DECLARE_FIELD)
} sparse_b;

/* What a model gives the pass once (n, scratch and learn are set per call). The joint-outcome
 * table's entries that can be non-zero (the T-maze: 22 entries of 12 outcomes x 8 states; grid10
 * 460 of 100 x 100): each entry's outcome and state, the shared modalities' product on it, and
 * for each learned modality its index into that modality's (O_m, S) table (NULL: shared); the
 * entries of state s are state_entry[state_start[s] .. state_start[s + 1]) (the pass sums a
 * policy's predicted outcomes outcome by outcome, each outcome's entries in state_entry's
 * order; a learned table's entries of one value are found state by state from state_start,
 * once a call). shared_counts 0: each agent its
 * own counts and learned table (pA (N, O_m, S), A_agent_stride O_m S); 1: one set of counts
 * every agent teaches (pA (1, O_m, S), A_agent_stride 0), the table following them every tick:
 * every agent infers and adds to the counts, the table becomes their expectation once, then
 * every agent plans with it (the shared scope's tick). learn 0: the counts are not updated
 * (learning frozen): the agents infer and plan with the tables as they are. A learned factor's
 * transitions (pB non-NULL) likewise: its values B_values (N or 1, nnz: the entries of its
 * sparse_b, B_agent_stride nnz per agent or 0 shared), its counts pB (N or 1, S_f, S_f, U_f)
 * row-major, each entry's index into them B_flat (-1: a pad, value 0, never learned); an agent
 * that acted (has_action, not at a start) adds lr_B q(s') q_prev(s) on the mask to the counts of
 * the action it took, and that action's columns become their counts' expectation (every column
 * of every action with normalise_all: the first refresh). Without a learned table (nothing
 * learns: a frozen group) the pass infers, plans and acts, and lnL may hold the log likelihood
 * of every joint outcome (a row gathered per agent: no product and no log per tick) and lnQ1
 * the mean-field iteration's first step of each (a row gathered per agent: the first step's
 * joint, products and sums not made per tick). state_f32 1: the state's beliefs,
 * priors, G and q_pi (tick_state's void pointers) are float (an int8 group's), else double: the
 * pass computes in double either way. prior_given 1: the tick's prior is st->prior as the caller
 * keeps it (read; the next prior written there when next_prior is the same), else made.
 * quantise 1 (shared counts, an int8 group): each learned column of A and B made its counts'
 * expectation is then what its numpy twin keeps, its log-u8 codes (edge_agent/aif/quant.py's
 * encode_log_u8, per column) decoded and renormalised (decode_log_u8); the codes are not kept
 * (the twin encodes them from the counts when its tables are read). A_float (an int8 group
 * learning A; else NULL): the tables p_obs (the surprise's) is taken under, as the twin's float
 * model has them: a learned modality's its counts' expectation before the rounding (written
 * with its A), another's the float model's. policy_len 2 (a model nobody learns): the policies
 * are of two steps, policies_first their first actions; the pass evaluates each distinct first
 * step (first_policy: a policy taking it, whose reach is its outcomes) and each distinct
 * second-step joint node once (its factors' nodes: a first and a second action each, the
 * nodes whose two steps are one map merged by the binding), a policy's G the sum of its two
 * nodes' (edge_agent/aif/kernels/native/__init__.py's two_steps makes them). */
#define TICK_MODEL_FIELDS(X)                                                              \
    X(int64_t, n)                         /* agents of this call */                       \
    X(int64_t, factors)                   /* F */                                         \
    X(int64_t, modalities)                /* M */                                         \
    X(int64_t, policies)                  /* P */                                         \
    X(int64_t, joint)                     /* S: the joint states */                       \
    X(int64_t, num_iter)                                                                  \
    X(int64_t, use_utility)                                                               \
    X(int64_t, use_info_gain)                                                             \
    X(double, dF_tol)                                                                     \
    X(double, gamma)                                                                      \
    X(double, lr)                                                                         \
    X(const int64_t *, num_states)        /* (F) */                                       \
    X(const int64_t *, num_controls)      /* (F) */                                       \
    X(const int64_t *, num_obs)           /* (M) */                                       \
    X(const int64_t *, state_index)       /* (F, S): each joint state's state of factor f */ \
    X(double *const *, A)                 /* (M): (N or 1, O_m, S) row-major */           \
    X(const int64_t *, A_agent_stride)    /* (M): O_m S per agent's table, 0 shared */    \
    X(double *const *, pA)                /* (M): counts of a learned modality, else NULL */ \
    X(const uint8_t *const *, pA_mask)    /* (M): (O_m, S) prior counts > 0 (learned) */  \
    X(double *const *, experience)        /* (M): (O_m, S) what every agent's updates added */ \
    X(const sparse_b *, B)                /* (F) */                                       \
    X(const double *const *, D)           /* (F): (S_f) */                                \
    X(const double *const *, lnC)         /* (M): (O_m) ln softmax(C_m) + eps */          \
    X(const double *, utility_shared)     /* (S): sum over shared modalities of ln C_m . A_m */ \
    X(const double *, lnE)                /* (P) */                                       \
    X(const int64_t *, policies_first)    /* (P, F): each policy's action of every factor */ \
    X(int64_t, outcomes)                  /* K: the joint outcomes some state can produce */ \
    X(int64_t, entries)                   /* E */                                         \
    X(const int64_t *, entry_outcome)     /* (E) */                                       \
    X(const int64_t *, entry_state)       /* (E) */                                       \
    X(const int64_t *, state_start)       /* (S + 1) */                                   \
    X(const int64_t *, state_entry)       /* (E): the entries, state by state */          \
    X(const int64_t *, reach_start)       /* (P + 1) */                                   \
    X(const int64_t *, reach)             /* each policy's outcomes (ascending) some state \
                                           * in the support's image of its actions gives: \
                                           * policy p's reach[reach_start[p] ..           \
                                           * reach_start[p + 1]); NULL: every outcome of  \
                                           * every policy */                               \
    X(const double *, entry_shared)       /* (E) */                                       \
    X(const int64_t *const *, entry_index) /* (M) */                                      \
    X(double *, scratch)                  /* edge_tick_scratch_doubles(model) doubles */  \
    X(int64_t, shared_counts)                                                             \
    X(int64_t, learn)                                                                     \
    X(int64_t, state_f32)                                                                 \
    X(int64_t, prior_given)                                                               \
    X(double, lr_B)                                                                       \
    X(double *const *, B_values)          /* (F): a learned factor's (N or 1, nnz), else NULL */ \
    X(const int64_t *, B_agent_stride)    /* (F): nnz per agent's values, 0 shared */     \
    X(double *const *, pB)                /* (F): a learned factor's counts, else NULL */ \
    X(const uint8_t *const *, pB_mask)    /* (F): (S_f, S_f, U_f) where an update lands */ \
    X(double *const *, B_experience)      /* (F): (S_f, S_f, U_f) what every update added */ \
    X(const int64_t *const *, B_flat)     /* (F): (nnz) each entry's index into pB, -1 a pad */ \
    X(int64_t, normalise_all)                                                             \
    X(const double *, lnL)                /* (prod_m O_m, S): ln(prod_m A_m[o_m] + eps) of  \
                                           * every joint outcome, C order; NULL: made */     \
    X(const double *, lnQ1)               /* (prod_m O_m, sum S_f): the mean-field iteration's \
                                           * first step of every joint outcome, less the    \
                                           * log prior (edge_tick_first_step of lnL); NULL: \
                                           * made */                                       \
    X(int64_t, quantise)                  /* 1 (shared counts): each learned column that   \
                                           * follows its counts is then its log-u8 codes   \
                                           * decoded (an int8 group's numpy twin's) */     \
    X(double *const *, A_float)           /* (M): (O_m, S) p_obs's tables (an int8 group \
                                           * learning A), else NULL */                     \
    X(int64_t, policy_len)                /* 2: two-step policies (a frozen group's: the  \
                                           * fields below); else one-step */               \
    X(int64_t, first_joints)              /* J1: the distinct first actions (every factor's) */ \
    X(const int64_t *, first_policy)      /* (J1): a policy taking each (its reach's) */   \
    X(const int64_t *, policy_first_joint) /* (P): each policy's first actions, of J1 */   \
    X(const int64_t *, second_start)      /* (F + 1): factor f's second-step nodes are    \
                                           * [second_start[f], second_start[f + 1]) */     \
    X(const int64_t *, second_parent)     /* (nodes): each node's first action */          \
    X(const int64_t *, second_action)     /* (nodes): its second action */                 \
    X(int64_t, second_joints)             /* J2: the distinct second-step joint nodes */   \
    X(const int64_t *, second_joint)      /* (J2, F): each one's node of every factor */   \
    X(const int64_t *, policy_second_joint) /* (P): each policy's, of J2 */                \
    X(const int64_t *, reach2_start)      /* (J2 + 1) */                                   \
    X(const int64_t *, reach2)            /* each second-step joint node's outcomes (as  \
                                           * reach, of its second actions); NULL: every    \
                                           * outcome of every node */                      \
    X(const int64_t *, outcome_twin)      /* (K): an earlier outcome whose entries, in the \
                                           * order they are summed, are of the same states \
                                           * with the same value in every lane (entry_shared's \
                                           * bits and each learned table's index): its     \
                                           * predicted probability, the same number; -1    \
                                           * none; NULL: no twins */                        \
    X(int64_t, shared_tables)             /* 1 (shared counts learning A, every A_agent_stride \
                                           * 0): lnL and lnQ1 made by the pass once a tick, \
                                           * in its scratch, from the tables every agent    \
                                           * infers with (when the joint outcomes are no   \
                                           * more than the agents' lanes: the table's logs \
                                           * no more than theirs), a row gathered per agent \
                                           * (the same products and logs as its own rows', \
                                           * bit for bit); 0: each agent's rows gathered,  \
                                           * multiplied and logged (the tests' reference) */ \
    X(const int64_t *const *, A_kept)     /* (M) or NULL: a learned table each agent keeps \
                                           * on its prior's support (A_agent_stride its    \
                                           * K_m values, cell by cell in row-major order): \
                                           * (O_m + 1) the values of row o start at [o],    \
                                           * then (K_m) each value's cell o S + s; off the \
                                           * support the table is 0, always (a pA update  \
                                           * is masked by the support); a NULL entry: the  \
                                           * table whole */

typedef struct {
    TICK_MODEL_FIELDS(TICK_DECLARE_FIELD)
} tick_model;

/* The agents' state, read and written by a call; a void pointer is float or double
 * (tick_model.state_f32). */
#define TICK_STATE_FIELDS(X)                                                              \
    X(const int64_t *, obs)         /* (N, M) */                                          \
    X(const uint8_t *, start)       /* (N): the episode starts (prior D); NULL: none */   \
    X(void *const *, qs)            /* (F): (N, S_f) each factor's posteriors */          \
    X(void *const *, prior)         /* (F): (N, S_f) the tick's prior, written (read:     \
                                     * prior_given); NULL */                              \
    X(double *, p_obs)              /* (N, M): p(o_m) under the prior and the tables before \
                                     * the tick's update, written; NULL: not taken */     \
    X(int64_t *, action)            /* (N, F) */                                          \
    X(uint8_t *, has_action)        /* (N) */                                             \
    X(void *, G)                    /* (N, P) */                                          \
    X(void *, q_pi)                 /* (N, P) */                                          \
    X(void *const *, next_prior)    /* (F): (N, S_f) B of the action chosen times the     \
                                     * posterior, written; NULL: not kept */              \
    X(void *const *, qs_prev)       /* (F): (N, S_f) the posteriors a learned B learns    \
                                     * from (the last tick's), this tick's written; NULL */ \
    X(const int64_t *, measure_rows) /* (K): the agents health measures this tick, in      \
                                     * ascending order (repeats allowed) */               \
    X(int64_t, measure_count)       /* K; 0: none measured (measure_rows, measures unread) */ \
    X(double *, measures)           /* (4, K): each measured agent's surprise, excess      \
                                     * surprise, free energy and belief change            \
                                     * (edge_agent/aif/health.py's tick_measures, under    \
                                     * the tables the agents inferred with; a learned A    \
                                     * that learns: those before the tick's update, in     \
                                     * infer_block), written */                            \
    X(double *, measure_entropy)    /* (K): each measured agent's policy entropy            \
                                     * -sum_p q_pi ln(q_pi + eps) (q_pi as the state keeps \
                                     * it), written after the tick; NULL: not taken */     \
    X(const double *, measure_lnC)  /* (sum_m O_m): health's ln softmax(C_m) side by side  \
                                     * (no eps); NULL: no preference taken */              \
    X(double *, measure_preference) /* (K): each measured agent's sum_m lnC_m[o_m],        \
                                     * written after the tick (with measure_lnC) */        \
    X(double *, measure_sums)       /* (2, W): over the K agents, the sum and the sum of   \
                                     * squares of each row taken, in order: the entropy     \
                                     * (measure_entropy), the preference (measure_lnC),    \
                                     * then measures' four (W of them), written after the  \
                                     * tick (edge_agent/core/health.py's fold); NULL: none */

typedef struct {
    TICK_STATE_FIELDS(TICK_DECLARE_FIELD)
} tick_state;

#undef TICK_DECLARE_FIELD

/* One row of the layout the library reports: a struct ('s': value its sizeof), a field
 * ("struct.field"; 'i' int64_t, 'f' double, 'p' pointer: value its offsetof, size its sizeof)
 * or a limit ('l': value the limit). */
typedef struct {
    const char *name;
    int64_t kind;
    int64_t value;
    int64_t size;
} tick_layout_entry;

/* The library's layout table (*entries) and its number of rows (tick_layout.c). */
int64_t edge_tick_layout(const tick_layout_entry **entries);

/* The doubles of scratch edge_tick needs for this model (tick_model.scratch). */
int64_t edge_tick_scratch_doubles(const tick_model *m);

/* The mean-field iteration's first step of every joint outcome from m->lnL (its beliefs start
 * uniform, so the step depends on the observation only but for the log prior added): into out,
 * (prod_m O_m, sum S_f) doubles, what tick_model.lnQ1 is given (tick.c). */
void edge_tick_first_step(const tick_model *m, double *out);

/* y[i] = log(x[i] + 1e-16), n values, as the pass takes its prior's, likelihood's and predicted
 * outcomes' logs on this CPU (its x86-64-v3 version: a quad of zeros without a call; tick.c's
 * vm_log_eps), for the tests to compare with tick_log (y may be x). */
void edge_tick_log_eps(const double *x, double *y, int64_t n);

/* One tick of the model's m->n agents, in place (tick.c). */
void edge_tick(const tick_model *m, tick_state *st);

#endif
