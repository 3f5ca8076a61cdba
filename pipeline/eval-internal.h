/* llmpress — what lp_eval_run (eval.c) and the cached reference of
 * eval_reference.c share, so that both score the same windows the same
 * way.  Not part of the SDK. */
#pragma once

#include <llmpress/eval.h>

/* The windows lp_eval_run scores for `options` over n data tokens. */
typedef struct {
  int ctx;        /* tokens in a window, BOS included */
  int first;      /* first logit row scored */
  int n_windows;
  gsize stride;   /* data tokens from one window's start to the next's */
  gint32 bos;     /* each window's first token (lp_tokens_window); -1: none */
} LpEvalWindows;

/* FALSE with a message when the context is under 2 tokens or the data
 * holds no window; warns when the context exceeds the model's. */
gboolean lp_eval_windows (LpModel *model, gsize n, const LpEvalOptions *options, LpEvalWindows *w,
                          GError **error);

/* KL(p || q) of one position, from the log-probabilities lp[V] and lq[V]. */
double lp_eval_kl_row (const double *lp, const double *lq, int V);

/* Whether lp_eval_run spreads windows over the cores (one per core, BLAS
 * single-threaded) rather than running them one at a time. */
gboolean lp_eval_per_core (LpBackend *backend);
