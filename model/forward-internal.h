/* llmpress — the forward pass's state, shared by forward.c (recording the
 * graphs) and forward_weights.c (its weights in backend memory).  Not part
 * of the SDK. */
#pragma once

#include <llmpress/compute.h>
#include <llmpress/forward.h>

/* A block's weights, in their slot's order. */
typedef enum {
  LP_FW_ATTN_NORM, LP_FW_Q, LP_FW_K, LP_FW_V, LP_FW_O, LP_FW_QB, LP_FW_KB, LP_FW_VB,
  LP_FW_FFN_NORM, LP_FW_GATE, LP_FW_UP, LP_FW_DOWN, LP_FW_COUNT
} LpForwardLayerWeight;

/* The weights outside the blocks, kept in one more slot after the layers'. */
typedef enum { LP_FW_TOP_EMBED, LP_FW_TOP_NORM, LP_FW_TOP_HEAD } LpForwardTopWeight;

/* How a weight is uploaded: f32 (norms, biases); as stored, for the
 * embedding lookup; as stored or as an integer grid, for a matrix. */
typedef enum { LP_FW_VECTOR, LP_FW_TABLE, LP_FW_MATRIX } LpForwardWeightKind;

/* One weight in backend memory. */
typedef struct {
  LpTensor *src;            /* the model tensor it was uploaded from (ref) */
  LpCTensor *t;             /* [N, K] as stored or f32; NULL for a grid */
  LpCTensor *grid[4];       /* codes [N,K], scales [N,G], zeros [N,G], g_idx [K] */
  int bits, group;
  gboolean borrowed;        /* t wraps src's memory (the CPU): only the struct is ours */
  gsize bytes;
} LpForwardWeight;

typedef struct {
  LpForwardWeight w[LP_FW_COUNT];
  guint64 last_use;         /* fw->clock when last used */
} LpForwardSlot;

struct _LpForward {
  LpModel *model;
  LpBackend *be;            /* the backend the graphs run on */
  LpModelConfig c;
  float *inv_freq;          /* [hd/2] */
  LpCTensor *inv_freq_t;    /* the same, in backend memory */
  LpForwardSlot *slots;     /* [n_layers + 1]: each layer's weights, then LpForwardTopWeight's */
  guint64 clock;
  guint64 budget;           /* bytes of weights to keep; 0: no limit */
  guint64 resident;         /* bytes of weights held */
  guint64 uploads;          /* weights uploaded so far */
};

/* Layer `layer`'s weights, uploaded where needed (LP_FW_QB.. only with
 * q/k/v biases), and marked as just used. */
LpForwardWeight *lp_forward_layer_weights (LpForward *fw, int layer, GError **error);
/* The weights outside the blocks: the embedding table (head FALSE), or the
 * final norm and the head (head TRUE). */
LpForwardWeight *lp_forward_top_weights (LpForward *fw, gboolean head, GError **error);
/* The head's matrix among those: the embedding table itself when tied and read as stored. */
const LpForwardWeight *lp_forward_head_weight (const LpForwardWeight *top);
/* Drop every weight held. */
void lp_forward_weights_clear (LpForward *fw);
