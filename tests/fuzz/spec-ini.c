/* Fuzz target: a pipeline spec file (INI), parsed and validated against
 * the built plugins' passes and parameters. */
#include "spec-use.h"

LP_FUZZ_TARGET (spec_ini)
{
  LpRegistry *reg = lp_fuzz_registry ();
  g_autoptr (GHashTable) vars = lp_fuzz_spec_vars ();
  g_autoptr (LpGraph) graph = lp_graph_parse_ini ((const char *) data, (gssize) size, "fuzz.ini", reg, vars, NULL);
  lp_fuzz_use_graph (graph);
  return graph != NULL;
}
