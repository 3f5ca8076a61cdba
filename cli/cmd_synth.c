/* TEMPORARY placeholder: the real command is being written in a parallel branch. */
#include "config.h"

#include "cli.h"

int
lp_cmd_synth (int argc, char **argv)
{
  GError *error = g_error_new (LP_ERROR, LP_ERROR_UNSUPPORTED, "synth is not implemented yet");
  return lp_cli_fail (error);
}
