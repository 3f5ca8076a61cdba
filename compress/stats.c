/* llmpress — activation statistics: collection, GGUF and imatrix I/O (see stats.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lp-internal.h"
#include "outputs.h"
#include <llmpress/stats.h>

/* Entries are refcounted because weights sharing an input share one. */
typedef struct {
  LpActStats e;
  gint ref_count;
} Entry;

struct _LpStats {
  gint ref_count;
  GHashTable *by_weight; /* weight name (owned) -> Entry* (ref) */
};

static Entry *
entry_new (int n)
{
  Entry *en = g_new0 (Entry, 1);
  en->ref_count = 1;
  en->e.n = n;
  en->e.sum_sq = g_new0 (double, n);
  return en;
}

static Entry *
entry_ref (Entry *en)
{
  g_atomic_int_inc (&en->ref_count);
  return en;
}

static void
entry_unref (gpointer p)
{
  Entry *en = p;
  if (!g_atomic_int_dec_and_test (&en->ref_count))
    return;
  g_free (en->e.sum_sq);
  g_free (en->e.sum_abs);
  g_free (en->e.hessian);
  g_free (en);
}

LpStats *
lp_stats_new (void)
{
  LpStats *s = g_new0 (LpStats, 1);
  s->ref_count = 1;
  s->by_weight = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, entry_unref);
  return s;
}

LpStats *
lp_stats_ref (LpStats *stats)
{
  g_atomic_int_inc (&stats->ref_count);
  return stats;
}

void
lp_stats_unref (LpStats *stats)
{
  if (stats == NULL || !g_atomic_int_dec_and_test (&stats->ref_count))
    return;
  g_hash_table_destroy (stats->by_weight);
  g_free (stats);
}

const LpActStats *
lp_stats_lookup (const LpStats *stats, const char *weight_name)
{
  Entry *en = g_hash_table_lookup (stats->by_weight, weight_name);
  return en ? &en->e : NULL;
}

static gint
cmp_name (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

GPtrArray *
lp_stats_names (const LpStats *stats)
{
  GPtrArray *names = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init (&it, stats->by_weight);
  while (g_hash_table_iter_next (&it, &k, NULL))
    g_ptr_array_add (names, k);
  g_ptr_array_sort (names, cmp_name);
  return names;
}

void
lp_stats_mean_sq (const LpActStats *e, float *out)
{
  double inv = e->n_tokens > 0 ? 1.0 / e->n_tokens : 0.0;
  for (int j = 0; j < e->n; j++)
    out[j] = (float) (e->sum_sq[j] * inv);
}

void
lp_stats_add_block (LpStats *stats, const LpActStats *block)
{
  for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
    {
      const LpActStats *s = &block[w];
      Entry *en = entry_new (s->n);
      en->e.n_tokens = s->n_tokens;
      /* Stored rounded to float, as the file holds them, so a plugin reads
       * the same values from a fresh run as from a reloaded file. */
      if (s->sum_sq)
        for (int j = 0; j < s->n; j++)
          en->e.sum_sq[j] = (float) s->sum_sq[j];
      if (s->sum_abs)
        {
          en->e.sum_abs = g_new (double, s->n);
          for (int j = 0; j < s->n; j++)
            en->e.sum_abs[j] = (float) s->sum_abs[j];
        }
      if (s->hessian)
        en->e.hessian = g_memdup2 (s->hessian, (gsize) s->n * s->n * sizeof (float));
      for (const char *const *c = lp_linear_input_consumers (s->which); *c; c++)
        g_hash_table_replace (stats->by_weight, g_strdup_printf ("blk.%d.%s", s->layer, *c), entry_ref (en));
      entry_unref (en);
    }
}

static gboolean
collect_block (gpointer user_data, int layer, LpActStats *stats, GError **error)
{
  lp_stats_add_block (user_data, stats);
  return TRUE;
}

LpStats *
lp_stats_collect (LpModel *model, LpCalibration *cal, LpBackend *backend, gboolean hessians, GError **error)
{
  g_autoptr (LpStats) stats = lp_stats_new ();
  LpCalibWhat what = LP_CALIB_CHANNEL_STATS | (hessians ? LP_CALIB_HESSIAN : 0);
  if (!lp_calibration_run (cal, model, model, backend, what, collect_block, stats, error))
    return NULL;
  return g_steal_pointer (&stats);
}

static LpTensor *
vector_tensor (const char *weight, const char *suffix, const double *v, gint64 n)
{
  g_autofree char *name = g_strdup_printf ("%s.%s", weight, suffix);
  g_autofree float *f = g_new (float, n);
  for (gint64 j = 0; j < n; j++)
    f[j] = (float) v[j];
  return lp_tensor_new_f32 (name, 1, &n, f, NULL);
}

/* v[n] (float) as doubles. */
static double *
widen (const float *v, gint64 n)
{
  double *d = g_new (double, n);
  for (gint64 j = 0; j < n; j++)
    d[j] = v[j];
  return d;
}

gboolean
lp_stats_save (const LpStats *stats, const char *path, GError **error)
{
  g_autoptr (LpMeta) meta = lp_meta_new ();
  lp_meta_set_string (meta, "general.type", "imatrix");
  lp_meta_set_string (meta, "general.name", "llmpress activation statistics");
  g_autoptr (GPtrArray) tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  g_autoptr (GPtrArray) names = lp_stats_names (stats);
  GHashTable *written = g_hash_table_new (NULL, NULL); /* Entry* already carrying its big arrays */
  double max_tokens = 0;
  for (guint i = 0; i < names->len; i++)
    {
      const char *w = names->pdata[i];
      Entry *en = g_hash_table_lookup (stats->by_weight, w);
      float count = (float) en->e.n_tokens;
      gint64 one = 1;
      max_tokens = MAX (max_tokens, en->e.n_tokens);
      g_ptr_array_add (tensors, vector_tensor (w, "in_sum2", en->e.sum_sq, en->e.n));
      g_autofree char *cname = g_strdup_printf ("%s.counts", w);
      g_ptr_array_add (tensors, lp_tensor_new_f32 (cname, 1, &one, &count, NULL));
      if (g_hash_table_contains (written, en))
        continue;
      g_hash_table_add (written, en);
      if (en->e.sum_abs)
        g_ptr_array_add (tensors, vector_tensor (w, "in_sum_abs", en->e.sum_abs, en->e.n));
      if (en->e.hessian)
        {
          g_autofree char *hname = g_strdup_printf ("%s.hessian", w);
          gint64 shape[2] = { en->e.n, en->e.n };
          g_ptr_array_add (tensors, lp_tensor_new_f32 (hname, 2, shape, en->e.hessian, NULL));
        }
    }
  g_hash_table_destroy (written);
  lp_meta_set_u32 (meta, "imatrix.chunk_count", 1);
  lp_meta_set_u32 (meta, "imatrix.chunk_size", (guint32) MIN (max_tokens, (double) G_MAXUINT32));
  return lp_gguf_write (path, meta, tensors, error);
}

/* Split "<weight>.<suffix>" at the last dot. */
static gboolean
split_name (const char *name, char **weight, const char **suffix)
{
  const char *dot = strrchr (name, '.');
  if (dot == NULL)
    return FALSE;
  *weight = g_strndup (name, dot - name);
  *suffix = dot + 1;
  return TRUE;
}

static LpStats *
load_gguf (const char *path, GError **error)
{
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) tensors = lp_gguf_read_tensors (path, meta, error);
  if (tensors == NULL)
    return NULL;
  g_autoptr (LpStats) stats = lp_stats_new ();
  /* First the per-weight vectors, then the shared arrays. */
  for (int pass = 0; pass < 2; pass++)
    for (guint i = 0; i < tensors->len; i++)
      {
        LpTensor *t = tensors->pdata[i];
        g_autofree char *weight = NULL;
        const char *suffix;
        if (!split_name (t->name, &weight, &suffix))
          continue;
        gboolean is_sum2 = strcmp (suffix, "in_sum2") == 0;
        gboolean is_extra = strcmp (suffix, "counts") == 0 || strcmp (suffix, "in_sum_abs") == 0
                            || strcmp (suffix, "hessian") == 0;
        if (pass == 0 ? !is_sum2 : !is_extra)
          continue;
        gint64 n = lp_tensor_n_elements (t);
        /* An entry holds one value per input channel, counted in an int. */
        if (is_sum2 && (n < 1 || n > G_MAXINT))
          {
            lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected 1..%d elements, found %" G_GINT64_FORMAT, path,
                          t->name, G_MAXINT, n);
            return NULL;
          }
        g_autofree float *v = lp_tensor_dup_f32 (t, error);
        if (v == NULL)
          return NULL;
        Entry *en = g_hash_table_lookup (stats->by_weight, weight);
        if (pass == 0)
          {
            en = entry_new ((int) n);
            for (gint64 j = 0; j < n; j++)
              en->e.sum_sq[j] = v[j];
            g_hash_table_replace (stats->by_weight, g_strdup (weight), en);
            continue;
          }
        if (en == NULL)
          {
            lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected %s.in_sum2 beside it, found none", path,
                          t->name, weight);
            return NULL;
          }
        gint64 want = strcmp (suffix, "hessian") == 0 ? (gint64) en->e.n * en->e.n
                      : strcmp (suffix, "counts") == 0 ? -1 : en->e.n;
        if (want >= 0 && n != want)
          {
            lp_set_error (error, LP_ERROR_FORMAT, "%s: tensor %s: expected %" G_GINT64_FORMAT " elements, found %" G_GINT64_FORMAT,
                          path, t->name, want, n);
            return NULL;
          }
        if (strcmp (suffix, "counts") == 0)
          {
            /* llama.cpp may keep one count per expert: the mean is what matters. */
            double c = 0;
            for (gint64 j = 0; j < n; j++)
              c += v[j];
            en->e.n_tokens = n ? c / n : 0;
          }
        else if (strcmp (suffix, "in_sum_abs") == 0)
          en->e.sum_abs = widen (v, n);
        else
          en->e.hessian = g_steal_pointer (&v);
      }
  /* Weights sharing an input with one that carries the big arrays share them. */
  g_autoptr (GPtrArray) names = lp_stats_names (stats);
  for (guint i = 0; i < names->len; i++)
    {
      Entry *en = g_hash_table_lookup (stats->by_weight, names->pdata[i]);
      if (en->e.hessian != NULL)
        continue;
      int layer;
      char suffix[64];
      if (sscanf (names->pdata[i], "blk.%d.%63s", &layer, suffix) != 2)
        continue;
      for (int w = 0; w < LP_LINEAR_IN_COUNT; w++)
        {
          const char *const *c = lp_linear_input_consumers ((LpLinearInput) w);
          gboolean member = FALSE;
          for (const char *const *p = c; *p; p++)
            member |= strcmp (*p, suffix) == 0;
          if (!member)
            continue;
          for (const char *const *p = c; *p; p++)
            {
              g_autofree char *mate = g_strdup_printf ("blk.%d.%s", layer, *p);
              Entry *m = g_hash_table_lookup (stats->by_weight, mate);
              if (m && m != en && m->e.hessian && m->e.n == en->e.n)
                {
                  en->e.hessian = g_memdup2 (m->e.hessian, (gsize) m->e.n * m->e.n * sizeof (float));
                  if (m->e.sum_abs && !en->e.sum_abs)
                    en->e.sum_abs = g_memdup2 (m->e.sum_abs, m->e.n * sizeof (double));
                  break;
                }
            }
        }
    }
  return g_steal_pointer (&stats);
}

/* llama.cpp's legacy imatrix.dat: i32 n_entries; per entry i32 name length,
 * name, i32 ncall, i32 nval, f32 values[nval] (= mean of x^2 times ncall);
 * then optional trailing data (last chunk, dataset name) we ignore. */
static LpStats *
load_legacy (const char *path, GError **error)
{
  g_autoptr (GMappedFile) mf = lp_map_file (path, error);
  if (mf == NULL)
    return NULL;
  LpByteReader r;
  lp_byte_reader_init (&r, path, g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf));
  gint32 n_entries;
  if (!lp_byte_reader_i32 (&r, &n_entries, "int32 entry count", error))
    return NULL;
  if (n_entries < 0 || (gsize) n_entries > r.size / 12)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 0: expected an entry count of at most %" G_GSIZE_FORMAT ", found %d", path,
                    r.size / 12, n_entries);
      return NULL;
    }
  g_autoptr (LpStats) stats = lp_stats_new ();
  for (gint32 i = 0; i < n_entries; i++)
    {
      gint32 len, ncall, nval;
      const guint8 *name;
      if (!lp_byte_reader_i32 (&r, &len, "int32 name length", error))
        return NULL;
      if (len <= 0 || len > 4096)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": expected a name length of 1..4096, found %d", path,
                        r.off - 4, len);
          return NULL;
        }
      if (!lp_byte_reader_bytes (&r, len, &name, "entry name", error) || !lp_byte_reader_i32 (&r, &ncall, "int32 call count", error)
          || !lp_byte_reader_i32 (&r, &nval, "int32 value count", error))
        return NULL;
      if (nval <= 0 || (gsize) nval > (r.size - r.off) / 4)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": expected a value count that fits the file, found %d",
                        path, r.off - 4, nval);
          return NULL;
        }
      const guint8 *vals;
      if (!lp_byte_reader_bytes (&r, (gsize) nval * 4, &vals, "f32 values", error))
        return NULL;
      Entry *en = entry_new (nval);
      for (int j = 0; j < nval; j++)
        {
          float f;
          memcpy (&f, vals + (gsize) j * 4, 4);
          en->e.sum_sq[j] = f;
        }
      en->e.n_tokens = ncall > 0 ? ncall : 1;
      g_hash_table_replace (stats->by_weight, g_strndup ((const char *) name, len), en);
    }
  return g_steal_pointer (&stats);
}

LpStats *
lp_stats_load (const char *path, GError **error)
{
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  FILE *f = fopen (path, "rb");
  if (f == NULL)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot open: %s", path, g_strerror (errno));
      return NULL;
    }
  char magic[4] = { 0 };
  gsize got = fread (magic, 1, 4, f);
  fclose (f);
  if (got == 4 && memcmp (magic, "GGUF", 4) == 0)
    return load_gguf (path, error);
  return load_legacy (path, error);
}
