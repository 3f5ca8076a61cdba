/* Fuzz target: an inline pipeline (`llmpress run -p 'load path=m.gguf !
 * ... ! save path=o.gguf'`), parsed and validated against the built
 * plugins.  The command line cannot hold a NUL: the text ends at the first. */
#include "spec-use.h"

LP_FUZZ_TARGET (spec_inline)
{
  LpRegistry *reg = lp_fuzz_registry ();
  g_autoptr (GHashTable) vars = lp_fuzz_spec_vars ();
  g_autofree char *text = g_strndup ((const char *) data, size);
  g_autoptr (LpGraph) graph = lp_graph_parse_inline (text, reg, vars, NULL);
  lp_fuzz_use_graph (graph);
  return graph != NULL;
}
