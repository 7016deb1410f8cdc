/* A measured prototype, not part of the package: one compiled pass per tick over agents that
 * each learn their own likelihood counts (pA), with pymdp 0.0.7.1's maths as
 * edge_agent/aif/per_agent.py batches them (edge_agent/aif/reference.py writes them out):
 *
 *   prior     B[f][:, :, a_f] @ qs[f] after an action, D[f] at an episode's start
 *   states    softmax(ln L + ln prior) for one factor, else the vanilla fixed-point iteration,
 *             each agent stopping when its free energy moves by less than dF_tol
 *   learning  pA[m][o_m, s] += lr * (prior counts > 0)[o_m, s] * q(s); the learned A[m] its
 *             counts' expectation (every column); what every agent added summed (experience)
 *   planning  one-step policies: utility q . sum_m ln C_m . A_m and the state information gain
 *             over the joint outcomes some state can produce (pymdp's exp(-16) threshold)
 *   acting    q_pi = softmax(gamma G + ln E), the first maximum of each factor's action marginal
 *
 * Agent after agent, every temporary on the stack (limits checked by compiled_tick.py), no
 * allocation. What it leaves out of pymdp's arithmetic, each a difference far below rounding
 * of the free energy it feeds: ln(q + 1e-16) of a softmax is taken as the log-softmax (the
 * term q ln(q + 1e-16) moves by at most 1e-16). Built by compiled_tick.py with the machine's
 * C compiler, C11 and <math.h> only, no fast-math.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_F 4
#define MAX_S 128
#define MAX_M 8
#define MAX_P 64
#define MAX_U 16
#define MAX_E 4096

static const double EPS = 1e-16;
static const double EXP_M16 = 1.1253517471925912e-07; /* exp(-16) */

/* A factor's shared transitions as its non-zero entries, action by action: entries
 * [start[u], start[u + 1]) of row/col/value are B[row, col, u]. */
typedef struct {
    const int64_t *start; /* (U + 1) */
    const int64_t *row, *col;
    const double *value;
} sparse_b;

typedef struct {
    int64_t n, factors, modalities, policies, joint;
    int64_t num_iter, use_utility, use_info_gain;
    double dF_tol, gamma, lr;
    const int64_t *num_states;   /* (F) */
    const int64_t *num_controls; /* (F) */
    const int64_t *num_obs;      /* (M) */
    const int64_t *state_index;  /* (F, S): each joint state's state of factor f */
    double *const *A;            /* (M): (N or 1, O_m, S) row-major */
    const int64_t *A_agent_stride; /* (M): O_m * S for a per-agent table, 0 for a shared one */
    double *const *pA;           /* (M): (N, O_m, S) counts of a learned modality, else NULL */
    const uint8_t *const *pA_mask; /* (M): (O_m, S) prior counts > 0 of a learned modality */
    double *const *experience;   /* (M): (O_m, S) what every agent's updates added */
    const sparse_b *B;           /* (F) */
    const double *const *D;      /* (F): (S_f) */
    const double *const *lnC;    /* (M): (O_m) ln softmax(C_m) + eps */
    const double *utility_shared; /* (S): sum over the shared modalities of ln C_m . A_m */
    const double *lnE;           /* (P) */
    const int64_t *policies_first; /* (P, F): each policy's action of every factor */
    /* The joint-outcome table's entries that can be non-zero, grouped by joint outcome:
     * outcome k's are [outcome_start[k], outcome_start[k + 1]) (the T-maze: 22 entries of 12
     * outcomes x 8 states); each entry's state, the shared modalities' product on it, and for
     * each learned modality its index into that modality's (O_m, S) table (NULL: shared). */
    int64_t outcomes, entries;
    const int64_t *outcome_start; /* (K + 1) */
    const int64_t *entry_state;   /* (E) */
    const double *entry_shared;   /* (E) */
    const int64_t *const *entry_index; /* (M) */
} tick_model;

typedef struct {
    const int16_t *obs;   /* (N, M) */
    const uint8_t *start; /* (N): the agent's episode starts (its prior is D) */
    double *qs;           /* (N, sum S_f) */
    int64_t *action;      /* (N, F) */
    uint8_t *has_action;  /* (N) */
    double *G;            /* (N, P) */
    double *q_pi;         /* (N, P) */
} tick_state;

/* out = softmax(x); log_out (may be NULL) = its log-softmax. */
static void softmax_into(const double *x, double *out, double *log_out, int64_t k) {
    double top = x[0];
    for (int64_t i = 1; i < k; i++) top = x[i] > top ? x[i] : top;
    double total = 0.0;
    for (int64_t i = 0; i < k; i++) { out[i] = exp(x[i] - top); total += out[i]; }
    double inv = 1.0 / total, log_total = log_out != NULL ? log(total) : 0.0;
    for (int64_t i = 0; i < k; i++) out[i] *= inv;
    if (log_out != NULL)
        for (int64_t i = 0; i < k; i++) log_out[i] = x[i] - top - log_total;
}

/* The joint over the factors, C order (last factor fastest). */
static void joint_of(const tick_model *m, double *const *q, double *out) {
    out[0] = 1.0;
    int64_t size = 1;
    for (int64_t f = 0; f < m->factors; f++) {
        int64_t s_f = m->num_states[f];
        for (int64_t i = size - 1; i >= 0; i--) {
            double v = out[i];
            for (int64_t j = s_f - 1; j >= 0; j--) out[i * s_f + j] = v * q[f][j];
        }
        size *= s_f;
    }
}

/* y = B[:, :, u] @ x. */
static void apply_b(const sparse_b *b, int64_t u, const double *x, double *y, int64_t s_f) {
    for (int64_t i = 0; i < s_f; i++) y[i] = 0.0;
    for (int64_t e = b->start[u]; e < b->start[u + 1]; e++) y[b->row[e]] += b->value[e] * x[b->col[e]];
}

/* pymdp's calc_free_energy of the factors' q (log_q: their logs), without the likelihood term
 * when log_lik is NULL. */
static double free_energy(const tick_model *m, double *const *q, double *const *log_q,
                          double *const *log_prior, const double *log_lik) {
    double vfe = 0.0;
    for (int64_t f = 0; f < m->factors; f++)
        for (int64_t i = 0; i < m->num_states[f]; i++)
            vfe += q[f][i] * (log_q[f][i] - log_prior[f][i]);
    if (log_lik != NULL) {
        double joint[MAX_S], acc = 0.0;
        joint_of(m, q, joint);
        for (int64_t s = 0; s < m->joint; s++) acc += joint[s] * log_lik[s];
        vfe -= acc;
    }
    return vfe;
}

static void infer_states(const tick_model *m, const double *log_lik, double *const *log_prior,
                         double *const *qs) {
    const int64_t F = m->factors, S = m->joint;
    if (F == 1) {
        double x[MAX_S];
        for (int64_t s = 0; s < S; s++) x[s] = log_lik[s] + log_prior[0][s];
        softmax_into(x, qs[0], NULL, S);
        return;
    }
    double q_store[2][MAX_F][MAX_S], lq_store[2][MAX_F][MAX_S];
    double *cur[MAX_F], *nxt[MAX_F], *log_cur[MAX_F], *log_nxt[MAX_F];
    for (int64_t f = 0; f < F; f++) {
        cur[f] = q_store[0][f];
        nxt[f] = q_store[1][f];
        log_cur[f] = lq_store[0][f];
        log_nxt[f] = lq_store[1][f];
        double uniform = 1.0 / (double)m->num_states[f], log_uniform = log(uniform + EPS);
        for (int64_t i = 0; i < m->num_states[f]; i++) {
            cur[f][i] = uniform;
            log_cur[f][i] = log_uniform;
        }
    }
    double prev = free_energy(m, cur, log_cur, log_prior, NULL), dF = 1.0;
    for (int64_t it = 0; it < m->num_iter; it++) {
        if (dF < m->dF_tol) break;
        double joint[MAX_S], weighted[MAX_S];
        joint_of(m, cur, joint);
        for (int64_t s = 0; s < S; s++) weighted[s] = log_lik[s] * joint[s];
        for (int64_t f = 0; f < F; f++) {
            double qL[MAX_S];
            int64_t s_f = m->num_states[f];
            const int64_t *index = m->state_index + f * S;
            for (int64_t i = 0; i < s_f; i++) qL[i] = 0.0;
            for (int64_t s = 0; s < S; s++) qL[index[s]] += weighted[s];
            for (int64_t i = 0; i < s_f; i++) qL[i] = qL[i] / cur[f][i] + log_prior[f][i];
            softmax_into(qL, nxt[f], log_nxt[f], s_f);
        }
        double vfe = free_energy(m, nxt, log_nxt, log_prior, log_lik);
        for (int64_t f = 0; f < F; f++) {
            double *t = cur[f]; cur[f] = nxt[f]; nxt[f] = t;
            t = log_cur[f]; log_cur[f] = log_nxt[f]; log_nxt[f] = t;
        }
        dF = fabs(prev - vfe);
        prev = vfe;
    }
    for (int64_t f = 0; f < F; f++)
        for (int64_t i = 0; i < m->num_states[f]; i++) qs[f][i] = cur[f][i];
}

void edge_tick(const tick_model *m, tick_state *st) {
    const int64_t N = m->n, F = m->factors, M = m->modalities, P = m->policies, S = m->joint;
    const int64_t K = m->outcomes;
    int64_t width = 0, offset[MAX_F];
    for (int64_t f = 0; f < F; f++) { offset[f] = width; width += m->num_states[f]; }

    for (int64_t n = 0; n < N; n++) {
        double *qs[MAX_F];
        for (int64_t f = 0; f < F; f++) qs[f] = st->qs + n * width + offset[f];
        const int16_t *obs = st->obs + n * M;
        int64_t *action = st->action + n * F;
        const double *A[MAX_M];
        for (int64_t k = 0; k < M; k++) A[k] = m->A[k] + n * m->A_agent_stride[k];

        /* prior and its log */
        double lp_store[MAX_F][MAX_S], *log_prior[MAX_F];
        int acted = st->has_action[n] && !st->start[n];
        for (int64_t f = 0; f < F; f++) {
            int64_t s_f = m->num_states[f];
            double *lp = log_prior[f] = lp_store[f];
            if (acted)
                apply_b(&m->B[f], action[f], qs[f], lp, s_f);
            else
                for (int64_t i = 0; i < s_f; i++) lp[i] = m->D[f][i];
            for (int64_t i = 0; i < s_f; i++) lp[i] = log(lp[i] + EPS);
        }
        /* log-likelihood of the outcomes over the joint state */
        double log_lik[MAX_S];
        for (int64_t s = 0; s < S; s++) log_lik[s] = A[0][obs[0] * S + s];
        for (int64_t k = 1; k < M; k++)
            for (int64_t s = 0; s < S; s++) log_lik[s] *= A[k][obs[k] * S + s];
        for (int64_t s = 0; s < S; s++) log_lik[s] = log(log_lik[s] + EPS);
        infer_states(m, log_lik, log_prior, qs);

        /* learning: the counts of the outcome seen, then the table their expectation */
        double joint[MAX_S];
        joint_of(m, qs, joint);
        for (int64_t k = 0; k < M; k++) {
            if (m->pA[k] == NULL) continue;
            int64_t O = m->num_obs[k];
            double *counts = m->pA[k] + n * O * S;
            double *table = m->A[k] + n * m->A_agent_stride[k];
            const uint8_t *mask = m->pA_mask[k] + obs[k] * S;
            double *row = counts + obs[k] * S, *seen = m->experience[k] + obs[k] * S;
            for (int64_t s = 0; s < S; s++) {
                double gain = mask[s] ? m->lr * joint[s] : 0.0;
                row[s] += gain;
                seen[s] += gain;
            }
            double total[MAX_S];
            for (int64_t s = 0; s < S; s++) total[s] = counts[s];
            for (int64_t o = 1; o < O; o++)
                for (int64_t s = 0; s < S; s++) total[s] += counts[o * S + s];
            for (int64_t s = 0; s < S; s++) total[s] = 1.0 / total[s];
            for (int64_t o = 0; o < O; o++)
                for (int64_t s = 0; s < S; s++) table[o * S + s] = counts[o * S + s] * total[s];
        }

        /* the agent's planning tables: utility per state; the non-zero entries of its
         * joint-outcome table and each state's negative entropy over the joint outcomes */
        double utility[MAX_S], neg_entropy[MAX_S], value[MAX_E];
        for (int64_t s = 0; s < S; s++) utility[s] = m->utility_shared[s];
        if (m->use_utility)
            for (int64_t k = 0; k < M; k++) {
                if (m->A_agent_stride[k] == 0) continue;
                for (int64_t o = 0; o < m->num_obs[k]; o++) {
                    double c = m->lnC[k][o];
                    for (int64_t s = 0; s < S; s++) utility[s] += c * A[k][o * S + s];
                }
            }
        const int64_t E = m->entries;
        if (m->use_info_gain) {
            for (int64_t s = 0; s < S; s++) neg_entropy[s] = 0.0;
            for (int64_t e = 0; e < E; e++) value[e] = m->entry_shared[e];
            for (int64_t k = 0; k < M; k++) {
                const int64_t *index = m->entry_index[k];
                if (index == NULL) continue;
                for (int64_t e = 0; e < E; e++) value[e] *= A[k][index[e]];
            }
            for (int64_t e = 0; e < E; e++) {
                double p = value[e];
                if (p != 0.0) neg_entropy[m->entry_state[e]] += p * log(p + EXP_M16);
            }
        }

        /* the policies: each factor's predicted states under each action, then per policy
         * the joint, its utility and information gain */
        double moved[MAX_F][MAX_U][MAX_S];
        for (int64_t f = 0; f < F; f++)
            for (int64_t u = 0; u < m->num_controls[f]; u++)
                apply_b(&m->B[f], u, qs[f], moved[f][u], m->num_states[f]);
        double *G = st->G + n * P, *q_pi = st->q_pi + n * P;
        for (int64_t p = 0; p < P; p++) {
            double *q[MAX_F], qj[MAX_S];
            for (int64_t f = 0; f < F; f++) q[f] = moved[f][m->policies_first[p * F + f]];
            joint_of(m, q, qj);
            double g = 0.0;
            if (m->use_utility)
                for (int64_t s = 0; s < S; s++) g += qj[s] * utility[s];
            if (m->use_info_gain) {
                for (int64_t s = 0; s < S; s++) {
                    if (!(qj[s] > EXP_M16)) qj[s] = 0.0;
                    g += qj[s] * neg_entropy[s];
                }
                for (int64_t k = 0; k < K; k++) {
                    double qo = 0.0;
                    for (int64_t e = m->outcome_start[k]; e < m->outcome_start[k + 1]; e++)
                        qo += qj[m->entry_state[e]] * value[e];
                    if (qo != 0.0) g -= qo * log(qo + EPS);
                }
            }
            G[p] = g;
        }
        double x[MAX_P];
        for (int64_t p = 0; p < P; p++) x[p] = G[p] * m->gamma + m->lnE[p];
        softmax_into(x, q_pi, NULL, P);

        /* each factor's action: the first maximum of its marginal */
        for (int64_t f = 0; f < F; f++) {
            int64_t u_f = m->num_controls[f], best = 0;
            double marginal[MAX_U], total = 0.0;
            for (int64_t u = 0; u < u_f; u++) marginal[u] = 0.0;
            for (int64_t p = 0; p < P; p++) marginal[m->policies_first[p * F + f]] += q_pi[p];
            for (int64_t u = 0; u < u_f; u++) total += marginal[u];
            for (int64_t u = 0; u < u_f; u++) {
                marginal[u] /= total;
                if (marginal[u] > marginal[best]) best = u;
            }
            action[f] = best;
        }
        st->has_action[n] = 1;
    }
}
