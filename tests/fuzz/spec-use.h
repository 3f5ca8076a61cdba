/* llmpress fuzz targets — the spec targets' registry (the built plugins,
 * loaded once) and what they do with a graph that validated. */
#pragma once

#include <llmpress/llmpress.h>

#include "fuzz.h"
#include "graph.h"
#include "registry.h"

static inline LpRegistry *
lp_fuzz_registry (void)
{
  static LpRegistry *reg;
  if (reg != NULL)
    return reg;
  /* The build tree's plugins, never an installed copy. */
  if (g_getenv ("LLMPRESS_PLUGIN_PATH") == NULL)
    g_setenv ("LLMPRESS_PLUGIN_PATH", LP_FUZZ_PLUGIN_DIR, TRUE);
  g_setenv ("LLMPRESS_PLUGIN_SYSTEM_PATH", "", TRUE);
  reg = lp_registry_new ();
  lp_registry_load_default (reg);
  /* Without the built plugins every spec fails at its first pass name and
   * the graph checks would never run. */
  if (lp_registry_lookup (reg, "load") == NULL || lp_registry_lookup (reg, "quantize.gptq") == NULL)
    g_error ("the built plugins were not found in %s", g_getenv ("LLMPRESS_PLUGIN_PATH"));
  return reg;
}

static inline GHashTable *
lp_fuzz_spec_vars (void)
{
  GHashTable *vars = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (vars, "model", "m.gguf");
  g_hash_table_insert (vars, "data", "d.txt");
  g_hash_table_insert (vars, "ctx", "64");
  g_hash_table_insert (vars, "calib", "c.txt");
  return vars;
}

static inline void
lp_fuzz_use_graph (LpGraph *graph)
{
  if (graph == NULL)
    return;
  GPtrArray *order = lp_graph_topo_order (graph);
  if (order != NULL)
    g_ptr_array_unref (order);
  g_free (lp_graph_to_dot (graph));
}
