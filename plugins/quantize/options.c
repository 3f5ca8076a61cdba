/* llmpress quantize plugin — the settings every quantize pass shares, and
 * which grid each tensor gets. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "quantize.h"

/* Index 0 is the integer grid; the others are block-type names. */
const char *const q_format_names[] = { "int", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k",
                                       "q3_k", "q4_k", "q5_k", "q6_k", NULL };
/* Index 0 is no preset; the others are llama-quantize's mixes
 * (lp_quant_mix_from_name reads them; test-quant-mix checks the list). */
const char *const q_preset_names[] = { "none",   "Q4_0",   "Q4_1",   "Q5_0",   "Q5_1",   "Q8_0",
                                       "Q2_K",   "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
                                       "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",   NULL };

/* A grid named by 2..8 bits (the integer grid) or a block-type name. */
static gboolean
parse_grid (const char *text, QOverride *v)
{
  guint64 bits = 0;
  v->format = LP_DTYPE_F32;
  v->bits = 0;
  if (g_ascii_string_to_unsigned (text, 10, 2, 8, &bits, NULL))
    {
      v->bits = (int) bits;
      return TRUE;
    }
  return lp_dtype_from_name (text, &v->format) && lp_quant_type_supported (v->format);
}

/* overrides=GLOB=VALUE,...: VALUE is 2..8 bits or a block-type name. */
static gboolean
parse_overrides (const char *text, QOptions *o, GError **error)
{
  g_auto (GStrv) items = g_strsplit (text, ",", -1);
  o->n_overrides = 0;
  for (int i = 0; items[i]; i++)
    {
      char *item = g_strstrip (items[i]);
      if (*item == 0)
        continue;
      const char *eq = strrchr (item, '=');
      QOverride *v = &o->overrides[o->n_overrides];
      gboolean ok = eq != NULL && eq != item && (gsize) (eq - item) < sizeof v->glob && o->n_overrides < Q_MAX_OVERRIDES
                    && parse_grid (eq + 1, v);
      if (!ok)
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "overrides: expected GLOB=BITS (2..8) or GLOB=TYPE (q8_0 ... q6_k), at most %d, found '%s'",
                        Q_MAX_OVERRIDES, item);
          return FALSE;
        }
      memcpy (v->glob, item, eq - item);
      v->glob[eq - item] = 0;
      o->n_overrides++;
    }
  return TRUE;
}

/* blk.N.attn_v.weight -> attn_v (the name itself when it has no such shape). */
static char *
short_name (const char *name)
{
  const char *s = name;
  if (g_str_has_prefix (s, "blk."))
    {
      const char *dot = strchr (s + 4, '.');
      if (dot)
        s = dot + 1;
    }
  char *r = g_strdup (s);
  if (g_str_has_suffix (r, ".weight"))
    r[strlen (r) - 7] = 0;
  return r;
}

gboolean
q_options_read (LpPassContext *ctx, QOptions *o, GError **error)
{
  memset (o, 0, sizeof *o);
  int f = lp_pass_context_get_enum (ctx, "format");
  o->format = LP_DTYPE_F32;
  if (f > 0 && !lp_dtype_from_name (q_format_names[f], &o->format))
    g_assert_not_reached ();
  o->bits = (int) lp_pass_context_get_int (ctx, "bits");
  o->group_size = (int) lp_pass_context_get_int (ctx, "group_size");
  o->symmetric = lp_pass_context_get_bool (ctx, "symmetric");
  o->clip_search = lp_pass_context_get_bool (ctx, "clip_search");
  o->allow_requantize = lp_pass_context_get_bool (ctx, "allow_requantize");
  o->targets = lp_pass_context_get_tensors (ctx, "targets");
  o->ignore = lp_pass_context_get_tensors (ctx, "ignore");
  const char *ov = lp_pass_context_get_string (ctx, "overrides");
  if (!parse_overrides (ov ? ov : "", o, error))
    return FALSE;
  int p = lp_pass_context_get_enum (ctx, "preset");
  if (p > 0)
    {
      /* The mix chooses every type: a format= beside it would be ignored
       * (quantize.rtn refuses target_bpw= with it too). */
      if (lp_pass_context_param_is_set (ctx, "format"))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "preset=%s chooses every tensor's type: expected no format= beside it, found one (use "
                        "overrides= to change some tensors)",
                        q_preset_names[p]);
          return FALSE;
        }
      if (!lp_quant_mix_from_name (q_preset_names[p], &o->preset, NULL))
        g_assert_not_reached ();
      o->has_preset = TRUE;
      o->format = lp_quant_mix_default_type (o->preset);
      f = 1; /* a block type: the integer-grid settings are refused below */
      o->all_targets = !lp_pass_context_param_is_set (ctx, "targets");
    }
  /* A block type fixes bits, groups and the zero point: a value given for
   * them would be silently ignored, so it is refused. */
  static const char *const int_only[] = { "bits", "group_size", "symmetric", "clip_search" };
  if (f > 0)
    for (guint i = 0; i < G_N_ELEMENTS (int_only); i++)
      if (lp_pass_context_param_is_set (ctx, int_only[i]))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "%s: only applies to format=int; %s=%s fixes its own grid (expected no %s, found one)",
                        int_only[i], p > 0 ? "preset" : "format", p > 0 ? q_preset_names[p] : q_format_names[f],
                        int_only[i]);
          return FALSE;
        }
  return TRUE;
}

gboolean
q_budget_read (LpPassContext *ctx, QOptions *o, QBudget *b, GError **error)
{
  memset (b, 0, sizeof *b);
  b->target_bpw = lp_pass_context_get_float (ctx, "target_bpw");
  b->target_size = (guint64) lp_pass_context_get_int (ctx, "target_size");
  const char *text = lp_pass_context_get_string (ctx, "candidates");
  if (!q_budget_active (b))
    {
      if (text != NULL && *text)
        {
          lp_set_error (error, LP_ERROR_INVALID, "candidates: expected target_bpw= or target_size= beside it, found neither");
          return FALSE;
        }
      return TRUE;
    }
  const char *clash = b->target_bpw > 0 && b->target_size > 0 ? "target_size="
                      : o->has_preset                          ? "preset="
                      : o->n_overrides > 0                     ? "overrides="
                                                               : NULL;
  if (clash != NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: expected no %s with it (the allocator chooses every grid), found one",
                    b->target_bpw > 0 ? "target_bpw" : "target_size", clash);
      return FALSE;
    }
  /* The default: block types whatever format= says, since a GGUF file holds
   * an integer grid as its dense values (see allocate.c for why no two-bit
   * grid). */
  if (text == NULL || *text == 0)
    text = Q_DEFAULT_CANDIDATES;
  g_auto (GStrv) items = g_strsplit (text, ",", -1);
  for (int i = 0; items[i]; i++)
    {
      char *item = g_strstrip (items[i]);
      if (b->n_cand >= Q_MAX_CANDIDATES || !parse_grid (item, &b->cand[b->n_cand]))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "candidates: expected at most %d of BITS (2..8) or TYPE (q8_0 ... q6_k), found '%s'",
                        Q_MAX_CANDIDATES, item);
          return FALSE;
        }
      g_strlcpy (b->cand[b->n_cand].glob, "*", sizeof b->cand[b->n_cand].glob);
      b->n_cand++;
    }
  o->all_targets = !lp_pass_context_param_is_set (ctx, "targets");
  return TRUE;
}

QGrid
q_grid_for (const QOptions *o, const char *name, gint64 cols, gboolean *fell_back)
{
  QGrid g = { 0 };
  *fell_back = FALSE;
  LpDType format = o->format;
  int bits = o->bits;
  g_autofree char *shortn = o->n_overrides > 0 ? short_name (name) : NULL;
  const QOverride *chosen = o->assigned ? g_hash_table_lookup (o->assigned, name) : NULL;
  for (int i = 0; chosen == NULL && i < o->n_overrides; i++)
    if (g_pattern_match_simple (o->overrides[i].glob, name) || g_pattern_match_simple (o->overrides[i].glob, shortn))
      {
        format = o->overrides[i].format;
        if (format == LP_DTYPE_F32)
          bits = o->overrides[i].bits;
      }
  if (chosen != NULL)
    format = chosen->format, bits = chosen->format == LP_DTYPE_F32 ? chosen->bits : bits;
  if (format != LP_DTYPE_F32)
    {
      g.type = lp_quant_fallback_type (format, cols);
      *fell_back = g.type != format;
      g.group = (int) lp_dtype_info (g.type)->block_size;
      return g;
    }
  g.type = LP_DTYPE_F32;
  g.bits = bits;
  g.symmetric = o->symmetric;
  g.clip_search = o->clip_search;
  g.per_tensor = o->group_size < 0;
  g.group = o->group_size <= 0 || o->group_size > cols ? (int) cols : o->group_size;
  /* Groups that do not divide the row leave a shorter last group. */
  *fell_back = o->group_size > 0 && cols % o->group_size != 0;
  return g;
}

gboolean
q_selected (const QOptions *o, const LpTensor *t)
{
  return t->n_dims == 2 && (o->all_targets || lp_tensor_pattern_match (o->targets, t->name))
         && !lp_tensor_pattern_match (o->ignore, t->name);
}

/* A tensor some overrides= entry names. */
static gboolean
overridden (const QOptions *o, const char *name)
{
  g_autofree char *shortn = short_name (name);
  for (int i = 0; i < o->n_overrides; i++)
    if (g_pattern_match_simple (o->overrides[i].glob, name) || g_pattern_match_simple (o->overrides[i].glob, shortn))
      return TRUE;
  return FALSE;
}

/* The preset visits what the pass selects and no override names (an
 * override is llama-quantize's --tensor-type: it takes the tensor out of the
 * mix's layer counting). */
static gboolean
preset_visits (const LpTensor *t, gpointer user_data)
{
  const QOptions *o = user_data;
  return q_selected (o, t) && !overridden (o, t->name);
}

GHashTable *
q_preset_assign (LpPassContext *ctx, const QOptions *o, LpModel *model, gboolean has_imatrix)
{
  g_autoptr (GHashTable) types = lp_quant_mix_types (model, o->preset, has_imatrix, preset_visits, (gpointer) o);
  GHashTable *assigned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  int count[LP_DTYPE_COUNT] = { 0 };
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init (&it, types);
  while (g_hash_table_iter_next (&it, &key, &value))
    {
      QOverride *v = g_new0 (QOverride, 1);
      v->format = (LpDType) GPOINTER_TO_INT (value);
      g_strlcpy (v->glob, key, sizeof v->glob);
      g_hash_table_insert (assigned, g_strdup (key), v);
      count[v->format]++;
      lp_pass_context_log (ctx, LP_LOG_DEBUG, "%s: %s (preset %s)", (const char *) key, lp_dtype_name (v->format),
                           lp_quant_mix_name (o->preset));
    }
  GString *summary = g_string_new (NULL);
  for (int d = 0; d < LP_DTYPE_COUNT; d++)
    if (count[d] > 0)
      g_string_append_printf (summary, "%s%d %s", summary->len ? ", " : "", count[d], lp_dtype_name ((LpDType) d));
  lp_pass_context_log (ctx, LP_LOG_INFO, "preset %s: %s%s", lp_quant_mix_name (o->preset),
                       summary->len ? summary->str : "no tensor", has_imatrix ? " (with importance data)" : "");
  g_string_free (summary, TRUE);
  return assigned;
}

gboolean
q_check_model (const QOptions *o, LpModel *model, GError **error)
{
  if (o->allow_requantize)
    return TRUE;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if (q_selected (o, t) && lp_tensor_is_quantized (t))
        {
          lp_set_error (error, LP_ERROR_INVALID,
                        "%s: already quantized (%s%s): expected a float tensor; set allow_requantize=true to quantize "
                        "its dequantized values again",
                        t->name, lp_dtype_name (t->dtype), lp_tensor_int_grid (t) ? ", integer grid" : "");
          return FALSE;
        }
    }
  return TRUE;
}

gboolean
q_check_requantize (const QOptions *o, const LpTensor *t, GError **error)
{
  if (lp_tensor_is_quantized (t) && !o->allow_requantize)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "already quantized (%s%s): expected a float tensor; set allow_requantize=true to quantize its "
                    "dequantized values again",
                    lp_dtype_name (t->dtype), lp_tensor_int_grid (t) ? ", integer grid" : "");
      return FALSE;
    }
  return TRUE;
}

gboolean
q_check_finite (const LpTensor *t, const float *w, GError **error)
{
  gint64 n = lp_tensor_n_elements (t);
  for (gint64 i = 0; i < n; i++)
    if (!isfinite (w[i]))
      {
        gint64 cols = lp_tensor_row_length (t);
        lp_set_error (error, LP_ERROR_INVALID,
                      "element [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]: expected a finite weight, found %g",
                      i / cols, i % cols, (double) w[i]);
        return FALSE;
      }
  return TRUE;
}

gboolean
q_check_input (const QOptions *o, const LpTensor *t, const float *w, GError **error)
{
  return q_check_requantize (o, t, error) && q_check_finite (t, w, error);
}

char *
q_grid_describe (const QGrid *g)
{
  if (g->type != LP_DTYPE_F32)
    return g_strdup (lp_dtype_name (g->type));
  if (g->per_tensor)
    return g_strdup_printf ("int%d per tensor%s", g->bits, g->symmetric ? " symmetric" : "");
  return g_strdup_printf ("int%d g%d%s", g->bits, g->group, g->symmetric ? " symmetric" : "");
}

void
q_log_mask_lost (LpPassContext *ctx, const LpTensor *t, const QGrid *g, gint64 lost)
{
  if (lost <= 0)
    return;
  g_autofree char *grid = q_grid_describe (g);
  lp_pass_context_log (ctx, LP_LOG_WARNING,
                       "%s: %" G_GINT64_FORMAT " pruned weights are not exactly 0 on %s (its blocks have a min/offset, "
                       "so 0 is not on the grid): stored as the nearest grid value, keep-mask dropped",
                       t->name, lost, grid);
}

void
q_log_grid (LpPassContext *ctx, const LpTensor *t, const QGrid *g, gboolean fell_back)
{
  if (!fell_back)
    return;
  gint64 cols = lp_tensor_row_length (t);
  g_autofree char *grid = q_grid_describe (g);
  if (g->type == LP_DTYPE_F32)
    lp_pass_context_log (ctx, LP_LOG_INFO, "%s: rows of %" G_GINT64_FORMAT " values: %s, last group of %" G_GINT64_FORMAT,
                         t->name, cols, grid, cols % g->group);
  else
    lp_pass_context_log (ctx, LP_LOG_INFO, "%s: rows of %" G_GINT64_FORMAT " values do not fit the requested block: %s",
                         t->name, cols, grid);
}
