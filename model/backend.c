/* llmpress — backend selection, refcounting and per-op fallback dispatch. */
#include "config.h"

#include <string.h>
#include <gmodule.h>

#include "lp-internal.h"
#include <llmpress/backend.h>

static const char *const op_names[LP_OP_COUNT] = {
  "gemm", "syrk", "rmsnorm", "rope", "attention", "swiglu", "cholesky", "gemm_w", "dequantize", "tri_inverse",
  "quantize_groups", "gemm_i8", "gemm_grid",
};

const char *
lp_op_name (LpOp op)
{
  g_return_val_if_fail (op < LP_OP_COUNT, NULL);
  return op_names[op];
}

void
lp_device_info_free (LpDeviceInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->name);
  g_free (info->driver);
  g_free (info->api_version);
  g_free (info->skip_reason);
  g_free (info);
}

/* Loaded modules by name: a module, or the reason it is absent (kept, so
 * that "auto" does not search the disk again for every backend it makes). */
typedef struct {
  const LpBackendModule *module;
  char *absent;
} ModuleSlot;

G_LOCK_DEFINE_STATIC (modules);
static GHashTable *modules;

static const LpBackendModule *
module_load (const char *name, char **why)
{
  g_autoptr (GPtrArray) dirs = g_ptr_array_new_with_free_func (g_free);
  const char *env = g_getenv ("LLMPRESS_BACKEND_PATH");
  if (env != NULL && *env != '\0')
    {
      g_auto (GStrv) parts = g_strsplit (env, G_SEARCHPATH_SEPARATOR_S, -1);
      for (int i = 0; parts[i]; i++)
        if (*parts[i])
          g_ptr_array_add (dirs, g_strdup (parts[i]));
    }
  g_ptr_array_add (dirs, g_strdup (LP_BACKENDSDIR));
  g_autoptr (GString) tried = g_string_new (NULL);
  g_autofree char *file = g_strdup_printf ("%s.%s", name, G_MODULE_SUFFIX);
  for (guint i = 0; i < dirs->len; i++)
    {
      g_autofree char *path = g_build_filename (dirs->pdata[i], file, NULL);
      if (!g_file_test (path, G_FILE_TEST_EXISTS))
        {
          g_string_append_printf (tried, "%s%s", tried->len ? ", " : "", path);
          continue;
        }
      GError *error = NULL;
      GModule *gm = g_module_open_full (path, G_MODULE_BIND_LOCAL, &error);
      if (gm == NULL)
        {
          /* Most often libvulkan itself is missing: the module's own
           * dependency.  Say so and let the caller run on the CPU. */
          *why = g_strdup_printf ("%s: %s", path, error->message);
          g_error_free (error);
          return NULL;
        }
      LpBackendModuleInit init = NULL;
      if (!g_module_symbol (gm, LP_BACKEND_MODULE_ENTRY, (gpointer *) &init) || init == NULL)
        {
          *why = g_strdup_printf ("%s: expected the symbol %s, found none", path, LP_BACKEND_MODULE_ENTRY);
          g_module_close (gm);
          return NULL;
        }
      const LpBackendModule *m = init ();
      if (m == NULL || m->api_version != LP_BACKEND_API_VERSION || m->struct_size < sizeof (LpBackendModule))
        {
          *why = g_strdup_printf ("%s: expected backend API version %d, found %u", path, LP_BACKEND_API_VERSION,
                                  m ? m->api_version : 0);
          g_module_close (gm);
          return NULL;
        }
      /* Backends made by the module outlive any one caller. */
      g_module_make_resident (gm);
      return m;
    }
  *why = g_strdup_printf ("backend module %s: not built or not installed (tried %s)", name, tried->str);
  return NULL;
}

const LpBackendModule *
lp_backend_module_get (const char *name, GError **error)
{
  G_LOCK (modules);
  if (modules == NULL)
    modules = g_hash_table_new (g_str_hash, g_str_equal);
  ModuleSlot *slot = g_hash_table_lookup (modules, name);
  if (slot == NULL)
    {
      slot = g_new0 (ModuleSlot, 1);
      slot->module = module_load (name, &slot->absent);
      g_hash_table_insert (modules, g_strdup (name), slot);
    }
  G_UNLOCK (modules);
  if (slot->module == NULL)
    lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s", slot->absent);
  return slot->module;
}

GPtrArray *
lp_backend_list_devices (const char *name, GError **error)
{
  const LpBackendModule *m = lp_backend_module_get (name, error);
  return m ? m->list_devices (error) : NULL;
}

static LpBackend *
module_open (const LpBackendModule *m, int index, GError **error)
{
  LpBackend *be = m->open (index, error);
  if (be != NULL && be->fallback == NULL)
    be->fallback = lp_backend_cpu_new ();
  return be;
}

/* The first discrete or integrated GPU, or -1. */
static int
first_gpu (GPtrArray *devices)
{
  for (LpDeviceType want = LP_DEVICE_DISCRETE_GPU;; want = LP_DEVICE_INTEGRATED_GPU)
    {
      for (guint i = 0; i < devices->len; i++)
        {
          const LpDeviceInfo *d = devices->pdata[i];
          if (d->usable && d->type == want)
            return d->index;
        }
      if (want == LP_DEVICE_INTEGRATED_GPU)
        return -1;
    }
}

static LpBackend *
backend_vulkan (const char *name, GError **error)
{
  const char *suffix = name + strlen ("vulkan");
  gint64 want = -1;
  if (*suffix == ':')
    {
      char *end = NULL;
      want = g_ascii_strtoll (suffix + 1, &end, 10);
      if (end == suffix + 1 || *end != '\0' || want < 0 || want > G_MAXINT)
        {
          lp_set_error (error, LP_ERROR_INVALID, "backend: expected vulkan:N with N a device index, found \"%s\"", name);
          return NULL;
        }
    }
  else if (*suffix != '\0')
    {
      lp_set_error (error, LP_ERROR_INVALID, "backend: expected cpu, auto or vulkan[:N], found \"%s\"", name);
      return NULL;
    }
  GError *local = NULL;
  const LpBackendModule *m = lp_backend_module_get ("vulkan", &local);
  if (m == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "backend %s: %s", name, local->message);
      g_error_free (local);
      return NULL;
    }
  g_autoptr (GPtrArray) devices = m->list_devices (&local);
  if (devices == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "backend %s: %s", name, local->message);
      g_error_free (local);
      return NULL;
    }
  if (want < 0)
    {
      for (guint i = 0; i < devices->len && want < 0; i++)
        if (((LpDeviceInfo *) devices->pdata[i])->usable)
          want = ((LpDeviceInfo *) devices->pdata[i])->index;
      if (want < 0)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "backend %s: expected a usable Vulkan device, found %u device(s), none usable (see 'llmpress devices')",
                        name, devices->len);
          return NULL;
        }
    }
  if (want >= devices->len)
    {
      lp_set_error (error, LP_ERROR_INVALID, "backend %s: expected a device index below %u, found %" G_GINT64_FORMAT,
                    name, devices->len, want);
      return NULL;
    }
  const LpDeviceInfo *d = devices->pdata[want];
  if (!d->usable)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "backend %s: device %s is not usable: %s", name, d->name,
                    d->skip_reason);
      return NULL;
    }
  return module_open (m, (int) want, error);
}

/* A GPU when there is one; the CPU, quietly, in every other case. */
static LpBackend *
backend_auto (void)
{
  g_autoptr (GError) error = NULL;
  const LpBackendModule *m = lp_backend_module_get ("vulkan", &error);
  g_autoptr (GPtrArray) devices = m ? m->list_devices (&error) : NULL;
  int gpu = devices ? first_gpu (devices) : -1;
  LpBackend *be = gpu >= 0 ? module_open (m, gpu, &error) : NULL;
  if (be == NULL)
    {
      g_debug ("backend auto: the CPU (%s)", error ? error->message : "no Vulkan GPU");
      be = lp_backend_cpu_new ();
    }
  return be;
}

LpBackend *
lp_backend_new (const char *name, GError **error)
{
  if (name == NULL)
    {
      name = g_getenv ("LLMPRESS_DEVICE");
      if (name == NULL || *name == '\0')
        name = "cpu";
    }
  if (g_strcmp0 (name, "cpu") == 0)
    return lp_backend_cpu_new ();
  if (g_strcmp0 (name, "auto") == 0)
    return backend_auto ();
  if (g_str_has_prefix (name, "vulkan"))
    return backend_vulkan (name, error);
  lp_set_error (error, LP_ERROR_INVALID, "backend: expected cpu, auto or vulkan[:N], found \"%s\"", name);
  return NULL;
}

char *
lp_backend_describe (LpBackend *be)
{
  GString *s = g_string_new (be->device_name);
  gboolean any = FALSE;
  for (LpOp op = 0; op < LP_OP_COUNT; op++)
    if (lp_backend_for_op (be, op) != be)
      {
        g_string_append_printf (s, "%s%s", any ? ", " : "; on the CPU: ", lp_op_name (op));
        any = TRUE;
      }
  return g_string_free (s, FALSE);
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

void
lp_gemm_w (LpBackend *be, int M, int N, int K, const float *A, int lda, LpDType wtype, const void *W, float beta,
           float *C, int ldc)
{
  be = lp_backend_for_op (be, LP_OP_GEMM_W);
  be->ops->gemm_w (be, M, N, K, A, lda, wtype, W, beta, C, ldc);
}

gboolean
lp_dequantize (LpBackend *be, LpDType type, const void *src, gsize n, float *dst)
{
  be = lp_backend_for_op (be, LP_OP_DEQUANTIZE);
  return be->ops->dequantize (be, type, src, n, dst);
}

gboolean
lp_tri_inverse (LpBackend *be, int n, float *L, int lda)
{
  be = lp_backend_for_op (be, LP_OP_TRI_INVERSE);
  return be->ops->tri_inverse (be, n, L, lda);
}

void
lp_quantize_groups (LpBackend *be, int rows, int cols, const float *W, int ldw, const float *imp,
                    const LpGroupQuant *q, guint8 *codes, guint16 *scales, guint8 *zeros)
{
  be = lp_backend_for_op (be, LP_OP_QUANTIZE_GROUPS);
  be->ops->quantize_groups (be, rows, cols, W, ldw, imp, q, codes, scales, zeros);
}

void
lp_gemm_i8 (LpBackend *be, int M, int N, int K, const gint8 *A, int lda, const float *sa, const gint8 *B, int ldb,
            const float *sb, float beta, float *C, int ldc)
{
  be = lp_backend_for_op (be, LP_OP_GEMM_I8);
  be->ops->gemm_i8 (be, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc);
}

void
lp_gemm_grid (LpBackend *be, int M, int N, int K, const float *A, int lda, const LpIntGrid *W, float beta, float *C,
              int ldc)
{
  g_return_if_fail (W->rows == N && W->cols == K);
  be = lp_backend_for_op (be, LP_OP_GEMM_GRID);
  be->ops->gemm_grid (be, M, N, K, A, lda, W, beta, C, ldc);
}
