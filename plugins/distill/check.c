/* llmpress distill plugin — whether a teacher can teach a student: what
 * every distillation pass checks before it computes anything. */
#include "config.h"

#include "distill.h"

/* Keys that define a tokenizer: both models have them equal, or neither has them. */
static const char *const tokenizer_keys[] = { "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                              "tokenizer.ggml.bos_token_id", NULL };

static gboolean
check_dim (const char *what, gint64 student, gint64 teacher, GError **error)
{
  if (student == teacher)
    return TRUE;
  lp_set_error (error, LP_ERROR_INVALID, "teacher: %s %" G_GINT64_FORMAT ", expected the student's %" G_GINT64_FORMAT,
                what, teacher, student);
  return FALSE;
}

gboolean
distill_check_teacher (LpModel *student, LpModel *teacher, gboolean same_blocks, GError **error)
{
  const LpModelConfig *s = lp_model_config (student), *t = lp_model_config (teacher);
  if (s->arch != t->arch)
    {
      lp_set_error (error, LP_ERROR_INVALID, "teacher: architecture %s, expected the student's %s",
                    lp_arch_info (t->arch)->name, lp_arch_info (s->arch)->name);
      return FALSE;
    }
  if (!check_dim ("vocabulary of", s->n_vocab, t->n_vocab, error))
    return FALSE;
  for (const char *const *k = tokenizer_keys; *k; k++)
    {
      const LpValue *a = lp_meta_get (lp_model_meta (student), *k), *b = lp_meta_get (lp_model_meta (teacher), *k);
      if ((a == NULL) != (b == NULL) || (a != NULL && !lp_value_equal (a, b)))
        {
          lp_set_error (error, LP_ERROR_INVALID, "teacher: tokenizer differs from the student's (%s %s)", *k,
                        a == NULL || b == NULL ? "present in only one of them" : "not equal");
          return FALSE;
        }
    }
  /* Block-wise targets line up only block for block, in the same dimension. */
  return !same_blocks || (check_dim ("model dimension", s->dim, t->dim, error)
                          && check_dim ("blocks", s->n_layers, t->n_layers, error));
}
