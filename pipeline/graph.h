/* llmpress — pipeline specs (INI file or inline) parsed into a validated
 * DAG of pass instances.  Not part of the SDK.
 *
 * Every problem found is reported, one per line, each starting with its
 * location ("spec.ini:12:" or "<pipeline>:1:17:") and naming the offending
 * text, with a hint when there is one. */
#pragma once

#include <glib.h>
#include "registry.h"

G_BEGIN_DECLS

typedef struct _LpNode LpNode;
typedef struct _LpGraph LpGraph;

typedef struct {
  const LpInputSpec *spec;
  LpNode *source;
} LpNodeInput;

struct _LpNode {
  char *name;
  guint index;            /* position in the spec */
  char *location;         /* "spec.ini:12" of the group header */
  const LpPassEntry *pass;
  guint n_params;         /* = lp_pass_info_n_params (pass->info) */
  LpParamValue **values;  /* per declared parameter; NULL: optional and not given */
  gboolean *given;        /* per declared parameter: written in the spec */
  GPtrArray *inputs;      /* LpNodeInput *, in the pass's declaration order */
  GPtrArray *consumers;   /* LpNode * that read this node's output */
};

typedef struct {
  char *description;
  char *calibration;      /* path, NULL when not given */
  char *backend;          /* NULL when not given */
  guint64 seed;
  /* How calibration samples are cut from the calibration data (see calibration.h). */
  gint64 calib_samples;   /* default 128 */
  gint64 calib_seq_len;   /* default 512 */
  gint64 calib_start;     /* token range [start, end) of the data; end -1: to the end */
  gint64 calib_end;
  gboolean calib_independent; /* calibration_mode=independent */
} LpPipelineSettings;

/* vars: name -> value (from -D), may be NULL.  A relative path parameter is
 * kept as written; the runner resolves it. */
LpGraph *lp_graph_load_file (const char *path, LpRegistry *reg, GHashTable *vars, GError **error);
LpGraph *lp_graph_parse_ini (const char *data, gssize len, const char *filename, LpRegistry *reg,
                             GHashTable *vars, GError **error);
/* "load path=m.gguf ! prune.magnitude sparsity=0.5 ! save path=out.gguf";
 * an element may be named "NAME:PASS ..." (default: the pass name, then
 * "PASS-2", ...); named inputs refer to node names (teacher=load). */
LpGraph *lp_graph_parse_inline (const char *text, LpRegistry *reg, GHashTable *vars, GError **error);
void lp_graph_free (LpGraph *graph);

guint lp_graph_n_nodes (const LpGraph *graph);
/* In spec order (an input may name a node further down). */
LpNode *lp_graph_node (const LpGraph *graph, guint i);
LpNode *lp_graph_find (const LpGraph *graph, const char *name);
const LpPipelineSettings *lp_graph_settings (const LpGraph *graph);
/* Where the spec came from: the file, or "<pipeline>". */
const char *lp_graph_source (const LpGraph *graph);
/* Nodes in a topological order (the spec's order wherever it allows). */
GPtrArray *lp_graph_topo_order (const LpGraph *graph);

/* The value of a declared parameter (NULL when optional and absent). */
const LpParamValue *lp_node_param (const LpNode *node, const char *name);

/* Graphviz DOT. g_free() it. */
char *lp_graph_to_dot (const LpGraph *graph);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpGraph, lp_graph_free)

G_END_DECLS
