/* llmpress — sparsity patterns, mask selection, OWL layer profiles and the
 * metadata of a pruned model (sparsity.h; a tensor's own record and the
 * masks a load gives back: model/masks.c). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "lp-internal.h"
#include <llmpress/sparsity.h>

gboolean
lp_sparsity_pattern_parse (const char *text, LpSparsityPattern *out, GError **error)
{
  if (g_strcmp0 (text, "unstructured") == 0)
    {
      out->n = out->m = 0;
      return TRUE;
    }
  g_auto (GStrv) parts = g_strsplit (text ? text : "", ":", -1);
  guint64 n = 0, m = 0;
  if (g_strv_length (parts) != 2 || !g_ascii_string_to_unsigned (parts[0], 10, 1, 65536, &n, NULL)
      || !g_ascii_string_to_unsigned (parts[1], 10, 1, 65536, &m, NULL) || n >= m)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "pattern: expected 'unstructured' or N:M with 0 < N < M (at most N of every M "
                    "consecutive weights kept, e.g. 2:4), found '%s'", text ? text : "");
      return FALSE;
    }
  out->n = (int) n;
  out->m = (int) m;
  return TRUE;
}

char *
lp_sparsity_pattern_name (const LpSparsityPattern *p)
{
  return p->m == 0 ? g_strdup ("unstructured") : g_strdup_printf ("%d:%d", p->n, p->m);
}

double
lp_sparsity_pattern_fraction (const LpSparsityPattern *p, double sparsity)
{
  return p->m == 0 ? sparsity : 1.0 - (double) p->n / p->m;
}

gboolean
lp_sparsity_pattern_check (const LpSparsityPattern *p, const char *tensor, gint64 row_len, GError **error)
{
  if (p->m == 0 || row_len % p->m == 0)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID,
                "%s%s%spattern %d:%d needs a row length divisible by %d, found %" G_GINT64_FORMAT
                " (hint: ignore= this tensor)", tensor ? "tensor " : "", tensor ? tensor : "", tensor ? ": " : "", p->n,
                p->m, p->m, row_len);
  return FALSE;
}

gboolean
lp_sparsity_check (double sparsity, const char *what, GError **error)
{
  if (sparsity >= 0.0 && sparsity < 1.0)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID, "%s: expected a fraction in [0, 1), found %g", what, sparsity);
  return FALSE;
}

gint64
lp_sparsity_count (double sparsity, gint64 n)
{
  gint64 k = llround (sparsity * (double) n);
  return CLAMP (k, 0, n);
}

typedef struct {
  float score;
  gint64 index;
} Ranked;

/* The order of a selection: by score, ties to the lower index. */
static inline gboolean
ranked_less (const Ranked *x, const Ranked *y)
{
  return x->score < y->score || (x->score == y->score && x->index < y->index);
}

static inline void
ranked_swap (Ranked *r, gint64 i, gint64 j)
{
  Ranked t = r[i];
  r[i] = r[j];
  r[j] = t;
}

/* Quickselect (Hoare's FIND with a median-of-three pivot): afterwards
 * r[0..k) are the k smallest, in no order.  Linear on average, where
 * sorting a 4096 x 128 block for every block of a large layer would cost
 * more than the SparseGPT sweep itself. */
static void
ranked_select (Ranked *r, gint64 n, gint64 k)
{
  gint64 lo = 0, hi = n - 1;
  while (hi > lo)
    {
      gint64 mid = lo + (hi - lo) / 2;
      if (ranked_less (&r[mid], &r[lo]))
        ranked_swap (r, mid, lo);
      if (ranked_less (&r[hi], &r[lo]))
        ranked_swap (r, hi, lo);
      if (ranked_less (&r[hi], &r[mid]))
        ranked_swap (r, hi, mid);
      Ranked pivot = r[mid];
      gint64 i = lo, j = hi;
      while (i <= j)
        {
          while (ranked_less (&r[i], &pivot))
            i++;
          while (ranked_less (&pivot, &r[j]))
            j--;
          if (i <= j)
            ranked_swap (r, i++, j--);
        }
      /* [lo, j] <= pivot <= [i, hi]; keep the side holding position k. */
      if (k <= j)
        hi = j;
      else if (k >= i)
        lo = i;
      else
        return;
    }
}

/* Few to drop from a short group (N:M): repeated minimum, no allocation. */
static void
select_lowest_small (const float *scores, gint64 n, gint64 k, guint8 *pruned)
{
  memset (pruned, 0, (gsize) n);
  for (gint64 j = 0; j < k; j++)
    {
      gint64 best = -1;
      for (gint64 i = 0; i < n; i++)
        if (!pruned[i] && (best < 0 || scores[i] < scores[best]))
          best = i;
      pruned[best] = 1;
    }
}

void
lp_select_lowest (const float *scores, gint64 n, gint64 k, guint8 *pruned)
{
  if (n <= 16)
    {
      select_lowest_small (scores, n, k, pruned);
      return;
    }
  memset (pruned, 0, (gsize) n);
  k = CLAMP (k, 0, n);
  if (k == 0)
    return;
  Ranked *r = g_new (Ranked, n);
  for (gint64 i = 0; i < n; i++)
    r[i] = (Ranked) { scores[i], i };
  if (k < n)
    ranked_select (r, n, k);
  for (gint64 i = 0; i < k; i++)
    pruned[r[i].index] = 1;
  g_free (r);
}

void
lp_prune_select (const float *scores, gint64 rows, gint64 cols, double sparsity, LpMaskScope scope,
                 const LpSparsityPattern *p, guint8 *pruned)
{
  if (p->m > 0)
    {
      for (gint64 i = 0; i + p->m <= rows * cols; i += p->m)
        select_lowest_small (scores + i, p->m, p->m - p->n, pruned + i);
      return;
    }
  if (scope == LP_MASK_PER_TENSOR)
    {
      lp_select_lowest (scores, rows * cols, lp_sparsity_count (sparsity, rows * cols), pruned);
      return;
    }
  gint64 k = lp_sparsity_count (sparsity, cols);
  for (gint64 r = 0; r < rows; r++)
    lp_select_lowest (scores + r * cols, cols, k, pruned + r * cols);
}

GBytes *
lp_mask_from_pruned (const guint8 *pruned, gint64 n)
{
  guint8 *m = g_malloc0 ((gsize) (n + 7) / 8);
  for (gint64 i = 0; i < n; i++)
    if (!pruned[i])
      m[i / 8] |= (guint8) (1u << (i % 8));
  return g_bytes_new_take (m, (gsize) (n + 7) / 8);
}

LpTensor *
lp_tensor_new_pruned (const LpTensor *t, const float *values, const guint8 *pruned, GError **error)
{
  gint64 n = lp_tensor_n_elements (t);
  LpDType dtype = t->dtype == LP_DTYPE_F16 || t->dtype == LP_DTYPE_BF16 ? t->dtype : LP_DTYPE_F32;
  g_autoptr (LpTensor) dense = lp_tensor_new (t->name, dtype, t->n_dims, t->shape, error);
  if (dense == NULL)
    return NULL;
  g_autofree float *v = g_memdup2 (values, (gsize) n * sizeof (float));
  for (gint64 i = 0; i < n; i++)
    if (pruned[i])
      v[i] = 0.0f;
  if (!lp_dtype_from_f32 (dtype, v, lp_tensor_data_mut (dense), n, error))
    return NULL;
  g_autoptr (GBytes) mask = lp_mask_from_pruned (pruned, n);
  return lp_tensor_with_mask (dense, mask, error);
}

gboolean
lp_values_check_finite (const char *tensor, const float *values, gint64 n, GError **error)
{
  for (gint64 i = 0; i < n; i++)
    if (!isfinite (values[i]))
      {
        lp_set_error (error, LP_ERROR_INVALID, "%s%s%selement %" G_GINT64_FORMAT ": expected a finite value, found %g",
                      tensor ? "tensor " : "", tensor ? tensor : "", tensor ? ": " : "", i, (double) values[i]);
        return FALSE;
      }
  return TRUE;
}

double
lp_sparsity_outlier_ratio (const float *scores, gint64 n, double m)
{
  if (n == 0)
    return 0.0;
  double mean = 0.0;
  for (gint64 i = 0; i < n; i++)
    mean += scores[i];
  mean /= (double) n;
  gint64 above = 0;
  for (gint64 i = 0; i < n; i++)
    above += scores[i] > m * mean;
  return (double) above / (double) n;
}

gboolean
lp_sparsity_owl (const double *ratio, int n_layers, double target, double lambda, double *out, GError **error)
{
  double lo = ratio[0], hi = ratio[0];
  for (int l = 1; l < n_layers; l++)
    {
      lo = MIN (lo, ratio[l]);
      hi = MAX (hi, ratio[l]);
    }
  /* As OWL's reference code: keep ratios min-max scaled into [0, 2 lambda],
   * then centred on 1 - target.  Equal ratios give the uniform profile. */
  double sum = 0.0;
  for (int l = 0; l < n_layers; l++)
    {
      out[l] = hi > lo ? (ratio[l] - lo) / (hi - lo) * 2.0 * lambda : 0.0;
      sum += out[l];
    }
  double mean = sum / n_layers;
  for (int l = 0; l < n_layers; l++)
    {
      double keep = out[l] - mean + (1.0 - target);
      out[l] = 1.0 - keep;
      if (!(out[l] >= 0.0 && out[l] < 1.0))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "owl: layer %d would get sparsity %g (target %g, lambda %g): expected [0, 1) "
                        "(hint: a smaller owl_lambda)", l, out[l], target, lambda);
          return FALSE;
        }
    }
  return TRUE;
}

void
lp_sparsity_record (LpMeta *meta, const char *method, const LpSparsityPattern *p, double fraction)
{
  g_autofree char *name = lp_sparsity_pattern_name (p);
  lp_meta_set_string (meta, "llmpress.sparsity.method", method);
  lp_meta_set_string (meta, "llmpress.sparsity.pattern", name);
  lp_meta_set_f32 (meta, "llmpress.sparsity.fraction", (float) fraction);
}
