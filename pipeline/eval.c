/* llmpress — perplexity / KL / top-1 evaluation over token windows. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include "eval-internal.h"
#include <llmpress/forward.h>
#include <llmpress/progress.h>
#include "compute-internal.h"
#include "forward-internal.h"

static int
argmax (const float *x, int n)
{
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best])
      best = i;
  return best;
}

typedef struct {
  double nll, nll_sq, kl;
  gint64 agree, scored;
} WindowSums;

typedef struct {
  LpForward *fw, *ref;     /* the first worker's; others make their own */
  LpBackend *backend;
  guint64 device_memory;   /* each forward pass's weight budget (0: none) */
  gboolean llama_cpp;      /* each forward pass computes as llama.cpp's CPU backend */
  const gint32 *tokens;
  gsize stride;
  int ctx, first, n_windows, V;
  gint32 bos;              /* each window's first token; -1: none (the model adds no BOS) */
  WindowSums *per_window;
  LpProgress *prog;
  gint next;               /* next window to take (atomic) */
  gint done;
  GMutex lock;             /* guards error and progress */
  GError *error;
} WindowJob;

/* The job's settings on a worker's forward passes (either may be NULL). */
static void
forward_setup (const WindowJob *job, LpForward *fw, LpForward *ref)
{
  LpForward *both[2] = { fw, ref };
  for (int i = 0; i < 2; i++)
    if (both[i])
      {
        lp_forward_set_device_memory (both[i], job->device_memory);
        lp_forward_set_llama_cpp (both[i], job->llama_cpp);
      }
}

/* Logit rows scored a block at a time (lp_forward_head_rows), so that a
 * long context's logits never exist whole (SmolLM2 at 4096 tokens: 800
 * MB).  512: a window of up to 512 is one head product, the same bits as
 * lp_forward_logits (OpenBLAS's sums in a product of fewer rows differ in
 * the last place), and blocks of 64 rows measured no faster (the head's
 * weight is packed again for every block). */
enum { HEAD_ROWS = 512 };

/* A worker's buffers, and the window it is scoring: each scored row's
 * terms are kept apart and summed in row order once every row is in (as
 * when the rows were scored one after another). */
typedef struct {
  WindowJob *job;
  LpForward *fw, *ref;     /* the worker's */
  gint32 *win;             /* [ctx] the window's tokens */
  float *x, *ref_x;        /* [ctx, D] the model's and the reference's residual streams */
  float *ref_logits;       /* [HEAD_ROWS, V] the reference's logits of the block */
  const float *logits;     /* the block being scored: [n, V] rows r0 .. */
  int r0, t0;              /* the block's first row; the first row scored in it */
  double *nll, *kl;        /* [ctx] per row */
  gboolean *agree;         /* [ctx] per row */
} WindowRows;

/* Rows t0 + [begin, end) of the block, on any thread. */
static void
score_rows (gint64 begin, gint64 end, gpointer data)
{
  WindowRows *wr = data;
  int V = wr->job->V;
  g_autofree double *lp = wr->ref ? g_new (double, V) : NULL;
  g_autofree double *lq = wr->ref ? g_new (double, V) : NULL;
  for (int t = wr->t0 + (int) begin; t < wr->t0 + end; t++)
    {
      const float *row = wr->logits + (gsize) (t - wr->r0) * V;
      /* -log softmax (row)[next]: with libm's exp in llama.cpp's numerics,
       * as they were validated; else with the vector exp (a tenth of eval's
       * time in libm), which moves the NLL by float rounding only */
      double lse = wr->job->llama_cpp ? lp_log_sum_exp (row, V) : lp_cpu_log_sum_exp (row, V);
      wr->nll[t] = -((double) row[wr->win[t + 1]] - lse);
      if (wr->ref)
        {
          const float *rrow = wr->ref_logits + (gsize) (t - wr->r0) * V;
          lp_log_softmax (row, V, lq);
          lp_log_softmax (rrow, V, lp);
          wr->kl[t] = lp_eval_kl_row (lp, lq, V);
          wr->agree[t] = argmax (row, V) == argmax (rrow, V);
        }
    }
}

/* The scored rows among r0 .. r0 + n - 1 (lp_forward_head_rows' block),
 * over the threads. */
static gboolean
score_block (gpointer data, int r0, int n, const float *logits, GError **error)
{
  WindowRows *wr = data;
  WindowJob *job = wr->job;
  int begin = MAX (r0, job->first), end = MIN (r0 + n, job->ctx - 1);
  if (begin >= end)
    return TRUE;
  gsize D = (gsize) lp_model_config (lp_forward_model (wr->fw))->dim;
  if (wr->ref && !lp_forward_head (wr->ref, wr->ref_x + (gsize) r0 * D, n, wr->ref_logits, error))
    return FALSE;
  wr->logits = logits;
  wr->r0 = r0;
  wr->t0 = begin;
  lp_parallel_for (end - begin, 4, score_rows, wr);
  return TRUE;
}

/* Window w scored into job->per_window[w]. */
static gboolean
eval_window (WindowRows *wr, int w, GError **error)
{
  WindowJob *job = wr->job;
  int ctx = job->ctx;
  lp_tokens_window (job->tokens, (gsize) w * job->stride, ctx, job->bos, wr->win);
  if (!lp_forward_residual (wr->fw, wr->win, ctx, wr->x, error)
      || (wr->ref && !lp_forward_residual (wr->ref, wr->win, ctx, wr->ref_x, error))
      || !lp_forward_head_rows (wr->fw, wr->x, ctx, HEAD_ROWS, score_block, wr, error))
    return FALSE;
  WindowSums *s = &job->per_window[w];
  for (int t = job->first; t < ctx - 1; t++)
    {
      s->nll += wr->nll[t];
      s->nll_sq += wr->nll[t] * wr->nll[t];
      if (wr->ref)
        {
          s->kl += wr->kl[t];
          s->agree += wr->agree[t];
        }
      s->scored++;
    }
  return TRUE;
}

/* Take windows until none is left; the first error stops every worker. */
static void
run_windows (WindowJob *job, LpForward *fw, LpForward *ref, GError *error)
{
  int ctx = job->ctx;
  gsize D = (gsize) lp_model_config (lp_forward_model (job->fw))->dim;
  g_autofree gint32 *win = g_new (gint32, ctx);
  g_autofree float *x = g_new (float, (gsize) ctx * D);
  g_autofree float *ref_x = job->ref ? g_new (float, (gsize) ctx * D) : NULL;
  g_autofree float *ref_logits = job->ref ? g_new (float, (gsize) HEAD_ROWS * job->V) : NULL;
  g_autofree double *nll = g_new0 (double, ctx);
  g_autofree double *kl = g_new0 (double, ctx);
  g_autofree gboolean *agree = g_new0 (gboolean, ctx);
  WindowRows wr = { .job = job, .fw = fw, .ref = ref, .win = win, .x = x, .ref_x = ref_x, .ref_logits = ref_logits,
                    .nll = nll, .kl = kl, .agree = agree };
  while (error == NULL)
    {
      int w = g_atomic_int_add (&job->next, 1);
      if (w >= job->n_windows)
        break;
      if (!eval_window (&wr, w, &error))
        break;
      int done = g_atomic_int_add (&job->done, 1) + 1;
      g_mutex_lock (&job->lock);
      lp_progress_update (job->prog, done);
      g_mutex_unlock (&job->lock);
    }
  if (error != NULL)
    {
      g_mutex_lock (&job->lock);
      if (job->error == NULL)
        job->error = error;
      else
        g_error_free (error);
      g_atomic_int_set (&job->next, job->n_windows);
      g_mutex_unlock (&job->lock);
    }
}

/* A helper thread: its own forward state over the same (shared) weights. */
static gpointer
window_worker (gpointer data)
{
  WindowJob *job = data;
  GError *error = NULL;
  LpForward *fw = lp_forward_new (lp_forward_model (job->fw), job->backend, &error);
  LpForward *ref = fw && job->ref ? lp_forward_new (lp_forward_model (job->ref), job->backend, &error) : NULL;
  forward_setup (job, fw, ref);
  run_windows (job, fw, ref, error);
  lp_forward_free (fw);
  lp_forward_free (ref);
  return NULL;
}

int
lp_eval_blas_threads (const LpModel *model)
{
  return lp_cpu_blas_per_core_width (lp_model_config (model)->dim) ? 1 : 0;
}

double
lp_eval_kl_row (const double *lp, const double *lq, int V)
{
  double k = 0.0;
  for (int i = 0; i < V; i++)
    k += exp (lp[i]) * (lp[i] - lq[i]);
  return k;
}

gboolean
lp_eval_windows (LpModel *model, gsize n, const LpEvalOptions *o, LpEvalWindows *w, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  int ctx = o->ctx > 0 ? o->ctx : (int) MIN (c->ctx_len, 512);
  if (ctx < 2)
    {
      lp_set_error (error, LP_ERROR_INVALID, "eval: context: expected at least 2 tokens, found %d", ctx);
      return FALSE;
    }
  if (ctx > c->ctx_len)
    lp_warn ("%s declares a context length of %" G_GINT64_FORMAT "; evaluating at %d as asked",
               lp_model_source (model) ? lp_model_source (model) : "the model", c->ctx_len, ctx);
  gint32 bos = lp_tokens_bos (model);
  int lead = bos >= 0 ? 1 : 0; /* BOS tokens in a window */

  /* A window is BOS (when the model adds one) and then data tokens: ctx -
   * lead of them (lp_tokens_window).  Ours: windows follow each other in the
   * data, every token after the first scored.  llama.cpp's (llama-perplexity's
   * perplexity()): the text is tokenized once with BOS in front when the
   * model adds BOS, that stream is cut into chunks of ctx and each chunk's
   * first token is replaced by BOS (when the model adds BOS; else it stays),
   * so chunk w holds data tokens from w*ctx on (the one before is the token
   * BOS replaced); only logit rows ctx/2 .. ctx-2 are scored. */
  gsize stride = o->llama_cpp ? (gsize) ctx : (gsize) (ctx - lead);
  gsize need = (gsize) (ctx - lead); /* data tokens in one window */
  int n_windows = n < need ? 0 : (int) MIN ((n - need) / stride + 1, (gsize) G_MAXINT);
  if (o->max_windows > 0)
    n_windows = MIN (n_windows, o->max_windows);
  if (n_windows == 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "eval: data: expected at least %" G_GSIZE_FORMAT " tokens for one window, found %" G_GSIZE_FORMAT,
                    need, n);
      return FALSE;
    }
  *w = (LpEvalWindows) { .ctx = ctx, .first = o->llama_cpp ? ctx / 2 : 0, .n_windows = n_windows,
                         .stride = stride, .bos = bos };
  return TRUE;
}

gboolean
lp_eval_per_core (LpBackend *backend)
{
  return lp_cpu_blas_threads () == 1 && (backend == NULL || g_strcmp0 (backend->ops->name, "cpu") == 0);
}

gboolean
lp_eval_run (LpModel *model, const gint32 *tokens, gsize n, const LpEvalOptions *options, LpEvalResult *res,
             GError **error)
{
  LpEvalOptions o = { 0 };
  if (options)
    o = *options;
  const LpModelConfig *c = lp_model_config (model);
  memset (res, 0, sizeof *res);
  LpEvalWindows win;
  if (!lp_eval_windows (model, n, &o, &win, error))
    return FALSE;
  int ctx = win.ctx, n_windows = win.n_windows;

  g_autoptr (LpForward) fw = lp_forward_new (model, o.backend, error);
  if (fw == NULL)
    return FALSE;
  g_autoptr (LpForward) ref = NULL;
  if (o.reference)
    {
      const LpModelConfig *rc = lp_model_config (o.reference);
      if (rc->n_vocab != c->n_vocab)
        {
          lp_set_error (error, LP_ERROR_INVALID, "eval: reference vocabulary: expected %" G_GINT64_FORMAT " tokens like the model, found %" G_GINT64_FORMAT,
                        c->n_vocab, rc->n_vocab);
          return FALSE;
        }
      ref = lp_forward_new (o.reference, o.backend, error);
      if (ref == NULL)
        return FALSE;
    }

  /* Windows are independent: spread them over the cores, each worker with
   * its own forward state, and reduce per-window sums in window order so the
   * result does not depend on scheduling. */
  WindowJob job = { .fw = fw, .ref = ref, .tokens = tokens, .stride = win.stride, .ctx = ctx, .first = win.first,
                    .bos = win.bos, .n_windows = n_windows, .V = (int) c->n_vocab,
                    .backend = o.backend, .device_memory = o.device_memory, .llama_cpp = o.llama_cpp };
  forward_setup (&job, fw, ref);
  job.per_window = g_new0 (WindowSums, n_windows);
  job.prog = lp_progress_new ("eval", "windows", n_windows);
  /* One window per core when BLAS is single-threaded in this process (see
   * lp_eval_blas_threads; the count is never changed here: it is
   * process-wide); else one window at a time, each GEMM on BLAS's threads. */
  gboolean per_core = lp_eval_per_core (o.backend);
  int n_workers = per_core ? MIN (n_windows, lp_threads ()) : 1;
  gint64 t0 = g_get_monotonic_time ();
  GThread *workers[64];
  n_workers = MIN (n_workers, (int) G_N_ELEMENTS (workers));
  for (int i = 1; i < n_workers; i++)
    workers[i] = g_thread_new ("eval", window_worker, &job);
  run_windows (&job, fw, ref, NULL);
  for (int i = 1; i < n_workers; i++)
    g_thread_join (workers[i]);
  gint64 t_model = g_get_monotonic_time () - t0;
  lp_progress_finish (job.prog);
  if (job.error != NULL)
    {
      g_propagate_error (error, job.error);
      g_free (job.per_window);
      return FALSE;
    }
  double sum = 0.0, sum_sq = 0.0, kl = 0.0;
  gint64 scored = 0, agree = 0;
  for (int w = 0; w < n_windows; w++)
    {
      sum += job.per_window[w].nll;
      sum_sq += job.per_window[w].nll_sq;
      kl += job.per_window[w].kl;
      agree += job.per_window[w].agree;
      scored += job.per_window[w].scored;
    }
  g_free (job.per_window);
  res->n_windows = n_windows;
  res->ctx = ctx;
  res->n_scored = scored;
  res->nll = sum / scored;
  double var = MAX (sum_sq / scored - res->nll * res->nll, 0.0);
  res->nll_stderr = sqrt (var / MAX (scored - 1, 1));
  res->ppl = exp (res->nll);
  res->have_reference = ref != NULL;
  if (ref)
    {
      res->kl = kl / scored;
      res->top1 = (double) agree / scored;
    }
  res->seconds = t_model / 1e6;
  res->tokens_per_s = res->seconds > 0 ? (double) n_windows * ctx / res->seconds : 0.0;
  res->n_params = lp_model_n_params (model);
  res->n_bytes = lp_model_n_bytes (model);
  res->bits_per_weight = res->n_params ? 8.0 * res->n_bytes / res->n_params : 0.0;
  return TRUE;
}
