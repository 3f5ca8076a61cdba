/* llmpress — the merge engine shared by both BPE flavours: symbols in a
 * doubly linked list, candidate pairs in a binary heap.  Merging the best pair
 * only creates the two pairs around the new symbol, so a text of n characters
 * costs O(n log n) instead of the O(n^2) of rescanning after every merge. */
#include "config.h"

#include "tokenizer-internal.h"

typedef struct {
  double priority;
  gint32 left, right;
  gsize len;  /* left.len + right.len when queued: stale once either changed */
  gint32 merged;
} Bigram;

/* a before b: higher priority first, then the leftmost. */
static gboolean
bigram_before (const Bigram *a, const Bigram *b)
{
  if (a->priority != b->priority)
    return a->priority > b->priority;
  return a->left < b->left;
}

typedef struct {
  GArray *heap;
} Queue;

static void
queue_push (Queue *q, const Bigram *b)
{
  g_array_append_val (q->heap, *b);
  Bigram *h = (Bigram *) q->heap->data;
  gsize i = q->heap->len - 1;
  while (i > 0)
    {
      gsize parent = (i - 1) / 2;
      if (!bigram_before (&h[i], &h[parent]))
        break;
      Bigram t = h[i];
      h[i] = h[parent];
      h[parent] = t;
      i = parent;
    }
}

static Bigram
queue_pop (Queue *q)
{
  Bigram *h = (Bigram *) q->heap->data;
  Bigram top = h[0];
  gsize n = q->heap->len - 1;
  h[0] = h[n];
  g_array_set_size (q->heap, n);
  gsize i = 0;
  for (;;)
    {
      gsize l = 2 * i + 1, r = l + 1, best = i;
      if (l < n && bigram_before (&h[l], &h[best]))
        best = l;
      if (r < n && bigram_before (&h[r], &h[best]))
        best = r;
      if (best == i)
        break;
      Bigram t = h[i];
      h[i] = h[best];
      h[best] = t;
      i = best;
    }
  return top;
}

static void
try_pair (const LpTokenizer *tok, const char *text, LpTokSymbol *syms, gint32 left, gint32 right,
          LpTokPairFunc pair, Queue *q)
{
  if (left < 0 || right < 0)
    return;
  Bigram b = { 0, left, right, syms[left].len + syms[right].len, -1 };
  if (pair (tok, text, &syms[left], &syms[right], &b.priority, &b.merged))
    queue_push (q, &b);
}

void
lp_tok_merge (const LpTokenizer *tok, const char *text, LpTokSymbol *syms, gsize n,
              LpTokPairFunc pair)
{
  Queue q = { g_array_sized_new (FALSE, FALSE, sizeof (Bigram), n) };
  for (gsize i = 1; i < n; i++)
    try_pair (tok, text, syms, (gint32) i - 1, (gint32) i, pair, &q);
  while (q.heap->len > 0)
    {
      Bigram b = queue_pop (&q);
      LpTokSymbol *l = &syms[b.left], *r = &syms[b.right];
      if (l->len == 0 || r->len == 0 || l->next != b.right || l->len + r->len != b.len)
        continue;
      l->len += r->len;
      l->id = b.merged;
      l->next = r->next;
      if (r->next >= 0)
        syms[r->next].prev = b.left;
      r->len = 0;
      try_pair (tok, text, syms, l->prev, b.left, pair, &q);
      try_pair (tok, text, syms, b.left, l->next, pair, &q);
    }
  g_array_free (q.heap, TRUE);
}
