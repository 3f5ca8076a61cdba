/* The decoding kernels (model/gemv.c): the matrix-vector product for a few
 * rows of activations, AVX2 over the threads (lp_cpu_gemv_w) against its
 * plain C row kernels (lp_cpu_gemv_w_ref) and against the reference
 * product of the decoded weights (lp_ref_gemm_w), for every weight type it
 * takes; ggml_matmul.c's products in ggml's summation order against their
 * plain C references, bit for bit; and the ranges of lp_parallel_for,
 * which splits them. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "testutil.h"

#include "compute-internal.h"
#include "forward-internal.h"

/* W[N, K] of type `type` from random f32 values (blocks quantized by the
 * library's quantizer). */
static guint8 *
random_weight (LpDType type, int N, int K, GRand *r)
{
  g_autofree float *w = g_new (float, (gsize) N * K);
  for (gsize i = 0; i < (gsize) N * K; i++)
    w[i] = (float) g_rand_double_range (r, -1.0, 1.0);
  gint64 shape[2] = { N, K };
  g_autoptr (GError) error = NULL;
  g_autoptr (LpTensor) f = lp_tensor_new_f32 ("w", 2, shape, w, &error);
  g_assert_no_error (error);
  g_autoptr (LpTensor) t = NULL;
  if (type == LP_DTYPE_F32 || type == LP_DTYPE_F16)
    t = lp_tensor_convert (f, type, &error);
  else
    g_assert_true (lp_quantize_tensor (f, type, NULL, &t, &error));
  g_assert_no_error (error);
  return g_memdup2 (lp_tensor_data (t), lp_tensor_n_bytes (t));
}

/* A product's random operands: W[N, K] of a type, A[M, lda] and the
 * addend c0[M, ldc], with strides wider than the rows. */
typedef struct {
  guint8 *W;
  float *A, *c0;
  int lda, ldc;
} Operands;

static void
operands_init (Operands *o, LpDType type, int M, int N, int K, guint32 seed)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  o->W = random_weight (type, N, K, r);
  o->lda = K + 3;
  o->ldc = N + 5;
  o->A = g_new (float, (gsize) M * o->lda);
  o->c0 = g_new (float, (gsize) M * o->ldc);
  for (gsize i = 0; i < (gsize) M * o->lda; i++)
    o->A[i] = (float) g_rand_double_range (r, -2.0, 2.0);
  for (gsize i = 0; i < (gsize) M * o->ldc; i++)
    o->c0[i] = (float) g_rand_double_range (r, -1.0, 1.0);
}

static void
operands_clear (Operands *o)
{
  g_free (o->W);
  g_free (o->A);
  g_free (o->c0);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Operands, operands_clear)

/* |a - b| / |b| over n values. */
static double
rel_error (const float *a, const float *b, gsize n)
{
  double num = 0, den = 0;
  for (gsize i = 0; i < n; i++)
    {
      num += (double) (a[i] - b[i]) * (a[i] - b[i]);
      den += (double) b[i] * b[i];
    }
  return sqrt (num / den);
}

static void
check_type (LpDType type, int M, int N, int K, float beta)
{
  g_auto (Operands) o;
  operands_init (&o, type, M, N, K, (guint32) (type * 1000 + M * 100 + N + K));
  guint8 *W = o.W;
  float *A = o.A, *c0 = o.c0;
  int lda = o.lda, ldc = o.ldc;
  g_autofree float *fast = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_autofree float *plain = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_autofree float *ref = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_assert_true (lp_cpu_gemv_supports (M, K, type));
  lp_cpu_gemv_w (M, N, K, A, lda, type, W, beta, fast, ldc);
  lp_cpu_gemv_w_ref (M, N, K, A, lda, type, W, beta, plain, ldc);
  lp_ref_gemm_w (M, N, K, A, lda, type, W, beta, ref, ldc);
  for (int m = 0; m < M; m++)
    {
      /* Sums of K products of size ~1 in f32, in three orders. */
      lp_test_assert_close (fast + (gsize) m * ldc, ref + (gsize) m * ldc, N, 1e-4);
      lp_test_assert_close (plain + (gsize) m * ldc, ref + (gsize) m * ldc, N, 1e-4);
      /* The padding between rows of C is never written. */
      for (int j = N; j < ldc; j++)
        g_assert_cmpfloat (fast[(gsize) m * ldc + j], ==, c0[(gsize) m * ldc + j]);
    }
}

static void
test_gemv_types (void)
{
  const LpDType types[] = { LP_DTYPE_F32, LP_DTYPE_F16, LP_DTYPE_Q8_0, LP_DTYPE_Q4_0, LP_DTYPE_Q4_1 };
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      if (g_test_verbose ())
        g_test_message ("%s", lp_dtype_name (types[i]));
      /* One row (decoding), a few, the most; a matrix large enough to be
       * split over the threads, and a K past the stack buffer of Q4_1's
       * block sums. */
      check_type (types[i], 1, 37, 64, 0.0f);
      check_type (types[i], 3, 50, 96, 1.0f);
      check_type (types[i], LP_GEMV_MAX_ROWS, 29, 32, 0.5f);
      check_type (types[i], 1, 1500, 576, 1.0f);
      check_type (types[i], 2, 64, 4096, 0.0f);
    }
}

/* The integer product (lp_cpu_gemm_q8: AVX2 over the threads) against its
 * plain C row kernel, and both against ggml's definition computed another
 * way: A rounded by forward_ggml.c's lp_ggml_round_rows, times the decoded
 * weights (lp_ref_gemm_w), plus lp_ggml_min_correction for Q4_1. */
static void
check_q8 (LpDType type, int M, int N, int K, float beta)
{
  g_auto (Operands) o;
  operands_init (&o, type, M, N, K, (guint32) (type * 1000 + M * 100 + N + K + 7));
  guint8 *W = o.W;
  float *A = o.A, *c0 = o.c0;
  int lda = o.lda, ldc = o.ldc;
  g_autofree float *fast = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_autofree float *plain = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_autofree float *ref = g_memdup2 (c0, sizeof (float) * M * ldc);
  g_assert_true (lp_cpu_gemm_q8_supports (K, type));
  lp_cpu_gemm_q8 (M, N, K, A, lda, type, W, beta, fast, ldc);
  lp_cpu_gemm_q8_ref (M, N, K, A, lda, type, W, beta, plain, ldc);

  /* The definition: rounded rows (packed, lda = K), decoded weights. */
  g_autofree float *Ar = g_new (float, (gsize) M * K), *s_err = g_new (float, (gsize) M * (K / 32));
  for (int m = 0; m < M; m++)
    memcpy (Ar + (gsize) m * K, A + (gsize) m * lda, sizeof (float) * K);
  g_assert_true (lp_ggml_round_rows (type, Ar, M, K, s_err));
  lp_ref_gemm_w (M, N, K, Ar, K, type, W, beta, ref, ldc);
  g_autofree float *corr = g_new0 (float, (gsize) M * N);
  g_assert_true (lp_ggml_min_correction (type, W, N, K, s_err, M, corr) == (type == LP_DTYPE_Q4_1));
  for (int m = 0; m < M; m++)
    for (int j = 0; j < N; j++)
      ref[(gsize) m * ldc + j] += corr[(gsize) m * N + j];

  g_autofree float *exact = g_memdup2 (c0, sizeof (float) * M * ldc);
  lp_ref_gemm_w (M, N, K, A, lda, type, W, beta, exact, ldc);
  for (int m = 0; m < M; m++)
    {
      /* The same integers per block, float sums in other orders. */
      lp_test_assert_close (fast + (gsize) m * ldc, plain + (gsize) m * ldc, N, 1e-5);
      lp_test_assert_close (plain + (gsize) m * ldc, ref + (gsize) m * ldc, N, 1e-5);
      /* And not the f32 product: 8-bit activations are off by ~0.3% of a
       * block's largest value each (this test fails if nothing is rounded). */
      double e = rel_error (fast + (gsize) m * ldc, exact + (gsize) m * ldc, N);
      g_assert_cmpfloat (e, >, 1e-5);
      g_assert_cmpfloat (e, <, 2e-2);
      for (int j = N; j < ldc; j++)
        g_assert_cmpfloat (fast[(gsize) m * ldc + j], ==, c0[(gsize) m * ldc + j]);
    }
}

static void
test_gemm_q8_types (void)
{
  const LpDType types[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_0, LP_DTYPE_Q4_1 };
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      /* One row (decoding: its own kernel), odd block counts, a group of
       * rows, more rows than a group (two passes over W), a matrix split
       * over the threads. */
      check_q8 (types[i], 1, 37, 96, 0.0f);
      check_q8 (types[i], 1, 50, 64, 1.0f);
      check_q8 (types[i], 3, 29, 160, 0.5f);
      check_q8 (types[i], LP_GEMV_MAX_ROWS + 3, 33, 64, 1.0f);
      check_q8 (types[i], 1, 1500, 576, 1.0f);
    }
  g_assert_false (lp_cpu_gemm_q8_supports (48, LP_DTYPE_Q4_1)); /* not whole blocks */
  g_assert_false (lp_cpu_gemm_q8_supports (256, LP_DTYPE_Q4_K));
}

/* lp_ggml_mul_mat_q (gemv_q8.c's AVX2 kernel where the CPU has it) gives
 * the bits of its plain C reference, gemv_q8.c's restatement of ggml's order,
 * which test-eval holds to llama.cpp's own bits. */
static void
check_ggml_order (LpDType type, int M, int N, int K)
{
  g_auto (Operands) o;
  operands_init (&o, type, M, N, K, (guint32) (type * 1000 + M * 100 + N + K + 11));
  g_autofree float *x = g_new (float, (gsize) M * K);
  for (int m = 0; m < M; m++)
    memcpy (x + (gsize) m * K, o.A + (gsize) m * o.lda, sizeof (float) * K);
  g_autofree float *fast = g_new (float, (gsize) M * N), *plain = g_new (float, (gsize) M * N);
  g_assert_true (lp_ggml_mul_mat_q (type, o.W, N, K, x, M, fast));
  g_assert_true (lp_ggml_mul_mat_q_ref (type, o.W, N, K, x, M, plain));
  g_assert_cmpint (memcmp (fast, plain, sizeof (float) * M * N), ==, 0);
}

static void
test_ggml_mul_mat_q (void)
{
  if (!lp_cpu_have_avx2 ())
    g_test_message ("no AVX2: lp_ggml_mul_mat_q is its reference");
  const LpDType types[] = { LP_DTYPE_Q8_0, LP_DTYPE_Q4_1 };
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      check_ggml_order (types[i], 1, 37, 96);
      check_ggml_order (types[i], LP_GEMV_MAX_ROWS + 3, 33, 160);
      check_ggml_order (types[i], 2, 1500, 576);
    }
  g_assert_false (lp_ggml_mul_mat_q (LP_DTYPE_Q4_0, NULL, 1, 32, NULL, 1, NULL)); /* not restated */
  g_assert_false (lp_ggml_mul_mat_q (LP_DTYPE_Q4_1, NULL, 1, 48, NULL, 1, NULL)); /* not whole blocks */
}

/* lp_ggml_mul_mat_f16 (AVX2) against its plain C reference, bit for bit,
 * on f16 values at strides wider than the rows. */
static void
test_ggml_mul_mat_f16 (void)
{
  enum { N = 37, T = 5, K = 96, LDA = K + 16, LDB = K + 32, LDC = N + 3 };
  g_autoptr (GRand) r = g_rand_new_with_seed (23);
  float a[N * LDA], b[T * LDB], fast[T * LDC] = { 0 }, plain[T * LDC] = { 0 };
  for (int i = 0; i < N * LDA; i++)
    a[i] = (float) g_rand_double_range (r, -3.0, 3.0);
  for (int i = 0; i < T * LDB; i++)
    b[i] = (float) g_rand_double_range (r, 0.0, 1.0);
  lp_ggml_round_f16 (a, N * LDA);
  lp_ggml_round_f16 (b, T * LDB);
  g_assert_true (lp_ggml_mul_mat_f16 (a, LDA, N, b, LDB, T, K, fast, LDC));
  g_assert_true (lp_ggml_mul_mat_f16_ref (a, LDA, N, b, LDB, T, K, plain, LDC));
  g_assert_cmpint (memcmp (fast, plain, sizeof fast), ==, 0);
  g_assert_cmpfloat (plain[LDC + 2], !=, 0.0f);
  g_assert_false (lp_ggml_mul_mat_f16 (a, LDA, N, b, LDB, T, 40, fast, LDC)); /* K not a multiple of 16 */
}

static void
test_gemv_supports (void)
{
  g_assert_true (lp_cpu_gemv_supports (1, 576, LP_DTYPE_Q4_1));
  g_assert_false (lp_cpu_gemv_supports (LP_GEMV_MAX_ROWS + 1, 576, LP_DTYPE_Q4_1));
  g_assert_false (lp_cpu_gemv_supports (0, 576, LP_DTYPE_F32));
  g_assert_false (lp_cpu_gemv_supports (1, 48, LP_DTYPE_Q8_0)); /* not whole blocks */
  g_assert_true (lp_cpu_gemv_supports (1, 47, LP_DTYPE_F32));
  g_assert_false (lp_cpu_gemv_supports (1, 256, LP_DTYPE_Q4_K)); /* decoded by the GEMM path */
}

/* caller () on four threads at once. */
static void
four_callers (GThreadFunc caller)
{
  GThread *t[4];
  for (int i = 0; i < 4; i++)
    t[i] = g_thread_new ("caller", caller, NULL);
  for (int i = 0; i < 4; i++)
    g_thread_join (t[i]);
}

/* lp_parallel_for (threads.h): ranges of at least `grain` items (the
 * last aside), each index once, whatever the thread count, from several
 * calling threads at once and from inside a range (nested). */
typedef struct {
  int *hits;
  gint64 n, grain;
  gint short_ranges; /* ranges under the grain that do not end at n */
  gboolean nest;     /* each range runs a nested loop over its own items */
} SdkRanges;

static void
sdk_mark (gint64 i0, gint64 i1, gpointer data)
{
  SdkRanges *r = data;
  if (i1 - i0 < r->grain && i1 != r->n)
    g_atomic_int_inc (&r->short_ranges);
  if (r->nest)
    {
      /* the inner loop's items are this range's: an index offset */
      SdkRanges inner = { r->hits + i0, i1 - i0, 1, 0, FALSE };
      lp_parallel_for (i1 - i0, 1, sdk_mark, &inner);
      g_atomic_int_add (&r->short_ranges, g_atomic_int_get (&inner.short_ranges));
      return;
    }
  for (gint64 i = i0; i < i1; i++)
    g_atomic_int_inc (&r->hits[i]);
}

static void
sdk_check (gint64 n, gint64 grain, gboolean nest)
{
  g_autofree int *hits = g_new0 (int, MAX (n, 1));
  SdkRanges r = { hits, n, grain, 0, nest };
  lp_parallel_for (n, grain, sdk_mark, &r);
  for (gint64 i = 0; i < n; i++)
    if (hits[i] != 1)
      g_error ("lp_parallel_for (%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "%s) with %d threads: item %" G_GINT64_FORMAT
               " run %d times",
               n, grain, nest ? ", nested" : "", lp_threads (), i, hits[i]);
  g_assert_cmpint (r.short_ranges, ==, 0);
}

static void
test_sdk_parallel_for_covers (void)
{
  const gint64 sizes[] = { 0, 1, 2, 7, 100, 1001, 65537 };
  const int counts[] = { 1, 2, 3, 5, 2 }; /* up, down, and back to one the pool has already */
  for (guint c = 0; c < G_N_ELEMENTS (counts); c++)
    {
      lp_threads_set (counts[c]);
      for (guint s = 0; s < G_N_ELEMENTS (sizes); s++)
        for (gint64 grain = 1; grain <= 4096; grain *= 16)
          for (int nest = 0; nest < 2; nest++)
            sdk_check (sizes[s], grain, nest);
    }
  lp_threads_set (0);
}

static gpointer
sdk_caller (gpointer data)
{
  for (int rep = 0; rep < 200; rep++)
    sdk_check (257 + rep, 1 + rep % 5, rep % 7 == 0);
  return data;
}

static void
test_sdk_parallel_for_concurrent (void)
{
  four_callers (sdk_caller);
}

/* logits[T, V] of tokens[T] decoded one at a time with a KV cache. */
static void
decode_each (LpForward *fw, const gint32 *toks, int T, float *logits)
{
  const LpModelConfig *c = lp_model_config (lp_forward_model (fw));
  g_autoptr (LpKVCache) cache = lp_kv_cache_new (c, T);
  g_autoptr (GError) error = NULL;
  for (int t = 0; t < T; t++)
    {
      g_assert_true (lp_forward_logits (fw, toks + t, 1, cache, logits + (gsize) t * c->n_vocab, &error));
      g_assert_no_error (error);
    }
  g_assert_cmpint (lp_kv_cache_length (cache), ==, T);
}

/* SmolLM2-135M (Q4_1 blocks, a Q8_0 head: the real kernels): the logits of
 * decoding token by token with a KV cache (the matrix-vector path) equal
 * those of the whole sequence at once (the batched GEMM path) closely. */
static void
test_smollm2_incremental_matches_full (void)
{
  g_autofree char *path = lp_test_shared_path ("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (path == NULL)
    return;
  g_autoptr (GError) error = NULL;
  g_autoptr (LpModel) m = lp_model_load (path, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (LpForward) fw = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  const LpModelConfig *c = lp_model_config (m);
  enum { T = LP_GEMV_MAX_ROWS + 4 };
  int V = (int) c->n_vocab;
  gint32 toks[T];
  for (int i = 0; i < T; i++)
    toks[i] = (gint32) ((1 + i * 7919) % V);
  g_autofree float *full = g_new (float, (gsize) T * V), *inc = g_new (float, (gsize) T * V);
  g_assert_true (lp_forward_logits (fw, toks, T, NULL, full, &error));
  g_assert_no_error (error);
  decode_each (fw, toks, T, inc);
  for (int t = 0; t < T; t++)
    {
      /* f32 sums in other orders through 30 layers: agreement to about
       * 1e-5 of the logits' norm; a wrong block or position is far off. */
      lp_test_assert_close (inc + (gsize) t * V, full + (gsize) t * V, V, 5e-5);
      int a = 0, b = 0;
      for (int i = 1; i < V; i++)
        {
          a = inc[(gsize) t * V + i] > inc[(gsize) t * V + a] ? i : a;
          b = full[(gsize) t * V + i] > full[(gsize) t * V + b] ? i : b;
        }
      g_assert_cmpint (a, ==, b);
    }

  /* 8-bit activations (generate's: the integer kernels through the graph's
   * matmul nodes): token by token (one row a product) and the whole
   * sequence (groups of rows) compute the same integers per block, summed
   * in the same order; both are off the f32 logits by the rounding (a few
   * percent on these random tokens). */
  g_autoptr (LpForward) fw8 = lp_forward_new (m, NULL, &error);
  g_assert_no_error (error);
  lp_forward_set_int8_activations (fw8, TRUE);
  g_autofree float *full8 = g_new (float, (gsize) T * V);
  g_assert_true (lp_forward_logits (fw8, toks, T, NULL, full8, &error));
  g_assert_no_error (error);
  decode_each (fw8, toks, T, inc);
  for (int t = 0; t < T; t++)
    {
      double e8 = rel_error (inc + (gsize) t * V, full8 + (gsize) t * V, V);
      /* Position 0 attends to itself alone (exact on both paths): bit for
       * bit.  Later, attention's last bits differ between the paths, and a
       * rounding to 8 bits amplifies a last-bit difference now and then to
       * a code's step (1/127 of a block's largest value). */
      if (t == 0)
        g_assert_cmpfloat (e8, ==, 0.0);
      g_assert_cmpfloat (e8, <, 5e-2);
      double e = rel_error (inc + (gsize) t * V, full + (gsize) t * V, V);
      if (g_test_verbose ())
        g_test_message ("position %d: 8-bit activations off the f32 logits by %.2e", t, e);
      g_assert_cmpfloat (e, >, 1e-3);
      g_assert_cmpfloat (e, <, 0.2);
    }
}

int
main (int argc, char **argv)
{
  /* Two worker shares at least, whatever the machine's cores. */
  g_setenv ("LLMPRESS_THREADS", "3", TRUE);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gemv/types", test_gemv_types);
  g_test_add_func ("/gemv/supports", test_gemv_supports);
  g_test_add_func ("/gemv/q8-types", test_gemm_q8_types);
  g_test_add_func ("/gemv/ggml-order", test_ggml_mul_mat_q);
  g_test_add_func ("/gemv/ggml-order-f16", test_ggml_mul_mat_f16);
  g_test_add_func ("/parallel/sdk-covers", test_sdk_parallel_for_covers);
  g_test_add_func ("/parallel/sdk-concurrent", test_sdk_parallel_for_concurrent);
  g_test_add_func ("/gemv/smollm2-incremental-matches-full", test_smollm2_incremental_matches_full);
  return g_test_run ();
}
