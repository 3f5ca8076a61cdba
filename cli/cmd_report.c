/* llmpress report — a run's report.json as pictures and a table: size
 * against perplexity with the Pareto front (frontier.svg), the per-layer
 * weight error of every evaluated model (heatmap.svg), both with the table
 * in one self-contained report.html, and the table on stdout.  Nothing is
 * measured here: every figure comes from report.json. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "cli.h"

/* One evaluated model: an eval node that measured a perplexity. */
typedef struct {
  const char *eval;       /* the eval node */
  const char *model;      /* the node it measured (its input), else the eval's name */
  const char *reference;  /* its reference= input, NULL without one */
  JsonObject *metrics;
  double ppl, stderr_rel; /* stderr_rel: the NLL's standard error (relative error of the perplexity) */
  double bpw, bytes, duration, tokens_per_s;
  gboolean front;         /* on the Pareto front */
} Point;

typedef struct {
  const char *path;
  JsonObject *root;
  GPtrArray *nodes;       /* JsonObject * */
  GArray *points;         /* Point */
  int dense;              /* index in points of the dense model, -1 when none */
} Report;

static double
member_double (JsonObject *o, const char *name, double dflt)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;
  if (n == NULL || JSON_NODE_TYPE (n) != JSON_NODE_VALUE)
    return dflt;
  GType t = json_node_get_value_type (n);
  return t == G_TYPE_DOUBLE || t == G_TYPE_INT64 ? json_node_get_double (n) : dflt;
}

static const char *
member_string (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;
  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING ? json_node_get_string (n)
                                                                                          : NULL;
}

static JsonObject *
member_object (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static JsonObject *
find_node (const Report *r, const char *name)
{
  for (guint i = 0; name && i < r->nodes->len; i++)
    if (g_strcmp0 (member_string (r->nodes->pdata[i], "name"), name) == 0)
      return r->nodes->pdata[i];
  return NULL;
}

/* report.json's nodes and the evaluated models among them. */
static gboolean
report_read (Report *r, JsonParser *parser, const char *path, GError **error)
{
  GError *e = NULL;
  if (!json_parser_load_from_file (parser, path, &e))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: cannot read the run's report: %s", path, e->message);
      g_error_free (e);
      return FALSE;
    }
  JsonNode *root = json_parser_get_root (parser);
  JsonNode *nodes = root && JSON_NODE_HOLDS_OBJECT (root) ? json_object_get_member (json_node_get_object (root), "nodes")
                                                          : NULL;
  if (nodes == NULL || !JSON_NODE_HOLDS_ARRAY (nodes))
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected a run's report (an object with a \"nodes\" array), found none",
                    path);
      return FALSE;
    }
  r->path = path;
  r->root = json_node_get_object (root);
  JsonArray *a = json_node_get_array (nodes);
  for (guint i = 0; i < json_array_get_length (a); i++)
    {
      JsonNode *n = json_array_get_element (a, i);
      if (!JSON_NODE_HOLDS_OBJECT (n) || member_string (json_node_get_object (n), "name") == NULL)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: node %u: expected an object with a \"name\", found none", path, i + 1);
          return FALSE;
        }
      g_ptr_array_add (r->nodes, json_node_get_object (n));
    }
  for (guint i = 0; i < r->nodes->len; i++)
    {
      JsonObject *n = r->nodes->pdata[i];
      JsonObject *m = member_object (n, "metrics");
      Point p = { 0 };
      p.ppl = member_double (m, "perplexity", NAN);
      p.bpw = member_double (m, "bits_per_weight", NAN);
      p.bytes = member_double (m, "bytes", NAN);
      if (!(p.ppl > 0) || !(p.bpw > 0) || !(p.bytes > 0))
        continue;
      JsonObject *inputs = member_object (n, "inputs");
      p.eval = member_string (n, "name");
      p.model = member_string (inputs, "input") ? member_string (inputs, "input") : p.eval;
      p.reference = member_string (inputs, "reference");
      p.metrics = m;
      p.stderr_rel = member_double (m, "nll_stderr", 0);
      p.duration = member_double (n, "duration", 0);
      p.tokens_per_s = member_double (m, "tokens_per_s", 0);
      g_array_append_val (r->points, p);
    }
  if (r->points->len == 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: no node measured a perplexity and a size (expected an eval node with data=), found %u nodes without",
                    path, r->nodes->len);
      return FALSE;
    }
  return TRUE;
}

/* The dense model: the largest one measured without a reference (the
 * reference the others are compared with), else the largest. */
static int
dense_point (GArray *points)
{
  int best = -1;
  for (int pass = 0; pass < 2 && best < 0; pass++)
    for (guint i = 0; i < points->len; i++)
      {
        const Point *p = &g_array_index (points, Point, i);
        if ((pass == 0 && p->reference != NULL) || (best >= 0 && g_array_index (points, Point, best).bytes >= p->bytes))
          continue;
        best = (int) i;
      }
  return best;
}

static int
by_bpw_then_ppl (gconstpointer a, gconstpointer b, gpointer user_data)
{
  const Point *pts = user_data;
  const Point *x = &pts[*(const guint *) a], *y = &pts[*(const guint *) b];
  if (x->bpw != y->bpw)
    return x->bpw < y->bpw ? -1 : 1;
  return x->ppl < y->ppl ? -1 : x->ppl > y->ppl;
}

/* Marks the Pareto front (no other model both smaller and better: fewer or
 * equal bits per weight and lower or equal perplexity, one of them strictly)
 * and returns it in order of bits per weight.  Walking by bits per weight,
 * a model is on the front when it beats every smaller one. */
static GArray *
pareto_front (GArray *points)
{
  g_autoptr (GArray) order = g_array_new (FALSE, FALSE, sizeof (guint));
  for (guint i = 0; i < points->len; i++)
    g_array_append_val (order, i);
  g_array_sort_with_data (order, by_bpw_then_ppl, points->data);
  GArray *front = g_array_new (FALSE, FALSE, sizeof (guint));
  double best = INFINITY;
  for (guint k = 0; k < order->len; k++)
    {
      Point *p = &g_array_index (points, Point, g_array_index (order, guint, k));
      if (p->ppl < best)
        {
          p->front = TRUE;
          best = p->ppl;
          g_array_append_val (front, g_array_index (order, guint, k));
        }
    }
  return front;
}

/* The best (lowest perplexity) model within max_bpw, -1 when none. */
static int
best_within (GArray *points, double max_bpw, int dense)
{
  int best = -1;
  for (guint i = 0; i < points->len; i++)
    {
      const Point *p = &g_array_index (points, Point, i);
      if ((int) i != dense && p->bpw <= max_bpw && (best < 0 || p->ppl < g_array_index (points, Point, best).ppl))
        best = (int) i;
    }
  return best;
}

/* ---- the table (stdout and the page) ---- */

static const char *const table_head[] = { "model", "size (bytes)", "bits/weight", "perplexity", "vs dense", "eval time" };
#define N_COLS G_N_ELEMENTS (table_head)

static void
table_row (const Report *r, const Point *p, char **cells)
{
  const Point *d = r->dense >= 0 ? &g_array_index (r->points, Point, r->dense) : NULL;
  cells[0] = g_strdup_printf ("%s%s", p->model, p->front ? " *" : "");
  cells[1] = g_strdup_printf ("%.0f", p->bytes);
  cells[2] = g_strdup_printf ("%.3f", p->bpw);
  cells[3] = g_strdup_printf ("%.4f +- %.4f", p->ppl, p->ppl * p->stderr_rel);
  cells[4] = d == NULL || d == p ? g_strdup ("-") : g_strdup_printf ("%+.2f%%", 100 * (p->ppl / d->ppl - 1));
  cells[5] = p->tokens_per_s > 0 ? g_strdup_printf ("%.1f s (%.0f tok/s)", p->duration, p->tokens_per_s)
                                 : g_strdup_printf ("%.1f s", p->duration);
}

/* The lines under the table: what each compression took and kept, the
 * files saved, and the best model within the budget. */
static GPtrArray *
table_notes (const Report *r, double max_bpw)
{
  GPtrArray *lines = g_ptr_array_new_with_free_func (g_free);
  const Point *d = r->dense >= 0 ? &g_array_index (r->points, Point, r->dense) : NULL;
  gboolean any_kl = FALSE;
  for (guint i = 0; i < r->points->len; i++)
    {
      const Point *p = &g_array_index (r->points, Point, i);
      JsonObject *c = find_node (r, p->model);
      if (p == d || c == NULL || p->model == p->eval)
        continue;
      GString *s = g_string_new (NULL);
      g_string_append_printf (s, "compression (%s, %s): %.1f s", p->model, member_string (c, "pass"),
                              member_double (c, "duration", 0));
      if (d != NULL)
        g_string_append_printf (s, "; %.2fx smaller", d->bytes / p->bytes);
      if (json_object_has_member (p->metrics, "kl"))
        {
          g_string_append_printf (s, "; KL to the original %.4f nats/token, top-1 agreement %.1f%%",
                                  member_double (p->metrics, "kl", 0), 100 * member_double (p->metrics, "top1", 0));
          any_kl = TRUE;
        }
      g_ptr_array_add (lines, g_string_free (s, FALSE));
    }
  if (any_kl)
    g_ptr_array_add (lines, g_strdup ("(a compressed model's eval time includes running the original beside it for KL and top-1)"));
  for (guint i = 0; i < r->nodes->len; i++)
    {
      JsonObject *n = r->nodes->pdata[i];
      if (g_strcmp0 (member_string (n, "pass"), "save") == 0 && member_double (n, "output_bytes", 0) > 0)
        g_ptr_array_add (lines, g_strdup_printf ("saved: %.0f bytes (%s)", member_double (n, "output_bytes", 0),
                                                 member_string (n, "name")));
    }
  int best = best_within (r->points, max_bpw, r->dense);
  if (best < 0)
    g_ptr_array_add (lines, g_strdup_printf ("best at <= %g bits/weight: none measured", max_bpw));
  else
    {
      const Point *b = &g_array_index (r->points, Point, best);
      g_autofree char *vs = d ? g_strdup_printf (", %+.2f%% against the dense model's %.4f (%s)", 100 * (b->ppl / d->ppl - 1),
                                                 d->ppl, d->model)
                              : g_strdup ("");
      g_ptr_array_add (lines, g_strdup_printf ("best at <= %g bits/weight: %s, %.3f bits/weight (%.0f bytes), perplexity %.4f%s",
                                               max_bpw, b->model, b->bpw, b->bytes, b->ppl, vs));
    }
  return lines;
}

static void
print_table (const Report *r, GPtrArray *notes)
{
  guint n = r->points->len;
  g_autofree char **cells = g_new0 (char *, (n + 1) * N_COLS);
  for (guint c = 0; c < N_COLS; c++)
    cells[c] = g_strdup (table_head[c]);
  for (guint i = 0; i < n; i++)
    table_row (r, &g_array_index (r->points, Point, i), cells + (i + 1) * N_COLS);
  gsize width[N_COLS] = { 0 };
  for (guint i = 0; i <= n; i++)
    for (guint c = 0; c < N_COLS; c++)
      width[c] = MAX (width[c], strlen (cells[i * N_COLS + c]));
  /* The evaluation's shape, from the first model that says it. */
  double windows = 0, ctx = 0;
  for (guint i = 0; i < n && windows == 0; i++)
    {
      windows = member_double (g_array_index (r->points, Point, i).metrics, "windows", 0);
      ctx = member_double (g_array_index (r->points, Point, i).metrics, "ctx", 0);
    }
  printf ("\nbefore/after (%.0f windows of %.0f tokens, from %s; * the Pareto front)\n", windows, ctx, r->path);
  for (guint i = 0; i <= n; i++)
    {
      for (guint c = 0; c < N_COLS; c++)
        printf (c == 0 ? "%-*s" : "  %*s", (int) width[c], cells[i * N_COLS + c]);
      printf ("\n");
    }
  for (guint i = 0; i < (n + 1) * N_COLS; i++)
    g_free (cells[i]);
  for (guint i = 0; i < notes->len; i++)
    printf ("%s\n", (char *) notes->pdata[i]);
}

/* ---- pictures ---- */

static void
svg_text (GString *s, double x, double y, const char *anchor, const char *cls, const char *text)
{
  g_autofree char *esc = g_markup_escape_text (text, -1);
  g_string_append_printf (s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" class=\"%s\">%s</text>\n", x, y, anchor, cls, esc);
}

/* 1, 2, 5, 10, 20, ... within [lo, hi]. */
static GArray *
log_ticks (double lo, double hi)
{
  GArray *t = g_array_new (FALSE, FALSE, sizeof (double));
  static const double steps[] = { 1, 1.5, 2, 3, 4, 5, 6, 8 };
  for (double decade = pow (10, floor (log10 (lo))); decade <= hi; decade *= 10)
    for (guint k = 0; k < G_N_ELEMENTS (steps); k++)
      {
        double v = steps[k] * decade;
        if (v >= lo && v <= hi)
          g_array_append_val (t, v);
      }
  return t;
}

/* Bits per weight (log) against perplexity (log): every model a point
 * labelled with its node, the front drawn as a line through its points,
 * the dense model's perplexity and 5% above it as dashed lines, the budget
 * as a dotted one. */
static char *
frontier_svg (const Report *r, GArray *front, double max_bpw)
{
  const double W = 900, H = 560, L = 70, R = 30, T = 40, B = 60;
  double x0 = INFINITY, x1 = 0, y0 = INFINITY, y1 = 0;
  for (guint i = 0; i < r->points->len; i++)
    {
      const Point *p = &g_array_index (r->points, Point, i);
      x0 = MIN (x0, p->bpw), x1 = MAX (x1, p->bpw), y0 = MIN (y0, p->ppl), y1 = MAX (y1, p->ppl);
    }
  x0 = MIN (x0, max_bpw) / 1.15, x1 = MAX (x1, max_bpw) * 1.15, y0 /= 1.05, y1 *= 1.05;
  if (y1 / y0 < 1.2)
    y0 /= 1.1, y1 *= 1.1;
#define PX(v) (L + (log (v) - log (x0)) / (log (x1) - log (x0)) * (W - L - R))
#define PY(v) (H - B - (log (v) - log (y0)) / (log (y1) - log (y0)) * (H - T - B))
  GString *s = g_string_new (NULL);
  g_string_append_printf (s,
                          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n"
                          "<style>text{font-family:sans-serif;font-size:11px;fill:#222}.title{font-size:14px}"
                          ".label{font-size:9px;fill:#444}.axis{stroke:#222}.grid{stroke:#ddd}"
                          ".point{fill:#9aa;stroke:#566}.front{fill:#d33;stroke:#800}</style>\n"
                          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                          W, H, W, H);
  svg_text (s, W / 2, 22, "middle", "title", "size against quality: bits per weight vs perplexity (both log scale)");
  g_autoptr (GArray) xt = log_ticks (x0, x1), yt = log_ticks (y0, y1);
  for (guint i = 0; i < xt->len; i++)
    {
      double v = g_array_index (xt, double, i);
      g_string_append_printf (s, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", PX (v), T, PX (v), H - B);
      g_autofree char *t = g_strdup_printf ("%g", v);
      svg_text (s, PX (v), H - B + 16, "middle", "tick", t);
    }
  for (guint i = 0; i < yt->len; i++)
    {
      double v = g_array_index (yt, double, i);
      g_string_append_printf (s, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, PY (v), W - R, PY (v));
      g_autofree char *t = g_strdup_printf ("%g", v);
      svg_text (s, L - 6, PY (v) + 4, "end", "tick", t);
    }
  g_string_append_printf (s, "<path class=\"axis\" fill=\"none\" d=\"M%.1f %.1fV%.1fH%.1f\"/>\n", L, T, H - B, W - R);
  svg_text (s, (L + W - R) / 2, H - 18, "middle", "axis-label", "bits per weight (the whole model, as stored)");
  g_string_append_printf (s, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">perplexity</text>\n",
                          (T + H - B) / 2);
  g_string_append_printf (s, "<line class=\"budget\" stroke=\"#36c\" stroke-dasharray=\"2 3\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                          PX (max_bpw), T, PX (max_bpw), H - B);
  g_autofree char *budget = g_strdup_printf ("%g bits/weight", max_bpw);
  svg_text (s, PX (max_bpw) + 4, T + 12, "start", "label", budget);
  if (r->dense >= 0)
    {
      const Point *d = &g_array_index (r->points, Point, r->dense);
      for (int k = 0; k < 2; k++)
        {
          double v = d->ppl * (k ? 1.05 : 1.0);
          if (v > y1)
            continue;
          g_string_append_printf (s, "<line class=\"dense\" stroke=\"#888\" stroke-dasharray=\"6 4\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                                  L, PY (v), W - R, PY (v));
          g_autofree char *t2 = k ? g_strdup_printf ("dense +5%% (%.4f)", v) : g_strdup_printf ("dense: %s (%.4f)", d->model, v);
          svg_text (s, W - R - 4, PY (v) - 4, "end", "label", t2);
        }
    }
  /* The front: a line through its points in order of size. */
  g_string_append (s, "<polyline class=\"front-line\" fill=\"none\" stroke=\"#d33\" stroke-width=\"1.5\" points=\"");
  for (guint k = 0; k < front->len; k++)
    {
      const Point *p = &g_array_index (r->points, Point, g_array_index (front, guint, k));
      g_string_append_printf (s, "%s%.1f,%.1f", k ? " " : "", PX (p->bpw), PY (p->ppl));
    }
  g_string_append (s, "\"/>\n");
  for (guint i = 0; i < r->points->len; i++)
    {
      const Point *p = &g_array_index (r->points, Point, i);
      g_autofree char *name = g_markup_escape_text (p->model, -1);
      g_string_append_printf (s, "<circle class=\"%s\" data-node=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\"><title>%s: %.3f bits/weight, "
                                 "%.0f bytes, perplexity %.4f</title></circle>\n",
                              p->front ? "front" : "point", name, PX (p->bpw), PY (p->ppl), name, p->bpw, p->bytes, p->ppl);
      svg_text (s, PX (p->bpw) + 6, PY (p->ppl) - 5, "start", "label", p->model);
    }
  g_string_append (s, "</svg>\n");
#undef PX
#undef PY
  return g_string_free (s, FALSE);
}

/* blk.3.attn_q.weight -> layer 3, "attn_q"; token_embd.weight -> -1, "token_embd". */
static int
split_tensor (const char *name, char **kind)
{
  int layer = -1;
  const char *rest = name;
  if (g_str_has_prefix (name, "blk."))
    {
      char *end = NULL;
      gint64 l = g_ascii_strtoll (name + 4, &end, 10);
      if (end && *end == '.' && end != name + 4)
        layer = (int) l, rest = end + 1;
    }
  *kind = g_strdup (rest);
  if (g_str_has_suffix (*kind, ".weight"))
    (*kind)[strlen (*kind) - 7] = '\0';
  return layer;
}

/* White through yellow and orange to dark red. */
static void
heat_colour (double t, char out[8])
{
  static const double stops[][3] = { { 255, 255, 255 }, { 254, 224, 139 }, { 244, 109, 67 }, { 165, 0, 38 } };
  t = CLAMP (t, 0, 1) * 3;
  int k = MIN ((int) t, 2);
  double f = t - k;
  g_snprintf (out, 8, "#%02x%02x%02x", (int) (stops[k][0] + f * (stops[k + 1][0] - stops[k][0])),
              (int) (stops[k][1] + f * (stops[k + 1][1] - stops[k][1])), (int) (stops[k][2] + f * (stops[k + 1][2] - stops[k][2])));
}

/* One panel per evaluated model that has per-matrix figures: layers down,
 * matrices across, coloured by the relative weight error to the reference
 * (error.*), or by the bits per weight (bpw.*) where no model has errors.
 * All panels share one scale. */
static char *
heatmap_svg (const Report *r)
{
  const char *prefix = "error.";
  gboolean any = FALSE;
  for (int pass = 0; pass < 2 && !any; pass++)
    {
      prefix = pass ? "bpw." : "error.";
      for (guint i = 0; i < r->points->len && !any; i++)
        {
          g_autoptr (GList) keys = json_object_get_members (g_array_index (r->points, Point, i).metrics);
          for (GList *k = keys; k && !any; k = k->next)
            any = g_str_has_prefix (k->data, prefix);
        }
    }
  g_autoptr (GPtrArray) kinds = g_ptr_array_new_with_free_func (g_free);
  int max_layer = -1;
  gboolean other = FALSE;
  double vmax = 0;
  g_autoptr (GPtrArray) panels = g_ptr_array_new ();
  for (guint i = 0; i < r->points->len; i++)
    {
      Point *p = &g_array_index (r->points, Point, i);
      g_autoptr (GList) keys = json_object_get_members (p->metrics);
      gboolean has = FALSE;
      for (GList *k = keys; k; k = k->next)
        {
          if (!g_str_has_prefix (k->data, prefix))
            continue;
          g_autofree char *kind = NULL;
          int layer = split_tensor ((const char *) k->data + strlen (prefix), &kind);
          max_layer = MAX (max_layer, layer);
          other |= layer < 0;
          guint at;
          if (!g_ptr_array_find_with_equal_func (kinds, kind, g_str_equal, &at))
            g_ptr_array_add (kinds, g_steal_pointer (&kind));
          vmax = MAX (vmax, member_double (p->metrics, k->data, 0));
          has = TRUE;
        }
      if (has && (int) i != r->dense)
        g_ptr_array_add (panels, p);
    }
  guint rows = (guint) (max_layer + 1) + (other ? 1 : 0), cols = kinds->len;
  const double cw = 14, ch = MAX (4.0, MIN (12.0, 300.0 / MAX (rows, 1u))), head = 64, left = 46, gap = 30;
  gsize longest = 0;
  for (guint pi = 0; pi < panels->len; pi++)
    longest = MAX (longest, strlen (((Point *) panels->pdata[pi])->model) + 20);
  double pw = MAX (left + cols * cw + gap, 5.6 * longest + 16), ph = head + rows * ch + 24;
  guint per_row = MAX (1u, (guint) (1100 / pw));
  guint n_rows = panels->len ? (panels->len + per_row - 1) / per_row : 1;
  double W = MAX (420.0, MIN (panels->len, per_row) * pw + 20), H = 70 + n_rows * ph + 40;
  GString *s = g_string_new (NULL);
  g_string_append_printf (s,
                          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n"
                          "<style>text{font-family:sans-serif;font-size:9px;fill:#222}.title{font-size:14px}"
                          ".panel{font-size:10px}</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                          W, H, W, H);
  const char *what = strcmp (prefix, "error.") == 0 ? "relative weight error ||W - W_dense|| / ||W_dense|| per matrix"
                                                     : "bits per weight per matrix";
  svg_text (s, 10, 22, "start", "title", what);
  if (panels->len == 0)
    svg_text (s, 10, 50, "start", "panel", "no per-matrix figures in report.json (an eval of this version records them)");
  /* The scale: ten steps from 0 to the largest value. */
  for (int k = 0; k < 10 && panels->len; k++)
    {
      char col[8];
      heat_colour ((k + 0.5) / 10, col);
      g_string_append_printf (s, "<rect x=\"%.1f\" y=\"32\" width=\"16\" height=\"10\" fill=\"%s\"/>\n", 10.0 + 16 * k, col);
    }
  if (panels->len)
    {
      g_autofree char *hi = g_strdup_printf ("0 to %.4g", vmax);
      svg_text (s, 180, 41, "start", "panel", hi);
    }
  for (guint pi = 0; pi < panels->len; pi++)
    {
      const Point *p = panels->pdata[pi];
      double ox = 10 + (pi % per_row) * pw, oy = 60 + (pi / per_row) * ph;
      g_autofree char *title = g_strdup_printf ("%s (%.2f bits/weight)", p->model, p->bpw);
      svg_text (s, ox, oy + 10, "start", "panel", title);
      for (guint c = 0; c < cols; c++)
        {
          g_autofree char *lbl = g_markup_escape_text (kinds->pdata[c], -1);
          g_string_append_printf (s, "<text transform=\"translate(%.1f %.1f) rotate(-60)\">%s</text>\n",
                                  ox + left + c * cw + cw / 2 + 3, oy + head - 4, lbl);
        }
      for (guint row = 0; row < rows; row++)
        {
          gboolean is_other = row == (guint) (max_layer + 1);
          g_autofree char *rl = is_other ? g_strdup ("other") : g_strdup_printf ("%u", row);
          if (is_other || rows <= 40 || row % 5 == 0)
            svg_text (s, ox + left - 4, oy + head + row * ch + ch - 1, "end", "row", rl);
          for (guint c = 0; c < cols; c++)
            {
              g_autofree char *key = is_other ? g_strdup_printf ("%s%s.weight", prefix, (char *) kinds->pdata[c])
                                              : g_strdup_printf ("%sblk.%u.%s.weight", prefix, row, (char *) kinds->pdata[c]);
              if (!json_object_has_member (p->metrics, key))
                continue;
              double v = member_double (p->metrics, key, 0);
              char col[8];
              heat_colour (vmax > 0 ? v / vmax : 0, col);
              g_autofree char *tip = g_markup_escape_text (key + strlen (prefix), -1);
              g_string_append_printf (s, "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                                         "stroke=\"#eee\" stroke-width=\"0.5\"><title>%s: %.5g</title></rect>\n",
                                      ox + left + c * cw, oy + head + row * ch, cw, ch, col, tip, v);
            }
        }
    }
  g_string_append (s, "</svg>\n");
  return g_string_free (s, FALSE);
}

/* ---- the page ---- */

static char *
report_html (const Report *r, const char *frontier, const char *heatmap, GPtrArray *notes)
{
  GString *s = g_string_new ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
  g_autofree char *spec = g_markup_escape_text (member_string (r->root, "spec") ? member_string (r->root, "spec") : "?", -1);
  g_string_append_printf (s, "<title>llmpress report: %s</title>\n", spec);
  g_string_append (s, "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
                      "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
                      "{text-align:left}tr.front td:first-child{color:#b00;font-weight:bold}p.note{margin:4px 0}</style>\n"
                      "</head>\n<body>\n");
  g_autofree char *started = g_markup_escape_text (member_string (r->root, "started") ? member_string (r->root, "started") : "", -1);
  g_string_append_printf (s, "<h1>llmpress report</h1>\n<p>spec %s, run %s (llmpress %s)</p>\n", spec, started,
                          member_string (r->root, "llmpress") ? member_string (r->root, "llmpress") : "?");
  g_string_append (s, "<h2>Size against quality</h2>\n");
  g_string_append (s, frontier);
  g_string_append (s, "<h2>Before and after</h2>\n<table>\n<tr>");
  for (guint c = 0; c < N_COLS; c++)
    g_string_append_printf (s, "<th>%s</th>", table_head[c]);
  g_string_append (s, "</tr>\n");
  for (guint i = 0; i < r->points->len; i++)
    {
      const Point *p = &g_array_index (r->points, Point, i);
      char *cells[N_COLS];
      table_row (r, p, cells);
      g_string_append_printf (s, "<tr%s>", p->front ? " class=\"front\"" : "");
      for (guint c = 0; c < N_COLS; c++)
        {
          g_autofree char *esc = g_markup_escape_text (cells[c], -1);
          g_string_append_printf (s, "<td>%s</td>", esc);
          g_free (cells[c]);
        }
      g_string_append (s, "</tr>\n");
    }
  g_string_append (s, "</table>\n<p>* the Pareto front: no other model is both smaller and better.</p>\n");
  for (guint i = 0; i < notes->len; i++)
    {
      g_autofree char *esc = g_markup_escape_text (notes->pdata[i], -1);
      g_string_append_printf (s, "<p class=\"note\">%s</p>\n", esc);
    }
  g_string_append (s, "<h2>Per layer</h2>\n");
  g_string_append (s, heatmap);
  g_string_append (s, "</body>\n</html>\n");
  return g_string_free (s, FALSE);
}

static gboolean
write_file (const char *dir, const char *name, const char *text, GError **error)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  GError *e = NULL;
  if (!g_file_set_contents (path, text, -1, &e))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot write: %s", path, e->message);
      g_error_free (e);
      return FALSE;
    }
  return TRUE;
}

int
lp_cmd_report (int argc, char **argv)
{
  g_autofree char *out_dir = NULL;
  double max_bpw = 3.2;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out_dir, "write the pictures and the page into DIR (default: RUN_DIR)", "DIR" },
    { "max-bpw", 0, 0, G_OPTION_ARG_DOUBLE, &max_bpw, "name the best model within this many bits per weight (default 3.2)", "BPW" },
    { NULL }
  };
  if (!lp_cli_parse ("report", "RUN_DIR", "Draw a run's size-quality frontier and per-layer errors, and print its table.",
                     "Reads RUN_DIR/report.json (written by 'llmpress run') and writes frontier.svg (bits per weight "
                     "against perplexity of every evaluated model, the Pareto front marked), heatmap.svg (each model's "
                     "relative weight error per layer and matrix) and report.html (both, with the table); prints the "
                     "table.",
                     entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2)
    return lp_cli_usage_error ("report", "expected one RUN_DIR, found %d arguments", argc - 1);
  if (!(max_bpw > 0))
    return lp_cli_usage_error ("report", "--max-bpw: expected a number above 0, found %g", max_bpw);
  g_autofree char *path = g_build_filename (argv[1], "report.json", NULL);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GPtrArray) nodes = g_ptr_array_new ();
  g_autoptr (GArray) points = g_array_new (FALSE, FALSE, sizeof (Point));
  Report r = { .nodes = nodes, .points = points, .dense = -1 };
  GError *error = NULL;
  if (!report_read (&r, parser, path, &error))
    return lp_cli_fail (error);
  r.dense = dense_point (points);
  g_autoptr (GArray) front = pareto_front (points);
  g_autoptr (GPtrArray) notes = table_notes (&r, max_bpw);
  const char *dir = out_dir ? out_dir : argv[1];
  if (g_mkdir_with_parents (dir, 0755) != 0)
    {
      lp_set_error (&error, LP_ERROR_IO, "%s: cannot create the output directory", dir);
      return lp_cli_fail (error);
    }
  g_autofree char *frontier = frontier_svg (&r, front, max_bpw);
  g_autofree char *heatmap = heatmap_svg (&r);
  g_autofree char *html = report_html (&r, frontier, heatmap, notes);
  if (!write_file (dir, "frontier.svg", frontier, &error) || !write_file (dir, "heatmap.svg", heatmap, &error)
      || !write_file (dir, "report.html", html, &error))
    return lp_cli_fail (error);
  print_table (&r, notes);
  return LP_EXIT_OK;
}
