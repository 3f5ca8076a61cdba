/* llmpress — evaluation: perplexity, KL divergence and top-1 agreement to a
 * reference model, size and bits per weight, speed. */
#pragma once

#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/data.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef struct {
  int ctx;              /* window length including BOS; 0 = min(model context, 512) */
  gboolean llama_cpp;   /* llama-perplexity's convention: chunks of ctx tokens cut from
                           the data with BOS in front, each chunk's first token replaced
                           by BOS, only tokens from ctx/2 on scored (no BOS anywhere for
                           a model that adds none); the forward passes compute
                           with llama.cpp's CPU roundings (lp_forward_set_llama_cpp) */
  int max_windows;      /* 0 = every window */
  LpModel *reference;   /* optional: KL(reference || model) and top-1 agreement */
  LpBackend *backend;   /* NULL = CPU */
  guint64 device_memory;/* bytes of weights each forward pass keeps on the backend; 0: no limit */
} LpEvalOptions;

typedef struct {
  int n_windows;
  int ctx;
  gint64 n_scored;      /* tokens scored */
  double nll;           /* mean negative log-likelihood, nats/token */
  double nll_stderr;    /* standard error of that mean */
  double ppl;           /* exp(nll) */
  gboolean have_reference;
  double kl;            /* mean KL(reference || model), nats/token */
  double top1;          /* fraction of scored positions whose argmax agrees */
  double seconds;       /* wall time of the model's forward passes */
  double tokens_per_s;  /* tokens through the model per second */
  gint64 n_params;
  guint64 n_bytes;      /* tensor bytes */
  double bits_per_weight;
} LpEvalResult;

/* The OpenBLAS threads (lp_cpu_blas_threads_init) evaluating `model` on the
 * CPU runs fastest with: 1 for a small model (dim <= 1024): lp_eval_run then
 * evaluates one window per core, which beats splitting every small GEMM
 * across the cores; 0 (any: one window at a time, each GEMM on every core)
 * for a larger one. */
int lp_eval_blas_threads (const LpModel *model);

/* Evaluate `model` on tokens[n] (no BOS in the data: each window gets one
 * when the model's tokenizer adds BOS, lp_tokens_window).  Our windows:
 * BOS + ctx-1 data tokens (ctx without BOS), one after the other, every token
 * after the first scored. */
gboolean lp_eval_run (LpModel *model, const gint32 *tokens, gsize n, const LpEvalOptions *options,
                      LpEvalResult *result, GError **error);

/* The reference's half of lp_eval_run's KL, computed once for many models
 * that each differ from the reference in a few tensors (the bit-budget
 * allocator measures one tensor at a time): the reference's logits and the
 * input of each of its blocks and of its head on every window.  A model's KL
 * then runs its forward pass from the first block (or the head) whose
 * tensors are not the reference's own (the same LpTensor objects, as
 * lp_model_derive shares them): the blocks before compute what they computed
 * for the reference.  Our windows only (options->llama_cpp FALSE). */
typedef struct _LpEvalReference LpEvalReference;

LpEvalReference *lp_eval_reference_new (LpModel *reference, const gint32 *tokens, gsize n,
                                        const LpEvalOptions *options, GError **error);
/* *kl = what lp_eval_run (model, tokens, n, options with .reference) gives
 * as its kl, the same value. */
gboolean lp_eval_reference_kl (LpEvalReference *ref, LpModel *model, double *kl, GError **error);
void lp_eval_reference_free (LpEvalReference *ref);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpEvalReference, lp_eval_reference_free)

G_END_DECLS
