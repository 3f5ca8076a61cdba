/* llmpress — the calibration service (see calibration.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/calibration.h>
#include <llmpress/progress.h>

struct _LpCalibration {
  LpCalibOptions opt;
  gint32 *samples; /* [N, L] */
  int n_heldout;    /* M: the slots the samples did not take */
  gint32 *heldout;  /* [M, L], in stream order */
  char *digest;
};

LpCalibration *
lp_calibration_new (const gint32 *tokens, gsize n, gint32 bos, const LpCalibOptions *options, GError **error)
{
  LpCalibOptions o = LP_CALIB_OPTIONS_INIT;
  if (options)
    o = *options;
  if (o.n_samples < 1 || o.seq_len < 2)
    {
      lp_set_error (error, LP_ERROR_INVALID, "calibration: expected at least 1 sample of at least 2 tokens, found %d of %d",
                    o.n_samples, o.seq_len);
      return NULL;
    }
  gsize stride = bos >= 0 ? (gsize) o.seq_len - 1 : (gsize) o.seq_len; /* data tokens per sample */
  gsize slots = n / stride;
  if (slots < (gsize) o.n_samples)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "calibration data: expected at least %d x %" G_GSIZE_FORMAT " = %" G_GSIZE_FORMAT " tokens for %d samples, found %" G_GSIZE_FORMAT,
                    o.n_samples, stride, o.n_samples * stride, o.n_samples, n);
      return NULL;
    }
  /* Partial Fisher-Yates over slot indices: N distinct slots. */
  g_autofree gsize *slot = g_new (gsize, slots);
  for (gsize i = 0; i < slots; i++)
    slot[i] = i;
  guint64 state = o.seed;
  for (int i = 0; i < o.n_samples; i++)
    {
      gsize j = i + lp_random_next (&state) % (slots - i);
      gsize tmp = slot[i];
      slot[i] = slot[j];
      slot[j] = tmp;
    }
  LpCalibration *cal = g_new0 (LpCalibration, 1);
  cal->opt = o;
  cal->samples = g_new (gint32, (gsize) o.n_samples * o.seq_len);
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  for (int i = 0; i < o.n_samples; i++)
    lp_tokens_window (tokens, slot[i] * stride, o.seq_len, bos, cal->samples + (gsize) i * o.seq_len);
  /* The slots left over are the held-out windows: cut the same way from the
   * same range, so a score on them is a fair check on what the samples fit. */
  g_autofree gboolean *taken = g_new0 (gboolean, slots);
  for (int i = 0; i < o.n_samples; i++)
    taken[slot[i]] = TRUE;
  cal->n_heldout = (int) MIN (slots - (gsize) o.n_samples, (gsize) G_MAXINT);
  cal->heldout = g_new (gint32, (gsize) cal->n_heldout * o.seq_len);
  for (gsize s = 0, k = 0; s < slots && k < (gsize) cal->n_heldout; s++)
    if (!taken[s])
      lp_tokens_window (tokens, s * stride, o.seq_len, bos, cal->heldout + k++ * o.seq_len);
  g_checksum_update (sum, (const guchar *) cal->samples, (gsize) o.n_samples * o.seq_len * sizeof (gint32));
  g_checksum_update (sum, (const guchar *) &o.mode, sizeof o.mode);
  cal->digest = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return cal;
}

void
lp_calibration_free (LpCalibration *cal)
{
  if (cal == NULL)
    return;
  g_free (cal->samples);
  g_free (cal->heldout);
  g_free (cal->digest);
  g_free (cal);
}

int
lp_calibration_n_samples (const LpCalibration *cal)
{
  return cal->opt.n_samples;
}

int
lp_calibration_seq_len (const LpCalibration *cal)
{
  return cal->opt.seq_len;
}

const gint32 *
lp_calibration_sample (const LpCalibration *cal, int i)
{
  g_return_val_if_fail (i >= 0 && i < cal->opt.n_samples, NULL);
  return cal->samples + (gsize) i * cal->opt.seq_len;
}

int
lp_calibration_n_heldout (const LpCalibration *cal)
{
  return cal->n_heldout;
}

const gint32 *
lp_calibration_heldout (const LpCalibration *cal, int i)
{
  g_return_val_if_fail (i >= 0 && i < cal->n_heldout, NULL);
  return cal->heldout + (gsize) i * cal->opt.seq_len;
}

const char *
lp_calibration_digest (const LpCalibration *cal)
{
  return cal->digest;
}

/* Tokens of one input gathered before their Hessian update: one syrk over
 * several samples' rows at once, so the backend mirrors the triangle and
 * starts its threads once per batch, not once per sample; bounded in bytes
 * so that wide inputs (n in the tens of thousands) stay at one sample. */
#define HESSIAN_BATCH_TOKENS 2048
#define HESSIAN_BATCH_BYTES (16u << 20)

/* Per core, the statistics of the parts in flight or waiting for their turn
 * to be added stay under this (beyond it: one sample at a time). */
#define PER_CORE_STATS_BYTES (1u << 30)

typedef struct {
  float *rows;      /* [cap, n] inputs not yet in the Hessian */
  int n_rows, cap;
} Pending;

typedef struct {
  LpActStats *stats;   /* [LP_LINEAR_IN_COUNT] where sums go */
  LpActStats *capture; /* [LP_LINEAR_IN_COUNT] whose inputs hold every sample's rows */
  LpCalibWhat what;
  LpBackend *be;
  gint64 capture_row[LP_LINEAR_IN_COUNT];
  Pending pending[LP_LINEAR_IN_COUNT];
} Collector;

/* The pending rows of input `which` into its Hessian. */
static void
hessian_flush (Collector *c, int which)
{
  Pending *p = &c->pending[which];
  LpActStats *s = &c->stats[which];
  if (p->n_rows > 0)
    lp_syrk (c->be, p->n_rows, s->n, p->rows, s->n, s->hessian);
  p->n_rows = 0;
}

/* X[T, n] into the Hessian of `which`: gathered while it fits the batch,
 * straight to the backend when a single call is larger than the batch. */
static void
hessian_add (Collector *c, int which, const float *X, int T, int n)
{
  Pending *p = &c->pending[which];
  if (p->cap == 0)
    {
      gsize by_bytes = HESSIAN_BATCH_BYTES / ((gsize) n * sizeof (float));
      p->cap = (int) MIN ((gsize) HESSIAN_BATCH_TOKENS, by_bytes);
    }
  if (T > p->cap)
    {
      hessian_flush (c, which);
      lp_syrk (c->be, T, n, X, n, c->stats[which].hessian);
      return;
    }
  if (p->n_rows + T > p->cap)
    hessian_flush (c, which);
  if (p->rows == NULL)
    p->rows = g_new (float, (gsize) p->cap * n);
  memcpy (p->rows + (gsize) p->n_rows * n, X, (gsize) T * n * sizeof (float));
  p->n_rows += T;
}

static void
collector_finish (Collector *c)
{
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      if (c->what & LP_CALIB_HESSIAN)
        hessian_flush (c, w);
      g_clear_pointer (&c->pending[w].rows, g_free);
    }
}

static void
collect (gpointer user_data, int layer, LpLinearInput which, const float *X, int T, int n)
{
  Collector *c = user_data;
  LpActStats *s = &c->stats[which];
  if (c->what & LP_CALIB_HESSIAN)
    hessian_add (c, which, X, T, n);
  if (c->what & LP_CALIB_CHANNEL_STATS)
    for (int t = 0; t < T; t++)
      for (int j = 0; j < n; j++)
        {
          double x = X[(gsize) t * n + j];
          s->sum_sq[j] += x * x;
          s->sum_abs[j] += fabs (x);
        }
  if (c->what & LP_CALIB_CAPTURE)
    {
      memcpy (c->capture[which].inputs + c->capture_row[which] * n, X, (gsize) T * n * sizeof (float));
      c->capture_row[which] += T;
    }
  s->n_tokens += T;
}

static void
input_dims (const LpModelConfig *c, int dims[LP_LINEAR_IN_COUNT])
{
  dims[LP_LINEAR_IN_QKV] = (int) c->dim;
  dims[LP_LINEAR_IN_ATTN_OUT] = (int) (c->n_heads * c->head_dim);
  dims[LP_LINEAR_IN_FFN] = (int) c->dim;
  dims[LP_LINEAR_IN_DOWN] = (int) c->ffn_dim;
}

static void
stats_init (LpActStats *stats, const LpModelConfig *c, int layer, LpCalibWhat what, gint64 total_tokens)
{
  int dims[LP_LINEAR_IN_COUNT];
  input_dims (c, dims);
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      LpActStats *s = &stats[w];
      memset (s, 0, sizeof *s);
      s->layer = layer;
      s->which = (LpLinearInput) w;
      s->n = dims[w];
      if (what & LP_CALIB_HESSIAN)
        s->hessian = g_new0 (float, (gsize) s->n * s->n);
      if (what & LP_CALIB_CHANNEL_STATS)
        {
          s->sum_sq = g_new0 (double, s->n);
          s->sum_abs = g_new0 (double, s->n);
        }
      if (what & LP_CALIB_CAPTURE)
        s->inputs = g_new (float, (gsize) total_tokens * s->n);
    }
}

static void
stats_clear (LpActStats *stats)
{
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      g_free (stats[w].hessian);
      g_free (stats[w].sum_sq);
      g_free (stats[w].sum_abs);
      g_free (stats[w].inputs);
      memset (&stats[w], 0, sizeof stats[w]);
    }
}

/* dst += src, sums and token counts (not the captured rows). */
static void
stats_add (LpActStats *dst, const LpActStats *src)
{
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      gsize n = (gsize) dst[w].n;
      if (dst[w].hessian)
        for (gsize i = 0; i < n * n; i++)
          dst[w].hessian[i] += src[w].hessian[i];
      if (dst[w].sum_sq)
        for (gsize j = 0; j < n; j++)
          {
            dst[w].sum_sq[j] += src[w].sum_sq[j];
            dst[w].sum_abs[j] += src[w].sum_abs[j];
          }
      dst[w].n_tokens += src[w].n_tokens;
    }
}

/* The bytes of one part's sums (stats_init without the captured rows). */
static gsize
stats_bytes (const LpModelConfig *c, LpCalibWhat what)
{
  int dims[LP_LINEAR_IN_COUNT];
  input_dims (c, dims);
  gsize b = 0;
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      if (what & LP_CALIB_HESSIAN)
        b += (gsize) dims[w] * dims[w] * sizeof (float);
      if (what & LP_CALIB_CHANNEL_STATS)
        b += 2 * (gsize) dims[w] * sizeof (double);
    }
  return b;
}

/* ---- one block over every sample ----
 *
 * One sample at a time, each GEMM on OpenBLAS's threads; or, when OpenBLAS
 * runs on one thread (chosen so, or switched to it for the call: a narrow
 * model, lp_cpu_blas_per_core_width), samples one per core, as evaluation
 * spreads its windows: its small GEMMs (T x D x D) left BLAS's other
 * threads spinning between them.
 * Per core, the samples go in parts of one Hessian batch (the samples the
 * one-at-a-time order gathers into one syrk), each part's sums gathered
 * alone and added to the block's in part order, so the result depends
 * neither on scheduling nor on the thread count; it differs from the
 * one-at-a-time order's in summation order only. */

typedef struct {
  LpModel *model;    /* the statistics' model: the original (independent mode) or work */
  LpBackend *be;
  GPtrArray *idle;   /* LpForward over model, free to take */
  float *x;          /* [N, L, D] the residual streams */
  int layer, N, L, D;
  gboolean independent;
  LpCalibWhat what;
  LpActStats *totals; /* [LP_LINEAR_IN_COUNT] the block's statistics */
  int per_part, n_parts;
  gboolean per_core;
  GMutex lock;
  GCond reduced;
  LpActStats **parked; /* [n_parts] parts done, waiting for their turn */
  int next, n_parked, max_parked;
  GError *error;
} BlockJob;

/* A forward over job->model: one left by an earlier sample, else a new one
 * (its weights are the model's: on the CPU wrapped, not copied). */
static LpForward *
forward_take (BlockJob *j, GError **error)
{
  g_mutex_lock (&j->lock);
  LpForward *fw = j->idle->len > 0 ? g_ptr_array_steal_index (j->idle, j->idle->len - 1) : NULL;
  g_mutex_unlock (&j->lock);
  return fw ? fw : lp_forward_new (j->model, j->be, error);
}

static void
forward_give (BlockJob *j, LpForward *fw)
{
  g_mutex_lock (&j->lock);
  g_ptr_array_add (j->idle, fw);
  g_mutex_unlock (&j->lock);
}

static void
job_fail (BlockJob *j, GError *error)
{
  g_mutex_lock (&j->lock);
  if (j->error == NULL)
    j->error = error;
  else
    g_error_free (error);
  g_mutex_unlock (&j->lock);
}

static gboolean
job_failed (BlockJob *j)
{
  g_mutex_lock (&j->lock);
  gboolean failed = j->error != NULL;
  g_mutex_unlock (&j->lock);
  return failed;
}

/* Part p's sums into the block's, after those of every part before it;
 * waits (its sums parked) while too many parts are parked. */
static void
part_reduce (BlockJob *j, int p, LpActStats *part)
{
  g_mutex_lock (&j->lock);
  j->parked[p] = part;
  j->n_parked++;
  while (j->next < j->n_parts && j->parked[j->next] != NULL)
    {
      LpActStats *s = j->parked[j->next];
      stats_add (j->totals, s);
      stats_clear (s);
      g_free (s);
      j->parked[j->next++] = NULL;
      j->n_parked--;
    }
  g_cond_broadcast (&j->reduced);
  /* The part that comes next is being computed by a thread that is not
   * waiting here (parts are claimed in order), so this ends. */
  while (j->parked[p] != NULL && j->n_parked > j->max_parked)
    g_cond_wait (&j->reduced, &j->lock);
  g_mutex_unlock (&j->lock);
}

/* Samples of parts [p0, p1) through the block with the statistics hooks. */
static void
stat_parts (gint64 p0, gint64 p1, gpointer data)
{
  BlockJob *j = data;
  const LpModelConfig *c = lp_model_config (j->model);
  for (gint64 p = p0; p < p1; p++)
    {
      LpActStats *part = j->totals;
      if (j->per_core)
        {
          part = g_new (LpActStats, LP_LINEAR_IN_COUNT);
          stats_init (part, c, j->layer, j->what & ~LP_CALIB_CAPTURE, 0);
        }
      Collector col = { part, j->totals, j->what, j->be, { 0 }, { { 0 } } };
      LpForwardHooks hooks = { collect, &col };
      GError *error = NULL;
      LpForward *fw = job_failed (j) ? NULL : forward_take (j, &error);
      g_autofree float *scratch = j->independent || fw == NULL ? NULL : g_new (float, (gsize) j->L * j->D);
      int i1 = (int) MIN ((p + 1) * j->per_part, j->N);
      for (int i = (int) p * j->per_part; fw != NULL && i < i1 && error == NULL; i++)
        {
          /* Independent mode runs the original block, whose outputs are
           * also the next block's inputs; sequential mode reruns the
           * (possibly replaced) block afterwards. */
          float *xi = j->x + (gsize) i * j->L * j->D;
          if (!j->independent)
            memcpy (scratch, xi, (gsize) j->L * j->D * sizeof (float));
          for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
            col.capture_row[w] = (gint64) i * j->L;
          lp_forward_block (fw, j->layer, j->independent ? xi : scratch, j->L, NULL, &hooks, &error);
        }
      collector_finish (&col);
      if (fw != NULL)
        forward_give (j, fw);
      if (error != NULL)
        job_fail (j, error);
      if (j->per_core)
        part_reduce (j, (int) p, part);
    }
}

/* Samples [i0, i1) through the block as it is now (sequential mode: the
 * next block's inputs). */
static void
update_samples (gint64 i0, gint64 i1, gpointer data)
{
  BlockJob *j = data;
  GError *error = NULL;
  LpForward *fw = job_failed (j) ? NULL : forward_take (j, &error);
  for (gint64 i = i0; fw != NULL && i < i1 && error == NULL; i++)
    lp_forward_block (fw, j->layer, j->x + (gsize) i * j->L * j->D, j->L, NULL, NULL, &error);
  if (fw != NULL)
    forward_give (j, fw);
  if (error != NULL)
    job_fail (j, error);
}

/* func over [0, n): on every core when per core, else in this thread. */
static void
spread (BlockJob *j, gint64 n, LpParallelFunc func)
{
  if (j->per_core)
    lp_parallel_for (n, 1, func, j);
  else
    func (0, n, j);
}

static gboolean
job_error (BlockJob *j, GError **error)
{
  if (j->error == NULL)
    return TRUE;
  g_propagate_error (error, g_steal_pointer (&j->error));
  return FALSE;
}

gboolean
lp_calibration_run (LpCalibration *cal, LpModel *original, LpModel *work, LpBackend *backend, LpCalibWhat what,
                    LpCalibBlockFunc func, gpointer user_data, GError **error)
{
  const LpModelConfig *c = lp_model_config (work);
  int N = cal->opt.n_samples, L = cal->opt.seq_len, D = (int) c->dim;
  gboolean independent = cal->opt.mode == LP_CALIB_INDEPENDENT && original != NULL && original != work;
  g_autoptr (LpBackend) be = backend ? lp_backend_ref (backend) : lp_backend_cpu_new ();
  g_autoptr (LpForward) fw = lp_forward_new (work, be, error);
  if (fw == NULL)
    return FALSE;
  g_autoptr (LpForward) fo = independent ? lp_forward_new (original, be, error) : NULL;
  if (independent && fo == NULL)
    return FALSE;

  /* The residual stream of every sample: the only activations kept across blocks. */
  g_autofree float *x = g_try_new (float, (gsize) N * L * D);
  if (x == NULL)
    {
      lp_set_error (error, LP_ERROR_FAILED, "calibration: out of memory for %d x %d x %d activations", N, L, D);
      return FALSE;
    }
  for (int i = 0; i < N; i++)
    if (!lp_forward_embed (fw, lp_calibration_sample (cal, i), L, x + (gsize) i * L * D, error))
      return FALSE;

  int per_part = MAX (1, HESSIAN_BATCH_TOKENS / L), n_parts = (N + per_part - 1) / per_part;
  int threads = lp_threads ();
  gboolean can_per_core = threads > 1 && N > 1 && lp_backend_is_cpu (be)
                          && stats_bytes (c, what) * 2 * (gsize) threads <= PER_CORE_STATS_BYTES;
  /* A narrow model runs per core even where nobody chose one BLAS thread
   * (llmpress run): OpenBLAS goes to one thread for this call, the OBS
   * sweeps of func included, and back after (unless the count was chosen
   * or other nodes run BLAS meanwhile: lp_cpu_blas_threads_push). */
  int blas_was = can_per_core && lp_cpu_blas_per_core_width (D) ? lp_cpu_blas_threads_push (1) : 0;
  gboolean per_core = can_per_core && lp_cpu_blas_threads () == 1;
  LpActStats stats[LP_LINEAR_IN_COUNT];
  BlockJob job = { .model = independent ? original : work, .be = be, .x = x, .N = N, .L = L, .D = D,
                   .independent = independent, .what = what, .totals = stats,
                   .per_part = per_core ? per_part : N, .n_parts = per_core ? n_parts : 1, .per_core = per_core,
                   .max_parked = threads };
  g_mutex_init (&job.lock);
  g_cond_init (&job.reduced);
  job.idle = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_forward_free);
  g_ptr_array_add (job.idle, independent ? g_steal_pointer (&fo) : g_steal_pointer (&fw));
  job.parked = g_new0 (LpActStats *, job.n_parts);
  gboolean ok = TRUE;
  g_autoptr (LpProgress) prog = lp_progress_new ("calibration", "blocks", c->n_layers);
  for (int l = 0; l < c->n_layers && ok; l++)
    {
      job.layer = l;
      job.next = 0;
      stats_init (stats, c, l, what, (gint64) N * L);
      spread (&job, job.n_parts, stat_parts);
      ok = job_error (&job, error) && (func == NULL || func (user_data, l, stats, error));
      stats_clear (stats);
      if (ok && !independent)
        {
          /* The block's weights may have been replaced: every forward
           * uploads them again. */
          for (guint f = 0; f < job.idle->len; f++)
            lp_forward_invalidate (job.idle->pdata[f]);
          spread (&job, N, update_samples);
          ok = job_error (&job, error);
        }
      if (ok)
        lp_progress_update (prog, l + 1);
    }
  lp_cpu_blas_threads_pop (blas_was);
  g_ptr_array_unref (job.idle);
  g_free (job.parked);
  g_mutex_clear (&job.lock);
  g_cond_clear (&job.reduced);
  return ok;
}
