/* llmpress cache: where the artifact cache is, checking it, and garbage
 * collection. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cache.h"

int
lp_cmd_cache (int argc, char **argv)
{
  g_autofree char *dir = NULL, *max_size = NULL;
  double max_days = -1;
  GOptionEntry entries[] = {
    { "cache-dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "the cache (default: $XDG_CACHE_HOME/llmpress)", "DIR" },
    { "max-size", 0, 0, G_OPTION_ARG_STRING, &max_size, "gc: drop least recently used entries until it fits", "SIZE" },
    { "max-age", 0, 0, G_OPTION_ARG_DOUBLE, &max_days, "gc: drop entries unused for DAYS (0: everything)", "DAYS" },
    { NULL }
  };
  if (!lp_cli_parse ("cache", "gc|verify|dir", "Manage the artifact cache.",
                     "gc removes what killed runs left behind, then entries by --max-age and --max-size.\n"
                     "verify checks every byte of every entry against its checksum and removes the\n"
                     "damaged ones (runs check each entry they load, and recompute a damaged one).\n"
                     "dir prints the cache directory.  None of them creates anything.", entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 2 || (strcmp (argv[1], "gc") != 0 && strcmp (argv[1], "dir") != 0 && strcmp (argv[1], "verify") != 0))
    return lp_cli_usage_error ("cache", "expected 'gc', 'verify' or 'dir'");
  if (dir == NULL)
    dir = lp_cache_default_dir ();
  if (strcmp (argv[1], "dir") == 0)
    {
      printf ("%s\n", dir);
      return LP_EXIT_OK;
    }
  guint64 limit = 0;
  if (max_size != NULL && !lp_cli_parse_size (max_size, &limit))
    return lp_cli_usage_error ("cache", "--max-size %s: expected a size such as 512M or 8G", max_size);
  GError *error = NULL;
  g_autoptr (LpCache) cache = lp_cache_open (dir, &error);
  if (cache == NULL)
    return lp_cli_fail (error);
  guint removed = 0;
  if (strcmp (argv[1], "verify") == 0)
    {
      guint checked = 0;
      if (!lp_cache_verify (cache, &checked, &removed, &error))
        return lp_cli_fail (error);
      printf ("%s: checked %u entr%s, removed %u damaged\n", dir, checked, checked == 1 ? "y" : "ies", removed);
      return LP_EXIT_OK;
    }
  guint64 freed = 0, kept = 0;
  gint64 max_age = max_days < 0 ? -1 : (gint64) (max_days * 86400.0);
  if (!lp_cache_gc (cache, max_age, limit, &removed, &freed, &kept, &error))
    return lp_cli_fail (error);
  g_autofree char *f = g_format_size (freed), *k = g_format_size (kept);
  printf ("%s: removed %u entr%s (%s), %s kept\n", dir, removed, removed == 1 ? "y" : "ies", f, k);
  return LP_EXIT_OK;
}
