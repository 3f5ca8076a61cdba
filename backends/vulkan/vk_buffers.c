/* llmpress Vulkan backend — the buffers compute graphs keep on the device
 * (buffer_new / free / write / read), and the pool that reuses them.
 *
 * Graphs are rebuilt for every block and every window, asking for the same
 * sizes again and again: a freed buffer goes to a pool keyed by its
 * capacity and is handed out again rather than returned to the driver.  On
 * memory the host can map (integrated GPUs, lavapipe) writes and reads are
 * plain copies; elsewhere they go through the staging buffer. */
#include "config.h"

#include <string.h>

#include "vk-internal.h"

#define CTX(be) ((LpVkCtx *) (be)->priv)

/* The pool keeps at most this much memory that no tensor uses. */
#define POOL_MAX_BYTES ((VkDeviceSize) 512 << 20)

/* Capacities come in steps of an eighth of a power of two (256 bytes at
 * least), so sizes that differ a little share a pool entry and at most an
 * eighth is wasted. */
static VkDeviceSize
capacity_for (gsize bytes)
{
  VkDeviceSize c = MAX (bytes, 256);
  VkDeviceSize p = 256;
  while (p * 2 <= c)
    p *= 2;
  VkDeviceSize step = MAX (p / 8, 256);
  return (c + step - 1) / step * step;
}

LpVkTensor *
lp_vk_tensor_take (LpVkCtx *ctx, gsize bytes, GError **error)
{
  gint64 cap = (gint64) capacity_for (bytes);
  GSList *free_list = g_hash_table_lookup (ctx->pool, &cap);
  LpVkTensor *t;
  if (free_list != NULL)
    {
      t = free_list->data;
      GSList *rest = g_slist_delete_link (free_list, free_list);
      if (rest != NULL)
        g_hash_table_insert (ctx->pool, g_memdup2 (&cap, sizeof cap), rest);
      else
        g_hash_table_remove (ctx->pool, &cap);
      ctx->pool_bytes -= t->b.size;
    }
  else
    {
      t = g_new0 (LpVkTensor, 1);
      if (!lp_vk_buf_alloc (ctx, &t->b, (VkDeviceSize) cap, FALSE, error))
        {
          g_free (t);
          return NULL;
        }
    }
  t->bytes = bytes;
  t->gen++;
  return t;
}

static void
tensor_destroy (LpVkCtx *ctx, LpVkTensor *t)
{
  lp_vk_buf_free (ctx, &t->b);
  lp_vk_buf_free (ctx, &t->rope_cs);
  g_free (t);
}

void
lp_vk_tensor_give (LpVkCtx *ctx, LpVkTensor *t)
{
  if (t == NULL)
    return;
  /* A table derived from the old contents means nothing to the next user. */
  lp_vk_buf_free (ctx, &t->rope_cs);
  t->rope_positions = 0;
  if (ctx->pool_bytes + t->b.size > POOL_MAX_BYTES)
    {
      tensor_destroy (ctx, t);
      return;
    }
  gint64 cap = (gint64) t->b.size;
  GSList *free_list = g_hash_table_lookup (ctx->pool, &cap);
  g_hash_table_insert (ctx->pool, g_memdup2 (&cap, sizeof cap), g_slist_prepend (free_list, t));
  ctx->pool_bytes += t->b.size;
}

void
lp_vk_pool_drain (LpVkCtx *ctx)
{
  GHashTableIter it;
  gpointer list;
  g_hash_table_iter_init (&it, ctx->pool);
  while (g_hash_table_iter_next (&it, NULL, &list))
    {
      for (GSList *l = list; l != NULL; l = l->next)
        tensor_destroy (ctx, l->data);
      g_slist_free (list);
      g_hash_table_iter_remove (&it);
    }
  ctx->pool_bytes = 0;
}

gpointer
lp_vk_buffer_new (LpBackend *be, gsize bytes, GError **error)
{
  LpVkCtx *ctx = CTX (be);
  g_mutex_lock (&ctx->lock);
  LpVkTensor *t = lp_vk_tensor_take (ctx, bytes, NULL);
  if (t == NULL)
    {
      /* Out of memory with buffers parked in the pool: give them back first. */
      lp_vk_pool_drain (ctx);
      t = lp_vk_tensor_take (ctx, bytes, error);
    }
  g_mutex_unlock (&ctx->lock);
  return t;
}

void
lp_vk_buffer_free (LpBackend *be, gpointer buf)
{
  LpVkCtx *ctx = CTX (be);
  g_mutex_lock (&ctx->lock);
  lp_vk_tensor_give (ctx, buf);
  g_mutex_unlock (&ctx->lock);
}

void
lp_vk_buffer_write (LpBackend *be, gpointer buf, gsize offset, const void *src, gsize n)
{
  LpVkCtx *ctx = CTX (be);
  LpVkTensor *t = buf;
  g_return_if_fail (offset + n <= t->bytes);
  g_mutex_lock (&ctx->lock);
  if (t->b.map != NULL)
    memcpy ((guint8 *) t->b.map + offset, src, n);
  else if (n > 0)
    lp_vk_copy_in (ctx, &t->b, offset, src, n);
  t->gen++;
  g_mutex_unlock (&ctx->lock);
}

void
lp_vk_buffer_read (LpBackend *be, gpointer buf, gsize offset, void *dst, gsize n)
{
  LpVkCtx *ctx = CTX (be);
  LpVkTensor *t = buf;
  g_return_if_fail (offset + n <= t->bytes);
  g_mutex_lock (&ctx->lock);
  if (t->b.map != NULL)
    memcpy (dst, (const guint8 *) t->b.map + offset, n);
  else if (n > 0)
    lp_vk_copy_out (ctx, &t->b, offset, dst, n);
  g_mutex_unlock (&ctx->lock);
}
