/* PLACEHOLDER (replaced by helper backward): the backward ops' kernels and each forward op's backward. */
#include "config.h"

#include "lp-internal.h"

#include "compute-internal.h"

void
lp_cop_embed_back_cpu (const LpCNode *node)
{
  g_error ("op embed_back: cpu kernel not written yet");
}

void
lp_cop_embed_back_ref (const LpCNode *node)
{
  g_error ("op embed_back: ref kernel not written yet");
}

void
lp_cop_matmul_back_x_cpu (const LpCNode *node)
{
  g_error ("op matmul_back_x: cpu kernel not written yet");
}

void
lp_cop_matmul_back_x_ref (const LpCNode *node)
{
  g_error ("op matmul_back_x: ref kernel not written yet");
}

void
lp_cop_matmul_back_w_cpu (const LpCNode *node)
{
  g_error ("op matmul_back_w: cpu kernel not written yet");
}

void
lp_cop_matmul_back_w_ref (const LpCNode *node)
{
  g_error ("op matmul_back_w: ref kernel not written yet");
}

void
lp_cop_rmsnorm_back_cpu (const LpCNode *node)
{
  g_error ("op rmsnorm_back: cpu kernel not written yet");
}

void
lp_cop_rmsnorm_back_ref (const LpCNode *node)
{
  g_error ("op rmsnorm_back: ref kernel not written yet");
}

void
lp_cop_rmsnorm_back_w_cpu (const LpCNode *node)
{
  g_error ("op rmsnorm_back_w: cpu kernel not written yet");
}

void
lp_cop_rmsnorm_back_w_ref (const LpCNode *node)
{
  g_error ("op rmsnorm_back_w: ref kernel not written yet");
}

void
lp_cop_rope_back_cpu (const LpCNode *node)
{
  g_error ("op rope_back: cpu kernel not written yet");
}

void
lp_cop_rope_back_ref (const LpCNode *node)
{
  g_error ("op rope_back: ref kernel not written yet");
}

void
lp_cop_attention_back_cpu (const LpCNode *node)
{
  g_error ("op attention_back: cpu kernel not written yet");
}

void
lp_cop_attention_back_ref (const LpCNode *node)
{
  g_error ("op attention_back: ref kernel not written yet");
}

void
lp_cop_swiglu_back_cpu (const LpCNode *node)
{
  g_error ("op swiglu_back: cpu kernel not written yet");
}

void
lp_cop_swiglu_back_ref (const LpCNode *node)
{
  g_error ("op swiglu_back: ref kernel not written yet");
}

void
lp_cop_row_sum_cpu (const LpCNode *node)
{
  g_error ("op row_sum: cpu kernel not written yet");
}

void
lp_cop_row_sum_ref (const LpCNode *node)
{
  g_error ("op row_sum: ref kernel not written yet");
}

void
lp_cop_cross_entropy_back_cpu (const LpCNode *node)
{
  g_error ("op cross_entropy_back: cpu kernel not written yet");
}

void
lp_cop_cross_entropy_back_ref (const LpCNode *node)
{
  g_error ("op cross_entropy_back: ref kernel not written yet");
}

void
lp_cop_kl_back_cpu (const LpCNode *node)
{
  g_error ("op kl_back: cpu kernel not written yet");
}

void
lp_cop_kl_back_ref (const LpCNode *node)
{
  g_error ("op kl_back: ref kernel not written yet");
}

void
lp_cop_mse_back_cpu (const LpCNode *node)
{
  g_error ("op mse_back: cpu kernel not written yet");
}

void
lp_cop_mse_back_ref (const LpCNode *node)
{
  g_error ("op mse_back: ref kernel not written yet");
}

gboolean
lp_cop_embed_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op embed: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_matmul_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op matmul: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_matmul_grid_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op matmul_grid: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_rmsnorm_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op rmsnorm: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_rope_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op rope: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_attention_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op attention: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_swiglu_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op swiglu: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_add_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op add: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_scale_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op scale: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_set_rows_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op set_rows: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_cross_entropy_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op cross_entropy: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_kl_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op kl: backward not written yet");
  return FALSE;
}

gboolean
lp_cop_mse_backward (LpCGraph *g, const LpCNode *node, LpCTensor *const *dy, const gboolean *need,
                      LpCTensor **dsrc, GError **error)
{
  lp_set_error (error, LP_ERROR_UNSUPPORTED, "op mse: backward not written yet");
  return FALSE;
}
