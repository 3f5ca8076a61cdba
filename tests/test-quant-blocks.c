/* llama.cpp's block types: hand-made blocks against the documented ggml
 * layouts, quantize -> dequantize error, GGUF round trips, gguf-py as an
 * oracle (when installed), the grid view, the fallback table, bad input. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "testutil.h"
#include "quant-internal.h"

static const LpDType quant_types[] = {
  LP_DTYPE_Q2_K, LP_DTYPE_Q3_K, LP_DTYPE_Q4_0, LP_DTYPE_Q4_1, LP_DTYPE_Q4_K,
  LP_DTYPE_Q5_0, LP_DTYPE_Q5_1, LP_DTYPE_Q5_K, LP_DTYPE_Q6_K, LP_DTYPE_Q8_0, LP_DTYPE_IQ4_NL,
};

/* Deterministic Gaussian-ish values with a few awkward blocks: all zero,
 * tiny (f16 underflow), one large outlier, a constant run. */
static float *
test_values (gint64 n, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  float *x = g_new (float, n);
  for (gint64 i = 0; i < n; i++)
    {
      double u1 = g_rand_double_range (r, 1e-12, 1), u2 = g_rand_double (r);
      x[i] = (float) (0.02 * sqrt (-2 * log (u1)) * cos (2 * G_PI * u2));
    }
  if (n >= 1024)
    {
      memset (x, 0, 256 * sizeof (float));
      for (int i = 256; i < 288; i++)
        x[i] = 1e-9f * (i - 270);
      x[300] = 0.9f;
      for (int i = 512; i < 560; i++)
        x[i] = -0.03f;
    }
  return x;
}

static float *
test_importance (gint64 n, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  float *w = g_new (float, n);
  for (gint64 i = 0; i < n; i++)
    w[i] = (float) (g_rand_double (r) < 0.05 ? g_rand_double_range (r, 10, 100) : g_rand_double_range (r, 0.1, 1));
  if (n > 40)
    w[40] = 0; /* a dead column */
  return w;
}

static void
check_block (LpDType type, const guint8 *block, const int *idx, const float *expect, int n_checks)
{
  const LpDTypeInfo *info = lp_dtype_info (type);
  g_assert_true (info->supported);
  float out[256];
  g_assert_true (lp_dtype_to_f32 (type, block, out, info->block_size, NULL));
  for (int i = 0; i < n_checks; i++)
    {
      if (out[idx[i]] != expect[i])
        g_error ("%s element %d: expected %g, found %g", info->name, idx[i], expect[i], out[idx[i]]);
    }
}

/* Blocks written byte by byte from ggml-common.h's layouts. */
static void
test_hand_blocks (void)
{
  {
    /* Q4_1: d 0.5, m -1; element j low nibble of byte j, j+16 high nibble */
    guint8 b[20] = { 0x00, 0x38, 0x00, 0xbc };
    for (int j = 0; j < 16; j++)
      b[4 + j] = (guint8) (j | ((15 - j) << 4));
    int idx[] = { 0, 5, 15, 16, 31 };
    float ex[] = { -1.0f, 1.5f, 6.5f, 6.5f, -1.0f };
    check_block (LP_DTYPE_Q4_1, b, idx, ex, 5);
  }
  {
    /* Q5_0: d 0.25, qh 0x80000001 (fifth bits of elements 0 and 31) */
    guint8 b[22] = { 0x00, 0x34, 0x01, 0x00, 0x00, 0x80 };
    b[6 + 0] = 0x0a;
    b[6 + 15] = 0xf0;
    int idx[] = { 0, 1, 15, 16, 31 };
    float ex[] = { 2.5f, -4.0f, -4.0f, -4.0f, 3.75f };
    check_block (LP_DTYPE_Q5_0, b, idx, ex, 5);
  }
  {
    /* Q5_1: d 0.5, m 1, same qh and nibbles */
    guint8 b[24] = { 0x00, 0x38, 0x00, 0x3c, 0x01, 0x00, 0x00, 0x80 };
    b[8 + 0] = 0x0a;
    b[8 + 15] = 0xf0;
    int idx[] = { 0, 1, 16, 31 };
    float ex[] = { 14.0f, 1.0f, 1.0f, 16.5f };
    check_block (LP_DTYPE_Q5_1, b, idx, ex, 4);
  }
  {
    /* Q8_1: d 0.5, s (ignored), int8 codes j - 16 */
    guint8 b[36] = { 0x00, 0x38, 0x00, 0x00 };
    for (int j = 0; j < 32; j++)
      b[4 + j] = (guint8) (gint8) (j - 16);
    int idx[] = { 0, 16, 31 };
    float ex[] = { -8.0f, 0.0f, 7.5f };
    check_block (LP_DTYPE_Q8_1, b, idx, ex, 3);
  }
  {
    /* Q2_K: scales[16] (low nibble scale, high min), qs[64], d 1.0, dmin 0.5.
     * qs[0] = 0xE4 holds codes 0,1,2,3 of elements 0, 32, 64, 96. */
    guint8 b[84] = { 0 };
    b[0] = 0x21, b[1] = 0x03, b[2] = 0x15, b[6] = 0x12;
    b[16 + 0] = 0xe4;
    b[16 + 16] = 0x03;
    b[80] = 0x00, b[81] = 0x3c, b[82] = 0x00, b[83] = 0x38;
    int idx[] = { 0, 16, 32, 64, 96, 1 };
    float ex[] = { -1.0f, 9.0f, 4.5f, 0.0f, 5.5f, -1.0f };
    check_block (LP_DTYPE_Q2_K, b, idx, ex, 6);
  }
  {
    /* Q3_K: hmask[32], qs[64], scales[12], d 0.5.  Sub-block 0 scale code 34
     * (sc 2), sub-block 8 code 28 (sc -4), the rest 0 (sc -32). */
    guint8 b[110] = { 0 };
    b[0] = 0x01;          /* high bit of element 0 */
    b[32 + 0] = 0x03;     /* element 0 low bits 3 */
    b[32 + 32] = 0x01;    /* element 128 low bits 1 */
    b[96 + 0] = 0xc2;     /* low nibbles: sub 0 = 2, sub 8 = 12 */
    b[96 + 8] = 0x12;     /* high bits: sub 0 = 2, sub 8 = 1 */
    b[108] = 0x00, b[109] = 0x38;
    int idx[] = { 0, 1, 128, 16 };
    float ex[] = { 3.0f, -4.0f, 6.0f, 64.0f };
    check_block (LP_DTYPE_Q3_K, b, idx, ex, 4);
  }
  {
    /* Q4_K: d 1.0, dmin 0.5, scales[12]: sub 0 scale 3 min 2, sub 4 scale
     * 17 min 5 (split over bytes 0, 4 and 8), nibbles. */
    guint8 b[144] = { 0 };
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x00, b[3] = 0x38;
    b[4 + 0] = 0x43, b[4 + 4] = 0x02, b[4 + 8] = 0x51;
    b[16 + 0] = 0x7a;
    b[16 + 64] = 0x02;
    int idx[] = { 0, 32, 128, 1 };
    float ex[] = { 29.0f, 0.0f, 31.5f, -1.0f };
    check_block (LP_DTYPE_Q4_K, b, idx, ex, 4);
  }
  {
    /* Q5_K: the same scales; qh[0] = 0x11 adds 16 to elements 0 and 128. */
    guint8 b[176] = { 0 };
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x00, b[3] = 0x38;
    b[4 + 0] = 0x43, b[4 + 4] = 0x02, b[4 + 8] = 0x51;
    b[16 + 0] = 0x11;
    b[48 + 0] = 0x7a;
    b[48 + 64] = 0x02;
    int idx[] = { 0, 32, 128, 1 };
    float ex[] = { 77.0f, 0.0f, 303.5f, -1.0f };
    check_block (LP_DTYPE_Q5_K, b, idx, ex, 4);
  }
  {
    /* Q6_K: ql[128], qh[64], int8 scales[16], d 0.5. */
    guint8 b[210] = { 0 };
    b[0] = 0x15;               /* element 0 low nibble 5, element 64 low nibble 1 */
    b[128 + 0] = 0x06;         /* element 0 high bits 2, element 32 high bits 1 */
    b[192 + 0] = 2, b[192 + 2] = (guint8) -3, b[192 + 4] = 1;
    b[208] = 0x00, b[209] = 0x38;
    int idx[] = { 0, 32, 64 };
    float ex[] = { 5.0f, 24.0f, -15.5f };
    check_block (LP_DTYPE_Q6_K, b, idx, ex, 3);
  }
  {
    /* Q8_K: f32 d 0.25, int8 qs[256], bsums (ignored). */
    guint8 b[292] = { 0 };
    float d = 0.25f;
    memcpy (b, &d, 4);
    for (int j = 0; j < 256; j++)
      b[4 + j] = (guint8) (gint8) (j - 128);
    int idx[] = { 0, 128, 255 };
    float ex[] = { -32.0f, 0.0f, 31.75f };
    check_block (LP_DTYPE_Q8_K, b, idx, ex, 3);
  }
  {
    /* The quantizer on values that sit exactly on a Q4_1 grid: d 0.5, m -1. */
    float x[32];
    for (int j = 0; j < 32; j++)
      x[j] = -1.0f + 0.5f * (j % 16);
    guint8 b[20];
    g_assert_true (lp_quantize_row (LP_DTYPE_Q4_1, x, b, 32, NULL, NULL));
    g_assert_cmpuint (b[0], ==, 0x00);
    g_assert_cmpuint (b[1], ==, 0x38);
    g_assert_cmpuint (b[2], ==, 0x00);
    g_assert_cmpuint (b[3], ==, 0xbc);
    for (int j = 0; j < 16; j++)
      g_assert_cmpuint (b[4 + j], ==, j | (j << 4));
  }
  {
    /* Q8_0 of x = j - 16: amax 16, d = 16/127 (f16 0x3010), codes round ((j-16)*127/16) */
    float x[32];
    for (int j = 0; j < 32; j++)
      x[j] = (float) (j - 16);
    guint8 b[34];
    g_assert_true (lp_quantize_row (LP_DTYPE_Q8_0, x, b, 32, NULL, NULL));
    g_assert_cmpuint (b[0] | (b[1] << 8), ==, lp_f32_to_f16 (16.0f / 127));
    g_assert_cmpint ((gint8) b[2], ==, -127);
    g_assert_cmpint ((gint8) b[2 + 17], ==, 8); /* 1 * 127/16 = 7.94 */
    g_assert_cmpint ((gint8) b[2 + 31], ==, 119); /* 15 * 127/16 = 119.06 */
  }
}

static double
rel_rmse (LpDType type, const float *x, gint64 n, const float *w, const float *imp)
{
  guint64 bytes;
  g_assert_true (lp_dtype_row_bytes (type, n, &bytes, NULL));
  g_autofree guint8 *q = g_malloc (bytes);
  g_autofree float *y = g_new (float, n);
  g_assert_true (lp_quantize_row (type, x, q, n, imp, NULL));
  g_assert_true (lp_dtype_to_f32 (type, q, y, n, NULL));
  double se = 0, sx = 0, sw = 0;
  for (gint64 i = 0; i < n; i++)
    {
      double wi = w ? w[i] : 1;
      se += wi * (y[i] - x[i]) * (y[i] - x[i]);
      sx += (double) x[i] * x[i];
      sw += wi;
    }
  return sqrt (se / sw) / sqrt (sx / n);
}

/* RMSE relative to the RMS of Gaussian data, known rough figures per type
 * (llama.cpp's own: Q2_K ~0.30 ... Q8_0 ~0.005). */
static void
test_error_bounds (void)
{
  const gint64 n = 4096 * 4;
  g_autofree float *x = g_new (float, n);
  g_autoptr (GRand) r = g_rand_new_with_seed (7);
  for (gint64 i = 0; i < n; i++)
    x[i] = (float) (sqrt (-2 * log (g_rand_double_range (r, 1e-12, 1))) * cos (2 * G_PI * g_rand_double (r)));
  struct { LpDType type; double lo, hi; } bounds[] = {
    { LP_DTYPE_Q2_K, 0.20, 0.36 }, { LP_DTYPE_Q3_K, 0.10, 0.19 }, { LP_DTYPE_Q4_0, 0.06, 0.11 },
    { LP_DTYPE_Q4_1, 0.05, 0.10 }, { LP_DTYPE_Q4_K, 0.05, 0.09 }, { LP_DTYPE_Q5_0, 0.03, 0.055 },
    { LP_DTYPE_Q5_1, 0.025, 0.05 }, { LP_DTYPE_Q5_K, 0.025, 0.045 }, { LP_DTYPE_Q6_K, 0.01, 0.025 },
    { LP_DTYPE_Q8_0, 0.002, 0.008 }, { LP_DTYPE_IQ4_NL, 0.05, 0.10 },
  };
  double prev = 1;
  for (guint i = 0; i < G_N_ELEMENTS (bounds); i++)
    {
      double e = rel_rmse (bounds[i].type, x, n, NULL, NULL);
      g_test_message ("%s: relative RMSE %.4f", lp_dtype_name (bounds[i].type), e);
      g_assert_cmpfloat (e, >, bounds[i].lo);
      g_assert_cmpfloat (e, <, bounds[i].hi);
      if (bounds[i].type == LP_DTYPE_Q2_K || bounds[i].type == LP_DTYPE_Q3_K || bounds[i].type == LP_DTYPE_Q4_K
          || bounds[i].type == LP_DTYPE_Q5_K || bounds[i].type == LP_DTYPE_Q6_K || bounds[i].type == LP_DTYPE_Q8_0)
        {
          g_assert_cmpfloat (e, <, prev); /* Q2_K > Q3_K > Q4_K > Q5_K > Q6_K > Q8_0 */
          prev = e;
        }
    }
  /* With an importance vector the error it weights goes down. */
  g_autofree float *imp = test_importance (4096, 3);
  g_autofree float *w = g_new (float, n);
  for (gint64 i = 0; i < n; i++)
    w[i] = imp[i % 4096];
  for (guint i = 0; i < G_N_ELEMENTS (quant_types); i++)
    {
      LpDType t = quant_types[i];
      if (t == LP_DTYPE_Q8_0)
        continue; /* ggml ignores importance for Q8_0 */
      double plain = 0, weighted = 0;
      for (int row = 0; row < 4; row++)
        {
          plain += rel_rmse (t, x + row * 4096, 4096, imp, NULL);
          weighted += rel_rmse (t, x + row * 4096, 4096, imp, imp);
        }
      g_test_message ("%s: importance-weighted RMSE %.4f without, %.4f with the imatrix", lp_dtype_name (t),
                      plain / 4, weighted / 4);
      g_assert_cmpfloat (weighted, <, plain);
    }
}

/* lp_quantize_rows equals lp_quantize_row row by row where a range of
 * rows is quantized as one long row (no importance): rows of 18 blocks of
 * 32 (the x86 kernels' groups of eight then span row ends) and of 3
 * super-blocks (the K kernels' pairs span them), on 1 and 3 threads. */
static void
test_rows_as_one (void)
{
  const gint64 rows = 37, lengths[] = { 576, 768 };
  for (guint c = 0; c < G_N_ELEMENTS (lengths); c++)
    {
      const gint64 cols = lengths[c];
      g_autofree float *x = test_values (rows * cols, 13 + c);
      g_autofree float *imp = test_importance (cols, 7);
      for (guint i = 0; i < G_N_ELEMENTS (quant_types); i++)
        for (int with_imp = 0; with_imp < 2; with_imp++)
          for (int threads = 1; threads <= 3; threads += 2)
            {
              LpDType t = quant_types[i];
              guint64 row_bytes;
              if (cols % lp_dtype_info (t)->block_size != 0)
                continue;
              g_assert_true (lp_dtype_row_bytes (t, cols, &row_bytes, NULL));
              g_autofree guint8 *all = g_malloc (row_bytes * rows), *one = g_malloc (row_bytes);
              lp_threads_set (threads);
              g_assert_true (lp_quantize_rows (t, x, rows, cols, with_imp ? imp : NULL, all, NULL));
              for (gint64 r = 0; r < rows; r++)
                {
                  g_assert_true (lp_quantize_row (t, x + r * cols, one, cols, with_imp ? imp : NULL, NULL));
                  if (memcmp (one, all + r * row_bytes, row_bytes) != 0)
                    g_error ("%s%s, rows of %" G_GINT64_FORMAT ", %d threads: row %" G_GINT64_FORMAT " differs",
                             lp_dtype_name (t), with_imp ? " with importance" : "", cols, threads, r);
                }
            }
    }
  lp_threads_set (0);
}

/* lp_quantize_tensor equals lp_quantize_row row by row (threads or not);
 * GGUF write -> read keeps the bytes, and dequantizing the read tensor equals
 * dequantizing the in-memory one, for every type, with and without importance. */
static void
test_gguf_roundtrip (void)
{
  const gint64 rows = 24, cols = 4096;
  gint64 shape[2] = { rows, cols };
  g_autofree float *x = test_values (rows * cols, 11);
  g_autofree float *imp = test_importance (cols, 5);
  g_autoptr (LpTensor) src = lp_tensor_new_f32 ("src", 2, shape, x, NULL);
  g_autoptr (GPtrArray) tensors = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_tensor_unref);
  for (guint i = 0; i < G_N_ELEMENTS (quant_types); i++)
    for (int with_imp = 0; with_imp < 2; with_imp++)
      {
        LpDType t = quant_types[i];
        LpTensor *q = NULL;
        GError *error = NULL;
        g_assert_true (lp_quantize_tensor (src, t, with_imp ? imp : NULL, &q, &error));
        g_assert_no_error (error);
        g_assert_cmpint (q->dtype, ==, t);
        /* row by row, single-threaded */
        gsize row_bytes = lp_tensor_n_bytes (q) / rows;
        g_autofree guint8 *ref = g_malloc (row_bytes);
        for (gint64 r = 0; r < rows; r++)
          {
            g_assert_true (lp_quantize_row (t, x + r * cols, ref, cols, with_imp ? imp : NULL, NULL));
            g_assert_true (memcmp (ref, (const guint8 *) lp_tensor_data (q) + r * row_bytes, row_bytes) == 0);
          }
        char name[64];
        g_snprintf (name, sizeof name, "%s%s", lp_dtype_name (t), with_imp ? ".imatrix" : "");
        g_ptr_array_add (tensors, lp_tensor_rename (q, name));
        lp_tensor_unref (q);
      }
  g_ptr_array_add (tensors, lp_tensor_ref (src));
  g_autoptr (LpMeta) meta = lp_meta_new ();
  lp_meta_set_string (meta, "general.name", "quant-blocks test");
  g_autofree char *path = g_build_filename (lp_test_tmpdir (), "blocks.gguf", NULL);
  GError *error = NULL;
  g_assert_true (lp_gguf_write (path, meta, tensors, &error));
  g_assert_no_error (error);

  g_autoptr (LpMeta) meta2 = lp_meta_new ();
  g_autoptr (GPtrArray) back = lp_gguf_read_tensors (path, meta2, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (back->len, ==, tensors->len);
  for (guint i = 0; i < tensors->len; i++)
    {
      LpTensor *a = tensors->pdata[i], *b = back->pdata[i];
      g_assert_cmpstr (a->name, ==, b->name);
      g_assert_cmpint (a->dtype, ==, b->dtype);
      g_assert_cmpuint (lp_tensor_n_bytes (a), ==, lp_tensor_n_bytes (b));
      g_assert_true (memcmp (lp_tensor_data (a), lp_tensor_data (b), lp_tensor_n_bytes (a)) == 0);
      g_autofree float *fa = lp_tensor_dup_f32 (a, NULL);
      g_autofree float *fb = lp_tensor_dup_f32 (b, NULL);
      g_assert_nonnull (fa);
      g_assert_true (memcmp (fa, fb, rows * cols * sizeof (float)) == 0);
    }

  /* gguf-py as an independent reader and (for the 32-value types) quantizer */
  const char *script =
    "import sys, numpy as np\n"
    "from gguf import GGUFReader, quants\n"
    "r = GGUFReader(sys.argv[1])\n"
    "ts = {t.name: t for t in r.tensors}\n"
    "src = np.array(ts['src'].data, dtype=np.float32).reshape(-1, int(ts['src'].shape[0]))\n"
    "ours = np.fromfile(sys.argv[2], dtype=np.float32).reshape(len(ts) - 1, -1)\n"
    "bad = 0\n"
    "for i, name in enumerate(sys.argv[3:]):\n"
    "    t = ts[name]\n"
    "    d = quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)\n"
    "    if not np.array_equal(d.view(np.uint32), ours[i].view(np.uint32)):\n"
    "        print('dequantize differs:', name); bad += 1\n"
    "    if not name.endswith('.imatrix'):\n"
    "        try:\n"
    "            q = quants.quantize(src, t.tensor_type)\n"
    "        except NotImplementedError:\n"
    "            print('no gguf-py quantizer:', name); continue\n"
    "        if not np.array_equal(q.reshape(-1), np.asarray(t.data).reshape(-1)):\n"
    "            print('quantize differs:', name); bad += 1\n"
    "        else: print('quantize equal:', name)\n"
    "print('checked', len(sys.argv) - 3, 'bad', bad)\n"
    "sys.exit(1 if bad else 0)\n";
  int status = 0;
  gchar *argv_probe[] = { "python3", "-c", "import gguf.quants, numpy", NULL };
  if (!g_spawn_sync (NULL, argv_probe, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_test_skip ("python3 with the gguf package (gguf-py) is not installed: no oracle");
      return;
    }
  g_autofree char *ours = g_build_filename (lp_test_tmpdir (), "ours.f32", NULL);
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (argv, g_strdup ("python3"));
  g_ptr_array_add (argv, g_strdup ("-c"));
  g_ptr_array_add (argv, g_strdup (script));
  g_ptr_array_add (argv, g_strdup (path));
  g_ptr_array_add (argv, g_strdup (ours));
  GString *all = g_string_new (NULL);
  for (guint i = 0; i + 1 < tensors->len; i++)
    {
      LpTensor *t = tensors->pdata[i];
      g_autofree float *f = lp_tensor_dup_f32 (t, NULL);
      g_string_append_len (all, (const char *) f, rows * cols * sizeof (float));
      g_ptr_array_add (argv, g_strdup (t->name));
    }
  g_assert_true (g_file_set_contents (ours, all->str, all->len, NULL));
  g_string_free (all, TRUE);
  g_ptr_array_add (argv, NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                               &status, NULL));
  g_test_message ("gguf-py: %s%s", out, err);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("gguf-py disagrees: %s%s", out, err);
  g_assert_nonnull (strstr (out, "quantize equal: q4_0\n"));
  g_assert_nonnull (strstr (out, "quantize equal: q8_0\n"));
}

/* fit + quantize_value per element + pack writes lp_quantize_row's bytes, and
 * the values quantize_value returns are those lp_dtype_to_f32 reads back. */
static void
test_grid (void)
{
  const gint64 n = 4096;
  g_autofree float *x = test_values (n, 21);
  g_autofree float *imp = test_importance (n, 22);
  for (guint i = 0; i < G_N_ELEMENTS (quant_types); i++)
    for (int with_imp = 0; with_imp < 2; with_imp++)
      {
        LpDType t = quant_types[i];
        const LpDTypeInfo *info = lp_dtype_info (t);
        const float *w = with_imp ? imp : NULL;
        guint64 bytes;
        g_assert_true (lp_dtype_row_bytes (t, n, &bytes, NULL));
        g_autofree guint8 *ref = g_malloc (bytes);
        g_autofree guint8 *ours = g_malloc (bytes);
        g_autofree float *deq = g_new (float, n);
        g_assert_true (lp_quantize_row (t, x, ref, n, w, NULL));
        g_assert_true (lp_dtype_to_f32 (t, ref, deq, n, NULL));
        float sigma2 = lp_block_grid_row_sigma2 (x, n);
        for (gint64 b = 0; b < n / info->block_size; b++)
          {
            gint64 off = b * info->block_size;
            LpBlockParams p;
            int codes[LP_BLOCK_MAX_VALUES];
            g_assert_true (lp_block_grid_fit (t, x + off, w ? w + off : NULL, sigma2, &p, NULL));
            g_assert_cmpint (p.n_values, ==, info->block_size);
            for (int j = 0; j < p.n_values; j++)
              {
                float v = lp_block_grid_quantize_value (&p, j, x[off + j], &codes[j]);
                g_assert_cmpint (codes[j], >=, p.code_min);
                g_assert_cmpint (codes[j], <=, p.code_max);
                if (memcmp (&v, &deq[off + j], 4) != 0)
                  g_error ("%s%s block %" G_GINT64_FORMAT " value %d: grid %g, dequantized %g", info->name,
                           w ? " (imatrix)" : "", b, j, v, deq[off + j]);
                g_assert_true (lp_block_grid_dequantize_code (&p, j, codes[j]) == v);
              }
            lp_block_grid_pack (&p, codes, ours + b * info->type_size);
            if (memcmp (ours + b * info->type_size, ref + b * info->type_size, info->type_size) != 0)
              g_error ("%s%s block %" G_GINT64_FORMAT ": grid bytes differ from lp_quantize_row", info->name,
                       w ? " (imatrix)" : "", b);
          }
        /* Values far outside the block (error feedback) clamp to the grid's ends. */
        LpBlockParams p;
        g_assert_true (lp_block_grid_fit (t, x + 1024, NULL, sigma2, &p, NULL));
        int c;
        lp_block_grid_quantize_value (&p, 3, 1e30f, &c);
        g_assert_cmpint (c, >=, p.code_min);
        g_assert_cmpint (c, <=, p.code_max);
        lp_block_grid_quantize_value (&p, 3, -1e30f, &c);
        g_assert_cmpint (c, >=, p.code_min);
        g_assert_cmpint (c, <=, p.code_max);
      }
}

static void
test_fallback (void)
{
  struct { LpDType wanted; gint64 row; LpDType expect; } cases[] = {
    { LP_DTYPE_Q4_K, 172, LP_DTYPE_F16 },  { LP_DTYPE_Q4_0, 172, LP_DTYPE_F16 },
    { LP_DTYPE_Q8_0, 172, LP_DTYPE_F16 },  { LP_DTYPE_Q6_K, 172, LP_DTYPE_F16 },
    { LP_DTYPE_Q2_K, 64, LP_DTYPE_Q4_0 },  { LP_DTYPE_Q3_K, 64, LP_DTYPE_Q4_0 },
    { LP_DTYPE_Q4_K, 64, LP_DTYPE_Q5_0 },  { LP_DTYPE_Q5_K, 64, LP_DTYPE_Q5_1 },
    { LP_DTYPE_Q6_K, 64, LP_DTYPE_Q8_0 },  { LP_DTYPE_Q4_0, 64, LP_DTYPE_Q4_0 },
    { LP_DTYPE_Q4_K, 96, LP_DTYPE_Q5_0 },  { LP_DTYPE_Q6_K, 96, LP_DTYPE_Q8_0 },
    { LP_DTYPE_Q5_1, 96, LP_DTYPE_Q5_1 },  { LP_DTYPE_Q4_K, 256, LP_DTYPE_Q4_K },
    { LP_DTYPE_Q2_K, 256, LP_DTYPE_Q2_K }, { LP_DTYPE_Q4_K, 4096, LP_DTYPE_Q4_K },
    { LP_DTYPE_Q8_0, 4096, LP_DTYPE_Q8_0 }, { LP_DTYPE_F16, 172, LP_DTYPE_F16 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      LpDType got = lp_quant_fallback_type (cases[i].wanted, cases[i].row);
      if (got != cases[i].expect)
        g_error ("%s on rows of %" G_GINT64_FORMAT ": expected %s, found %s", lp_dtype_name (cases[i].wanted),
                 cases[i].row, lp_dtype_name (cases[i].expect), lp_dtype_name (got));
    }
}

static void
test_bad_input (void)
{
  gint64 shape[2] = { 4, 256 };
  g_autofree float *x = test_values (4 * 256, 31);
  x[256 + 5] = NAN;
  g_autoptr (LpTensor) t = lp_tensor_new_f32 ("blk.0.attn_q.weight", 2, shape, x, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (quant_types); i++)
    {
      LpTensor *q = NULL;
      GError *error = NULL;
      g_assert_false (lp_quantize_tensor (t, quant_types[i], NULL, &q, &error));
      g_assert_null (q);
      lp_test_assert_error_contains (error, "blk.0.attn_q.weight", "row 1", "element 5", "finite", "nan", NULL);
      g_clear_error (&error);
    }
  x[256 + 5] = INFINITY;
  GError *error = NULL;
  guint8 buf[210 * 4];
  g_assert_false (lp_quantize_row (LP_DTYPE_Q6_K, x + 256, buf, 256, NULL, &error));
  lp_test_assert_error_contains (error, "element 5", "inf", NULL);
  g_clear_error (&error);
  x[256 + 5] = 0.5f;
  /* the 32-value kernels check finiteness as they quantize: every kind of
   * non-finite value, in a row of 29 blocks (sixteen at a time with
   * AVX-512, then eight, then one by one): in the first and last block, in
   * each of the three parts */
  const LpDType checked[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_0, LP_DTYPE_Q5_0, LP_DTYPE_Q4_1, LP_DTYPE_Q5_1 };
  const float bad[] = { INFINITY, -INFINITY, NAN, -NAN };
  const int bad_at[] = { 0, 300, 511, 700, 927 };
  g_autofree guint8 *row_buf = g_malloc (29 * 34);
  for (guint i = 0; i < G_N_ELEMENTS (checked); i++)
    for (guint k = 0; k < G_N_ELEMENTS (bad); k++)
      for (guint a = 0; a < G_N_ELEMENTS (bad_at); a++)
        {
          const int at = bad_at[a];
          float save = x[at];
          x[at] = bad[k];
          g_assert_false (lp_quantize_row (checked[i], x, row_buf, 29 * 32, NULL, &error));
          g_autofree char *where = g_strdup_printf ("element %d:", at);
          lp_test_assert_error_contains (error, where, isnan (bad[k]) ? "nan" : "inf", NULL);
          g_clear_error (&error);
          x[at] = save;
        }

  /* a row the block does not divide: callers pick the type with the fallback helper */
  x[256 + 5] = 0.5f;
  gint64 shape2[2] = { 2, 172 };
  g_autoptr (LpTensor) odd = lp_tensor_new_f32 ("blk.0.ffn_down.weight", 2, shape2, x, NULL);
  LpTensor *q = NULL;
  g_assert_false (lp_quantize_tensor (odd, LP_DTYPE_Q4_0, NULL, &q, &error));
  lp_test_assert_error_contains (error, "blk.0.ffn_down.weight", "172", "q4_0", "block size 32", NULL);
  g_clear_error (&error);
  g_assert_false (lp_quantize_row (LP_DTYPE_Q4_K, x, buf, 172, NULL, &error));
  lp_test_assert_error_contains (error, "172", "q4_k", "256", NULL);
  g_clear_error (&error);
  /* the fallback type works on it */
  g_assert_true (lp_quantize_tensor (odd, lp_quant_fallback_type (LP_DTYPE_Q4_K, 172), NULL, &q, &error));
  g_assert_no_error (error);
  g_assert_cmpint (q->dtype, ==, LP_DTYPE_F16);
  lp_tensor_unref (q);

  /* bad importance */
  float good[256], w[256];
  for (int i = 0; i < 256; i++)
    good[i] = 0.01f * (i % 7), w[i] = 1;
  w[9] = -1;
  g_assert_false (lp_quantize_row (LP_DTYPE_Q4_K, good, buf, 256, w, &error));
  lp_test_assert_error_contains (error, "importance 9", "non-negative", NULL);
  g_clear_error (&error);
  /* not a block type we quantize to */
  g_assert_false (lp_quantize_row (LP_DTYPE_Q8_K, good, buf, 256, NULL, &error));
  lp_test_assert_error_contains (error, "q8_k", NULL);
  g_clear_error (&error);
}

/* lp_tensor_convert reaches the quantizers through lp_dtype_from_f32. */
static void
test_convert (void)
{
  gint64 shape[2] = { 2, 256 };
  g_autofree float *x = test_values (512, 41);
  g_autoptr (LpTensor) t = lp_tensor_new_f32 ("w", 2, shape, x, NULL);
  GError *error = NULL;
  g_autoptr (LpTensor) q = lp_tensor_convert (t, LP_DTYPE_Q4_K, &error);
  g_assert_no_error (error);
  LpTensor *q2 = NULL;
  g_assert_true (lp_quantize_tensor (t, LP_DTYPE_Q4_K, NULL, &q2, NULL));
  g_assert_true (memcmp (lp_tensor_data (q), lp_tensor_data (q2), lp_tensor_n_bytes (q)) == 0);
  lp_tensor_unref (q2);
}

/* The edge blocks of 32: zeros and -0, a tie of +m and -m in either order,
 * exact halves under each rule (and for Q8_0 the floats either side of
 * them), huge values (1/d near the float range),
 * scales so small that 1/d overflows (ggml's casts of infinities), one
 * subnormal, 2^k steps, and a minimum of 0 met first as -0 or as +0 (the
 * stored min of Q4_1 / Q5_1 keeps its sign). */
static float *
edge_values (gint64 n)
{
  float *z = g_new (float, n);
  for (gint64 i = 0; i < n; i++)
    {
      gint64 blk = i / 32, k = i % 32;
      float s = (float) ((k * 7) % 11) - 5; /* -5 .. 5 */
      switch (blk % 14)
        {
        case 0: z[i] = 0.f; break;
        case 1: z[i] = -0.f; break;
        case 2: z[i] = k == 3 ? -2.f : k == 9 ? 2.f : 0.25f * s; break;
        case 3: z[i] = k == 3 ? 2.f : k == 9 ? -2.f : 0.25f * s; break;
        case 4: /* q8_0: id 1; halves, and the floats either side of them */
          z[i] = k == 0 ? 127.f : k == 1 ? nextafterf (0.5f, 0.f) : k == 2 ? -nextafterf (0.5f, 0.f)
                 : k % 3 == 0 ? (float) k - 16.5f : nextafterf ((float) k - 16.5f, k % 3 == 1 ? 100.f : -100.f);
          break;
        case 5: z[i] = k == 0 ? -8.f : 0.5f * (float) k - 8.f; break; /* q4_0: id -1, x + 8.5 */
        case 6: z[i] = 6e37f * s; break;
        case 7: z[i] = k == 5 ? FLT_MAX : -1e37f * (float) (k % 3); break;
        case 8: z[i] = 1e-40f * s; break;
        case 9: z[i] = k == 17 ? 1e-42f : 0.f; break;
        case 10: z[i] = ldexpf (1.f, (int) (k % 9) - 4) * (k % 2 ? -1 : 1); break;
        case 11: /* min 0: the first zero at p, of either sign, then zeros of both */
        case 12:
          {
            gint64 p = (blk / 14) % 32;
            float first = (blk / 14 / 32) % 2 ? -0.f : 0.f;
            z[i] = k < p ? 0.1f * (float) (k + 1) : k == p ? first : k % 3 ? 0.1f * (float) k : (k % 2 ? -0.f : 0.f);
            if (blk % 14 == 12 && k > p)
              z[i] = k % 2 ? -0.f : 0.f;
            break;
          }
        default: z[i] = 1e-30f * s; break;
        }
    }
  return z;
}

/* One kernel's bytes against the reference's. */
static void
assert_same_bytes (const char *kernel, LpDType type, gboolean weighted, guint row, const guint8 *a, const guint8 *b,
                   guint64 bytes)
{
  for (guint64 i = 0; i < bytes; i++)
    if (a[i] != b[i])
      g_error ("%s, %s%s, row %u: byte %" G_GUINT64_FORMAT " (block %" G_GUINT64_FORMAT "): reference %u, fast %u",
               kernel, lp_dtype_name (type), weighted ? " + importance" : "", row, i,
               i / lp_dtype_info (type)->type_size, a[i], b[i]);
}

/* The fast row kernels (quant_fast.c: portable; quant_fast_x86.c: AVX2;
 * quant_fast_x512.c: AVX-512; and the K search of quant_ksearch_x86.c:
 * AVX-512, where the CPU has them) against the reference fits, byte for byte: every
 * type with and without importance (a type a kernel does not take is
 * skipped for it), on rows with the awkward blocks of test_values, rows of
 * one value repeated, of a single non-zero, of large and tiny scales, rows
 * that make lanes of a K super-block flat while others are not, and the
 * edge blocks above. */
static void
test_fast_vs_reference (void)
{
  const gint64 n = 65536;
  g_autofree float *x = test_values (n, 11);
  g_autofree float *imp = test_importance (n, 12);
  g_autofree float *y = g_new (float, n);
  g_autofree float *z = edge_values (n);
  /* per 256: constant, single spike, scaled up, scaled down, mixed flat
   * lanes, non-negative, negative-only, steps of 1/8, subnormal, one
   * outlier among negatives */
  for (gint64 i = 0; i < n; i++)
    {
      gint64 blk = i / 256, k = i % 256;
      switch (blk % 10)
        {
        case 0: y[i] = 0.25f; break;
        case 1: y[i] = k == 77 ? -3.f : 0.f; break;
        case 2: y[i] = x[i] * 1e4f; break;
        case 3: y[i] = x[i] * 1e-6f; break;
        case 4: y[i] = (k / 32) % 2 ? x[i] : (float) (k / 32) * 0.01f; break;
        case 5: y[i] = fabsf (x[i]); break;
        case 6: y[i] = -fabsf (x[i]) - 0.01f; break;
        case 8: y[i] = x[i] * 1e-39f; break;
        case 9: y[i] = k == 200 ? 5.f : -fabsf (x[i]); break;
        default: y[i] = (float) ((k % 7) - 3) * 0.125f; break;
        }
    }
  const float *rows[] = { x, y, z };
  gboolean (*kernels[]) (LpDType, const float *, gint64, const float *, guint8 *) = {
    lp_qfast_row_portable, lp_qx86_row, lp_qx86_krow, lp_qx512_row
  };
  const char *kernel_names[] = { "portable", "x86", "x86 K search", "x86 AVX-512" };
  g_autofree guint8 *a = g_malloc (n * 2), *b = g_malloc (n * 2);
  int x86_rows = 0, x86_k_rows = 0, x512_rows = 0;
  /* whole rows, rows of an odd count of super-blocks (the K kernels
   * search two, or with AVX-512 six, at a time: 256 of them are 42 sixes
   * and a four; one, three and five pad their last register), starting
   * mid-row, and of 27 blocks of 32 (the x86 kernels take sixteen (AVX-512)
   * or eight at a time, then one by one) */
  const gint64 lengths[] = { n, 3 * 256, 27 * 32, 256, 5 * 256 }, offsets[] = { 0, 5 * 256, 3 * 32, 7 * 256, 9 * 256 };
  for (guint t = 0; t < G_N_ELEMENTS (quant_types); t++)
    for (int weighted = 0; weighted < 2; weighted++)
      for (guint r = 0; r < G_N_ELEMENTS (lengths) * G_N_ELEMENTS (rows); r++)
        {
          LpDType type = quant_types[t];
          const gint64 len = lengths[r % G_N_ELEMENTS (lengths)], off = offsets[r % G_N_ELEMENTS (lengths)];
          const float *row = rows[r / G_N_ELEMENTS (lengths)] + off;
          if (len % lp_dtype_info (type)->block_size != 0)
            continue;
          guint64 bytes = 0;
          g_assert_true (lp_dtype_row_bytes (type, len, &bytes, NULL));
          memset (a, 0xa5, bytes);
          const float *w = weighted ? imp + off : NULL;
          lp_qref_row (type, row, len, w, a);
          for (guint k = 0; k < G_N_ELEMENTS (kernels); k++)
            {
              memset (b, 0x5a, bytes);
              if (!kernels[k](type, row, len, w, b))
                continue;
              x86_rows += k == 1;
              x86_k_rows += k == 2;
              x512_rows += k == 3;
              assert_same_bytes (kernel_names[k], type, weighted, r, a, b, bytes);
            }
        }
  if (x86_rows == 0)
    g_test_message ("no AVX2 here (or not an x86-64 GCC build): the x86 kernels were not run");
  if (x86_k_rows == 0)
    g_test_message ("no AVX-512 here (or not an x86-64 GCC build): the x86 K search was not run");
  if (x512_rows == 0)
    g_test_message ("no AVX-512 here (or not an x86-64 GCC build): the AVX-512 block kernels were not run");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/quant/hand-blocks", test_hand_blocks);
  g_test_add_func ("/quant/error-bounds", test_error_bounds);
  g_test_add_func ("/quant/gguf-roundtrip-oracle", test_gguf_roundtrip);
  g_test_add_func ("/quant/rows-as-one", test_rows_as_one);
  g_test_add_func ("/quant/grid", test_grid);
  g_test_add_func ("/quant/fast-vs-reference", test_fast_vs_reference);
  g_test_add_func ("/quant/fallback", test_fallback);
  g_test_add_func ("/quant/bad-input", test_bad_input);
  g_test_add_func ("/quant/convert", test_convert);
  return g_test_run ();
}
