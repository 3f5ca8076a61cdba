/* llmpress quantize plugin — the bit-budget allocator of quantize.rtn,
 * quantize.gptq and quantize.awq (target_bpw=, target_size=, candidates=):
 * one grid per tensor, from a list of candidates, so that the saved GGUF
 * file meets the budget, spending the bytes where the calibration data says
 * they buy the most.
 *
 * The budget is the whole file: header and metadata (tokenizer included),
 * every tensor's data with its alignment padding, the tensors left as they
 * are (norms), scales, mins and the fallbacks of rows a block does not
 * divide.  target_bpw=b means file bytes * 8 / (parameters of the model)
 * <= b.  The allocator measures the file exactly as the GGUF writer writes
 * it: it saves the model with every candidate tensor on its cheapest grid
 * to a temporary file (the part that does not depend on the choice is that
 * size minus those tensors' aligned data), and each grid's cost is its
 * aligned data as the writer writes it.  (An integer grid is written as its
 * dense values today, so its cost is that.)
 *
 * Sensitivity of tensor t on candidate k: the output error RTN on that grid
 * causes over the calibration tokens, relative to the output energy,
 *   err(t, k) = tr(dW H dW^T) / tr(W H W^T),   dW = W - Q_k(W),
 * with H = X^T X the input Hessian (so no activations are kept):
 *  - a linear weight of a block: its input Hessian from the statistics;
 *  - the token embedding: row v is read once per occurrence of token v, so
 *    H is diag(count of v in the calibration samples) over rows;
 *  - the output head (or a tied embedding, which is also the head): its
 *    input is the final norm's output; that Hessian is approximated by the
 *    last block's ffn input Hessian (also a normed residual stream) with
 *    ffn_norm's weights swapped for output_norm's; a tied embedding adds the
 *    two relative errors.
 * Each tensor's relative errors are then weighted by alpha(t), the KL
 * (nats/token, against the unquantized model, on the first calibration
 * windows) that its cheapest grid alone causes, over its relative error
 * there: the weighted errors estimate what each choice does to the output
 * distribution, and are summed over tensors.
 * Allocation (a greedy knapsack on each tensor's lower convex hull): every
 * tensor starts on its cheapest candidate; then the upgrade (to any
 * candidate with more bytes and less weighted error) with the largest error
 * drop per extra byte that still fits is taken, until none fits.  Two-bit grids are not in the default ladders: the per-layer error
 * does not see how a 2-bit layer's damage compounds through the layers
 * after it, and on stories260K an allocation with 2-bit tensors lost to
 * uniform 3 bits at the same size. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include <llmpress/eval.h>

#include "quantize.h"

#define ALIGN 32 /* GGUF's default alignment: every tensor's data is padded to it */

typedef struct {
  LpTensor *t;
  double err[Q_MAX_CANDIDATES];
  guint64 bytes[Q_MAX_CANDIDATES]; /* file bytes of the tensor's data on each candidate */
  int rung;
  LpTensor *cheapest;              /* the tensor on its cheapest candidate (for the probe file) */
  double alpha;                    /* KL per unit of relative error */
} Cand;

/* Calibration windows each tensor's KL is measured on. */
#define KL_WINDOWS 4

/* One use of a weight W[R, C]: its input Hessian H[C, C] (NULL: identity)
 * and a weight per row (NULL: 1). */
typedef struct {
  const float *H;
  const double *row_w;
} Use;

/* sum_r row_w[r] * d_r H d_r^T for d[R, C]; tmp[R, C] is scratch. */
static double
quad (LpBackend *be, const float *d, gint64 rows, int n, const Use *u, float *tmp)
{
  if (u->H != NULL)
    lp_gemm (be, FALSE, (int) rows, n, n, 1.f, d, n, u->H, n, 0.f, tmp, n);
  const float *m = u->H != NULL ? tmp : d;
  double s = 0;
  for (gint64 r = 0; r < rows; r++)
    {
      double rs = 0;
      for (int j = 0; j < n; j++)
        rs += (double) d[r * n + j] * m[r * n + j];
      s += (u->row_w ? u->row_w[r] : 1.0) * rs;
    }
  return s;
}

/* Bytes a tensor's data takes in the GGUF file: what its form writes, each
 * part padded to the alignment. */
static gboolean
tensor_file_bytes (LpTensor *t, guint64 *out, GError **error)
{
  g_autoptr (GPtrArray) parts = lp_tensor_save_tensors (t, error);
  if (parts == NULL)
    return FALSE;
  *out = 0;
  for (guint i = 0; i < parts->len; i++)
    *out += ((guint64) lp_tensor_n_bytes (parts->pdata[i]) + ALIGN - 1) / ALIGN * ALIGN;
  return TRUE;
}

gboolean
q_file_bytes (LpModel *model, guint64 *out, GError **error)
{
  g_autofree char *dir = g_dir_make_tmp ("llmpress-budget-XXXXXX", NULL);
  if (dir == NULL)
    {
      lp_set_error (error, LP_ERROR_IO, "budget: cannot create a temporary directory to measure the file");
      return FALSE;
    }
  g_autofree char *path = g_build_filename (dir, "measure.gguf", NULL);
  gboolean ok = lp_gguf_save (model, path, NULL, error);
  GStatBuf st;
  if (ok && g_stat (path, &st) != 0)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot stat the file just written", path);
      ok = FALSE;
    }
  if (ok)
    *out = (guint64) st.st_size;
  g_unlink (path);
  g_rmdir (dir);
  return ok;
}

/* err and bytes of every candidate for one tensor, used as `uses`. */
static gboolean
measure (LpBackend *be, const QOptions *o, const QBudget *b, Cand *c, const Use *uses, int n_uses, GError **error)
{
  LpTensor *t = c->t;
  gint64 rows = lp_tensor_n_rows (t);
  int n = (int) lp_tensor_row_length (t);
  g_autofree float *w = lp_tensor_dup_f32 (t, error);
  if (w == NULL || !q_check_input (o, t, w, error))
    return FALSE;
  g_autofree float *dw = g_new (float, rows * n), *tmp = g_new (float, rows * n);
  double energy[4];
  for (int u = 0; u < n_uses; u++)
    energy[u] = MAX (quad (be, w, rows, n, &uses[u], tmp), 1e-30);
  for (int k = 0; k < b->n_cand; k++)
    {
      QOptions ok = *o;
      ok.assigned = NULL;
      ok.overrides[0] = b->cand[k];
      ok.n_overrides = 1;
      gboolean odd;
      QGrid g = q_grid_for (&ok, t->name, n, &odd);
      gint64 lost;
      g_autoptr (LpTensor) q = q_round (be, &g, t, w, NULL, &lost, error);
      if (q == NULL)
        return FALSE;
      g_autofree float *v = lp_tensor_dup_f32 (q, error);
      if (v == NULL || !tensor_file_bytes (q, &c->bytes[k], error))
        return FALSE;
      for (gint64 i = 0; i < rows * n; i++)
        dw[i] = w[i] - v[i];
      c->err[k] = 0;
      for (int u = 0; u < n_uses; u++)
        c->err[k] += quad (be, dw, rows, n, &uses[u], tmp) / energy[u];
      if (c->cheapest == NULL || c->bytes[k] < c->bytes[c->rung]
          || (c->bytes[k] == c->bytes[c->rung] && c->err[k] < c->err[c->rung]))
        {
          g_clear_pointer (&c->cheapest, lp_tensor_unref);
          c->cheapest = g_steal_pointer (&q);
          c->rung = k;
        }
    }
  return TRUE;
}

/* Greedy: the best error drop per extra byte that fits, until none fits;
 * returns the bytes used. */
static guint64
allocate (Cand *c, guint n, int n_cand, guint64 budget)
{
  guint64 used = 0;
  for (guint i = 0; i < n; i++)
    used += c[i].bytes[c[i].rung];
  for (;;)
    {
      int best = -1, best_to = -1;
      double best_gain = 0;
      for (guint i = 0; i < n; i++)
        for (int j = 0; j < n_cand; j++)
          {
            int k = c[i].rung;
            if (c[i].err[j] >= c[i].err[k] || c[i].bytes[j] < c[i].bytes[k])
              continue;
            guint64 extra = c[i].bytes[j] - c[i].bytes[k];
            double gain = (c[i].err[k] - c[i].err[j]) / (double) MAX (extra, 1);
            if (used + extra <= budget && (best < 0 || gain > best_gain))
              best = (int) i, best_to = j, best_gain = gain;
          }
      if (best < 0)
        return used;
      used = used - c[best].bytes[c[best].rung] + c[best].bytes[best_to];
      c[best].rung = best_to;
    }
}

/* Occurrences of each of the V tokens in the calibration samples (NULL
 * without calibration data: every row then weighs the same). */
static double *
token_counts (LpCalibration *cal, gint64 V)
{
  if (cal == NULL)
    return NULL;
  double *c = g_new0 (double, V);
  int L = lp_calibration_seq_len (cal);
  for (int i = 0; i < lp_calibration_n_samples (cal); i++)
    {
      const gint32 *s = lp_calibration_sample (cal, i);
      for (int j = 0; j < L; j++)
        if (s[j] >= 0 && s[j] < V)
          c[s[j]] += 1;
    }
  return c;
}

/* The output head's input Hessian [D, D], approximated from the last
 * block's ffn input (see the top); NULL when the model lacks a piece. */
static float *
head_hessian (LpModel *model, LpStats *stats, gint64 D)
{
  gint64 L = lp_model_config (model)->n_layers;
  g_autofree char *ffn = g_strdup_printf ("blk.%" G_GINT64_FORMAT ".ffn_gate.weight", L - 1);
  g_autofree char *ffn_norm = g_strdup_printf ("blk.%" G_GINT64_FORMAT ".ffn_norm.weight", L - 1);
  const LpActStats *e = lp_stats_lookup (stats, ffn);
  LpTensor *gf = lp_model_tensor (model, ffn_norm), *go = lp_model_tensor (model, "output_norm.weight");
  if (e == NULL || e->hessian == NULL || e->n != D || gf == NULL || go == NULL || lp_tensor_n_elements (gf) != D
      || lp_tensor_n_elements (go) != D)
    return NULL;
  g_autofree float *a = lp_tensor_dup_f32 (gf, NULL), *o = lp_tensor_dup_f32 (go, NULL);
  if (a == NULL || o == NULL)
    return NULL;
  g_autofree float *s = g_new (float, D);
  for (gint64 j = 0; j < D; j++)
    s[j] = a[j] != 0.f ? o[j] / a[j] : 0.f;
  float *H = g_new (float, D * D);
  for (gint64 i = 0; i < D; i++)
    for (gint64 j = 0; j < D; j++)
      H[i * D + j] = e->hessian[i * D + j] * s[i] * s[j];
  return H;
}

const char *
q_budget_name (const QOverride *v, char *buf, gsize size)
{
  if (v->format == LP_DTYPE_F32)
    g_snprintf (buf, size, "int%d", v->bits);
  else
    g_strlcpy (buf, lp_dtype_name (v->format), size);
  return buf;
}

static void
cand_clear (gpointer p)
{
  g_clear_pointer (&((Cand *) p)->cheapest, lp_tensor_unref);
}

/* Measure one selected tensor: the uses its name says it has. */
static gboolean
measure_tensor (LpPassContext *ctx, const QOptions *o, const QBudget *b, LpModel *model, LpStats *stats,
                const double *counts, const float *H_head, Cand *c, GError **error)
{
  LpTensor *t = c->t;
  gboolean embd = strcmp (t->name, "token_embd.weight") == 0, head = strcmp (t->name, "output.weight") == 0;
  Use uses[2];
  int n_uses = 0;
  if (embd)
    uses[n_uses++] = (Use) { NULL, counts };
  if (head || (embd && lp_model_tensor (model, "output.weight") == NULL))
    uses[n_uses++] = (Use) { H_head, NULL };
  if (!embd && !head)
    {
      const LpActStats *e = lp_stats_lookup (stats, t->name);
      if (e == NULL || e->hessian == NULL || e->n != lp_tensor_row_length (t))
        {
          lp_set_error (error, LP_ERROR_MISSING,
                        "budget: expected the input Hessian of every selected tensor, found none for it (only linear "
                        "weights of blocks, the embedding and the output head have one: narrow targets=)");
          return FALSE;
        }
      uses[n_uses++] = (Use) { e->hessian, NULL };
    }
  return measure (lp_pass_context_get_backend (ctx), o, b, c, uses, n_uses, error);
}

/* The KL of the model with tensor c on its cheapest grid (the others as
 * they are) against the reference's windows. */
static gboolean
tensor_kl (LpEvalReference *ref, LpModel *model, const Cand *c, double *kl, GError **error)
{
  g_autoptr (LpModel) m = lp_model_derive (model);
  lp_model_set_tensor (m, c->cheapest);
  return lp_eval_reference_kl (ref, m, kl, error);
}

/* alpha of every tensor: the KL its cheapest grid causes on the first
 * calibration windows over its relative error there, so that the allocator
 * weighs a tensor's error by what it does to the output distribution (a
 * tied embedding is measured in both roles at once).  Measured per tensor:
 * on stories260K one weight per kind of tensor (attn_q of every block, ...)
 * left GPTQ at 4.9964 at Q4_K_M's size, one per tensor reached 4.9850.
 * The unquantized model's logits and block inputs are computed once
 * (LpEvalReference), and each tensor's forward pass starts at its block:
 * the same KL as lp_eval_run's, for a fraction of its cost.
 * Without calibration data, or where the KL or error is 0, alpha is 1 (the
 * relative error itself). */
static gboolean
tensor_weights (LpPassContext *ctx, LpModel *model, Cand *c, guint n, LpCalibration *cal, GError **error)
{
  for (guint i = 0; i < n; i++)
    c[i].alpha = 1;
  if (cal == NULL)
    return TRUE;
  int L = lp_calibration_seq_len (cal), nw = MIN (KL_WINDOWS, lp_calibration_n_samples (cal));
  /* The samples without their BOS (lp_eval_run leads each window with one). */
  g_autofree gint32 *tokens = g_new (gint32, (gsize) nw * (L - 1));
  for (int w = 0; w < nw; w++)
    memcpy (tokens + (gsize) w * (L - 1), lp_calibration_sample (cal, w) + 1, sizeof (gint32) * (L - 1));
  LpEvalOptions eo = { .ctx = L, .backend = lp_pass_context_get_backend (ctx),
                       .device_memory = lp_pass_context_get_device_memory (ctx) };
  g_autoptr (LpEvalReference) ref = lp_eval_reference_new (model, tokens, (gsize) nw * (L - 1), &eo, error);
  if (ref == NULL)
    return FALSE;
  for (guint i = 0; i < n; i++)
    {
      double kl, err = c[i].err[c[i].rung];
      if (!tensor_kl (ref, model, &c[i], &kl, error))
        return FALSE;
      c[i].alpha = kl > 0 && err > 0 ? kl / err : 1;
      lp_pass_context_log (ctx, LP_LOG_INFO, "%s: its cheapest grid costs KL %.4g nats/token (relative error %.4g): "
                           "weight %.4g", c[i].t->name, kl, err, c[i].alpha);
      lp_pass_context_progress (ctx, i + 1, n, "KL");
    }
  return TRUE;
}

GHashTable *
q_allocate (LpPassContext *ctx, const QOptions *o, const QBudget *b, LpModel *model, LpStats *stats,
            LpCalibration *cal, GError **error)
{
  g_autoptr (GArray) cands = g_array_new (FALSE, TRUE, sizeof (Cand));
  g_array_set_clear_func (cands, cand_clear);
  LpTensor *embd = lp_model_tensor (model, "token_embd.weight");
  g_autofree double *counts = embd ? token_counts (cal, lp_tensor_n_rows (embd)) : NULL;
  g_autofree float *H_head = embd ? head_hessian (model, stats, lp_tensor_row_length (embd)) : NULL;
  if (embd != NULL && H_head == NULL)
    lp_pass_context_log (ctx, LP_LOG_WARNING, "budget: no estimate of the output head's input: its error is the "
                                              "plain squared weight error");
  g_autoptr (LpModel) probe = lp_model_derive (model);
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      Cand c = { lp_model_tensor_at (model, i) };
      if (!q_selected (o, c.t))
        continue;
      g_array_append_val (cands, c);
      Cand *cp = &g_array_index (cands, Cand, cands->len - 1);
      if (!measure_tensor (ctx, o, b, model, stats, counts, H_head, cp, error))
        {
          g_prefix_error (error, "%s: ", cp->t->name);
          return NULL;
        }
      lp_model_set_tensor (probe, cp->cheapest);
      lp_pass_context_progress (ctx, i + 1, lp_model_n_tensors (model), "sensitivity");
    }
  /* The file with every candidate tensor on its cheapest grid: what the
   * choice does not change is that minus those tensors' data. */
  Cand *c = (Cand *) cands->data;
  guint64 probe_bytes, floor_bytes = 0;
  if (!q_file_bytes (probe, &probe_bytes, error))
    return NULL;
  for (guint i = 0; i < cands->len; i++)
    floor_bytes += c[i].bytes[c[i].rung];
  guint64 fixed = probe_bytes - floor_bytes;
  gint64 params = lp_model_n_params (model);
  guint64 budget = b->target_size > 0 ? b->target_size : (guint64) (b->target_bpw * (double) params / 8.0);
  if (budget < probe_bytes)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "budget: expected at least %" G_GUINT64_FORMAT " bytes (%.3f bits per weight: every selected "
                    "tensor on its cheapest candidate), found %" G_GUINT64_FORMAT " bytes (%.3f bits per weight)",
                    probe_bytes, 8.0 * (double) probe_bytes / (double) MAX (params, 1), budget,
                    8.0 * (double) budget / (double) MAX (params, 1));
      return NULL;
    }
  if (!tensor_weights (ctx, model, c, cands->len, cal, error))
    return NULL;
  for (guint i = 0; i < cands->len; i++)
    for (int k = 0; k < b->n_cand; k++)
      c[i].err[k] *= c[i].alpha;
  guint64 used = allocate (c, cands->len, b->n_cand, budget - fixed);
  GHashTable *choice = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  int count[Q_MAX_CANDIDATES] = { 0 };
  for (guint i = 0; i < cands->len; i++)
    {
      QOverride *v = g_new (QOverride, 1);
      *v = b->cand[c[i].rung];
      g_strlcpy (v->glob, c[i].t->name, sizeof v->glob);
      g_hash_table_insert (choice, g_strdup (c[i].t->name), v);
      count[c[i].rung]++;
      /* The grid as written (a block the rows do not fit falls back). */
      QOptions oc = *o;
      oc.assigned = choice;
      gboolean odd;
      QGrid g = q_grid_for (&oc, c[i].t->name, lp_tensor_row_length (c[i].t), &odd);
      g_autofree char *grid = q_grid_describe (&g);
      char name[32];
      lp_pass_context_log (ctx, LP_LOG_INFO, "%s: %s%s%s (weighted output error %.4g, %" G_GUINT64_FORMAT " bytes)",
                           c[i].t->name, q_budget_name (v, name, sizeof name), odd ? " -> " : "", odd ? grid : "",
                           c[i].err[c[i].rung], c[i].bytes[c[i].rung]);
    }
  GString *summary = g_string_new (NULL);
  for (int k = 0; k < b->n_cand; k++)
    if (count[k] > 0)
      {
        char name[32];
        g_string_append_printf (summary, "%s%d %s", summary->len ? ", " : "", count[k],
                                q_budget_name (&b->cand[k], name, sizeof name));
      }
  lp_pass_context_log (ctx, LP_LOG_INFO,
                       "budget %" G_GUINT64_FORMAT " bytes (%.4f bits per weight over %" G_GINT64_FORMAT
                       " parameters): %s; the file will take %" G_GUINT64_FORMAT " bytes (%.4f bits per weight)",
                       budget, 8.0 * (double) budget / (double) MAX (params, 1), params, summary->str, fixed + used,
                       8.0 * (double) (fixed + used) / (double) MAX (params, 1));
  g_string_free (summary, TRUE);
  return choice;
}

GHashTable *
q_budget_assign (LpPassContext *ctx, const QOptions *o, const QBudget *b, LpModel *in, LpStats *given,
                 GError **error)
{
  g_autoptr (LpStats) measured = NULL;
  LpStats *stats = given;
  gboolean have = FALSE;
  if (given != NULL)
    for (guint i = 0; !have && i < lp_model_n_tensors (in); i++)
      {
        const LpActStats *e = lp_stats_lookup (given, lp_model_tensor_at (in, i)->name);
        have = e != NULL && e->hessian != NULL;
      }
  /* The embedding's token counts come from the calibration data when there is some. */
  GError *local = NULL;
  LpCalibration *cal = lp_pass_context_get_calibration (ctx, have ? &local : error);
  g_clear_error (&local);
  if (!have)
    {
      if (cal == NULL)
        {
          g_prefix_error (error, "budget: ");
          return NULL;
        }
      measured = lp_stats_collect (in, cal, lp_pass_context_get_backend (ctx), TRUE, error);
      if (measured == NULL)
        return NULL;
      stats = measured;
    }
  return q_allocate (ctx, o, b, in, stats, cal, error);
}

gboolean
q_budget_report (LpPassContext *ctx, const QBudget *b, LpModel *out, GError **error)
{
  if (!q_budget_active (b))
    return TRUE;
  guint64 bytes;
  if (!q_file_bytes (out, &bytes, error))
    return FALSE;
  gint64 params = lp_model_n_params (out);
  guint64 budget = b->target_size > 0 ? b->target_size : (guint64) (b->target_bpw * (double) params / 8.0);
  lp_pass_context_log (ctx, bytes > budget ? LP_LOG_WARNING : LP_LOG_INFO,
                       "budget: the GGUF file takes %" G_GUINT64_FORMAT " bytes, %.4f bits per weight (file bytes * 8 "
                       "/ %" G_GINT64_FORMAT " parameters), budget %" G_GUINT64_FORMAT " bytes",
                       bytes, 8.0 * (double) bytes / (double) MAX (params, 1), params, budget);
  return TRUE;
}
