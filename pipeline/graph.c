/* llmpress — pipeline graphs: raw specs checked against the pass registry
 * and turned into a DAG.  Every problem is collected, so one validation run
 * shows them all. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "outputs.h"
#include "graph.h"
#include "spec-private.h"

struct _LpGraph {
  char *source;
  GPtrArray *nodes;        /* LpNode *, spec order */
  GHashTable *by_name;
  LpPipelineSettings settings;
};

typedef struct {
  const LpInputSpec *spec;
  const LpRawEntry *entry;  /* input=NAME as written */
} PendingInput;

/* A list-valued parameter of a spec node (bits=2,3,4): one branch per item. */
typedef struct {
  LpNode *node;       /* the spec node, as written */
  guint param;        /* index in its pass's parameter table */
  GPtrArray *items;   /* char *: the items' canonical texts, in the list's order */
} Axis;

static Axis *
axis_new (LpNode *node, guint param)
{
  Axis *a = g_new0 (Axis, 1);
  a->node = node;
  a->param = param;
  a->items = g_ptr_array_new_with_free_func (g_free);
  return a;
}

static void
axis_free (Axis *a)
{
  g_ptr_array_unref (a->items);
  g_free (a);
}

static void
node_free (LpNode *n)
{
  for (guint i = 0; i < n->n_params; i++)
    lp_param_value_free (n->values[i]);
  g_free (n->values);
  g_free (n->given);
  g_ptr_array_unref (n->inputs);
  g_ptr_array_unref (n->consumers);
  g_free (n->name);
  g_free (n->location);
  g_free (n);
}

void
lp_graph_free (LpGraph *graph)
{
  if (graph == NULL)
    return;
  g_ptr_array_unref (graph->nodes);
  g_hash_table_unref (graph->by_name);
  g_free (graph->source);
  g_free (graph->settings.description);
  g_free (graph->settings.calibration);
  g_free (graph->settings.backend);
  g_free (graph);
}

static const char *const settings_keys[] = { "description", "calibration", "seed", "backend", "calibration_samples",
                                             "calibration_seq_len", "calibration_range", "calibration_mode" };

/* "START:END" token range (either side may be empty). */
static gboolean
parse_range (const char *text, gint64 *start, gint64 *end)
{
  g_auto (GStrv) parts = g_strsplit (text, ":", -1);
  if (g_strv_length (parts) != 2)
    return FALSE;
  guint64 a = 0, b = 0;
  if (*parts[0] && !g_ascii_string_to_unsigned (parts[0], 10, 0, G_MAXINT64, &a, NULL))
    return FALSE;
  if (*parts[1] && !g_ascii_string_to_unsigned (parts[1], 10, 0, G_MAXINT64, &b, NULL))
    return FALSE;
  *start = (gint64) a;
  *end = *parts[1] ? (gint64) b : -1;
  return *end < 0 || *end > *start;
}

static void
replace_str (char **field, const char *value)
{
  g_free (*field);
  *field = g_strdup (value);
}

static void
read_settings (LpGraph *g, const LpRawGroup *grp, GString *errors)
{
  g->settings.calib_samples = 128;
  g->settings.calib_seq_len = 512;
  g->settings.calib_end = -1;
  for (guint i = 0; grp && i < grp->entries->len; i++)
    {
      const LpRawEntry *e = grp->entries->pdata[i];
      if (strcmp (e->key, "description") == 0)
        replace_str (&g->settings.description, e->value);
      else if (strcmp (e->key, "calibration") == 0)
        replace_str (&g->settings.calibration, e->value);
      else if (strcmp (e->key, "backend") == 0)
        replace_str (&g->settings.backend, e->value);
      else if (strcmp (e->key, "calibration_samples") == 0 || strcmp (e->key, "calibration_seq_len") == 0)
        {
          guint64 v;
          gboolean samples = strcmp (e->key, "calibration_samples") == 0;
          if (!g_ascii_string_to_unsigned (e->value, 10, samples ? 1 : 2, 1 << 20, &v, NULL))
            lp_spec_add_error (errors, e->loc, "[pipeline] %s: expected an integer in [%d, %d], found '%s'", e->text,
                               samples ? 1 : 2, 1 << 20, e->value);
          else if (samples)
            g->settings.calib_samples = (gint64) v;
          else
            g->settings.calib_seq_len = (gint64) v;
        }
      else if (strcmp (e->key, "calibration_range") == 0)
        {
          if (!parse_range (e->value, &g->settings.calib_start, &g->settings.calib_end))
            lp_spec_add_error (errors, e->loc, "[pipeline] %s: expected a token range START:END with START < END, found '%s'",
                               e->text, e->value);
        }
      else if (strcmp (e->key, "calibration_mode") == 0)
        {
          if (strcmp (e->value, "sequential") != 0 && strcmp (e->value, "independent") != 0)
            lp_spec_add_error (errors, e->loc, "[pipeline] %s: expected sequential or independent, found '%s'", e->text,
                               e->value);
          g->settings.calib_independent = strcmp (e->value, "independent") == 0;
        }
      else if (strcmp (e->key, "seed") == 0)
        {
          if (!g_ascii_string_to_unsigned (e->value, 10, 0, G_MAXUINT64, &g->settings.seed, NULL))
            lp_spec_add_error (errors, e->loc, "[pipeline] %s: expected a non-negative integer, found '%s'", e->text,
                               e->value);
        }
      else
        {
          g_autofree char *hint = lp_did_you_mean (e->key, settings_keys, G_N_ELEMENTS (settings_keys));
          lp_spec_add_error (errors, e->loc, "[pipeline] %s: unknown setting '%s'%s (known: description, calibration, calibration_samples, calibration_seq_len, calibration_range, calibration_mode, seed, backend)",
                             e->text, e->key, hint);
        }
    }
}

static char *
pass_suggestion (LpRegistry *reg, const char *name)
{
  g_autoptr (GPtrArray) all = lp_registry_passes (reg);
  g_autofree const char **names = g_new0 (const char *, all->len + 1);
  for (guint i = 0; i < all->len; i++)
    names[i] = ((LpPassEntry *) all->pdata[i])->info->name;
  return lp_did_you_mean (name, names, all->len);
}

/* Keys a node may hold besides its parameters: for messages. */
static char *
key_suggestion (const LpPassInfo *info, const char *key)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new ();
  g_ptr_array_add (names, (gpointer) "pass");
  for (const LpParamSpec *s = info->params; s && s->name; s++)
    g_ptr_array_add (names, (gpointer) s->name);
  for (const LpInputSpec *s = info->inputs; s && s->name; s++)
    g_ptr_array_add (names, (gpointer) s->name);
  return lp_did_you_mean (key, (const char *const *) names->pdata, names->len);
}

/* A comma can be part of a string, a path or a tensor list, never of an int,
 * a float, a bool or an enum choice: only those parameters may be lists. */
static gboolean
sweepable (const LpParamSpec *s)
{
  return s->type == LP_PARAM_INT || s->type == LP_PARAM_FLOAT || s->type == LP_PARAM_BOOL || s->type == LP_PARAM_ENUM;
}

/* bits=2,3,4: each item checked on its own (the message names the item);
 * the axis gets the items' canonical texts.  Returns the first item's value
 * for the spec node, NULL when an item is wrong. */
static LpParamValue *
parse_list (const LpRawGroup *grp, const LpRawEntry *e, const LpParamSpec *s, const char *pass, GPtrArray *items,
            GString *errors)
{
  g_auto (GStrv) parts = g_strsplit (e->value, ",", -1);
  LpParamValue *first = NULL;
  gboolean ok = TRUE;
  for (guint i = 0; parts[i]; i++)
    {
      const char *item = g_strstrip (parts[i]);
      GError *err = NULL;
      LpParamValue *v = *item ? lp_param_value_parse (s, item, &err) : NULL;
      if (*item == '\0')
        lp_spec_add_error (errors, e->loc, "[%s] %s: item %u of the list is empty (hint: a list is VALUE,VALUE,...)",
                           grp->name, e->text, i + 1);
      else if (v == NULL)
        {
          lp_spec_add_error (errors, e->loc, "[%s] %s: %s: item %u '%s': %s (hint: 'llmpress describe %s' lists its parameters)",
                             grp->name, e->text, s->name, i + 1, item, err->message, pass);
          g_error_free (err);
        }
      else
        {
          /* A float by its shortest faithful text (2.8, not the canonical
           * 2.7999999999999998): it names the branch, and reads back as the
           * same double. */
          char buf[G_ASCII_DTOSTR_BUF_SIZE];
          const char *canon = s->type == LP_PARAM_FLOAT ? g_ascii_formatd (buf, sizeof buf, "%.15g", lp_param_value_get_float (v))
                                                        : lp_param_value_canonical (v);
          for (guint j = 0; j < items->len; j++)
            if (strcmp (items->pdata[j], canon) == 0)
              {
                lp_spec_add_error (errors, e->loc, "[%s] %s: item %u '%s' repeats item %u (hint: list each value once)",
                                   grp->name, e->text, i + 1, item, j + 1);
                ok = FALSE;
              }
          g_ptr_array_add (items, g_strdup (canon));
        }
      ok = ok && v != NULL;
      if (first == NULL)
        first = v;
      else
        lp_param_value_free (v);
    }
  if (!ok)
    g_clear_pointer (&first, lp_param_value_free);
  return first;
}

/* A spec node is built once as written (values: a list's first item; the
 * lists go to axes), then, when sweeps reach it, once per branch with
 * `items` (one text per parameter, NULL: as written) and its branch name. */
static LpNode *
build_node (LpGraph *g, const LpRawGroup *grp, LpRegistry *reg, GArray *pending, GPtrArray *axes,
            const char *const *items, const char *name, GString *errors)
{
  LpNode *n = g_new0 (LpNode, 1);
  n->name = g_strdup (name ? name : grp->name);
  n->location = g_strdup (grp->loc);
  n->index = g->nodes->len;
  n->inputs = g_ptr_array_new_with_free_func (g_free);
  n->consumers = g_ptr_array_new ();

  const LpRawEntry *pass_entry = NULL;
  for (guint i = 0; i < grp->entries->len; i++)
    if (strcmp (((LpRawEntry *) grp->entries->pdata[i])->key, "pass") == 0)
      pass_entry = grp->entries->pdata[i];
  const char *pass_name = pass_entry ? pass_entry->value : grp->name;
  n->pass = lp_registry_lookup (reg, pass_name);
  if (n->pass == NULL)
    {
      g_autofree char *hint = pass_suggestion (reg, pass_name);
      if (pass_entry)
        lp_spec_add_error (errors, pass_entry->loc, "[%s] %s: unknown pass '%s'%s (hint: 'llmpress plugins' lists them)",
                           grp->name, pass_entry->text, pass_name, hint);
      else
        lp_spec_add_error (errors, grp->loc, "[%s]: no pass= and '%s' is not a pass name%s (hint: add pass=PASS)",
                           grp->name, grp->name, hint);
      return n;
    }
  const LpPassInfo *info = n->pass->info;
  n->n_params = lp_pass_info_n_params (info);
  n->values = g_new0 (LpParamValue *, n->n_params);
  n->given = g_new0 (gboolean, n->n_params);
  for (guint i = 0; i < grp->entries->len; i++)
    {
      const LpRawEntry *e = grp->entries->pdata[i];
      if (e == pass_entry)
        continue;
      const LpInputSpec *in = lp_pass_info_find_input (info, e->key);
      if (in == NULL && strcmp (e->key, "input") == 0)
        {
          lp_spec_add_error (errors, e->loc, "[%s] %s: pass %s takes no input (hint: it is a source; remove input=)",
                             grp->name, e->text, info->name);
          continue;
        }
      if (in != NULL)
        {
          PendingInput p = { in, e };
          if (pending != NULL)
            g_array_append_val (pending, p);
          continue;
        }
      guint k = 0;
      const LpParamSpec *s = info->params;
      for (; s && s->name && strcmp (s->name, e->key) != 0; s++)
        k++;
      if (s == NULL || s->name == NULL)
        {
          g_autofree char *hint = key_suggestion (info, e->key);
          lp_spec_add_error (errors, e->loc, "[%s] %s: pass %s has no parameter '%s'%s (hint: 'llmpress describe %s')",
                             grp->name, e->text, info->name, e->key, hint, info->name);
          continue;
        }
      GError *err = NULL;
      if (items != NULL && items[k] != NULL)
        n->values[k] = lp_param_value_parse (s, items[k], &err);
      else if (axes != NULL && sweepable (s) && strchr (e->value, ',') != NULL)
        {
          Axis *a = axis_new (n, k);
          if ((n->values[k] = parse_list (grp, e, s, info->name, a->items, errors)) == NULL)
            {
              axis_free (a);
              continue;
            }
          g_ptr_array_add (axes, a);
          n->given[k] = TRUE;
          continue;
        }
      else
        n->values[k] = lp_param_value_parse (s, e->value, &err);
      if (n->values[k] == NULL)
        {
          lp_spec_add_error (errors, e->loc, "[%s] %s: %s: %s (hint: 'llmpress describe %s' lists its parameters)",
                             grp->name, e->text, s->name, err->message, info->name);
          g_error_free (err);
          continue;
        }
      n->given[k] = TRUE;
    }
  guint k = 0;
  for (const LpParamSpec *s = info->params; s && s->name; s++, k++)
    {
      if (n->values[k] != NULL || n->given[k])
        continue;
      if (s->default_value != NULL)
        n->values[k] = lp_param_value_parse (s, s->default_value, NULL);
      else if (s->flags & LP_PARAM_REQUIRED)
        {
          g_autofree char *type = g_ascii_strup (lp_param_type_name (s->type), -1);
          lp_spec_add_error (errors, grp->loc, "[%s]: missing required parameter '%s' of pass %s (hint: add %s=%s)",
                             grp->name, s->name, info->name, s->name, type);
        }
    }
  return n;
}

static LpArtifactKind
output_kind (const LpNode *n)
{
  return n->pass ? n->pass->info->output : (LpArtifactKind) -1;
}

static void
add_edge (LpNode *n, const LpInputSpec *spec, LpNode *src)
{
  LpNodeInput *in = g_new0 (LpNodeInput, 1);
  in->spec = spec;
  in->source = src;
  g_ptr_array_add (n->inputs, in);
  g_ptr_array_add (src->consumers, n);
}

static void
resolve_inputs (LpGraph *g, LpNode *n, GArray *pending, GString *errors)
{
  if (n->pass == NULL)
    return;
  const LpPassInfo *info = n->pass->info;
  g_autofree const char **names = g_new0 (const char *, g->nodes->len + 1);
  for (guint i = 0; i < g->nodes->len; i++)
    names[i] = ((LpNode *) g->nodes->pdata[i])->name;
  /* Declaration order, so inputs[] is stable whatever order the spec used. */
  for (const LpInputSpec *s = info->inputs; s && s->name; s++)
    {
      const LpRawEntry *e = NULL;
      for (guint i = 0; i < pending->len; i++)
        if (g_array_index (pending, PendingInput, i).spec == s)
          e = g_array_index (pending, PendingInput, i).entry;
      LpNode *src = NULL;
      if (e != NULL)
        {
          /* input=gptq[bits=3] reads one branch of a sweep: the node is gptq. */
          g_autofree char *base = g_strndup (e->value, strcspn (e->value, "["));
          src = g_hash_table_lookup (g->by_name, base);
          if (src == NULL)
            {
              g_autofree char *hint = lp_did_you_mean (base, names, g->nodes->len);
              lp_spec_add_error (errors, e->loc, "[%s] %s: missing input: no node named '%s'%s", n->name, e->text,
                                 base, hint);
              continue;
            }
          if (src == n)
            {
              lp_spec_add_error (errors, e->loc, "[%s] %s: cycle: the node reads its own output (hint: name the node it should read)",
                                 n->name, e->text);
              continue;
            }
        }
      else if (strcmp (s->name, "input") == 0)
        {
          /* The closest node above that produces what this input takes, so
           * "load, eval, save" saves the loaded model, not eval's metrics. */
          for (guint i = n->index; i-- > 0;)
            {
              LpNode *cand = g->nodes->pdata[i];
              if (output_kind (cand) == s->kind || cand->pass == NULL)
                {
                  src = cand;
                  break;
                }
            }
          if (src == NULL)
            {
              lp_spec_add_error (errors, n->location,
                                 "[%s]: missing input: pass %s needs a %s as 'input' and no node above produces one (hint: add input=NODE)",
                                 n->name, info->name, lp_artifact_kind_name (s->kind));
              continue;
            }
        }
      else if (!s->optional)
        {
          lp_spec_add_error (errors, n->location, "[%s]: missing input '%s' of pass %s (hint: add %s=NODE)", n->name,
                             s->name, info->name, s->name);
          continue;
        }
      else
        continue;
      if (output_kind (src) != s->kind && src->pass != NULL)
        {
          lp_spec_add_error (errors, e ? e->loc : n->location, "[%s] %s=%s: node %s produces %s, input '%s' takes a %s (hint: name a node that produces a %s)",
                             n->name, s->name, src->name, src->name, lp_artifact_kind_name (output_kind (src)),
                             s->name, lp_artifact_kind_name (s->kind), lp_artifact_kind_name (s->kind));
          continue;
        }
      add_edge (n, s, src);
    }
}

/* Kahn's algorithm, taking the earliest node in spec order among the ready. */
static GPtrArray *
topo_order (const LpGraph *g, GPtrArray **leftover)
{
  guint n = g->nodes->len;
  g_autofree guint *indeg = g_new0 (guint, n);
  g_autofree gboolean *done = g_new0 (gboolean, n);
  for (guint i = 0; i < n; i++)
    indeg[i] = ((LpNode *) g->nodes->pdata[i])->inputs->len;
  GPtrArray *order = g_ptr_array_new ();
  for (;;)
    {
      guint pick = G_MAXUINT;
      for (guint i = 0; i < n && pick == G_MAXUINT; i++)
        if (!done[i] && indeg[i] == 0)
          pick = i;
      if (pick == G_MAXUINT)
        break;
      done[pick] = TRUE;
      LpNode *node = g->nodes->pdata[pick];
      g_ptr_array_add (order, node);
      for (guint c = 0; c < node->consumers->len; c++)
        indeg[((LpNode *) node->consumers->pdata[c])->index]--;
    }
  if (leftover)
    {
      *leftover = g_ptr_array_new ();
      for (guint i = 0; i < n; i++)
        if (!done[i])
          g_ptr_array_add (*leftover, g->nodes->pdata[i]);
    }
  return order;
}

GPtrArray *
lp_graph_topo_order (const LpGraph *graph)
{
  return topo_order (graph, NULL);
}

static void
check_cycles (LpGraph *g, GString *errors)
{
  g_autoptr (GPtrArray) left = NULL;
  g_autoptr (GPtrArray) order = topo_order (g, &left);
  if (left->len == 0)
    return;
  /* Walk inputs among the leftover nodes until one repeats: that is a cycle.
   * (A leftover node may only hang below a cycle; following inputs always
   * reaches one.) */
  g_autoptr (GHashTable) in_left = g_hash_table_new (NULL, NULL);
  for (guint i = 0; i < left->len; i++)
    g_hash_table_add (in_left, left->pdata[i]);
  g_autoptr (GPtrArray) path = g_ptr_array_new ();
  LpNode *cur = left->pdata[0];
  while (!g_ptr_array_find (path, cur, NULL))
    {
      g_ptr_array_add (path, cur);
      LpNode *next = NULL;
      for (guint i = 0; i < cur->inputs->len && next == NULL; i++)
        {
          LpNode *src = ((LpNodeInput *) cur->inputs->pdata[i])->source;
          if (g_hash_table_contains (in_left, src))
            next = src;
        }
      cur = next;
    }
  guint start = 0;
  g_ptr_array_find (path, cur, &start);
  GString *chain = g_string_new (NULL);
  /* Print in data-flow order: producer -> consumer. */
  for (guint i = path->len; i-- > start;)
    g_string_append_printf (chain, "%s -> ", ((LpNode *) path->pdata[i])->name);
  g_string_append (chain, ((LpNode *) path->pdata[path->len - 1])->name);
  LpNode *first = path->pdata[start];
  lp_spec_add_error (errors, first->location, "[%s]: cycle: %s (hint: a node's input must not depend on its own output)",
                     first->name, chain->str);
  g_string_free (chain, TRUE);
}

/* Two sinks may not write the same path, nor one into the other's output
 * directory (the second would be replaced, or would land in a model). */
static void
check_outputs (LpGraph *g, GString *errors)
{
  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) owners = g_ptr_array_new ();
  for (guint i = 0; i < g->nodes->len; i++)
    {
      LpNode *n = g->nodes->pdata[i];
      guint k = 0;
      for (const LpParamSpec *s = n->pass ? n->pass->info->params : NULL; s && s->name; s++, k++)
        {
          if (!(s->flags & LP_PARAM_OUTPUT) || n->values[k] == NULL)
            continue;
          char *canon = g_canonicalize_filename (lp_param_value_get_string (n->values[k]), NULL);
          const char *value = lp_param_value_get_string (n->values[k]);
          gboolean clash = FALSE;
          for (guint j = 0; j < paths->len && !clash; j++)
            {
              const char *other_path = paths->pdata[j];
              LpNode *other = owners->pdata[j];
              clash = TRUE;
              if (strcmp (canon, other_path) == 0)
                lp_spec_add_error (errors, n->location,
                                   "[%s] %s=%s: two sinks write the same path: [%s] (%s) writes it too (hint: give each its own path)",
                                   n->name, s->name, value, other->name, other->location);
              else if (lp_path_is_inside (canon, other_path))
                lp_spec_add_error (errors, n->location,
                                   "[%s] %s=%s: writes inside the output of [%s] (%s) (hint: give each its own path)",
                                   n->name, s->name, value, other->name, other->location);
              else if (lp_path_is_inside (other_path, canon))
                lp_spec_add_error (errors, n->location,
                                   "[%s] %s=%s: would hold the output of [%s] (%s) (hint: give each its own path)",
                                   n->name, s->name, value, other->name, other->location);
              else
                clash = FALSE;
            }
          if (clash)
            g_free (canon);
          else
            {
              g_ptr_array_add (paths, canon);
              g_ptr_array_add (owners, n);
            }
        }
    }
}

/* Sweeps.  A branch is a spec node with one item chosen on every axis that
 * reaches it: its own lists and those of the nodes above it.  A node that
 * reads two swept nodes gets the branches that agree on the axes the two
 * share (bits=3 reached by two paths stays bits=3) and the cross product
 * of the others (two independent sweeps). */

typedef struct {
  LpNode *node;  /* the branch, a node of the final graph */
  int *pick;     /* per axis: the item chosen, -1 where the axis does not reach */
} Branch;

static void
branch_free (Branch *b)
{
  g_free (b->pick);
  g_free (b);
}

/* The most nodes a spec may sweep into: a typo (bits=2,3,4 on five nodes
 * of a chain is 3^5 = 243) should not fill the disk. */
#define MAX_BRANCHES 4096

static const char *
axis_param (const Axis *a)
{
  return a->node->pass->info->params[a->param].name;
}

/* The key an axis has in a branch's name: the parameter, or NODE.param
 * where another axis of the branch has a parameter of the same name. */
static char *
axis_key (GPtrArray *axes, const int *pick, guint i)
{
  const Axis *a = axes->pdata[i];
  for (guint j = 0; j < axes->len; j++)
    if (j != i && pick[j] >= 0 && strcmp (axis_param (axes->pdata[j]), axis_param (a)) == 0)
      return g_strdup_printf ("%s.%s", a->node->name, axis_param (a));
  return g_strdup (axis_param (a));
}

/* "bits=3,group_size=32" (axes in spec order), "" when no axis reaches. */
static char *
branch_label (GPtrArray *axes, const int *pick, const char *sep)
{
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < axes->len; i++)
    if (pick[i] >= 0)
      {
        g_autofree char *key = axis_key (axes, pick, i);
        const Axis *a = axes->pdata[i];
        g_string_append_printf (s, "%s%s=%s", s->len ? sep : "", key, (char *) a->items->pdata[pick[i]]);
      }
  return g_string_free (s, FALSE);
}

/* Does the branch pick what sel ("bits=3,group_size=32") names?  Marks the
 * axes it names in fixed[]. */
static gboolean
branch_selected (GPtrArray *axes, const int *pick, const char *sel, gboolean *fixed)
{
  g_auto (GStrv) parts = g_strsplit (sel, ",", -1);
  for (guint p = 0; parts[p]; p++)
    {
      const char *eq = strchr (parts[p], '=');
      if (eq == NULL)
        return FALSE;
      g_autofree char *key = g_strstrip (g_strndup (parts[p], eq - parts[p]));
      gboolean found = FALSE;
      for (guint i = 0; i < axes->len && !found; i++)
        {
          g_autofree char *k = pick[i] >= 0 ? axis_key (axes, pick, i) : NULL;
          if (k == NULL || strcmp (k, key) != 0)
            continue;
          const Axis *a = axes->pdata[i];
          g_autoptr (LpParamValue) v = lp_param_value_parse (&a->node->pass->info->params[a->param], eq + 1, NULL);
          if (v == NULL || strcmp (lp_param_value_canonical (v), a->items->pdata[pick[i]]) != 0)
            return FALSE;
          found = fixed[i] = TRUE;
        }
      if (!found)
        return FALSE;
    }
  return TRUE;
}

/* out.gguf -> out.bits=3.gguf, card/ -> card.bits=3: each branch of a sink
 * writes its own file. */
static char *
branch_path (const char *path, const char *label)
{
  g_autofree char *p = g_strdup (path);
  gsize len = strlen (p);
  while (len > 1 && p[len - 1] == '/')
    p[--len] = '\0';
  const char *slash = strrchr (p, '/');
  const char *base = slash ? slash + 1 : p;
  const char *dot = strrchr (base, '.');
  if (dot == NULL || dot == base)
    return g_strdup_printf ("%s.%s", p, label);
  return g_strdup_printf ("%.*s.%s%s", (int) (dot - p), p, label, dot);
}

static const char *
input_selector (GArray *pending, const LpInputSpec *spec)
{
  for (guint i = 0; i < pending->len; i++)
    if (g_array_index (pending, PendingInput, i).spec == spec)
      return strchr (g_array_index (pending, PendingInput, i).entry->value, '[');
  return NULL;
}

/* Do two branches pick the same item on every axis both reach? */
static gboolean
branches_agree (const Branch *a, const Branch *b, guint n_axes)
{
  for (guint i = 0; i < n_axes; i++)
    if (a->pick[i] >= 0 && b->pick[i] >= 0 && a->pick[i] != b->pick[i])
      return FALSE;
  return TRUE;
}

/* A gathering node's (LP_PASS_GATHERS) edges: every branch of its main
 * input, then for each other input the one branch that agrees with each of
 * those, in the same order, so branch i of every input belongs together.
 * FALSE (an error added) when an input has none or several that agree. */
static gboolean
gather_edges (LpNode *n, LpNode *t, GArray *pending, GPtrArray *axes, GHashTable *branches, GString *errors)
{
  g_autoptr (GPtrArray) main = g_ptr_array_new ();  /* const Branch *: the main input's */
  for (guint j = 0; j < t->inputs->len; j++)
    {
      LpNodeInput *in = t->inputs->pdata[j];
      GPtrArray *from = g_hash_table_lookup (branches, in->source);
      const char *sel = input_selector (pending, in->spec);
      g_autofree char *sel_body = sel ? g_strndup (sel + 1, strcspn (sel + 1, "]")) : NULL;
      g_autoptr (GPtrArray) mine = g_ptr_array_new ();
      for (guint b = 0; b < from->len; b++)
        {
          const Branch *br = from->pdata[b];
          g_autofree gboolean *fixed = g_new0 (gboolean, axes->len);
          if (!sel_body || branch_selected (axes, br->pick, sel_body, fixed))
            g_ptr_array_add (mine, (gpointer) br);
        }
      if (j == 0)
        {
          for (guint b = 0; b < mine->len; b++)
            {
              g_ptr_array_add (main, mine->pdata[b]);
              add_edge (n, in->spec, ((const Branch *) mine->pdata[b])->node);
            }
          continue;
        }
      for (guint m = 0; m < main->len; m++)
        {
          const Branch *found = NULL;
          guint n_found = 0;
          for (guint b = 0; b < mine->len; b++)
            if (branches_agree (main->pdata[m], mine->pdata[b], axes->len))
              found = mine->pdata[b], n_found++;
          if (n_found != 1)
            {
              const char *loc = t->location;
              for (guint i = 0; i < pending->len; i++)
                if (g_array_index (pending, PendingInput, i).spec == in->spec)
                  loc = g_array_index (pending, PendingInput, i).entry->loc;
              lp_spec_add_error (errors, loc, "[%s] %s=%s: expected one branch of %s for %s, found %u (hint: "
                                 "%s gathers a sweep: its inputs must sweep the same lists)", t->name, in->spec->name,
                                 in->source->name, in->source->name, ((const Branch *) main->pdata[m])->node->name,
                                 n_found, t->pass->info->name);
              return FALSE;
            }
          add_edge (n, in->spec, found->node);
        }
    }
  return TRUE;
}

/* One spec node's branches from its inputs' (all built already). */
static void
expand_node (LpGraph *g, LpNode *t, const LpRawGroup *grp, GArray *pending, GPtrArray *axes, GHashTable *branches,
             LpRegistry *reg, guint *n_made, GString *errors)
{
  guint n_axes = axes->len;
  /* A gathering node reads every branch at once: it starts from no branch. */
  gboolean gathers = (t->pass->info->flags & LP_PASS_GATHERS) != 0;
  g_autoptr (GPtrArray) picks = g_ptr_array_new_with_free_func (g_free);  /* int[n_axes] */
  g_autoptr (GPtrArray) srcs = g_ptr_array_new_with_free_func (g_free);   /* LpNode *[n_inputs] */
  int *p0 = g_new (int, n_axes);
  for (guint i = 0; i < n_axes; i++)
    p0[i] = -1;
  g_ptr_array_add (picks, p0);
  g_ptr_array_add (srcs, g_new0 (LpNode *, t->inputs->len + 1));
  for (guint j = 0; j < t->inputs->len && !gathers; j++)
    {
      LpNodeInput *in = t->inputs->pdata[j];
      GPtrArray *from = g_hash_table_lookup (branches, in->source);
      const char *sel = input_selector (pending, in->spec);
      g_autofree char *sel_body = sel ? g_strndup (sel + 1, strcspn (sel + 1, "]")) : NULL;
      g_autoptr (GPtrArray) np = g_ptr_array_new_with_free_func (g_free);
      g_autoptr (GPtrArray) ns = g_ptr_array_new_with_free_func (g_free);
      gboolean any = FALSE;
      for (guint c = 0; c < picks->len; c++)
        for (guint b = 0; b < from->len; b++)
          {
            const Branch *br = from->pdata[b];
            g_autofree gboolean *fixed = g_new0 (gboolean, n_axes);
            if (sel_body && !branch_selected (axes, br->pick, sel_body, fixed))
              continue;
            any = TRUE;
            const int *cp = picks->pdata[c];
            int *merged = g_memdup2 (cp, n_axes * sizeof (int));
            gboolean agree = TRUE;
            /* A branch named by input=NODE[...] passes on none of the axes it fixes. */
            for (guint i = 0; i < n_axes && agree; i++)
              {
                int bp = fixed[i] ? -1 : br->pick[i];
                if (bp >= 0 && cp[i] >= 0 && bp != cp[i])
                  agree = FALSE;
                else if (bp >= 0)
                  merged[i] = bp;
              }
            if (!agree)
              {
                g_free (merged);
                continue;
              }
            LpNode **s = g_memdup2 (srcs->pdata[c], (t->inputs->len + 1) * sizeof (LpNode *));
            s[j] = br->node;
            g_ptr_array_add (np, merged);
            g_ptr_array_add (ns, s);
          }
      if (sel_body && !any)
        {
          g_autoptr (GString) names = g_string_new (NULL);
          for (guint b = 0; b < from->len; b++)
            g_string_append_printf (names, "%s%s", b ? ", " : "", ((Branch *) from->pdata[b])->node->name);
          const PendingInput *pi = NULL;
          for (guint i = 0; i < pending->len; i++)
            if (g_array_index (pending, PendingInput, i).spec == in->spec)
              pi = &g_array_index (pending, PendingInput, i);
          lp_spec_add_error (errors, pi->entry->loc, "[%s] %s: node %s has no branch %s (its branches: %s)", t->name,
                             pi->entry->text, in->source->name, sel, names->str);
          return;
        }
      g_ptr_array_unref (picks);
      g_ptr_array_unref (srcs);
      picks = g_ptr_array_ref (np);
      srcs = g_ptr_array_ref (ns);
    }
  /* The node's own lists: every item on every branch so far. */
  for (guint i = 0; i < n_axes; i++)
    {
      const Axis *a = axes->pdata[i];
      if (a->node != t)
        continue;
      g_autoptr (GPtrArray) np = g_ptr_array_new_with_free_func (g_free);
      g_autoptr (GPtrArray) ns = g_ptr_array_new_with_free_func (g_free);
      for (guint c = 0; c < picks->len; c++)
        for (guint k = 0; k < a->items->len; k++)
          {
            int *pk = g_memdup2 (picks->pdata[c], n_axes * sizeof (int));
            pk[i] = (int) k;
            g_ptr_array_add (np, pk);
            g_ptr_array_add (ns, g_memdup2 (srcs->pdata[c], (t->inputs->len + 1) * sizeof (LpNode *)));
          }
      g_ptr_array_unref (picks);
      g_ptr_array_unref (srcs);
      picks = g_ptr_array_ref (np);
      srcs = g_ptr_array_ref (ns);
    }
  *n_made += picks->len;
  if (*n_made > MAX_BRANCHES)
    {
      lp_spec_add_error (errors, t->location, "[%s]: the sweeps make more than %d nodes (hint: shorten the lists)", t->name,
                         MAX_BRANCHES);
      return;
    }
  GPtrArray *mine = g_ptr_array_new_with_free_func ((GDestroyNotify) branch_free);
  g_hash_table_insert (branches, t, mine);
  g_autofree const char **items = g_new0 (const char *, MAX (t->n_params, 1));
  for (guint c = 0; c < picks->len; c++)
    {
      const int *pk = picks->pdata[c];
      for (guint i = 0; i < n_axes; i++)
        if (((Axis *) axes->pdata[i])->node == t)
          items[((Axis *) axes->pdata[i])->param] = ((Axis *) axes->pdata[i])->items->pdata[pk[i]];
      g_autofree char *label = branch_label (axes, pk, ",");
      g_autofree char *name = *label ? g_strdup_printf ("%s[%s]", t->name, label) : g_strdup (t->name);
      LpNode *n = build_node (g, grp, reg, NULL, NULL, items, name, errors);
      LpNode **s = srcs->pdata[c];
      /* On an error the node is still listed, so it is freed with the rest. */
      gboolean ok = TRUE;
      if (gathers)
        ok = gather_edges (n, t, pending, axes, branches, errors);
      else
        for (guint j = 0; j < t->inputs->len; j++)
          add_edge (n, ((LpNodeInput *) t->inputs->pdata[j])->spec, s[j]);
      guint k = 0;
      for (const LpParamSpec *sp = n->pass->info->params; *label && sp->name; sp++, k++)
        if ((sp->flags & LP_PARAM_OUTPUT) && n->values[k] != NULL)
          {
            g_autofree char *suffix = branch_label (axes, pk, ".");
            g_autofree char *path = branch_path (lp_param_value_get_string (n->values[k]), suffix);
            lp_param_value_free (n->values[k]);
            n->values[k] = lp_param_value_parse (sp, path, NULL);
          }
      Branch *b = g_new0 (Branch, 1);
      b->node = n;
      b->pick = g_memdup2 (pk, n_axes * sizeof (int));
      g_ptr_array_add (mine, b);
      if (!ok)
        return;
    }
}

/* Replaces the spec's nodes by their branches, each spec node's branches
 * where it stood. */
static void
expand_sweeps (LpGraph *g, LpRawSpec *raw, GPtrArray *pendings, GPtrArray *axes, LpRegistry *reg, GString *errors)
{
  g_autoptr (GHashTable) branches = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) g_ptr_array_unref);
  g_autoptr (GPtrArray) order = topo_order (g, NULL);
  guint n_made = 0;
  for (guint i = 0; i < order->len && errors->len == 0; i++)
    {
      LpNode *t = order->pdata[i];
      expand_node (g, t, raw->groups->pdata[t->index], pendings->pdata[t->index], axes, branches, reg, &n_made, errors);
    }
  GPtrArray *nodes = g_ptr_array_new_with_free_func ((GDestroyNotify) node_free);
  for (guint i = 0; i < g->nodes->len; i++)
    {
      GPtrArray *mine = g_hash_table_lookup (branches, g->nodes->pdata[i]);
      for (guint b = 0; mine && b < mine->len; b++)
        g_ptr_array_add (nodes, ((Branch *) mine->pdata[b])->node);
    }
  if (errors->len > 0)
    {
      /* Nothing is kept: free the branches built so far. */
      g_ptr_array_unref (nodes);
      return;
    }
  g_hash_table_remove_all (g->by_name);
  g_ptr_array_unref (g->nodes);
  g->nodes = nodes;
  for (guint i = 0; i < nodes->len; i++)
    {
      LpNode *n = nodes->pdata[i];
      n->index = i;
      g_hash_table_insert (g->by_name, n->name, n);
    }
}

static LpGraph *
build (LpRawSpec *raw, LpRegistry *reg, GString *errors, GError **error)
{
  g_autoptr (LpGraph) g = g_new0 (LpGraph, 1);
  g->source = g_strdup (raw->source);
  g->nodes = g_ptr_array_new_with_free_func ((GDestroyNotify) node_free);
  g->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  read_settings (g, raw->settings, errors);
  g_autoptr (GPtrArray) pendings = g_ptr_array_new_with_free_func ((GDestroyNotify) g_array_unref);
  g_autoptr (GPtrArray) axes = g_ptr_array_new_with_free_func ((GDestroyNotify) axis_free);
  gboolean selectors = FALSE;
  for (guint i = 0; i < raw->groups->len; i++)
    {
      GArray *pending = g_array_new (FALSE, FALSE, sizeof (PendingInput));
      LpNode *n = build_node (g, raw->groups->pdata[i], reg, pending, axes, NULL, NULL, errors);
      g_ptr_array_add (g->nodes, n);
      g_hash_table_insert (g->by_name, n->name, n);
      g_ptr_array_add (pendings, pending);
      for (guint k = 0; k < pending->len; k++)
        selectors |= strchr (g_array_index (pending, PendingInput, k).entry->value, '[') != NULL;
    }
  for (guint i = 0; i < g->nodes->len; i++)
    resolve_inputs (g, g->nodes->pdata[i], pendings->pdata[i], errors);
  check_cycles (g, errors);
  if (errors->len == 0 && (axes->len > 0 || selectors))
    expand_sweeps (g, raw, pendings, axes, reg, errors);
  check_outputs (g, errors);
  if (errors->len > 0)
    {
      lp_error_set_lines (error, LP_ERROR_INVALID, errors->str);
      return NULL;
    }
  return g_steal_pointer (&g);
}

LpGraph *
lp_graph_parse_ini (const char *data, gssize len, const char *filename, LpRegistry *reg, GHashTable *vars,
                    GError **error)
{
  g_autoptr (GString) errors = g_string_new (NULL);
  g_autoptr (LpRawSpec) raw = lp_spec_read_ini (data, len, filename, vars, errors);
  if (raw == NULL)
    {
      lp_error_set_lines (error, LP_ERROR_INVALID, errors->str);
      return NULL;
    }
  return build (raw, reg, errors, error);
}

LpGraph *
lp_graph_load_file (const char *path, LpRegistry *reg, GHashTable *vars, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  GError *e = NULL;
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  if (!g_file_get_contents (path, &data, &len, &e))
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot read the spec: %s", path, e->message);
      g_error_free (e);
      return NULL;
    }
  return lp_graph_parse_ini (data, (gssize) len, path, reg, vars, error);
}

LpGraph *
lp_graph_parse_inline (const char *text, LpRegistry *reg, GHashTable *vars, GError **error)
{
  g_autoptr (GString) errors = g_string_new (NULL);
  g_autoptr (LpRawSpec) raw = lp_spec_read_inline (text, vars, errors);
  if (raw == NULL)
    {
      lp_error_set_lines (error, LP_ERROR_INVALID, errors->str);
      return NULL;
    }
  return build (raw, reg, errors, error);
}

guint
lp_graph_n_nodes (const LpGraph *graph)
{
  return graph->nodes->len;
}

LpNode *
lp_graph_node (const LpGraph *graph, guint i)
{
  return graph->nodes->pdata[i];
}

LpNode *
lp_graph_find (const LpGraph *graph, const char *name)
{
  return g_hash_table_lookup (graph->by_name, name);
}

const LpPipelineSettings *
lp_graph_settings (const LpGraph *graph)
{
  return &graph->settings;
}

const char *
lp_graph_source (const LpGraph *graph)
{
  return graph->source;
}

const LpParamValue *
lp_node_param (const LpNode *node, const char *name)
{
  guint k = 0;
  for (const LpParamSpec *s = node->pass->info->params; s && s->name; s++, k++)
    if (strcmp (s->name, name) == 0)
      return node->values[k];
  return NULL;
}

static void
dot_quote (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  for (; *s; s++)
    {
      if (*s == '"' || *s == '\\')
        g_string_append_c (out, '\\');
      if (*s == '\n')
        g_string_append (out, "\\n");
      else
        g_string_append_c (out, *s);
    }
  g_string_append_c (out, '"');
}

char *
lp_graph_to_dot (const LpGraph *graph)
{
  GString *out = g_string_new ("digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n");
  g_autoptr (GPtrArray) order = lp_graph_topo_order (graph);
  for (guint i = 0; i < order->len; i++)
    {
      LpNode *n = order->pdata[i];
      g_autoptr (GString) label = g_string_new (n->name);
      if (strcmp (n->name, n->pass->info->name) != 0)
        g_string_append_printf (label, "\n(%s)", n->pass->info->name);
      guint k = 0;
      for (const LpParamSpec *s = n->pass->info->params; s && s->name; s++, k++)
        if (n->given[k])
          g_string_append_printf (label, "\n%s=%s", s->name, lp_param_value_canonical (n->values[k]));
      g_string_append (out, "  ");
      dot_quote (out, n->name);
      g_string_append (out, " [label=");
      dot_quote (out, label->str);
      g_string_append (out, n->pass->info->output == LP_ARTIFACT_METRICS ? ", shape=note];\n"
                            : n->pass->info->output == LP_ARTIFACT_NONE ? ", shape=folder];\n" : "];\n");
    }
  for (guint i = 0; i < order->len; i++)
    {
      LpNode *n = order->pdata[i];
      for (guint j = 0; j < n->inputs->len; j++)
        {
          LpNodeInput *in = n->inputs->pdata[j];
          g_string_append (out, "  ");
          dot_quote (out, in->source->name);
          g_string_append (out, " -> ");
          dot_quote (out, n->name);
          if (strcmp (in->spec->name, "input") != 0)
            {
              g_string_append (out, " [label=");
              dot_quote (out, in->spec->name);
              g_string_append (out, "]");
            }
          g_string_append (out, ";\n");
        }
    }
  g_string_append (out, "}\n");
  return g_string_free (out, FALSE);
}
