/* llmpress — the compute graph: tensors in backend memory, nodes recorded
 * in order, executed by the backend in runs of nodes it supports; a node it
 * declines runs here on the CPU, its operands copied across (the one place
 * the per-op CPU fallback lives).  See compute.h. */
#include "config.h"

#include <string.h>

#include "lp-internal.h"

#include "compute-internal.h"

struct _LpCGraph {
  LpBackend *be;
  GPtrArray *tensors;              /* LpCTensor*, owned */
  GPtrArray *nodes;                /* LpCNode*, owned */
  guint n_run;                     /* nodes[0 .. n_run-1] have run */
  gboolean on_cpu[LP_COP_COUNT];   /* ops that ran on the CPU instead of be */
  GHashTable *grads;               /* LpCTensor* -> its gradient (lp_cgraph_backward) */
  gboolean int8_matmul;            /* matmul nodes recorded get i[0] = 1 (lp_cgraph_set_int8_matmul) */
};

/* ---- tensors ---- */

LpCTensor *
lp_ctensor_new (LpBackend *be, LpDType dtype, int n_dims, const gint64 *shape, const char *name, GError **error)
{
  guint64 bytes = 0;
  if (!lp_tensor_shape_bytes (name ? name : "tensor", dtype, n_dims, shape, &bytes, error))
    return NULL;
  if (bytes > G_MAXSIZE)
    {
      lp_set_error (error, LP_ERROR_INVALID, "%s: %" G_GUINT64_FORMAT " bytes: more than this machine addresses",
                    name ? name : "tensor", bytes);
      return NULL;
    }
  gpointer buf = be->ops->buffer_new (be, (gsize) bytes, error);
  if (buf == NULL)
    {
      lp_error_prefix (error, name ? name : "tensor");
      return NULL;
    }
  LpCTensor *t = g_new0 (LpCTensor, 1);
  t->dtype = dtype;
  t->n_dims = n_dims;
  memcpy (t->shape, shape, sizeof (gint64) * n_dims);
  t->n_bytes = (gsize) bytes;
  t->be = be;
  t->buf = buf;
  t->name = g_strdup (name);
  return t;
}

void
lp_ctensor_free (LpCTensor *t)
{
  if (t == NULL)
    return;
  t->be->ops->buffer_free (t->be, t->buf);
  g_free (t->name);
  g_free (t);
}

void
lp_ctensor_write (LpCTensor *t, gsize offset, const void *src, gsize n)
{
  g_return_if_fail (offset <= t->n_bytes && n <= t->n_bytes - offset);
  if (n > 0)
    t->be->ops->buffer_write (t->be, t->buf, offset, src, n);
}

void
lp_ctensor_read (const LpCTensor *t, gsize offset, void *dst, gsize n)
{
  g_return_if_fail (offset <= t->n_bytes && n <= t->n_bytes - offset);
  if (n > 0)
    t->be->ops->buffer_read (t->be, t->buf, offset, dst, n);
}

void *
lp_ctensor_host (const LpCTensor *t)
{
  return t->be != NULL && lp_backend_is_cpu (t->be) ? t->buf : NULL;
}

gint64
lp_ctensor_n_elements (const LpCTensor *t)
{
  gint64 n = 1;
  for (int d = 0; d < t->n_dims; d++)
    n *= t->shape[d];
  return n;
}

LpCTensor *
lp_ctensor_from_tensor (LpBackend *be, const LpTensor *t, GError **error)
{
  LpCTensor *c = lp_ctensor_new (be, t->dtype, t->n_dims, t->shape, t->name, error);
  if (c != NULL)
    lp_ctensor_write (c, 0, lp_tensor_data (t), c->n_bytes);
  return c;
}

void
lp_ctensor_set_trainable (LpCTensor *t, gboolean trainable)
{
  t->trainable = trainable;
}

/* ---- graphs ---- */

static void
node_free (gpointer p)
{
  g_free (p);
}

LpCGraph *
lp_cgraph_new (LpBackend *be)
{
  g_return_val_if_fail (be != NULL, NULL);
  /* A backend without graphs (built before backend API 5 had them filled
   * in) hands the whole graph to its fallback, the CPU. */
  if ((be->ops->buffer_new == NULL || be->ops->graph_compute == NULL || be->ops->supports_node == NULL)
      && be->fallback != NULL)
    be = be->fallback;
  LpCGraph *g = g_new0 (LpCGraph, 1);
  g->be = lp_backend_ref (be);
  g->tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_ctensor_free);
  g->nodes = g_ptr_array_new_with_free_func (node_free);
  g->grads = g_hash_table_new (g_direct_hash, g_direct_equal);
  return g;
}

void
lp_cgraph_free (LpCGraph *g)
{
  if (g == NULL)
    return;
  g_hash_table_unref (g->grads);
  g_ptr_array_unref (g->nodes);
  g_ptr_array_unref (g->tensors);
  lp_backend_unref (g->be);
  g_free (g);
}

void
lp_cgraph_set_int8_matmul (LpCGraph *g, gboolean on)
{
  g->int8_matmul = on;
}

LpBackend *
lp_cgraph_backend (LpCGraph *g)
{
  return g->be;
}

LpCTensor *
lp_cgraph_tensor (LpCGraph *g, LpDType dtype, int n_dims, const gint64 *shape, const char *name, GError **error)
{
  LpCTensor *t = lp_ctensor_new (g->be, dtype, n_dims, shape, name, error);
  if (t != NULL)
    g_ptr_array_add (g->tensors, t);
  return t;
}

/* The shape of result j of a node whose results the graph allocates, from
 * its operands (compute.h documents each op).  FALSE when it cannot be
 * inferred (embed_back: V is a parameter). */
static gboolean
infer_shape (const LpCNode *n, int j, int *n_dims, gint64 *shape)
{
  const LpCTensor *s0 = n->src[0], *s1 = n->src[1];
  const LpCTensor *like = NULL;
  switch (n->op)
    {
    case LP_COP_EMBED:
      *n_dims = 2;
      shape[0] = lp_ctensor_n_elements (s1);
      shape[1] = s0->shape[s0->n_dims - 1];
      return TRUE;
    case LP_COP_MATMUL:
    case LP_COP_MATMUL_GRID:
      *n_dims = 2;
      shape[0] = lp_ctensor_rows (s0);
      shape[1] = s1->shape[0];
      return TRUE;
    case LP_COP_RMSNORM:
    case LP_COP_ROPE:
    case LP_COP_ATTENTION:
    case LP_COP_SWIGLU:
    case LP_COP_ADD:
    case LP_COP_SCALE:
    case LP_COP_ROPE_BACK:
      like = s0;
      break;
    case LP_COP_SET_ROWS:
      like = s1;
      break;
    case LP_COP_CROSS_ENTROPY:
    case LP_COP_KL:
    case LP_COP_MSE:
    case LP_COP_KL_TOPK:
      *n_dims = 1;
      shape[0] = lp_ctensor_rows (s0);
      return TRUE;
    case LP_COP_MATMUL_BACK_X:
      *n_dims = 2;
      shape[0] = lp_ctensor_rows (s0);
      shape[1] = s1->shape[s1->n_dims - 1];
      return TRUE;
    case LP_COP_MATMUL_BACK_W:
      *n_dims = 2;
      shape[0] = s0->shape[s0->n_dims - 1];
      shape[1] = s1->shape[s1->n_dims - 1];
      return TRUE;
    case LP_COP_FAKE_QUANT:
    case LP_COP_DEQUANT_GRID:
      like = s0; /* W [N,K] like the latent weights or the codes */
      break;
    case LP_COP_FAKE_QUANT_BACK:
      like = s1;
      break;
    case LP_COP_DEQUANT_GRID_BACK:
      like = n->src[2]; /* [N,G] like the scales */
      break;
    case LP_COP_RMSNORM_BACK:
    case LP_COP_CROSS_ENTROPY_BACK:
    case LP_COP_KL_BACK:
    case LP_COP_MSE_BACK:
    case LP_COP_KL_TOPK_BACK:
      like = s1;
      break;
    case LP_COP_RMSNORM_BACK_W:
      *n_dims = 1;
      shape[0] = s1->shape[s1->n_dims - 1];
      return TRUE;
    case LP_COP_ATTENTION_BACK:
    case LP_COP_SWIGLU_BACK:
      like = n->src[1 + j]; /* dq like q, dk like k, dv like v; d(gate), d(up) */
      break;
    case LP_COP_ROW_SUM:
      *n_dims = 2;
      shape[0] = 1;
      shape[1] = s0->shape[s0->n_dims - 1];
      return TRUE;
    case LP_COP_SUM_SQ:
      *n_dims = 1;
      shape[0] = 1;
      return TRUE;
    case LP_COP_EMBED_BACK:
    case LP_COP_ADAMW:
    case LP_COP_COUNT:
      return FALSE;
    }
  if (like == NULL)
    return FALSE;
  *n_dims = like->n_dims;
  memcpy (shape, like->shape, sizeof (gint64) * like->n_dims);
  return TRUE;
}

LpCNode *
lp_cgraph_add (LpCGraph *g, LpCOp op, LpCTensor *const *src, int n_src, LpCTensor *const *dst, int n_dst,
               GError **error)
{
  g_return_val_if_fail (op < LP_COP_COUNT, NULL);
  const LpCOpInfo *info = lp_cop_info (op);
  g_return_val_if_fail (n_src >= 1 && n_src <= info->n_src && n_dst >= 0 && n_dst <= info->n_dst, NULL);
  g_return_val_if_fail (src[0] != NULL, NULL);
  LpCNode *n = g_new0 (LpCNode, 1);
  n->op = op;
  if (op == LP_COP_MATMUL && g->int8_matmul)
    n->i[0] = 1;
  n->n_src = info->n_src;
  n->n_dst = info->n_dst;
  for (int i = 0; i < n_src; i++)
    n->src[i] = src[i];
  for (int j = 0; j < info->n_dst; j++)
    {
      if (j < n_dst && dst != NULL && dst[j] != NULL)
        {
          n->dst[j] = dst[j];
          continue;
        }
      if (op == LP_COP_SET_ROWS || op == LP_COP_ADAMW)
        {
          /* Written in place: set_rows' cache; AdamW's param, m and v. */
          n->dst[j] = n->src[op == LP_COP_SET_ROWS ? 1 : j == 0 ? 0 : j + 1];
          continue;
        }
      int n_dims = 0;
      gint64 shape[LP_MAX_DIMS] = { 0 };
      if (!infer_shape (n, j, &n_dims, shape))
        {
          lp_set_error (error, LP_ERROR_INVALID, "graph: op %s: expected its result %d given, found none", info->name,
                        j);
          g_free (n);
          return NULL;
        }
      n->dst[j] = lp_cgraph_tensor (g, LP_DTYPE_F32, n_dims, shape, info->name, error);
      if (n->dst[j] == NULL)
        {
          g_free (n);
          return NULL;
        }
    }
  g_ptr_array_add (g->nodes, n);
  return n;
}

/* ---- execution ---- */

/* A CPU-side stand-in for one operand of a node run on the CPU instead of
 * the graph's backend: the operand itself when its memory is the host's,
 * else a host copy. */
typedef struct {
  LpCTensor *orig;
  LpCTensor host;
  gboolean copied;
} HostOperand;

static LpCTensor *
host_operand (GArray *ops, LpCTensor *t, gboolean download)
{
  for (guint i = 0; i < ops->len; i++)
    {
      HostOperand *h = &g_array_index (ops, HostOperand, i);
      if (h->orig == t)
        return &h->host;
    }
  HostOperand h = { t, *t, FALSE };
  if (lp_ctensor_host (t) == NULL && t->be != NULL && !lp_backend_is_cpu (t->be))
    {
      h.host.be = NULL;
      h.host.buf = g_malloc (MAX (t->n_bytes, 1));
      h.copied = TRUE;
      if (download)
        lp_ctensor_read (t, 0, h.host.buf, t->n_bytes);
    }
  g_array_append_val (ops, h);
  return &g_array_index (ops, HostOperand, ops->len - 1).host;
}

/* Run one node with its CPU kernel: operands downloaded, results uploaded. */
static void
run_on_cpu (const LpCNode *node)
{
  g_autoptr (GArray) ops = g_array_sized_new (FALSE, FALSE, sizeof (HostOperand), LP_CNODE_MAX_SRC + LP_CNODE_MAX_DST);
  LpCNode local = *node;
  for (int i = 0; i < node->n_src; i++)
    if (node->src[i] != NULL)
      local.src[i] = host_operand (ops, node->src[i], TRUE);
  for (int j = 0; j < node->n_dst; j++)
    if (node->dst[j] != NULL)
      local.dst[j] = host_operand (ops, node->dst[j], FALSE);
  lp_cop_info (node->op)->cpu (&local);
  for (guint i = 0; i < ops->len; i++)
    {
      HostOperand *h = &g_array_index (ops, HostOperand, i);
      if (!h->copied)
        continue;
      for (int j = 0; j < node->n_dst; j++)
        if (node->dst[j] == h->orig)
          lp_ctensor_write (h->orig, 0, h->host.buf, h->orig->n_bytes);
      g_free (h->host.buf);
    }
}

gboolean
lp_cgraph_compute (LpCGraph *g, GError **error)
{
  LpBackend *be = g->be;
  LpCNode **nodes = (LpCNode **) g->nodes->pdata;
  guint n = g->nodes->len;
  while (g->n_run < n)
    {
      guint start = g->n_run, end = start;
      while (end < n && be->ops->supports_node (be, nodes[end]))
        end++;
      if (end > start)
        {
          if (!be->ops->graph_compute (be, nodes + start, (int) (end - start), error))
            return FALSE;
          g->n_run = end;
          continue;
        }
      run_on_cpu (nodes[start]);
      g->on_cpu[nodes[start]->op] = TRUE;
      g->n_run = start + 1;
    }
  return TRUE;
}

char *
lp_cgraph_describe (LpCGraph *g)
{
  GString *s = g_string_new (g->be->device_name);
  gboolean any = FALSE;
  for (LpCOp op = 0; op < LP_COP_COUNT; op++)
    {
      gboolean cpu = g->on_cpu[op];
      /* Nodes not run yet: those the backend will decline. */
      for (guint i = g->n_run; i < g->nodes->len && !cpu; i++)
        {
          const LpCNode *node = g_ptr_array_index (g->nodes, i);
          cpu = node->op == op && !g->be->ops->supports_node (g->be, node);
        }
      if (cpu)
        {
          g_string_append_printf (s, "%s%s", any ? ", " : "; on the CPU: ", lp_cop_info (op)->name);
          any = TRUE;
        }
    }
  return g_string_free (s, FALSE);
}

/* ---- backward ---- */

/* The tensors that depend on a trainable tensor through nodes[0 .. n-1]. */
static GHashTable *
trainable_reach (LpCGraph *g, guint n)
{
  GHashTable *reach = g_hash_table_new (g_direct_hash, g_direct_equal);
  for (guint k = 0; k < n; k++)
    {
      const LpCNode *node = g_ptr_array_index (g->nodes, k);
      gboolean any = FALSE;
      for (int i = 0; i < node->n_src; i++)
        if (node->src[i] != NULL && (node->src[i]->trainable || g_hash_table_contains (reach, node->src[i])))
          {
            any = TRUE;
            if (node->src[i]->trainable)
              g_hash_table_add (reach, node->src[i]);
          }
      if (any)
        for (int j = 0; j < node->n_dst; j++)
          g_hash_table_add (reach, node->dst[j]);
    }
  return reach;
}

/* grads[t] += d: the first contribution is kept, later ones summed by
 * LP_COP_ADD nodes (a tensor used more than once). */
static gboolean
grad_accumulate (LpCGraph *g, LpCTensor *t, LpCTensor *d, GError **error)
{
  LpCTensor *prev = g_hash_table_lookup (g->grads, t);
  if (prev == NULL)
    {
      g_hash_table_insert (g->grads, t, d);
      return TRUE;
    }
  LpCTensor *src[2] = { prev, d };
  LpCNode *sum = lp_cgraph_add (g, LP_COP_ADD, src, 2, NULL, 0, error);
  if (sum == NULL)
    return FALSE;
  g_hash_table_insert (g->grads, t, sum->dst[0]);
  return TRUE;
}

gboolean
lp_cgraph_backward (LpCGraph *g, LpCTensor *y, LpCTensor *dy, GError **error)
{
  g_return_val_if_fail (lp_ctensor_n_elements (y) == lp_ctensor_n_elements (dy), FALSE);
  guint n = g->nodes->len;
  g_autoptr (GHashTable) reach = trainable_reach (g, n);
  if (!grad_accumulate (g, y, dy, error))
    return FALSE;
  for (guint k = n; k-- > 0;)
    {
      const LpCNode *node = g_ptr_array_index (g->nodes, k);
      LpCTensor *dys[LP_CNODE_MAX_DST] = { NULL };
      gboolean any_dy = FALSE, any_need = FALSE;
      for (int j = 0; j < node->n_dst; j++)
        any_dy |= (dys[j] = g_hash_table_lookup (g->grads, node->dst[j])) != NULL;
      gboolean need[LP_CNODE_MAX_SRC] = { FALSE };
      for (int i = 0; i < node->n_src; i++)
        any_need |= need[i] = node->src[i] != NULL && g_hash_table_contains (reach, node->src[i]);
      if (!any_dy || !any_need)
        continue;
      const LpCOpInfo *info = lp_cop_info (node->op);
      if (info->backward == NULL)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "graph: backward: op %s: expected a differentiable op, found none",
                        info->name);
          return FALSE;
        }
      LpCTensor *dsrc[LP_CNODE_MAX_SRC] = { NULL };
      if (!info->backward (g, node, dys, need, dsrc, error))
        return FALSE;
      /* A result written in place over an operand (set_rows' cache) is the
       * same tensor before and after the node: from here back its gradient
       * is the operand's, which replaces the result's rather than adds to it. */
      for (int j = 0; j < node->n_dst; j++)
        for (int i = 0; i < node->n_src; i++)
          if (node->dst[j] == node->src[i])
            g_hash_table_remove (g->grads, node->src[i]);
      for (int i = 0; i < node->n_src; i++)
        if (need[i] && dsrc[i] != NULL && !grad_accumulate (g, node->src[i], dsrc[i], error))
          return FALSE;
    }
  return TRUE;
}

LpCTensor *
lp_cgraph_grad (LpCGraph *g, const LpCTensor *t)
{
  return g_hash_table_lookup (g->grads, t);
}
