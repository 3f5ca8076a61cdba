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

typedef struct {
  float *rows;      /* [cap, n] inputs not yet in the Hessian */
  int n_rows, cap;
} Pending;

typedef struct {
  LpActStats *stats; /* [LP_LINEAR_IN_COUNT] */
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
      memcpy (s->inputs + c->capture_row[which] * n, X, (gsize) T * n * sizeof (float));
      c->capture_row[which] += T;
    }
  s->n_tokens += T;
}

static void
stats_init (LpActStats *stats, const LpModelConfig *c, int layer, LpCalibWhat what, gint64 total_tokens)
{
  int dims[LP_LINEAR_IN_COUNT] = { (int) c->dim, (int) (c->n_heads * c->head_dim), (int) c->dim, (int) c->ffn_dim };
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

  LpActStats stats[LP_LINEAR_IN_COUNT];
  g_autoptr (LpProgress) prog = lp_progress_new ("calibration", "blocks", c->n_layers);
  for (int l = 0; l < c->n_layers; l++)
    {
      stats_init (stats, c, l, what, (gint64) N * L);
      Collector col = { stats, what, be, { 0 }, { { 0 } } };
      LpForwardHooks hooks = { collect, &col };
      /* Statistics from the block's current inputs.  Independent mode runs
       * the original block, whose outputs are also the next block's inputs;
       * sequential mode reruns the (possibly replaced) block afterwards. */
      LpForward *stat_fw = independent ? fo : fw;
      g_autofree float *scratch = independent ? NULL : g_new (float, (gsize) L * D);
      for (int i = 0; i < N; i++)
        {
          float *xi = x + (gsize) i * L * D;
          float *target = independent ? xi : scratch;
          if (!independent)
            memcpy (scratch, xi, (gsize) L * D * sizeof (float));
          if (!lp_forward_block (stat_fw, l, target, L, NULL, &hooks, error))
            {
              collector_finish (&col);
              stats_clear (stats);
              return FALSE;
            }
        }
      collector_finish (&col);
      gboolean ok = func == NULL || func (user_data, l, stats, error);
      stats_clear (stats);
      if (!ok)
        return FALSE;
      if (!independent)
        {
          lp_forward_invalidate (fw);
          for (int i = 0; i < N; i++)
            if (!lp_forward_block (fw, l, x + (gsize) i * L * D, L, NULL, NULL, error))
              return FALSE;
        }
      lp_progress_update (prog, l + 1);
    }
  return TRUE;
}
