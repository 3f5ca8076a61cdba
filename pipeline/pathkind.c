/* llmpress — what a path names, in the words of error messages: "/dev/null"
 * is a character device, not "a directory" nor "a file". */
#include "config.h"

#include <sys/stat.h>
#include <glib/gstdio.h>

#include "lp-internal.h"

char *
lp_path_describe (const char *path)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    return g_strdup ("nothing");
  if (S_ISREG (st.st_mode))
    return g_strdup_printf ("a regular file of %" G_GUINT64_FORMAT " bytes", (guint64) st.st_size);
  if (S_ISDIR (st.st_mode))
    return g_strdup ("a directory");
  if (S_ISCHR (st.st_mode))
    return g_strdup ("a character device");
  if (S_ISBLK (st.st_mode))
    return g_strdup ("a block device");
  if (S_ISFIFO (st.st_mode))
    return g_strdup ("a FIFO");
  if (S_ISSOCK (st.st_mode))
    return g_strdup ("a socket");
  return g_strdup ("a special file");
}
