/* llmpress — running a graph.  Planning first: every node gets a cache key
 * from its pass, plugin version, parameters, input keys, calibration data
 * and backend, so what is up to date is known before anything runs.  Then
 * the jobs (nodes to run, and cached outputs a running node needs) go to a
 * scheduler; each finished output is stored in the cache at once, so a run
 * killed at any point resumes from the finished nodes. */
#include "config.h"

#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "lp-internal.h"
#include "outputs.h"
#include "formats-internal.h"
#include "context-private.h"
#include "run.h"
#include "crash.h"
#include "scheduler.h"

typedef enum { ACTION_REUSE, ACTION_FETCH, ACTION_RUN } Action;

typedef struct {
  LpNode *node;
  LpParamValue **values;   /* resolved (paths absolute) */
  char *components;
  char *key;
  guint64 seed;
  char *outputs_now;       /* fingerprint of the files it writes, NULL when none */
  gboolean hit;
  Action action;
  char *reason;
  int job;                 /* index in the schedule, -1 */
  guint64 est_bytes;       /* estimated output size */
  gint users;              /* running consumers yet to finish (atomic) */
  LpArtifact *artifact;
  /* report */
  gboolean executed;
  double t_start, t_end;
  GDateTime *wall_start, *wall_end;
  gboolean have_size;
  guint64 out_bytes;
  gint64 out_params;
  double out_bpw;
} NodeRun;

struct _LpRun {
  LpGraph *graph;
  LpRunOptions opts;
  char *output_dir;
  char *backend;
  LpBackend *be;
  char *calibration;
  char *calib_hash;
  char *scheduler;
  LpCache *cache;
  LpSpill *spill;          /* where the models made in the run put new tensors (NULL: memory) */
  gint cache_unwritable;   /* a store failed: no more tries, one warning (atomic) */
  GHashTable *lost;        /* keys of entries found when planning, then damaged or gone when loaded */
  GMutex lost_lock;        /* guards lost while nodes run */
  GPtrArray *order;        /* LpNode *, topological */
  NodeRun *nodes;          /* by node->index */
  guint n_nodes;
  LpRunShared shared;
  GDateTime *started;
  double duration;
  FILE *out;
};

static void
node_run_clear (NodeRun *nr)
{
  for (guint i = 0; nr->values && i < nr->node->n_params; i++)
    lp_param_value_free (nr->values[i]);
  g_free (nr->values);
  g_free (nr->components);
  g_free (nr->key);
  g_free (nr->outputs_now);
  g_free (nr->reason);
  g_clear_pointer (&nr->artifact, lp_artifact_unref);
  g_clear_pointer (&nr->wall_start, g_date_time_unref);
  g_clear_pointer (&nr->wall_end, g_date_time_unref);
}

/* Back to the state before planning (a second plan after a cache entry
 * was lost); the resolved parameters stay. */
static void
node_run_reset (NodeRun *nr)
{
  LpNode *node = nr->node;
  LpParamValue **values = g_steal_pointer (&nr->values);
  node_run_clear (nr);
  memset (nr, 0, sizeof *nr);
  nr->node = node;
  nr->values = values;
  nr->job = -1;
}

void
lp_run_free (LpRun *run)
{
  if (run == NULL)
    return;
  for (guint i = 0; i < run->n_nodes; i++)
    node_run_clear (&run->nodes[i]);
  g_free (run->nodes);
  g_clear_pointer (&run->order, g_ptr_array_unref);
  lp_cache_free (run->cache);
  lp_spill_unref (run->spill);
  g_clear_pointer (&run->lost, g_hash_table_unref);
  g_mutex_clear (&run->lost_lock);
  g_free (run->output_dir);
  g_free (run->backend);
  if (run->be)
    lp_backend_unref (run->be);
  g_free (run->calibration);
  g_free (run->calib_hash);
  g_free (run->scheduler);
  g_clear_pointer (&run->started, g_date_time_unref);
  g_free (run);
}

void
lp_run_cancel (LpRun *run)
{
  g_atomic_int_set (&run->shared.cancelled, 1);
}

char *
lp_run_resolve_path (const char *output_dir, const LpParamSpec *spec, const char *path)
{
  if (g_path_is_absolute (path))
    return g_strdup (path);
  if ((spec->flags & LP_PARAM_OUTPUT) && output_dir != NULL)
    return g_canonicalize_filename (path, output_dir);
  return g_canonicalize_filename (path, NULL);
}

/* "PATH size=N mtime=S.NS" for a file, each file for a directory, "PATH
 * absent" otherwise: what tells an input file changed or an output was
 * removed, without reading it. */
static void
fingerprint (GString *out, const char *path)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    {
      g_string_append_printf (out, "%s absent\n", path);
      return;
    }
  if (S_ISDIR (st.st_mode))
    {
      g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
      g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
      const char *name;
      while (d && (name = g_dir_read_name (d)) != NULL)
        g_ptr_array_add (names, g_strdup (name));
      g_ptr_array_sort (names, lp_compare_str_ptr);
      for (guint i = 0; i < names->len; i++)
        {
          g_autofree char *child = g_build_filename (path, (const char *) g_ptr_array_index (names, i), NULL);
          fingerprint (out, child);
        }
      return;
    }
  g_string_append_printf (out, "%s size=%" G_GINT64_FORMAT " mtime=%" G_GINT64_FORMAT ".%09ld\n", path,
                          (gint64) st.st_size, (gint64) st.st_mtim.tv_sec, (long) st.st_mtim.tv_nsec);
}

static char *
hash_file (const char *path, GError **error)
{
  g_autoptr (GMappedFile) mf = lp_map_file (path, error);
  if (mf == NULL)
    return NULL;
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) g_mapped_file_get_contents (mf),
                                      g_mapped_file_get_length (mf));
}

/* A sink writing a file the pipeline reads would destroy an input (and,
 * with the input then read from the cache, the next run would not notice).
 * What is read: every input path of every node (with the tokenizer a
 * llama2.c checkpoint picks up beside it), the calibration data, the spec
 * file; report.json is not to be written over by a sink either.  Checked
 * before anything runs. */
static gboolean
check_overwrites (LpRun *run, GError **error)
{
  g_autoptr (LpReadSet) reads = lp_read_set_new ();
  for (guint i = 0; i < run->n_nodes; i++)
    {
      NodeRun *nr = &run->nodes[i];
      const LpParamSpec *params = nr->node->pass->info->params;
      gboolean is_load = strcmp (nr->node->pass->info->name, "load") == 0;
      const char *tokenizer = NULL;
      guint k = 0;
      for (const LpParamSpec *s = params; is_load && s && s->name; s++, k++)
        if (strcmp (s->name, "tokenizer") == 0 && nr->values[k] != NULL)
          tokenizer = lp_param_value_get_string (nr->values[k]);
      k = 0;
      for (const LpParamSpec *s = params; s && s->name; s++, k++)
        {
          if (s->type != LP_PARAM_PATH || nr->values[k] == NULL || (s->flags & LP_PARAM_OUTPUT))
            continue;
          g_autofree char *what = g_strdup_printf ("a file the pipeline reads: [%s] (%s)", nr->node->name,
                                                   nr->node->location);
          const char *path = lp_param_value_get_string (nr->values[k]);
          if (is_load && strcmp (s->name, "path") == 0)
            lp_read_set_add_model (reads, path, tokenizer, what);
          else
            lp_read_set_add (reads, path, what);
        }
    }
  if (run->calibration != NULL)
    lp_read_set_add (reads, run->calibration, "the calibration data");
  const char *spec = lp_graph_source (run->graph);
  if (spec != NULL && spec[0] != '<')
    lp_read_set_add (reads, spec, "the spec file");
  g_autofree char *report = g_build_filename (run->output_dir, "report.json", NULL);
  g_autofree char *report_why = lp_read_set_conflict (reads, report);
  if (report_why != NULL)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: the run's report %s (hint: give another output directory with -o)",
                    report, report_why);
      return FALSE;
    }
  lp_read_set_add (reads, report, "the run's report");
  for (guint i = 0; i < run->n_nodes; i++)
    {
      NodeRun *nr = &run->nodes[i];
      guint k = 0;
      for (const LpParamSpec *s = nr->node->pass->info->params; s && s->name; s++, k++)
        {
          if (s->type != LP_PARAM_PATH || nr->values[k] == NULL || !(s->flags & LP_PARAM_OUTPUT))
            continue;
          const char *path = lp_param_value_get_string (nr->values[k]);
          g_autofree char *why = lp_read_set_conflict (reads, path);
          if (why != NULL)
            {
              lp_set_error (error, LP_ERROR_INVALID, "%s: [%s] %s=%s: %s (hint: write elsewhere)",
                            nr->node->location, nr->node->name, s->name, path, why);
              return FALSE;
            }
          /* The sinks among themselves (with paths as resolved against -o;
           * validation compared them as written). */
          g_autofree char *what = g_strdup_printf ("the output of [%s] (%s)", nr->node->name, nr->node->location);
          lp_read_set_add (reads, path, what);
        }
    }
  return TRUE;
}

LpRun *
lp_run_new (LpGraph *graph, const LpRunOptions *options, GError **error)
{
  g_autoptr (LpRun) run = g_new0 (LpRun, 1);
  run->lost = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_mutex_init (&run->lost_lock);
  run->graph = graph;
  if (options)
    run->opts = *options;
  run->out = run->opts.out ? run->opts.out : stdout;
  run->shared.quiet = run->opts.quiet;
  const LpPipelineSettings *set = lp_graph_settings (graph);
  run->output_dir = g_canonicalize_filename (run->opts.output_dir ? run->opts.output_dir : ".", NULL);
  run->backend = g_strdup (run->opts.backend ? run->opts.backend : set->backend ? set->backend : "cpu");
  run->be = lp_backend_new (run->backend, error);
  if (run->be == NULL)
    return NULL;
  const char *calib = run->opts.calibration ? run->opts.calibration : set->calibration;
  if (calib != NULL)
    {
      run->calibration = g_canonicalize_filename (calib, NULL);
      run->calib_hash = hash_file (run->calibration, error);
      if (run->calib_hash == NULL)
        {
          lp_error_prefix (error, "calibration data");
          return NULL;
        }
    }
  guint jobs = MAX (1, run->opts.jobs);
  run->scheduler = g_strdup (run->opts.scheduler ? run->opts.scheduler : jobs > 1 ? "parallel" : "sequential");
  if (strcmp (run->scheduler, "sequential") != 0 && strcmp (run->scheduler, "parallel") != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "unknown scheduler '%s': expected sequential or parallel", run->scheduler);
      return NULL;
    }
  run->order = lp_graph_topo_order (graph);
  run->n_nodes = lp_graph_n_nodes (graph);
  run->nodes = g_new0 (NodeRun, run->n_nodes);
  for (guint i = 0; i < run->n_nodes; i++)
    {
      NodeRun *nr = &run->nodes[i];
      nr->node = lp_graph_node (graph, i);
      nr->job = -1;
      nr->values = g_new0 (LpParamValue *, nr->node->n_params);
      guint k = 0;
      for (const LpParamSpec *s = nr->node->pass->info->params; s && s->name; s++, k++)
        {
          const LpParamValue *v = nr->node->values[k];
          if (v == NULL)
            continue;
          if (s->type == LP_PARAM_PATH)
            {
              g_autofree char *abs = lp_run_resolve_path (run->output_dir, s, lp_param_value_get_string (v));
              nr->values[k] = lp_param_value_parse (s, abs, error);
            }
          else
            nr->values[k] = lp_param_value_parse (s, lp_param_value_canonical (v), error);
          if (nr->values[k] == NULL)
            return NULL;
        }
    }
  if (!check_overwrites (run, error))
    return NULL;
  if (!run->opts.no_cache)
    {
      g_autofree char *dir = run->opts.cache_dir ? g_strdup (run->opts.cache_dir) : lp_cache_default_dir ();
      GError *e = NULL;
      run->cache = lp_cache_open (dir, &e);
      if (run->cache == NULL)
        {
          lp_warn ("%s; running without the cache", e->message);
          g_error_free (e);
        }
    }
  return g_steal_pointer (&run);
}

/* What determines a node's output, one fact per line, so --explain can diff
 * it against the last run. */
static void
make_components (LpRun *run, NodeRun *nr)
{
  const LpNode *n = nr->node;
  const LpPassEntry *pe = n->pass;
  GString *c = g_string_new ("llmpress-node 1\n");
  g_string_append_printf (c, "pass %s\nplugin %s %s %s\n", pe->info->name, pe->plugin->name, pe->plugin->version,
                          pe->file_digest);
  guint k = 0;
  g_autoptr (GString) outputs = g_string_new (NULL);
  for (const LpParamSpec *s = pe->info->params; s && s->name; s++, k++)
    {
      if (s->flags & LP_PARAM_NO_CACHE_KEY)
        continue;
      const LpParamValue *v = nr->values[k];
      g_string_append_printf (c, "param %s=%s\n", s->name, v ? lp_param_value_canonical (v) : "(unset)");
      if (v && s->type == LP_PARAM_PATH && (s->flags & LP_PARAM_OUTPUT))
        fingerprint (outputs, lp_param_value_get_string (v));
      else if (v && s->type == LP_PARAM_PATH)
        {
          /* With a model, the files its loading finds by itself too (the
           * tokenizer beside a llama2.c checkpoint). */
          g_autoptr (GString) fp = g_string_new (NULL);
          g_autoptr (GPtrArray) files = lp_model_load_files (lp_param_value_get_string (v), NULL);
          for (guint f = 0; f < files->len; f++)
            fingerprint (fp, files->pdata[f]);
          g_auto (GStrv) lines = g_strsplit (fp->str, "\n", -1);
          for (char **l = lines; *l; l++)
            if (**l)
              g_string_append_printf (c, "file %s %s\n", s->name, *l);
        }
    }
  for (guint i = 0; i < n->inputs->len; i++)
    {
      LpNodeInput *in = n->inputs->pdata[i];
      g_string_append_printf (c, "input %s=%s %s\n", in->spec->name, in->source->name,
                              run->nodes[in->source->index].key);
    }
  /* The calibration data only where the pass reads it: the nodes downstream
   * inherit it through their input keys, the others never see it. */
  const LpPipelineSettings *set = lp_graph_settings (run->graph);
  gboolean calibrated = lp_pass_uses_calibration (pe);
  g_string_append_printf (c, "calibration %s", !calibrated ? "unused" : run->calib_hash ? run->calib_hash : "none");
  if (calibrated && run->calib_hash)
    g_string_append_printf (c, " samples %" G_GINT64_FORMAT " len %" G_GINT64_FORMAT " range %" G_GINT64_FORMAT ":%" G_GINT64_FORMAT " mode %s",
                            set->calib_samples, set->calib_seq_len, set->calib_start, set->calib_end,
                            set->calib_independent ? "independent" : "sequential");
  g_string_append_c (c, '\n');
  g_string_append_printf (c, "backend %s\n", run->be->numeric_class);
  g_string_append_printf (c, "seed %" G_GUINT64_FORMAT "\n", lp_graph_settings (run->graph)->seed);
  nr->components = g_string_free (c, FALSE);
  nr->key = lp_cache_key (nr->components);
  g_autofree char *head = g_strndup (nr->key, 16);
  nr->seed = g_ascii_strtoull (head, NULL, 16);
  if (outputs->len)
    nr->outputs_now = g_strdup (outputs->str);
}

static char *
history_id (LpRun *run, const LpNode *n)
{
  const char *src = lp_graph_source (run->graph);
  g_autofree char *abs = strcmp (src, "<pipeline>") == 0 ? g_strdup (src) : g_canonicalize_filename (src, NULL);
  return g_strdup_printf ("%s\n%s", abs, n->name);
}

/* A components line is "KIND REST"; its identity is the kind plus, for
 * param and input lines, the name before '=', for file lines the parameter. */
static char *
component_id (const char *line)
{
  const char *sp = strchr (line, ' ');
  if (sp == NULL)
    return g_strdup (line);
  if (g_str_has_prefix (line, "param ") || g_str_has_prefix (line, "input "))
    return g_strndup (line, strcspn (line, "="));
  if (g_str_has_prefix (line, "file "))
    return g_strndup (line, (sp - line) + 1 + strcspn (sp + 1, " "));
  return g_strndup (line, sp - line);
}

static void
describe_change (GString *why, const char *id, const char *was, const char *now)
{
  const char *name = strchr (id, ' ') ? strchr (id, ' ') + 1 : id;
  if (why->len)
    g_string_append (why, "; ");
  if (g_str_has_prefix (id, "param "))
    g_string_append_printf (why, "param %s changed: %s -> %s", name, was ? strchr (was, '=') + 1 : "(new)",
                            strchr (now, '=') + 1);
  else if (g_str_has_prefix (id, "input "))
    {
      const char *src = strchr (now, '=') + 1;
      g_autofree char *src_name = g_strndup (src, strcspn (src, " "));
      g_string_append_printf (why, "input '%s' changed (%s has a new output)", name, src_name);
    }
  else if (g_str_has_prefix (id, "file "))
    g_string_append_printf (why, "input file of %s changed: %s", name, now + strlen (id) + 1);
  else if (strcmp (id, "calibration") == 0)
    g_string_append (why, "calibration data changed");
  else
    g_string_append_printf (why, "%s changed: %s -> %s", id, was ? was + strlen (id) + 1 : "(none)",
                            now + strlen (id) + 1);
}

/* Why a node must run, from what changed since it last ran. */
static char *
miss_reason (LpRun *run, NodeRun *nr)
{
  g_autofree char *id = history_id (run, nr->node);
  g_autofree char *old = lp_cache_get_history (run->cache, id);
  if (old == NULL)
    return g_strdup_printf ("no cache entry %.12s (never run before)", nr->key);
  if (strcmp (old, nr->components) == 0)
    return g_strdup_printf ("cache entry %.12s is missing (removed by gc?)", nr->key);
  g_auto (GStrv) a = g_strsplit (old, "\n", -1);
  g_auto (GStrv) b = g_strsplit (nr->components, "\n", -1);
  g_autoptr (GString) why = g_string_new (NULL);
  g_autoptr (GHashTable) reported = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (char **nl = b; *nl; nl++)
    {
      if (**nl == '\0' || g_strv_contains ((const char *const *) a, *nl))
        continue;
      char *cid = component_id (*nl);
      if (!g_hash_table_add (reported, cid))
        continue; /* a directory's second changed file */
      const char *was = NULL;
      for (char **ol = a; *ol && was == NULL; ol++)
        {
          g_autofree char *oid = component_id (*ol);
          if (strcmp (oid, cid) == 0)
            was = *ol;
        }
      describe_change (why, cid, was, *nl);
    }
  if (why->len == 0)
    g_string_append (why, "something it depended on was removed");
  return g_string_free (g_steal_pointer (&why), FALSE);
}

static void
plan (LpRun *run)
{
  for (guint i = 0; i < run->order->len; i++)
    {
      LpNode *n = run->order->pdata[i];
      NodeRun *nr = &run->nodes[n->index];
      make_components (run, nr);
      if (run->cache == NULL)
        {
          nr->action = ACTION_RUN;
          nr->reason = g_strdup ("--no-cache");
          continue;
        }
      nr->hit = lp_cache_has (run->cache, nr->key);
      if (nr->hit && nr->outputs_now != NULL)
        {
          g_autofree char *was = lp_cache_entry_get (run->cache, nr->key, "outputs");
          if (g_strcmp0 (was, nr->outputs_now) != 0)
            {
              nr->hit = FALSE;
              nr->action = ACTION_RUN;
              nr->reason = g_strdup ("its output file is missing or was changed since it was written");
              continue;
            }
        }
      if (nr->hit)
        {
          nr->action = ACTION_REUSE;
          nr->reason = g_strdup_printf ("cache entry %.12s is up to date", nr->key);
        }
      else if (g_hash_table_contains (run->lost, nr->key))
        {
          nr->action = ACTION_RUN;
          nr->reason = g_strdup_printf ("cache entry %.12s was damaged (discarded) or removed when it was read", nr->key);
        }
      else
        {
          nr->action = ACTION_RUN;
          nr->reason = miss_reason (run, nr);
        }
    }
  /* Cached outputs that a running node reads must be fetched; metrics are
   * fetched always, for the report. */
  for (guint i = run->order->len; i-- > 0;)
    {
      LpNode *n = run->order->pdata[i];
      NodeRun *nr = &run->nodes[n->index];
      if (nr->action == ACTION_REUSE && n->pass->info->output == LP_ARTIFACT_METRICS)
        nr->action = ACTION_FETCH;
      if (nr->action != ACTION_RUN)
        continue;
      for (guint j = 0; j < n->inputs->len; j++)
        {
          NodeRun *src = &run->nodes[((LpNodeInput *) n->inputs->pdata[j])->source->index];
          if (src->action == ACTION_REUSE)
            src->action = ACTION_FETCH;
          src->users++;
        }
    }
}

/* Where the forward pass's ops run on this backend: the graph of a small
 * synthetic model of the same ops recorded and described. */
static char *
forward_describe (LpBackend *be)
{
  LpSynthOptions so = LP_SYNTH_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_synth (&so, &error);
  g_autoptr (LpForward) fw = m ? lp_forward_new (m, be, &error) : NULL;
  char *s = fw ? lp_forward_describe (fw, &error) : NULL;
  return s ? s : g_strdup_printf ("%s (%s)", be->device_name, error->message);
}

static void
explain (LpRun *run)
{
  /* Which device runs the ops, and which ops fall back to the CPU. */
  g_autofree char *be = lp_backend_describe (run->be);
  fprintf (run->out, "backend: %s = %s\n", run->backend, be);
  g_autofree char *fwd = forward_describe (run->be);
  fprintf (run->out, "forward pass: %s\n", fwd);
  for (guint i = 0; i < run->order->len; i++)
    {
      NodeRun *nr = &run->nodes[((LpNode *) run->order->pdata[i])->index];
      fprintf (run->out, "explain: %s: %s: %s\n", nr->node->name,
               nr->action == ACTION_RUN ? (run->opts.dry_run ? "would run" : "run") : "reused", nr->reason);
    }
  fflush (run->out);
}

static double
now_s (LpRun *run)
{
  return (double) (g_get_monotonic_time () - run->shared.t0) / 1e6;
}

static void
record_size (NodeRun *nr)
{
  LpModel *m = lp_artifact_get_model (nr->artifact);
  LpLogits *lg = lp_artifact_get_logits (nr->artifact);
  if (m != NULL)
    {
      nr->have_size = TRUE;
      nr->out_bytes = lp_model_n_bytes (m);
      nr->out_params = lp_model_n_params (m);
      nr->out_bpw = lp_model_bits_per_weight (m);
    }
  else if (lg != NULL)
    {
      nr->have_size = TRUE;
      nr->out_bytes = lp_logits_n_bytes (lg);
    }
}

static void
release_inputs (LpRun *run, NodeRun *nr)
{
  for (guint j = 0; j < nr->node->inputs->len; j++)
    {
      NodeRun *src = &run->nodes[((LpNodeInput *) nr->node->inputs->pdata[j])->source->index];
      /* Metrics stay for the report; models go once their last reader is done. */
      if (g_atomic_int_dec_and_test (&src->users) && lp_artifact_kind (src->artifact) != LP_ARTIFACT_METRICS)
        g_clear_pointer (&src->artifact, lp_artifact_unref);
    }
}

/* A model made or fetched in the run gets the run's spill file, for the
 * models passes derive from it (spill.c); set before any reader runs. */
static void
give_spill (LpRun *run, LpArtifact *a)
{
  LpModel *m = a ? lp_artifact_get_model (a) : NULL;
  if (m != NULL && run->spill != NULL && lp_model_get_spill (m) == NULL)
    lp_model_set_spill (m, run->spill);
}

static gboolean
run_node (LpRun *run, NodeRun *nr, GError **error)
{
  LpNode *n = nr->node;
  const LpPassInfo *info = n->pass->info;
  g_autofree LpArtifact **inputs = g_new0 (LpArtifact *, n->inputs->len + 1);
  for (guint j = 0; j < n->inputs->len; j++)
    inputs[j] = run->nodes[((LpNodeInput *) n->inputs->pdata[j])->source->index].artifact;
  LpPassContext ctx;
  lp_pass_context_init (&ctx, n, inputs, nr->values, &run->shared);
  ctx.backend_name = run->backend;
  ctx.calibration_path = run->calibration;
  ctx.settings = lp_graph_settings (run->graph);
  ctx.backend = run->be;
  ctx.device_memory = run->opts.device_memory;
  ctx.seed = nr->seed;
  GError *e = NULL;
  gboolean ok = info->run (&ctx, &e);
  if (ok && info->output != LP_ARTIFACT_NONE && lp_artifact_kind (ctx.output) != info->output)
    {
      ok = FALSE;
      lp_set_error (&e, LP_ERROR_FAILED, "pass %s (%s) returned %s, but declares %s as its output", info->name,
                    n->pass->file, lp_artifact_kind_name (lp_artifact_kind (ctx.output)),
                    lp_artifact_kind_name (info->output));
    }
  else if (!ok && e == NULL)
    lp_set_error (&e, LP_ERROR_FAILED, "pass %s failed without saying why", info->name);
  /* A NaN perplexity is a broken model, not a result: fail, cache nothing. */
  else if (ok && lp_artifact_get_metrics (ctx.output) != NULL)
    ok = lp_meta_check_finite (lp_artifact_get_metrics (ctx.output), &e);
  if (ok && ctx.output)
    {
      nr->artifact = lp_artifact_ref (ctx.output);
      give_spill (run, nr->artifact);
    }
  lp_pass_context_clear (&ctx);
  if (!ok)
    {
      lp_set_error (error, e->domain == LP_ERROR ? e->code : LP_ERROR_FAILED, "%s: %s: %s", n->location, n->name,
                    e->message);
      g_error_free (e);
      return FALSE;
    }
  if (nr->outputs_now != NULL)
    {
      /* Fingerprint what it wrote, to notice later if it is removed. */
      g_autoptr (GString) fp = g_string_new (NULL);
      guint k = 0;
      for (const LpParamSpec *s = info->params; s && s->name; s++, k++)
        if (s->type == LP_PARAM_PATH && (s->flags & LP_PARAM_OUTPUT) && nr->values[k] != NULL)
          {
            fingerprint (fp, lp_param_value_get_string (nr->values[k]));
            nr->out_bytes += lp_path_size (lp_param_value_get_string (nr->values[k]));
          }
      g_free (nr->outputs_now);
      nr->outputs_now = g_string_free (g_steal_pointer (&fp), FALSE);
      nr->have_size = TRUE;
    }
  record_size (nr);
  if (run->cache != NULL)
    {
      g_autoptr (GHashTable) fields = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
      g_hash_table_insert (fields, (gpointer) "node", g_strdup (n->name));
      g_hash_table_insert (fields, (gpointer) "pass", g_strdup (info->name));
      g_hash_table_insert (fields, (gpointer) "components", g_strdup (nr->components));
      if (nr->outputs_now)
        g_hash_table_insert (fields, (gpointer) "outputs", g_strdup (nr->outputs_now));
      if (nr->have_size)
        {
          g_hash_table_insert (fields, (gpointer) "bytes", g_strdup_printf ("%" G_GUINT64_FORMAT, nr->out_bytes));
          g_hash_table_insert (fields, (gpointer) "params", g_strdup_printf ("%" G_GINT64_FORMAT, nr->out_params));
          char buf[G_ASCII_DTOSTR_BUF_SIZE];
          g_hash_table_insert (fields, (gpointer) "bits_per_weight", g_strdup (g_ascii_dtostr (buf, sizeof buf, nr->out_bpw)));
        }
      /* A cache that cannot be written (full, read-only) costs reuse,
       * never the run. */
      GError *store_error = NULL;
      if (!g_atomic_int_get (&run->cache_unwritable)
          && !lp_cache_store (run->cache, nr->key, nr->artifact, fields, &store_error))
        {
          if (g_atomic_int_compare_and_exchange (&run->cache_unwritable, 0, 1))
            lp_warn ("%s: cannot store its output in the cache (%s); going on without storing", n->name,
                     store_error->message);
          g_error_free (store_error);
        }
      else if (!g_atomic_int_get (&run->cache_unwritable))
        {
          g_autofree char *id = history_id (run, n);
          lp_cache_set_history (run->cache, id, nr->components);
        }
    }
  return TRUE;
}

static gboolean
exec_job (gpointer user_data, guint job, GError **error)
{
  LpRun *run = user_data;
  NodeRun *nr = NULL;
  for (guint i = 0; i < run->n_nodes && nr == NULL; i++)
    if (run->nodes[i].job == (int) job)
      nr = &run->nodes[i];
  if (g_atomic_int_get (&run->shared.cancelled))
    {
      lp_set_error (error, LP_ERROR_FAILED, "interrupted before %s", nr->node->name);
      return FALSE;
    }
  nr->wall_start = g_date_time_new_now_local ();
  nr->t_start = now_s (run);
  gboolean ok;
  if (nr->action == ACTION_FETCH)
    {
      GError *e = NULL;
      nr->artifact = lp_cache_load (run->cache, nr->key, &e);
      ok = nr->artifact != NULL;
      if (!ok && g_error_matches (e, LP_ERROR, LP_ERROR_MISSING))
        {
          /* Damaged (and discarded) or removed since planning: plan again,
           * and it runs. */
          g_mutex_lock (&run->lost_lock);
          g_hash_table_add (run->lost, g_strdup (nr->key));
          g_mutex_unlock (&run->lost_lock);
          lp_set_error (error, LP_ERROR_MISSING, "%s: %s", nr->node->name, e->message);
          g_error_free (e);
        }
      else if (!ok && e == NULL)
        lp_set_error (error, LP_ERROR_FAILED, "%s: its cache entry holds no output to read", nr->node->name);
      else if (!ok)
        {
          g_propagate_error (error, e);
          lp_error_prefix (error, nr->node->name);
        }
      else
        {
          give_spill (run, nr->artifact);
          record_size (nr);
          lp_cache_touch (run->cache, nr->key);
        }
    }
  else
    {
      g_autofree char *crash_line = g_strdup_printf ("llmpress: error: %s: [%s] (pass %s) crashed: ", nr->node->location,
                                                     nr->node->name, nr->node->pass->info->name);
      lp_crash_set_context (crash_line);
      ok = run_node (run, nr, error);
      lp_crash_set_context (NULL);
      release_inputs (run, nr);
    }
  nr->t_end = now_s (run);
  nr->wall_end = g_date_time_new_now_local ();
  nr->executed = TRUE;
  if (ok && !run->opts.quiet && nr->action == ACTION_RUN)
    {
      lp_stderr_lock ();
      fprintf (stderr, "%s[%7.2fs] %s: done in %.2fs\n", run->shared.tty ? "\r\033[K" : "", nr->t_end,
               nr->node->name, nr->t_end - nr->t_start);
      lp_stderr_unlock ();
    }
  return ok;
}

/* Longest chain of running work from each job to the end: the order the
 * parallel scheduler prefers. */
static void
build_schedule (LpRun *run, LpSchedule *s)
{
  guint n_jobs = 0;
  for (guint i = 0; i < run->order->len; i++)
    {
      NodeRun *nr = &run->nodes[((LpNode *) run->order->pdata[i])->index];
      if (nr->action != ACTION_REUSE)
        nr->job = (int) n_jobs++;
    }
  s->jobs = g_new0 (LpSchedJob, n_jobs);
  s->n_jobs = n_jobs;
  /* Size estimates: a source's file, else its largest model input. */
  for (guint i = 0; i < run->order->len; i++)
    {
      LpNode *n = run->order->pdata[i];
      NodeRun *nr = &run->nodes[n->index];
      guint k = 0;
      for (const LpParamSpec *sp = n->pass->info->params; sp && sp->name; sp++, k++)
        if (n->inputs->len == 0 && sp->type == LP_PARAM_PATH && nr->values[k] && !(sp->flags & LP_PARAM_OUTPUT))
          nr->est_bytes = MAX (nr->est_bytes, lp_path_size (lp_param_value_get_string (nr->values[k])));
      for (guint j = 0; j < n->inputs->len; j++)
        nr->est_bytes = MAX (nr->est_bytes, run->nodes[((LpNodeInput *) n->inputs->pdata[j])->source->index].est_bytes);
      if (n->pass->info->output != LP_ARTIFACT_MODEL)
        nr->est_bytes = 0;
    }
  for (guint i = run->order->len; i-- > 0;)
    {
      LpNode *n = run->order->pdata[i];
      NodeRun *nr = &run->nodes[n->index];
      if (nr->job < 0)
        continue;
      LpSchedJob *j = &s->jobs[nr->job];
      double below = 0;
      g_autoptr (GArray) succ = g_array_new (FALSE, FALSE, sizeof (guint));
      for (guint c = 0; c < n->consumers->len; c++)
        {
          NodeRun *cn = &run->nodes[((LpNode *) n->consumers->pdata[c])->index];
          if (cn->action != ACTION_RUN)
            continue;
          guint cj = (guint) cn->job;
          g_array_append_val (succ, cj);
          below = MAX (below, s->jobs[cj].priority);
        }
      j->priority = below + (nr->action == ACTION_RUN ? 1.0 : 0.1);
      j->n_successors = succ->len;
      j->successors = (guint *) g_array_free (g_steal_pointer (&succ), FALSE);
      j->memory = nr->est_bytes;
      for (guint k = 0; nr->action == ACTION_RUN && k < n->inputs->len; k++)
        j->memory += run->nodes[((LpNodeInput *) n->inputs->pdata[k])->source->index].est_bytes;
      j->device = (n->pass->info->flags & LP_PASS_USES_DEVICE) && strcmp (run->backend, "cpu") != 0;
    }
  for (guint i = 0; i < n_jobs; i++)
    for (guint k = 0; k < s->jobs[i].n_successors; k++)
      s->jobs[s->jobs[i].successors[k]].n_deps++;
  s->exec = exec_job;
  s->user_data = run;
  s->n_threads = MAX (1, run->opts.jobs);
  s->memory_limit = run->opts.memory_limit;
  s->n_devices = 1;
}

static JsonNode *
metrics_json (const LpMeta *m)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (GString) bad = g_string_new (NULL);
  json_builder_begin_object (b);
  for (guint i = 0; i < lp_meta_n_keys (m); i++)
    {
      const char *k = lp_meta_key (m, i);
      const LpValue *v = lp_meta_get (m, k);
      json_builder_set_member_name (b, k);
      switch (v->type)
        {
        case LP_VALUE_U8: case LP_VALUE_U16: case LP_VALUE_U32: case LP_VALUE_U64:
          json_builder_add_int_value (b, (gint64) v->u);
          break;
        case LP_VALUE_I8: case LP_VALUE_I16: case LP_VALUE_I32: case LP_VALUE_I64:
          json_builder_add_int_value (b, v->i);
          break;
        case LP_VALUE_F32: case LP_VALUE_F64:
          if (lp_note_nonfinite (bad, k, v->f))
            json_builder_add_double_value (b, v->f);
          else
            json_builder_add_null_value (b);
          break;
        case LP_VALUE_BOOL:
          json_builder_add_boolean_value (b, v->u != 0);
          break;
        case LP_VALUE_STRING:
          json_builder_add_string_value (b, v->s);
          break;
        default:
          json_builder_add_null_value (b);
        }
    }
  lp_json_add_nonfinite_error (b, bad);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

/* For reused nodes that were not fetched, the size recorded with the entry. */
static void
sizes_from_cache (LpRun *run, NodeRun *nr)
{
  if (nr->have_size || run->cache == NULL)
    return;
  g_autofree char *bytes = lp_cache_entry_get (run->cache, nr->key, "bytes");
  g_autofree char *params = lp_cache_entry_get (run->cache, nr->key, "params");
  g_autofree char *bpw = lp_cache_entry_get (run->cache, nr->key, "bits_per_weight");
  if (bytes == NULL)
    return;
  nr->have_size = TRUE;
  nr->out_bytes = g_ascii_strtoull (bytes, NULL, 10);
  nr->out_params = params ? g_ascii_strtoll (params, NULL, 10) : 0;
  nr->out_bpw = bpw ? g_ascii_strtod (bpw, NULL) : 0;
}

static gboolean
write_report (LpRun *run, GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "llmpress");
  json_builder_add_string_value (b, lp_version ());
  json_builder_set_member_name (b, "spec");
  json_builder_add_string_value (b, lp_graph_source (run->graph));
  json_builder_set_member_name (b, "started");
  g_autofree char *iso = g_date_time_format_iso8601 (run->started);
  json_builder_add_string_value (b, iso);
  json_builder_set_member_name (b, "duration");
  json_builder_add_double_value (b, run->duration);
  json_builder_set_member_name (b, "scheduler");
  json_builder_add_string_value (b, run->scheduler);
  json_builder_set_member_name (b, "jobs");
  json_builder_add_int_value (b, MAX (1, run->opts.jobs));
  json_builder_set_member_name (b, "backend");
  json_builder_add_string_value (b, run->backend);
  json_builder_set_member_name (b, "cache_dir");
  if (run->cache)
    json_builder_add_string_value (b, lp_cache_dir (run->cache));
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "nodes");
  json_builder_begin_array (b);
  for (guint i = 0; i < run->order->len; i++)
    {
      NodeRun *nr = &run->nodes[((LpNode *) run->order->pdata[i])->index];
      sizes_from_cache (run, nr);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, nr->node->name);
      json_builder_set_member_name (b, "pass");
      json_builder_add_string_value (b, nr->node->pass->info->name);
      json_builder_set_member_name (b, "plugin");
      json_builder_add_string_value (b, nr->node->pass->plugin->name);
      /* Which node each input read (llmpress report pairs an eval with the
       * model it measured). */
      json_builder_set_member_name (b, "inputs");
      json_builder_begin_object (b);
      for (guint j = 0; j < nr->node->inputs->len; j++)
        {
          const LpNodeInput *in = nr->node->inputs->pdata[j];
          json_builder_set_member_name (b, in->spec->name);
          json_builder_add_string_value (b, in->source->name);
        }
      json_builder_end_object (b);
      json_builder_set_member_name (b, "cache_hit");
      json_builder_add_boolean_value (b, nr->action != ACTION_RUN);
      json_builder_set_member_name (b, "reason");
      json_builder_add_string_value (b, nr->reason);
      json_builder_set_member_name (b, "key");
      json_builder_add_string_value (b, nr->key);
      json_builder_set_member_name (b, "executed");
      json_builder_add_string_value (b, nr->action == ACTION_RUN ? "ran" : nr->action == ACTION_FETCH ? "fetched from cache" : "skipped");
      json_builder_set_member_name (b, "started");
      if (nr->executed) json_builder_add_double_value (b, nr->t_start); else json_builder_add_null_value (b);
      json_builder_set_member_name (b, "finished");
      if (nr->executed) json_builder_add_double_value (b, nr->t_end); else json_builder_add_null_value (b);
      json_builder_set_member_name (b, "started_at");
      g_autofree char *ws = nr->wall_start ? g_date_time_format_iso8601 (nr->wall_start) : NULL;
      g_autofree char *we = nr->wall_end ? g_date_time_format_iso8601 (nr->wall_end) : NULL;
      if (ws) json_builder_add_string_value (b, ws); else json_builder_add_null_value (b);
      json_builder_set_member_name (b, "finished_at");
      if (we) json_builder_add_string_value (b, we); else json_builder_add_null_value (b);
      json_builder_set_member_name (b, "duration");
      json_builder_add_double_value (b, nr->executed ? nr->t_end - nr->t_start : 0.0);
      if (nr->have_size)
        {
          json_builder_set_member_name (b, "output_bytes");
          json_builder_add_int_value (b, (gint64) nr->out_bytes);
          if (nr->node->pass->info->output == LP_ARTIFACT_MODEL)
            {
              json_builder_set_member_name (b, "params");
              json_builder_add_int_value (b, nr->out_params);
              json_builder_set_member_name (b, "bits_per_weight");
              json_builder_add_double_value (b, nr->out_bpw);
            }
        }
      const LpMeta *m = lp_artifact_get_metrics (nr->artifact);
      if (m != NULL)
        {
          json_builder_set_member_name (b, "metrics");
          json_builder_add_value (b, metrics_json (m));
        }
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  g_autofree char *text = json_generator_to_data (gen, NULL);
  g_autofree char *path = g_build_filename (run->output_dir, "report.json", NULL);
  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  if (!lp_atomic_file_write (af, text, strlen (text), error) || !lp_atomic_file_write (af, "\n", 1, error))
    {
      lp_atomic_file_abort (af);
      return FALSE;
    }
  return lp_atomic_file_commit (af, error);
}

/* The spill file, in the output directory (on the disk the results go to,
 * unlike a TMPDIR that may be memory); without one, new tensors stay in
 * memory, which only costs memory. */
static void
open_spill (LpRun *run)
{
  if (!lp_spill_enabled ())
    return;
  GError *e = NULL;
  run->spill = lp_spill_new (run->output_dir, &e);
  if (run->spill == NULL)
    {
      lp_warn ("%s; keeping new tensors in memory", e->message);
      g_error_free (e);
    }
}

gboolean
lp_run_execute (LpRun *run, GError **error)
{
  run->shared.t0 = g_get_monotonic_time ();
  run->shared.tty = isatty (2);
  run->started = g_date_time_new_now_local ();
  gboolean ok = FALSE;
  /* A cache entry found when planning may be damaged (discarded when
   * loaded) or removed by another run's gc before it is read: plan again,
   * from what is in the cache now.  Each retry follows a lost entry, and
   * what ran meanwhile is stored, so this ends. */
  for (guint attempt = 0;; attempt++)
    {
      plan (run);
      g_hash_table_remove_all (run->lost);
      if (run->opts.explain || run->opts.dry_run)
        explain (run);
      if (run->opts.dry_run)
        return TRUE;
      if (attempt == 0 && g_mkdir_with_parents (run->output_dir, 0755) != 0)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: cannot create the output directory", run->output_dir);
          return FALSE;
        }
      if (attempt == 0)
        open_spill (run);
      LpSchedule s = { 0 };
      build_schedule (run, &s);
      /* Nodes at once share OpenBLAS: calibration then leaves its count
       * alone (lp_cpu_blas_threads_push). */
      gboolean shared = strcmp (run->scheduler, "parallel") == 0 && s.n_threads > 1 && s.n_jobs > 1;
      lp_cpu_blas_threads_set_shared (shared);
      ok = lp_schedule_run (run->scheduler, &s, error);
      lp_cpu_blas_threads_set_shared (FALSE);
      for (guint i = 0; i < s.n_jobs; i++)
        g_free (s.jobs[i].successors);
      g_free (s.jobs);
      if (ok || g_hash_table_size (run->lost) == 0 || attempt >= 8)
        break;
      g_clear_error (error);
      for (guint i = 0; i < run->n_nodes; i++)
        node_run_reset (&run->nodes[i]);
    }
  run->duration = now_s (run);
  if (!ok)
    return FALSE;
  return write_report (run, error);
}

static char *
human_size (guint64 bytes)
{
  return g_format_size_full (bytes, G_FORMAT_SIZE_IEC_UNITS);
}

void
lp_run_print_table (LpRun *run, FILE *out)
{
  fprintf (out, "%-16s %-18s %8s  %-7s %11s %7s  %s\n", "node", "pass", "time", "cache", "size", "bits/w", "metrics");
  for (guint i = 0; i < run->order->len; i++)
    {
      NodeRun *nr = &run->nodes[((LpNode *) run->order->pdata[i])->index];
      sizes_from_cache (run, nr);
      g_autofree char *size = nr->have_size ? human_size (nr->out_bytes) : g_strdup ("-");
      g_autofree char *bpw = nr->have_size && nr->node->pass->info->output == LP_ARTIFACT_MODEL
                               ? g_strdup_printf ("%.2f", nr->out_bpw) : g_strdup ("-");
      g_autofree char *time = nr->action == ACTION_RUN && nr->executed ? g_strdup_printf ("%.2fs", nr->t_end - nr->t_start)
                                                                          : g_strdup ("-");
      GString *metrics = g_string_new (NULL);
      const LpMeta *m = lp_artifact_get_metrics (nr->artifact);
      for (guint k = 0; m && k < lp_meta_n_keys (m) && k < 4; k++)
        {
          g_autofree char *v = lp_value_to_string (lp_meta_get (m, lp_meta_key (m, k)), 4);
          g_string_append_printf (metrics, "%s%s=%s", k ? " " : "", lp_meta_key (m, k), v);
        }
      fprintf (out, "%-16s %-18s %8s  %-7s %11s %7s  %s\n", nr->node->name, nr->node->pass->info->name, time,
               nr->action == ACTION_RUN ? "ran" : "reused", size, bpw, metrics->str);
      g_string_free (metrics, TRUE);
    }
  fflush (out);
}
