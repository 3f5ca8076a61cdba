/* PLACEHOLDER (replaced by helper cgraph): the forward ops' kernels. */
#include "config.h"

#include "lp-internal.h"

#include "compute-internal.h"

void
lp_cop_embed_cpu (const LpCNode *node)
{
  g_error ("op embed: cpu kernel not written yet");
}

void
lp_cop_embed_ref (const LpCNode *node)
{
  g_error ("op embed: ref kernel not written yet");
}

void
lp_cop_matmul_cpu (const LpCNode *node)
{
  g_error ("op matmul: cpu kernel not written yet");
}

void
lp_cop_matmul_ref (const LpCNode *node)
{
  g_error ("op matmul: ref kernel not written yet");
}

void
lp_cop_matmul_grid_cpu (const LpCNode *node)
{
  g_error ("op matmul_grid: cpu kernel not written yet");
}

void
lp_cop_matmul_grid_ref (const LpCNode *node)
{
  g_error ("op matmul_grid: ref kernel not written yet");
}

void
lp_cop_rmsnorm_cpu (const LpCNode *node)
{
  g_error ("op rmsnorm: cpu kernel not written yet");
}

void
lp_cop_rmsnorm_ref (const LpCNode *node)
{
  g_error ("op rmsnorm: ref kernel not written yet");
}

void
lp_cop_rope_cpu (const LpCNode *node)
{
  g_error ("op rope: cpu kernel not written yet");
}

void
lp_cop_rope_ref (const LpCNode *node)
{
  g_error ("op rope: ref kernel not written yet");
}

void
lp_cop_attention_cpu (const LpCNode *node)
{
  g_error ("op attention: cpu kernel not written yet");
}

void
lp_cop_attention_ref (const LpCNode *node)
{
  g_error ("op attention: ref kernel not written yet");
}

void
lp_cop_swiglu_cpu (const LpCNode *node)
{
  g_error ("op swiglu: cpu kernel not written yet");
}

void
lp_cop_swiglu_ref (const LpCNode *node)
{
  g_error ("op swiglu: ref kernel not written yet");
}

void
lp_cop_add_cpu (const LpCNode *node)
{
  g_error ("op add: cpu kernel not written yet");
}

void
lp_cop_add_ref (const LpCNode *node)
{
  g_error ("op add: ref kernel not written yet");
}

void
lp_cop_scale_cpu (const LpCNode *node)
{
  g_error ("op scale: cpu kernel not written yet");
}

void
lp_cop_scale_ref (const LpCNode *node)
{
  g_error ("op scale: ref kernel not written yet");
}

void
lp_cop_set_rows_cpu (const LpCNode *node)
{
  g_error ("op set_rows: cpu kernel not written yet");
}

void
lp_cop_set_rows_ref (const LpCNode *node)
{
  g_error ("op set_rows: ref kernel not written yet");
}

void
lp_cop_cross_entropy_cpu (const LpCNode *node)
{
  g_error ("op cross_entropy: cpu kernel not written yet");
}

void
lp_cop_cross_entropy_ref (const LpCNode *node)
{
  g_error ("op cross_entropy: ref kernel not written yet");
}

void
lp_cop_kl_cpu (const LpCNode *node)
{
  g_error ("op kl: cpu kernel not written yet");
}

void
lp_cop_kl_ref (const LpCNode *node)
{
  g_error ("op kl: ref kernel not written yet");
}

void
lp_cop_mse_cpu (const LpCNode *node)
{
  g_error ("op mse: cpu kernel not written yet");
}

void
lp_cop_mse_ref (const LpCNode *node)
{
  g_error ("op mse: ref kernel not written yet");
}
