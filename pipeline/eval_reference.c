/* llmpress — a reference model's side of the KL, kept for many models that
 * each differ from it in a few tensors (eval.h's LpEvalReference).
 *
 * lp_eval_run's KL runs the model and the reference over every window.
 * Here the reference runs once, a stage at a time, keeping its logits and
 * the residual stream entering each block and the head; a model's forward
 * pass then starts at the first stage that reads a tensor it does not share
 * with the reference, from that stage's kept input.  The stages before it
 * would have computed the same values from the same tensors, so the KL is
 * lp_eval_run's, summed in the same order. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "lp-internal.h"
#include "eval-internal.h"
#include <llmpress/forward.h>
#include "compute-internal.h"

struct _LpEvalReference {
  LpModel *model;
  LpBackend *backend;      /* NULL: the CPU */
  guint64 device_memory;
  LpEvalWindows win;
  int L, D, V;
  gint32 *windows;         /* [n_windows, ctx]: each window's token ids */
  float *states;           /* [n_windows, L + 1, ctx, D]: the input of each block, then of the head */
  float *logits;           /* [n_windows, ctx, V] */
};

/* The stage of the forward pass that first reads tensor `name` of a model
 * of L blocks: block N for blk.N.*, L for the head's (output_norm, an
 * untied output), -1 (the embedding: every stage) for anything else. */
static int
tensor_stage (const char *name, int L)
{
  int layer, end = 0;
  if (strcmp (name, "output_norm.weight") == 0 || strcmp (name, "output.weight") == 0)
    return L;
  if (sscanf (name, "blk.%d.%n", &layer, &end) == 1 && end > 0 && layer >= 0 && layer < L)
    return layer;
  return -1;
}

/* Whether two configurations compute the same forward pass. */
static gboolean
same_config (const LpModelConfig *a, const LpModelConfig *b)
{
  return a->arch == b->arch && a->n_vocab == b->n_vocab && a->dim == b->dim && a->ffn_dim == b->ffn_dim
         && a->n_layers == b->n_layers && a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads
         && a->head_dim == b->head_dim && a->rope_theta == b->rope_theta && a->rope_scaling == b->rope_scaling
         && a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor
         && a->rope_high_freq_factor == b->rope_high_freq_factor && a->rope_orig_ctx == b->rope_orig_ctx
         && a->norm_eps == b->norm_eps && a->tied_embeddings == b->tied_embeddings;
}

/* The first stage whose tensors in `model` are not the reference's own
 * (L + 1: none); -1 (every stage) when the configurations differ or the
 * model lacks one of the reference's tensors. */
static int
first_difference (const LpEvalReference *ref, LpModel *model)
{
  if (!same_config (lp_model_config (model), lp_model_config (ref->model)))
    return -1;
  int from = ref->L + 1;
  for (guint i = 0; i < lp_model_n_tensors (model); i++)
    {
      LpTensor *t = lp_model_tensor_at (model, i);
      if (lp_model_tensor (ref->model, t->name) != t)
        from = MIN (from, tensor_stage (t->name, ref->L));
    }
  for (guint i = 0; i < lp_model_n_tensors (ref->model); i++)
    if (lp_model_tensor (model, lp_model_tensor_at (ref->model, i)->name) == NULL)
      return -1;
  return from;
}

/* One run over the windows: the reference's (record: keep its states and
 * logits) or a model's from stage `from` (kl[w] each window's summed KL). */
typedef struct {
  LpEvalReference *ref;
  LpModel *model;
  gboolean record;
  int from;
  double *kl;              /* [n_windows] */
  GMutex lock;             /* guards error */
  GError *error;
} Pass;

static float *
state (const LpEvalReference *ref, int w, int stage)
{
  return ref->states + ((gsize) w * (ref->L + 1) + stage) * ref->win.ctx * ref->D;
}

/* Window w through fw from stage `from` (x: [ctx, D] scratch, logits [ctx, V]). */
static gboolean
window_forward (Pass *p, LpForward *fw, int w, float *x, float *logits, GError **error)
{
  LpEvalReference *ref = p->ref;
  int ctx = ref->win.ctx;
  gsize xs = (gsize) ctx * ref->D * sizeof (float);
  if (p->from < 0 && !lp_forward_embed (fw, ref->windows + (gsize) w * ctx, ctx, x, error))
    return FALSE;
  if (p->from >= 0)
    memcpy (x, state (ref, w, p->from), xs);
  for (int l = MAX (p->from, 0); l < ref->L; l++)
    {
      if (p->record)
        memcpy (state (ref, w, l), x, xs);
      if (!lp_forward_block (fw, l, x, ctx, NULL, NULL, error))
        return FALSE;
    }
  if (p->record)
    memcpy (state (ref, w, ref->L), x, xs);
  return lp_forward_head (fw, x, ctx, logits, error);
}

/* The summed KL over window w's scored positions, as lp_eval_run sums it. */
static double
window_kl (const LpEvalReference *ref, int w, const float *logits, double *lp, double *lq)
{
  int ctx = ref->win.ctx, V = ref->V;
  const float *rlogits = ref->logits + (gsize) w * ctx * V;
  double kl = 0;
  for (int t = ref->win.first; t < ctx - 1; t++)
    {
      lp_log_softmax (logits + (gsize) t * V, V, lq);
      lp_log_softmax (rlogits + (gsize) t * V, V, lp);
      kl += lp_eval_kl_row (lp, lq, V);
    }
  return kl;
}

static void
pass_windows (gint64 begin, gint64 end, gpointer data)
{
  Pass *p = data;
  LpEvalReference *ref = p->ref;
  GError *error = NULL;
  g_autoptr (LpForward) fw = lp_forward_new (p->model, ref->backend, &error);
  if (fw != NULL)
    lp_forward_set_device_memory (fw, ref->device_memory);
  g_autofree float *x = g_new (float, (gsize) ref->win.ctx * ref->D);
  g_autofree float *own = p->record ? NULL : g_new (float, (gsize) ref->win.ctx * ref->V);
  g_autofree double *lp = p->record ? NULL : g_new (double, ref->V);
  g_autofree double *lq = p->record ? NULL : g_new (double, ref->V);
  for (gint64 w = begin; fw != NULL && w < end; w++)
    {
      float *logits = p->record ? ref->logits + (gsize) w * ref->win.ctx * ref->V : own;
      if (!window_forward (p, fw, (int) w, x, logits, &error))
        break;
      if (!p->record)
        p->kl[w] = window_kl (ref, (int) w, logits, lp, lq);
    }
  if (error != NULL)
    {
      g_mutex_lock (&p->lock);
      if (p->error == NULL)
        p->error = g_steal_pointer (&error);
      g_mutex_unlock (&p->lock);
      g_clear_error (&error); /* a later window's, when another came first */
    }
}

/* Every window, over the cores as lp_eval_run spreads them. */
static gboolean
pass_run (Pass *p, GError **error)
{
  g_mutex_init (&p->lock);
  if (lp_eval_per_core (p->ref->backend))
    lp_parallel_for (p->ref->win.n_windows, 1, pass_windows, p);
  else
    pass_windows (0, p->ref->win.n_windows, p);
  g_mutex_clear (&p->lock);
  if (p->error != NULL)
    {
      g_propagate_error (error, p->error);
      return FALSE;
    }
  return TRUE;
}

LpEvalReference *
lp_eval_reference_new (LpModel *reference, const gint32 *tokens, gsize n, const LpEvalOptions *options,
                       GError **error)
{
  LpEvalOptions o = { 0 };
  if (options)
    o = *options;
  g_return_val_if_fail (!o.llama_cpp, NULL);
  g_autoptr (LpEvalReference) ref = g_new0 (LpEvalReference, 1);
  ref->model = lp_model_ref (reference);
  ref->backend = o.backend ? lp_backend_ref (o.backend) : NULL;
  ref->device_memory = o.device_memory;
  if (!lp_eval_windows (reference, n, &o, &ref->win, error))
    return NULL;
  const LpModelConfig *c = lp_model_config (reference);
  ref->L = (int) c->n_layers;
  ref->D = (int) c->dim;
  ref->V = (int) c->n_vocab;
  int ctx = ref->win.ctx, nw = ref->win.n_windows;
  ref->windows = g_new (gint32, (gsize) nw * ctx);
  for (int w = 0; w < nw; w++)
    lp_tokens_window (tokens, (gsize) w * ref->win.stride, ctx, ref->win.bos, ref->windows + (gsize) w * ctx);
  ref->states = g_new (float, (gsize) nw * (ref->L + 1) * ctx * ref->D);
  ref->logits = g_new (float, (gsize) nw * ctx * ref->V);
  Pass p = { .ref = ref, .model = reference, .record = TRUE, .from = -1 };
  if (!pass_run (&p, error))
    return NULL;
  return g_steal_pointer (&ref);
}

gboolean
lp_eval_reference_kl (LpEvalReference *ref, LpModel *model, double *kl, GError **error)
{
  const LpModelConfig *c = lp_model_config (model);
  if (c->n_vocab != ref->V)
    {
      lp_set_error (error, LP_ERROR_INVALID, "eval: reference vocabulary: expected %" G_GINT64_FORMAT " tokens like the model, found %d",
                    c->n_vocab, ref->V);
      return FALSE;
    }
  if (lp_tokens_bos (model) != ref->win.bos)
    {
      lp_set_error (error, LP_ERROR_INVALID, "eval: reference: expected the model's BOS token %d, found %d",
                    lp_tokens_bos (model), ref->win.bos);
      return FALSE;
    }
  g_autofree double *per_window = g_new0 (double, ref->win.n_windows);
  int from = first_difference (ref, model);
  /* The same tensors: the same logits, KL 0 (as lp_eval_run finds). */
  if (from <= ref->L)
    {
      Pass p = { .ref = ref, .model = model, .from = from, .kl = per_window };
      if (!pass_run (&p, error))
        return FALSE;
    }
  double sum = 0;
  for (int w = 0; w < ref->win.n_windows; w++)
    sum += per_window[w];
  *kl = sum / ((double) ref->win.n_windows * (ref->win.ctx - 1 - ref->win.first));
  return TRUE;
}

void
lp_eval_reference_free (LpEvalReference *ref)
{
  if (ref == NULL)
    return;
  lp_model_unref (ref->model);
  if (ref->backend)
    lp_backend_unref (ref->backend);
  g_free (ref->windows);
  g_free (ref->states);
  g_free (ref->logits);
  g_free (ref);
}
