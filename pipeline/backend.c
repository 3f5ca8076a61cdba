/* llmpress — backend selection, refcounting and per-op fallback dispatch. */
#include "config.h"

#include "lp-internal.h"
#include <llmpress/backend.h>

LpBackend *
lp_backend_new (const char *name, GError **error)
{
  if (name == NULL || g_strcmp0 (name, "cpu") == 0 || g_strcmp0 (name, "auto") == 0)
    return lp_backend_cpu_new ();
  if (g_str_has_prefix (name, "vulkan"))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "backend %s: this build has no Vulkan backend", name);
      return NULL;
    }
  lp_set_error (error, LP_ERROR_INVALID, "backend: expected cpu, auto or vulkan[:N], found \"%s\"", name);
  return NULL;
}

LpBackend *
lp_backend_ref (LpBackend *be)
{
  g_atomic_int_inc (&be->ref_count);
  return be;
}

void
lp_backend_unref (LpBackend *be)
{
  if (be == NULL || !g_atomic_int_dec_and_test (&be->ref_count))
    return;
  if (be->fallback)
    lp_backend_unref (be->fallback);
  g_free (be->device_name);
  g_free (be->numeric_class);
  be->ops->destroy (be);
}

LpBackend *
lp_backend_for_op (LpBackend *be, LpOp op)
{
  if (be->ops->supports_op (be, op) || be->fallback == NULL)
    return be;
  return be->fallback;
}

void
lp_gemm (LpBackend *be, gboolean trans_b, int M, int N, int K, float alpha, const float *A, int lda,
         const float *B, int ldb, float beta, float *C, int ldc)
{
  be = lp_backend_for_op (be, LP_OP_GEMM);
  be->ops->gemm (be, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void
lp_syrk (LpBackend *be, int T, int n, const float *X, int ldx, float *H)
{
  be = lp_backend_for_op (be, LP_OP_SYRK);
  be->ops->syrk (be, T, n, X, ldx, H);
}

void
lp_rmsnorm (LpBackend *be, int T, int D, const float *x, const float *w, float eps, float *y)
{
  be = lp_backend_for_op (be, LP_OP_RMSNORM);
  be->ops->rmsnorm (be, T, D, x, w, eps, y);
}

void
lp_rope (LpBackend *be, LpRopeStyle style, int T, int n_heads, int hd, int pos0, const float *inv_freq, float *x)
{
  be = lp_backend_for_op (be, LP_OP_ROPE);
  be->ops->rope (be, style, T, n_heads, hd, pos0, inv_freq, x);
}

void
lp_attention (LpBackend *be, int T, int T_kv, int H, int Hkv, int hd, const float *q, const float *k,
              const float *v, float *out)
{
  be = lp_backend_for_op (be, LP_OP_ATTENTION);
  be->ops->attention (be, T, T_kv, H, Hkv, hd, q, k, v, out);
}

void
lp_swiglu (LpBackend *be, int n, const float *gate, const float *up, float *out)
{
  be = lp_backend_for_op (be, LP_OP_SWIGLU);
  be->ops->swiglu (be, n, gate, up, out);
}

gboolean
lp_cholesky (LpBackend *be, int n, float *A, int lda)
{
  be = lp_backend_for_op (be, LP_OP_CHOLESKY);
  return be->ops->cholesky (be, n, A, lda);
}
