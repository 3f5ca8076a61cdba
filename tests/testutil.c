/* llmpress tests — helpers shared by the TAP test programs. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

char *
lp_test_shared_path (const char *relative)
{
  const char *dir = g_getenv ("LLMPRESS_SHARED_DIR");
  if (dir == NULL || *dir == '\0')
    dir = "../shared";
  char *path = g_build_filename (dir, relative, NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_autofree char *msg = g_strdup_printf ("%s is absent (set LLMPRESS_SHARED_DIR)", path);
      g_test_skip (msg);
      g_free (path);
      return NULL;
    }
  return path;
}

gboolean
lp_test_slow (void)
{
  const char *slow = g_getenv ("LLMPRESS_SLOW");
  if (slow != NULL && strcmp (slow, "1") == 0)
    return TRUE;
  g_test_skip ("slow: runs under make check-slow (LLMPRESS_SLOW=1)");
  return FALSE;
}

static char *tmpdir;

gboolean
lp_test_have_vulkan (void)
{
#ifndef HAVE_VULKAN
  g_test_skip ("Vulkan backend not built (configure --enable-vulkan)");
  return FALSE;
#else
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = lp_backend_list_devices ("vulkan", &error);
  if (devices == NULL)
    {
      g_autofree char *why = g_strdup_printf ("no Vulkan: %s", error->message);
      g_test_skip (why);
      return FALSE;
    }
  for (guint i = 0; i < devices->len; i++)
    if (((LpDeviceInfo *) devices->pdata[i])->usable)
      return TRUE;
  g_test_skip ("no usable Vulkan device");
  return FALSE;
#endif
}

static void
cleanup_tmpdir (void)
{
  if (tmpdir != NULL && g_getenv ("LLMPRESS_KEEP_TEST_FILES") == NULL)
    lp_remove_tree (tmpdir);
}

const char *
lp_test_tmpdir (void)
{
  if (tmpdir == NULL)
    {
      tmpdir = g_dir_make_tmp ("llmpress-test-XXXXXX", NULL);
      g_assert_nonnull (tmpdir);
      atexit (cleanup_tmpdir);
    }
  return tmpdir;
}

char *
lp_test_mkdir (const char *name)
{
  char *dir = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  return dir;
}

char *
lp_test_write_file (const char *name, const void *data, gsize len)
{
  char *path = g_build_filename (lp_test_tmpdir (), name, NULL);
  g_autoptr (GError) error = NULL;
  g_file_set_contents (path, data, len, &error);
  g_assert_no_error (error);
  return path;
}

int
lp_test_run_cli (char **out, char **err, const char *first_arg, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  va_list ap;
  va_start (ap, first_arg);
  for (const char *a = first_arg; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  return lp_test_run_cliv (out, err, (const char *const *) args->pdata);
}

void
lp_test_assert_error_contains (const GError *error, ...)
{
  g_assert_nonnull (error);
  va_list ap;
  va_start (ap, error);
  for (const char *frag = va_arg (ap, const char *); frag != NULL; frag = va_arg (ap, const char *))
    if (strstr (error->message, frag) == NULL)
      g_error ("error message \"%s\" lacks \"%s\"", error->message, frag);
  va_end (ap);
}

LpModel *
lp_test_tiny_model (guint32 seed)
{
  LpModelConfig c;
  lp_model_config_init (&c, LP_ARCH_LLAMA);
  c.n_vocab = 64;
  c.dim = 32;
  c.ffn_dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ctx_len = 64;
  c.tied_embeddings = TRUE;
  LpModel *m = lp_model_new (&c);
  lp_meta_set_string (lp_model_meta (m), "general.architecture", "llama");
  g_autoptr (GRand) rng = g_rand_new_with_seed (seed);
  g_autoptr (GPtrArray) specs = lp_arch_tensor_specs (&c);
  for (guint i = 0; i < specs->len; i++)
    {
      const LpTensorSpec *s = specs->pdata[i];
      g_autoptr (LpTensor) t = lp_tensor_new (s->name, LP_DTYPE_F32, s->n_dims, s->shape, NULL);
      float *v = lp_tensor_data_mut (t);
      gboolean norm = s->n_dims == 1;
      for (gint64 j = 0; j < lp_tensor_n_elements (t); j++)
        v[j] = norm ? 1.0f + 0.1f * (float) g_rand_double_range (rng, -1, 1)
                    : (float) g_rand_double_range (rng, -0.2, 0.2);
      lp_model_set_tensor (m, t);
    }
  return m;
}

char *
lp_test_demo_model (void)
{
  char *path = g_build_filename (lp_test_tmpdir (), "demo.gguf", NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_autoptr (GError) error = NULL;
      LpSynthOptions opts = LP_SYNTH_OPTIONS_INIT;
      g_autoptr (LpModel) m = lp_model_synth (&opts, &error);
      g_assert_no_error (error);
      g_assert_true (lp_model_save (m, path, NULL, &error));
      g_assert_no_error (error);
    }
  return path;
}

int
lp_test_run_cliv (char **out, char **err, const char *const *args)
{
  return lp_test_run_cli_wrapped (out, err, NULL, args);
}

int
lp_test_run_cli_wrapped (char **out, char **err, const char *wrapper, const char *const *args)
{
  const char *bin = g_getenv ("LLMPRESS_BIN");
  g_assert_nonnull (bin);
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autofree char *script = wrapper ? g_strdup_printf ("%s \"$0\" \"$@\"", wrapper) : NULL;
  if (wrapper != NULL)
    {
      g_ptr_array_add (argv, (gpointer) "/bin/sh");
      g_ptr_array_add (argv, (gpointer) "-c");
      g_ptr_array_add (argv, script);
    }
  g_ptr_array_add (argv, (gpointer) bin);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);
  int status = 0;
  g_autoptr (GError) error = NULL;
  g_autofree char *o = NULL, *e = NULL;
  g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e, &status, &error);
  g_assert_no_error (error);
  if (g_test_verbose () && e && *e)
    g_test_message ("stderr: %s", e);
  if (out)
    *out = g_steal_pointer (&o);
  if (err)
    *err = g_steal_pointer (&e);
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  return 128 + WTERMSIG (status);
}

char *
lp_test_read_text (const char *path)
{
  char *text = NULL;
  g_autoptr (GError) error = NULL;
  g_file_get_contents (path, &text, NULL, &error);
  g_assert_no_error (error);
  return text;
}

void
lp_test_write_text (const char *path, const char *text)
{
  g_autoptr (GError) error = NULL;
  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
}

guint
lp_test_count_lines (const char *s)
{
  guint n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

void
lp_test_fill (float *x, gsize n, guint32 seed, double scale)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  for (gsize i = 0; i < n; i++)
    x[i] = (float) (scale * g_rand_double_range (r, -1, 1));
}

/* The C of a product and its reference copy R: random when beta will read
 * it, else NaN, which beta = 0 must not read. */
static void
fill_output (float *C, float *R, gsize n, gboolean with_beta, guint32 seed)
{
  if (with_beta)
    lp_test_fill (C, n, seed, 1);
  else
    for (gsize i = 0; i < n; i++)
      C[i] = NAN;
  memcpy (R, C, sizeof (float) * n);
}

static void
fill_gemm_i8 (int M, int N, gint8 *A, int lda, gint8 *B, int ldb, float *sa, float *sb, guint32 seed,
              gboolean extreme)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  for (gsize i = 0; i < (gsize) M * lda; i++)
    A[i] = extreme ? -128 : (gint8) g_rand_int_range (r, -128, 128);
  for (gsize i = 0; i < (gsize) N * ldb; i++)
    B[i] = extreme ? -128 : (gint8) g_rand_int_range (r, -128, 128);
  for (int i = 0; i < M; i++)
    sa[i] = (float) g_rand_double_range (r, 1e-3, 1e-2);
  for (int j = 0; j < N; j++)
    sb[j] = (float) g_rand_double_range (r, 1e-3, 1e-2);
}

/* K not a multiple of 4 (the device's padding), K at and past 1024 (the
 * CPU's exact slices) and past an 8 KiB binding (a row the tiled device
 * declines), M or N = 1. */
static const int gemm_i8_shapes[][3] = { { 1, 1, 1 },     { 1, 37, 6 },    { 29, 1, 1031 }, { 70, 67, 130 },
                                         { 13, 7, 3000 }, { 5, 33, 1024 }, { 3, 4, 9001 } };

void
lp_test_check_gemm_i8 (LpBackend *be)
{
  for (gsize s = 0; s < G_N_ELEMENTS (gemm_i8_shapes); s++)
    for (int v = 0; v < 3; v++)
      {
        gboolean extreme = v == 2, with_beta = v == 1;
        int M = gemm_i8_shapes[s][0], N = gemm_i8_shapes[s][1], K = gemm_i8_shapes[s][2];
        int lda = K + 3, ldb = K + 1, ldc = N + 2;
        g_autofree gint8 *A = g_new (gint8, (gsize) M * lda), *B = g_new (gint8, (gsize) N * ldb);
        g_autofree float *sa = g_new (float, M), *sb = g_new (float, N);
        g_autofree float *C = g_new (float, (gsize) M * ldc), *R = g_new (float, (gsize) M * ldc);
        fill_gemm_i8 (M, N, A, lda, B, ldb, sa, sb, 80 + s, extreme);
        fill_output (C, R, (gsize) M * ldc, with_beta, 81 + s);
        float beta = with_beta ? 0.75f : 0.0f;
        lp_gemm_i8 (be, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc);
        lp_ref_gemm_i8 (M, N, K, A, lda, sa, B, ldb, sb, beta, R, ldc);
        /* Padding columns of C untouched too. */
        g_assert_cmpmem (C, sizeof (float) * M * ldc, R, sizeof (float) * M * ldc);
      }
}

LpIntGrid *
lp_test_int_grid (int rows, int cols, int bits, int group, guint32 seed)
{
  g_autoptr (GError) error = NULL;
  LpIntGrid *g = lp_int_grid_new (rows, cols, bits, group, FALSE, &error);
  g_assert_no_error (error);
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  int levels = 1 << bits;
  for (gsize i = 0; i < (gsize) rows * cols; i++)
    g->codes[i] = (guint8) g_rand_int_range (r, 0, levels);
  for (gsize i = 0; i < (gsize) rows * g->n_groups; i++)
    {
      g->zeros[i] = (guint8) g_rand_int_range (r, 0, levels);
      g->scales[i] = i % 5 == 4 ? (guint16) g_rand_int_range (r, 1, 0x400)
                                : lp_f32_to_f16 ((float) g_rand_double_range (r, 1e-3, 3e-2));
    }
  g_autofree gint32 *perm = g_new (gint32, cols);
  for (int c = 0; c < cols; c++)
    perm[c] = c;
  for (int c = cols - 1; c > 0; c--)
    {
      int k = g_rand_int_range (r, 0, c + 1);
      gint32 t = perm[c];
      perm[c] = perm[k];
      perm[k] = t;
    }
  for (int i = 0; i < cols; i++)
    g->g_idx[perm[i]] = i / group;
  return g;
}

/* Shapes {M, N, K, group, bits}: groups dividing K, a short last group,
 * one group wider than the row, K not a multiple of 4, a 1 x 1 x 1, and a
 * row of 2100 columns (past test-vulkan's 8 KiB tiled bindings: the CPU
 * runs it there). */
static const int gemm_grid_shapes[][5] = {
  { 19, 45, 256, 32, 4 }, { 7, 37, 100, 32, 3 }, { 3, 50, 72, 128, 8 },
  { 5, 29, 101, 16, 2 },  { 1, 1, 1, 1, 4 },     { 2, 3, 2100, 128, 4 },
};

void
lp_test_check_gemm_grid (LpBackend *be)
{
  for (gsize s = 0; s < G_N_ELEMENTS (gemm_grid_shapes); s++)
    {
      int M = gemm_grid_shapes[s][0], N = gemm_grid_shapes[s][1], K = gemm_grid_shapes[s][2];
      g_autoptr (LpIntGrid) W = lp_test_int_grid (N, K, gemm_grid_shapes[s][4], gemm_grid_shapes[s][3], 60 + s);
      int lda = K + 3, ldc = N + 2;
      g_autofree float *A = g_new (float, (gsize) M * lda), *C = g_new (float, (gsize) M * ldc),
                       *R = g_new (float, (gsize) M * ldc);
      lp_test_fill (A, (gsize) M * lda, 61 + s, 1);
      for (int with_beta = 0; with_beta < 2; with_beta++)
        {
          fill_output (C, R, (gsize) M * ldc, with_beta, 62 + s);
          lp_gemm_grid (be, M, N, K, A, lda, W, with_beta, C, ldc);
          lp_ref_gemm_grid (M, N, K, A, lda, W, with_beta, R, ldc);
          for (int i = 0; i < M; i++)
            {
              const float *c = C + (gsize) i * ldc, *r = R + (gsize) i * ldc;
              /* The padding columns untouched (NaN or not). */
              g_assert_cmpmem (c + N, sizeof (float) * (ldc - N), r + N, sizeof (float) * (ldc - N));
              lp_test_assert_close (c, r, N, 1e-5);
            }
        }
      /* A the identity: T = W^T, one product a sum, so the decoded weights
       * must be lp_int_grid_dequantize's bit for bit. */
      g_autofree float *I = g_new0 (float, (gsize) K * K), *T = g_new (float, (gsize) K * N),
                       *w = g_new (float, (gsize) N * K);
      for (int k = 0; k < K; k++)
        I[(gsize) k * K + k] = 1;
      lp_gemm_grid (be, K, N, K, I, K, W, 0, T, N);
      lp_int_grid_dequantize (W, w);
      for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
          if (memcmp (&T[(gsize) k * N + j], &w[(gsize) j * K + k], sizeof (float)) != 0)
            g_error ("gemm_grid %dx%dx%d: weight [%d, %d] decoded as %g, expected %g", M, N, K, j, k,
                     T[(gsize) k * N + j], w[(gsize) j * K + k]);
    }
}

void
lp_test_assert_close (const float *a, const float *b, gsize n, double rel_tol)
{
  double num = 0, den = 0;
  for (gsize i = 0; i < n; i++)
    {
      if (!isfinite (a[i]))
        g_error ("element %" G_GSIZE_FORMAT ": expected a finite value, found %g", i, a[i]);
      num += (double) (a[i] - b[i]) * (a[i] - b[i]);
      den += (double) b[i] * b[i];
    }
  double rel = sqrt (num / MAX (den, 1e-30));
  if (!(rel <= rel_tol))
    g_error ("relative error %g > %g", rel, rel_tol);
}

void
lp_test_assert_same_config (const LpModelConfig *a, const LpModelConfig *b)
{
  g_assert_cmpint (a->arch, ==, b->arch);
  g_assert_cmpint (a->n_vocab, ==, b->n_vocab);
  g_assert_cmpint (a->dim, ==, b->dim);
  g_assert_cmpint (a->ffn_dim, ==, b->ffn_dim);
  g_assert_cmpint (a->n_layers, ==, b->n_layers);
  g_assert_cmpint (a->n_heads, ==, b->n_heads);
  g_assert_cmpint (a->n_kv_heads, ==, b->n_kv_heads);
  g_assert_cmpint (a->head_dim, ==, b->head_dim);
  g_assert_cmpint (a->ctx_len, ==, b->ctx_len);
  g_assert_cmpfloat ((float) a->rope_theta, ==, (float) b->rope_theta);
  g_assert_cmpint (a->rope_scaling, ==, b->rope_scaling);
  if (a->rope_scaling != LP_ROPE_SCALING_NONE)
    g_assert_cmpfloat ((float) a->rope_factor, ==, (float) b->rope_factor);
  if (a->rope_scaling == LP_ROPE_SCALING_LLAMA3)
    {
      g_assert_cmpfloat ((float) a->rope_low_freq_factor, ==, (float) b->rope_low_freq_factor);
      g_assert_cmpfloat ((float) a->rope_high_freq_factor, ==, (float) b->rope_high_freq_factor);
      g_assert_cmpint (a->rope_orig_ctx, ==, b->rope_orig_ctx);
    }
  g_assert_cmpfloat ((float) a->norm_eps, ==, (float) b->norm_eps);
  g_assert_cmpint (a->tied_embeddings, ==, b->tied_embeddings);
}

/* The object of node `name` in OUT_DIR/report.json (parser kept in *keep). */
static JsonObject *
report_node (const char *out_dir, const char *name, JsonParser **keep)
{
  g_autofree char *path = g_build_filename (out_dir, "report.json", NULL);
  JsonParser *p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  if (!json_parser_load_from_file (p, path, &error))
    g_error ("%s: %s", path, error->message);
  *keep = p;
  JsonArray *nodes = json_object_get_array_member (json_node_get_object (json_parser_get_root (p)), "nodes");
  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *n = json_array_get_object_element (nodes, i);
      if (g_strcmp0 (json_object_get_string_member (n, "name"), name) == 0)
        return n;
    }
  g_error ("%s: no node %s", path, name);
}

void
lp_test_quantize_tensor (LpModel *m, const char *name, LpDType dtype)
{
  g_autoptr (GError) error = NULL;
  LpTensor *t = lp_model_tensor (m, name);
  g_assert_nonnull (t);
  g_autofree float *f = lp_tensor_dup_f32 (t, &error);
  g_assert_no_error (error);
  g_autoptr (LpTensor) q = lp_tensor_new (name, dtype, t->n_dims, t->shape, &error);
  g_assert_no_error (error);
  g_assert_true (lp_dtype_from_f32 (dtype, f, lp_tensor_data_mut (q), lp_tensor_n_elements (t), &error));
  g_assert_no_error (error);
  lp_model_set_tensor (m, q);
}

JsonObject *
lp_test_parse_object (JsonParser *p, const char *text)
{
  g_autoptr (GError) error = NULL;
  if (!json_parser_load_from_data (p, text, -1, &error))
    g_error ("not JSON (%s): %s", error->message, text);
  return json_node_get_object (json_parser_get_root (p));
}

float *
lp_test_logits (LpModel *m, const gint32 *tokens, int T)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpBackend) be = lp_backend_cpu_new ();
  g_autoptr (LpForward) fw = lp_forward_new (m, be, &error);
  g_assert_no_error (error);
  float *logits = g_new (float, (gsize) T * lp_model_config (m)->n_vocab);
  g_assert_true (lp_forward_logits (fw, tokens, T, NULL, logits, &error));
  g_assert_no_error (error);
  return logits;
}

double
lp_test_report_metric (const char *out_dir, const char *node, const char *metric)
{
  g_autoptr (JsonParser) p = NULL;
  JsonObject *n = report_node (out_dir, node, &p);
  g_assert_true (json_object_has_member (n, "metrics"));
  return json_object_get_double_member (json_object_get_object_member (n, "metrics"), metric);
}

double
lp_test_report_node_double (const char *out_dir, const char *node, const char *member)
{
  g_autoptr (JsonParser) p = NULL;
  JsonObject *n = report_node (out_dir, node, &p);
  g_assert_true (json_object_has_member (n, member));
  return json_object_get_double_member (n, member);
}

char *
lp_test_report_key (const char *out_dir, const char *node)
{
  g_autoptr (JsonParser) p = NULL;
  return g_strdup (json_object_get_string_member (report_node (out_dir, node, &p), "key"));
}

void
lp_test_cache_count (const char *cache_dir, guint *entries, guint *temporaries)
{
  *entries = *temporaries = 0;
  g_autofree char *v3 = g_build_filename (cache_dir, "v3", NULL);
  g_autoptr (GDir) d = g_dir_open (v3, 0, NULL);
  const char *shard;
  while (d && (shard = g_dir_read_name (d)) != NULL)
    {
      if (strlen (shard) != 2)
        continue; /* history/ */
      g_autofree char *sd = g_build_filename (v3, shard, NULL);
      g_autoptr (GDir) s = g_dir_open (sd, 0, NULL);
      const char *name;
      while (s && (name = g_dir_read_name (s)) != NULL)
        (*(name[0] == '.' ? temporaries : entries))++;
    }
}

gboolean
lp_test_stories_get (LpTestStories *s)
{
  s->model = lp_test_shared_path ("models/stories260K/stories260K.bin");
  s->data = s->model ? lp_test_shared_path ("data/tinystories-valid-head.tok512.u16") : NULL;
  return s->data != NULL;
}

void
lp_test_stories_clear (LpTestStories *s)
{
  g_clear_pointer (&s->model, g_free);
  g_clear_pointer (&s->data, g_free);
}

char *
lp_test_run_nodes (const char *calib, const char *settings, const char *model, const char *name, const char *nodes,
                   int *status, char **err)
{
  g_autofree char *ini = g_strdup_printf ("[pipeline]\ncalibration=%s\n%s\n[load]\npath=%s\n\n%s", calib, settings,
                                          model, nodes);
  g_autofree char *file = g_strdup_printf ("%s.ini", name);
  g_autofree char *spec = lp_test_write_file (file, ini, strlen (ini));
  char *out = g_build_filename (lp_test_tmpdir (), name, NULL);
  *status = lp_test_run_cli (NULL, err, "run", spec, "-o", out, "--no-cache", "-q", NULL);
  return out;
}

gboolean
lp_test_python_has (const char *modules, const char *why)
{
  g_autofree char *code = g_strdup_printf ("import %s", modules);
  gchar *probe[] = { "python3", "-c", code, NULL };
  int status = 0;
  if (!g_spawn_sync (NULL, probe, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_autofree char *msg = g_strdup_printf ("python3 cannot import %s (e.g. PATH=/work/venv/bin:$PATH): %s", modules, why);
      g_test_skip (msg);
      return FALSE;
    }
  return TRUE;
}

char *
lp_test_python_run (const char *script, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, "python3");
  g_ptr_array_add (argv, "-c");
  g_ptr_array_add (argv, (gpointer) script);
  for (; *args; args++)
    g_ptr_array_add (argv, (gpointer) *args);
  g_ptr_array_add (argv, NULL);
  char *out = NULL;
  g_autofree char *err = NULL;
  int status = 0;
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                               NULL));
  g_test_message ("python: %s", out);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("python: %s%s", out, err);
  return out;
}
