/* llmpress — tensor-name patterns (params.h): comma-separated globs, in
 * model/ because the layers below the pipeline (the trainer in compress/)
 * choose tensors by them too. */
#include "config.h"

#include "lp-internal.h"

struct _LpTensorPattern {
  char *text;
  GPtrArray *globs; /* GPatternSpec * */
};

LpTensorPattern *
lp_tensor_pattern_new (const char *globs)
{
  LpTensorPattern *p = g_new0 (LpTensorPattern, 1);
  p->globs = g_ptr_array_new_with_free_func ((GDestroyNotify) g_pattern_spec_free);
  g_auto (GStrv) parts = g_strsplit (globs ? globs : "", ",", -1);
  g_autoptr (GPtrArray) kept = g_ptr_array_new ();
  for (char **s = parts; *s; s++)
    {
      g_strstrip (*s);
      if (**s == '\0')
        continue;
      g_ptr_array_add (p->globs, g_pattern_spec_new (*s));
      g_ptr_array_add (kept, *s);
    }
  g_ptr_array_add (kept, NULL);
  p->text = g_strjoinv (",", (char **) kept->pdata);
  return p;
}

void
lp_tensor_pattern_free (LpTensorPattern *pattern)
{
  if (pattern == NULL)
    return;
  g_ptr_array_unref (pattern->globs);
  g_free (pattern->text);
  g_free (pattern);
}

gboolean
lp_tensor_pattern_match (const LpTensorPattern *pattern, const char *name)
{
  for (guint i = 0; i < pattern->globs->len; i++)
    if (g_pattern_spec_match_string (pattern->globs->pdata[i], name))
      return TRUE;
  return FALSE;
}

const char *
lp_tensor_pattern_text (const LpTensorPattern *pattern)
{
  return pattern->text;
}
