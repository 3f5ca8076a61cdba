/* Integer grids into GGUF as ggml block types (formats/grid_blocks.c):
 *  - each kind of grid gets the type the design names (symmetric 4 bits and
 *    anything of 3 bits or fewer Q4_0, asymmetric 4 bits Q4_1, 5 bits Q5_0 /
 *    Q5_1, 8 bits Q8_0 while code - zero fits int8, larger groups and
 *    act-order with static groups by repeating the scale per 32-block), or
 *    f32 with the reason where no block type holds it; the blocks decode to
 *    the grid's very values but for Q4_1's f16 offset, whose changes are
 *    counted and bounded by half an f16 step; a pruned grid keeps its zeros
 *    exact (Q5_0 where Q4_1's offsets are not);
 *  - GPTQ int4 g32 on stories260K (TinyStories split, ../shared): the GGUF is at most 0.6x the
 *    dense-f32 file, reads back to the in-memory perplexity within 1e-3,
 *    reports how many weights the offset moved; GPTQ and compressed-tensors
 *    directories from our Hugging Face writer convert to the same GGUF;
 *  - a checkpoint in AutoGPTQ's layout written by a tiny numpy writer
 *    converts to Q4_1 holding the writer's values (skips without numpy /
 *    safetensors / gguf);
 *  - gguf-py reads the types and dequantizes to the f32 file's values (the
 *    same count of changed weights), and llama.cpp loads the file (both skip
 *    without python3's gguf / llama_cpp). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "grid-blocks.h"
#include "testutil.h"

/* A grid with every code random in range and each group's zero random in
 * [1, 2^bits - 1] (symmetric: 2^(bits-1)), scales f16 of 1e-3 .. 3e-2
 * (pow2: powers of two, so that -scale * zero is exact in f16).  zero_near:
 * codes within 127 of the zero (an 8-bit grid that fits int8). */
static LpIntGrid *
make_grid (int rows, int cols, int bits, int group, gboolean symmetric, gboolean pow2, gboolean zero_near,
           guint32 seed)
{
  g_autoptr (GError) error = NULL;
  LpIntGrid *g = lp_int_grid_new (rows, cols, bits, group, symmetric, &error);
  g_assert_no_error (error);
  g_autoptr (GRand) rand = g_rand_new_with_seed (seed);
  int maxq = (1 << bits) - 1;
  for (gint64 j = 0; j < (gint64) rows * g->n_groups; j++)
    {
      float s = pow2 ? ldexpf (1.f, g_rand_int_range (rand, -10, -5)) : (float) g_rand_double_range (rand, 1e-3, 3e-2);
      g->scales[j] = lp_f32_to_f16 (s);
      g->zeros[j] = symmetric ? (guint8) (1 << (bits - 1)) : (guint8) g_rand_int_range (rand, 1, maxq + 1);
    }
  for (gint64 r = 0; r < rows; r++)
    for (gint64 c = 0; c < cols; c++)
      {
        int z = g->zeros[r * g->n_groups + g->g_idx[c]];
        int lo = zero_near ? MAX (0, z - 127) : 0, hi = zero_near ? MIN (maxq, z + 127) : maxq;
        g->codes[r * cols + c] = (guint8) g_rand_int_range (rand, lo, hi + 1);
      }
  return g;
}

/* Encode g as `type`, decode the blocks, and compare with the grid: every
 * value equal but where the offset moved one (then by at most half an f16
 * step of the offset); returns how many moved. */
static guint64
check_encode (const LpIntGrid *g, LpDType type)
{
  guint64 row_bytes = 0;
  g_assert_true (lp_dtype_row_bytes (type, (guint64) g->cols, &row_bytes, NULL));
  g_autofree guint8 *blocks = g_malloc (row_bytes * (gsize) g->rows);
  LpGridBlockChange c = { 0 };
  lp_grid_blocks_encode (g, type, blocks, &c);
  g_assert_cmpuint (c.n_weights, ==, (guint64) (g->rows * g->cols));
  gsize n = (gsize) (g->rows * g->cols);
  g_autofree float *want = g_new (float, n);
  g_autofree float *got = g_new (float, n);
  lp_int_grid_dequantize (g, want);
  g_assert_true (lp_dtype_to_f32 (type, blocks, got, n, NULL));
  guint64 moved = 0;
  double max_moved = 0;
  for (gint64 r = 0; r < g->rows; r++)
    for (gint64 k = 0; k < g->cols; k++)
      {
        gsize i = (gsize) (r * g->cols + k);
        if (got[i] == want[i])
          continue;
        gint64 j = r * g->n_groups + g->g_idx[k];
        double m = fabs (lp_f16_to_f32 (g->scales[j]) * g->zeros[j]);
        /* Half an f16 step at m: 2^(floor(log2 m) - 11). */
        g_assert_cmpfloat (fabs ((double) got[i] - want[i]), <=, ldexp (1.0, ilogb (m) - 11));
        moved++;
        max_moved = MAX (max_moved, fabs ((double) got[i] - want[i]));
      }
  g_assert_cmpuint (moved, ==, c.n_changed);
  g_assert_cmpfloat (max_moved, ==, c.max_change);
  return moved;
}

typedef struct {
  const char *what;
  int rows, cols, bits, group;
  gboolean symmetric, pow2, zero_near;
  LpDType type;        /* expected */
  gboolean exact;      /* no weight moves */
  const char *why;     /* expected reason for f32 */
} GridCase;

static void
test_types (void)
{
  static const GridCase cases[] = {
    { "symmetric 4 bits g32", 8, 64, 4, 32, TRUE, FALSE, FALSE, LP_DTYPE_Q4_0, TRUE, NULL },
    { "asymmetric 4 bits g32", 8, 64, 4, 32, FALSE, FALSE, FALSE, LP_DTYPE_Q4_1, FALSE, NULL },
    { "asymmetric 4 bits g32, power-of-two scales", 8, 64, 4, 32, FALSE, TRUE, FALSE, LP_DTYPE_Q4_1, TRUE, NULL },
    { "asymmetric 4 bits g128 (scale repeated per block)", 4, 256, 4, 128, FALSE, FALSE, FALSE, LP_DTYPE_Q4_1, FALSE, NULL },
    { "asymmetric 3 bits g32", 8, 64, 3, 32, FALSE, FALSE, FALSE, LP_DTYPE_Q4_0, TRUE, NULL },
    { "asymmetric 2 bits g64", 8, 128, 2, 64, FALSE, FALSE, FALSE, LP_DTYPE_Q4_0, TRUE, NULL },
    { "symmetric 5 bits g32", 8, 64, 5, 32, TRUE, FALSE, FALSE, LP_DTYPE_Q5_0, TRUE, NULL },
    { "asymmetric 5 bits g32", 8, 64, 5, 32, FALSE, FALSE, FALSE, LP_DTYPE_Q5_1, FALSE, NULL },
    { "symmetric 8 bits g128", 4, 256, 8, 128, TRUE, FALSE, FALSE, LP_DTYPE_Q8_0, TRUE, NULL },
    { "asymmetric 8 bits, codes within int8 of the zero", 8, 64, 8, 32, FALSE, FALSE, TRUE, LP_DTYPE_Q8_0, TRUE, NULL },
    { "asymmetric 8 bits", 8, 64, 8, 32, FALSE, FALSE, FALSE, LP_DTYPE_F32, TRUE, "beyond int8" },
    { "groups of 16", 8, 64, 4, 16, FALSE, FALSE, FALSE, LP_DTYPE_F32, TRUE, "groups not a multiple of 32" },
    { "rows of 48", 8, 48, 4, 16, FALSE, FALSE, FALSE, LP_DTYPE_F32, TRUE, "rows not a multiple of 32" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const GridCase *k = &cases[i];
      g_autoptr (LpIntGrid) g = make_grid (k->rows, k->cols, k->bits, k->group, k->symmetric, k->pow2, k->zero_near, 7 + i);
      const char *why = NULL;
      LpDType type = lp_grid_block_type (g, FALSE, &why);
      g_test_message ("%s: %s%s%s", k->what, lp_dtype_name (type), why ? ", " : "", why ? why : "");
      g_assert_cmpstr (lp_dtype_name (type), ==, lp_dtype_name (k->type));
      if (type == LP_DTYPE_F32)
        {
          g_assert_nonnull (strstr (why, k->why));
          continue;
        }
      guint64 moved = check_encode (g, type);
      if (k->exact)
        g_assert_cmpuint (moved, ==, 0);
      else
        g_assert_cmpuint (moved, >, 0);
    }
}

/* Act-order: static groups (whole 32-column blocks permuted) fit, each
 * block with its group's scale; columns of a group scattered do not. */
static void
test_act_order (void)
{
  g_autoptr (LpIntGrid) g = make_grid (4, 128, 4, 32, FALSE, FALSE, FALSE, 99);
  static const int order[] = { 2, 0, 3, 1 };
  for (int c = 0; c < 128; c++)
    g->g_idx[c] = order[c / 32];
  const char *why = NULL;
  g_assert_cmpint (lp_grid_block_type (g, FALSE, &why), ==, LP_DTYPE_Q4_1);
  check_encode (g, LP_DTYPE_Q4_1);
  int t = g->g_idx[5];
  g->g_idx[5] = g->g_idx[40];
  g->g_idx[40] = t;
  g_assert_cmpint (lp_grid_block_type (g, FALSE, &why), ==, LP_DTYPE_F32);
  g_assert_nonnull (strstr (why, "act-order"));
}

/* A pruned grid (keep_zeros) keeps its zeros exact: Q4_1 only when every
 * offset is exact in f16, else Q5_0 (4 bits) with the reason. */
static void
test_pruned (void)
{
  g_autoptr (LpIntGrid) g = make_grid (8, 64, 4, 32, FALSE, FALSE, FALSE, 5);
  const char *why = NULL;
  g_assert_cmpint (lp_grid_block_type (g, TRUE, &why), ==, LP_DTYPE_Q5_0);
  g_assert_nonnull (strstr (why, "pruned"));
  g_assert_cmpuint (check_encode (g, LP_DTYPE_Q5_0), ==, 0);
  g_autoptr (LpIntGrid) p2 = make_grid (8, 64, 4, 32, FALSE, TRUE, FALSE, 5);
  g_assert_cmpint (lp_grid_block_type (p2, TRUE, &why), ==, LP_DTYPE_Q4_1);
  g_assert_null (why);
  g_autoptr (LpIntGrid) g5 = make_grid (8, 64, 5, 32, FALSE, FALSE, FALSE, 6);
  g_assert_cmpint (lp_grid_block_type (g5, TRUE, &why), ==, LP_DTYPE_Q8_0);
  g_assert_cmpuint (check_encode (g5, LP_DTYPE_Q8_0), ==, 0);
}

/* ---- stories260K through the CLI ---- */

/* stories260K and TinyStories from ../shared (the split:
 * calibration from token 300000 on, evaluation before it), or NULL after
 * g_test_skip. */
static const LpTestStories *
stories (void)
{
  static LpTestStories s;
  if (s.model == NULL && !lp_test_stories_get (&s))
    return NULL;
  return &s;
}

static const char *
out_file (const char *name)
{
  static GPtrArray *keep;
  if (keep == NULL)
    keep = g_ptr_array_new_with_free_func (g_free);
  char *p = g_build_filename (lp_test_tmpdir (), "stories", name, NULL);
  g_ptr_array_add (keep, p);
  return p;
}

#define EVAL_SETTINGS "data_range=:300000\nmax_windows=8\n"

/* Perplexities of model files (NULL-terminated) over the evaluation split,
 * as the spec's eval node measures the model in memory; one run. */
static void
eval_files (const char *const *paths, double *ppl)
{
  g_autoptr (GString) spec = g_string_new (NULL);
  for (int i = 0; paths[i]; i++)
    g_string_append_printf (spec, "[l%d]\npass=load\npath=%s\n[e%d]\npass=eval\ninput=l%d\ndata=%s\n" EVAL_SETTINGS, i,
                            paths[i], i, i, stories ()->data);
  g_autofree char *path = lp_test_write_file ("grid-gguf-eval.ini", spec->str, spec->len);
  g_autofree char *out = g_build_filename (lp_test_tmpdir (), "eval", NULL);
  g_autofree char *err = NULL;
  const char *args[] = { "run", path, "-o", out, "--no-cache", "-q", NULL };
  if (lp_test_run_cliv (NULL, &err, args) != 0)
    g_error ("%s", err);
  for (int i = 0; paths[i]; i++)
    {
      g_autofree char *node = g_strdup_printf ("e%d", i);
      ppl[i] = lp_test_report_metric (out, node, "perplexity");
    }
}

static gsize
file_size (const char *path)
{
  g_autoptr (GMappedFile) f = g_mapped_file_new (path, FALSE, NULL);
  g_assert_nonnull (f);
  return g_mapped_file_get_length (f);
}

/* The type of tensor `name` in a GGUF file as our reader sees it. */
static LpDType
file_type (const char *path, const char *name)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (LpMeta) meta = lp_meta_new ();
  g_autoptr (GPtrArray) ts = lp_gguf_read_tensors (path, meta, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < ts->len; i++)
    if (strcmp (((LpTensor *) ts->pdata[i])->name, name) == 0)
      return ((LpTensor *) ts->pdata[i])->dtype;
  g_error ("%s: no tensor %s", path, name);
}

/* The spec's run: GPTQ int4 g32 (fast calibration: 8 windows of 256), RTN
 * symmetric 4-bit g64 and 8-bit g128, each saved as GGUF (blocks) and with
 * dtype=f32 (the dense fallback), the GPTQ grid also as GPTQ and
 * compressed-tensors directories.  Its stderr (not quiet: the writer's
 * lines) goes to *log; NULL after g_test_skip without ../shared. */
static const char *
stories_run (char **log)
{
  static char *out;
  static char *saved_err;
  if (out != NULL)
    {
      *log = saved_err;
      return out;
    }
  const LpTestStories *s = stories ();
  if (s == NULL)
    return NULL;
  g_autoptr (GString) spec = g_string_new (NULL);
  g_string_append_printf (spec,
                          "[pipeline]\ncalibration=%s\ncalibration_samples=8\ncalibration_seq_len=256\n"
                          "calibration_range=300000:\n[load]\npath=%s\n"
                          "[gptq]\npass=quantize.gptq\ninput=load\nbits=4\ngroup_size=32\n"
                          "[e]\npass=eval\ninput=gptq\ndata=%s\n" EVAL_SETTINGS
                          "[hf]\npass=save\ninput=gptq\nformat=safetensors\npath=gptq-hf\n"
                          "[ct]\npass=save\ninput=gptq\nformat=safetensors\nquant_format=compressed-tensors\npath=gptq-ct\n"
                          "[r4]\npass=quantize.rtn\ninput=load\nbits=4\ngroup_size=64\nsymmetric=true\n"
                          "[r8]\npass=quantize.rtn\ninput=load\nbits=8\ngroup_size=128\nsymmetric=true\n",
                          s->data, s->model, s->data);
  const char *nodes[] = { "gptq", "r4", "r8" };
  for (guint i = 0; i < G_N_ELEMENTS (nodes); i++)
    g_string_append_printf (spec,
                            "[s-%s]\npass=save\ninput=%s\npath=%s.gguf\n"
                            "[f-%s]\npass=save\ninput=%s\ndtype=f32\npath=%s-f32.gguf\n",
                            nodes[i], nodes[i], nodes[i], nodes[i], nodes[i], nodes[i]);
  g_autofree char *path = lp_test_write_file ("grid-gguf.ini", spec->str, spec->len);
  out = g_build_filename (lp_test_tmpdir (), "stories", NULL);
  const char *args[] = { "run", path, "-o", out, "--no-cache", NULL };
  if (lp_test_run_cliv (NULL, &saved_err, args) != 0)
    g_error ("%s", saved_err);
  *log = saved_err;
  return out;
}

static void
test_stories_gptq (void)
{
  char *log = NULL;
  const char *out = stories_run (&log);
  if (out == NULL)
    return;
  const char *blocks = out_file ("gptq.gguf"), *dense = out_file ("gptq-f32.gguf");
  double mem = lp_test_report_metric (out, "e", "perplexity");
  const char *files[] = { blocks, dense, out_file ("r4.gguf"), out_file ("r4-f32.gguf"), NULL };
  double ppl[4];
  eval_files (files, ppl);
  gsize n_blocks = file_size (blocks), n_dense = file_size (dense);
  g_test_message ("GPTQ int4 g32: %" G_GSIZE_FORMAT " bytes as blocks, %" G_GSIZE_FORMAT
                  " as f32 (%.3fx); perplexity %.6f in memory, %.6f read back from the blocks, %.6f from f32",
                  n_blocks, n_dense, (double) n_blocks / n_dense, mem, ppl[0], ppl[1]);
  g_assert_cmpfloat ((double) n_blocks, <=, 0.6 * n_dense);
  g_assert_cmpfloat (ppl[1], ==, mem);
  g_assert_cmpfloat (fabs (ppl[0] - mem), <=, 1e-3);
  g_assert_cmpint (file_type (blocks, "blk.0.attn_v.weight"), ==, LP_DTYPE_Q4_1);
  g_assert_cmpint (file_type (blocks, "blk.0.ffn_down.weight"), ==, LP_DTYPE_F32);
  /* The offset's rounding is counted, and the f32 fallback named. */
  g_autofree char *gptq_line = g_strconcat (blocks, ": integer grids as ggml blocks: ", NULL);
  g_assert_nonnull (strstr (log, gptq_line));
  g_assert_nonnull (strstr (log, "weights changed, by at most"));
  g_assert_nonnull (strstr (log, "blk.0.ffn_down.weight as f32 (rows not a multiple of 32 columns)"));
  /* The symmetric grids are exact: no such line for them, and the same
   * perplexity as their f32 values to ~1e-6 (the block kernels sum in
   * another order). */
  g_autofree char *r4_line = g_strconcat (out_file ("r4.gguf"), ": integer grids as ggml blocks: ", NULL);
  g_assert_null (strstr (log, r4_line));
  g_assert_cmpint (file_type (out_file ("r4.gguf"), "blk.0.attn_v.weight"), ==, LP_DTYPE_Q4_0);
  g_assert_cmpint (file_type (out_file ("r8.gguf"), "blk.0.attn_v.weight"), ==, LP_DTYPE_Q8_0);
  g_test_message ("RTN symmetric int4 g64 (Q4_0): perplexity %.6f from the blocks, %.6f from f32", ppl[2], ppl[3]);
  g_assert_cmpfloat (fabs (ppl[2] - ppl[3]), <=, 1e-5);
}

/* GPTQ and compressed-tensors directories (our Hugging Face writer) convert
 * to a GGUF of block types with the grid's perplexity.  The
 * compressed-tensors one holds every grid, so its GGUF is the one the
 * pipeline wrote from memory; GPTQ's packing cannot hold the FFN's 172
 * outputs (the writer keeps ffn_gate / ffn_up dense), so there those
 * stay f32 and only the attention's offsets are rounded. */
static void
test_checkpoints_convert (void)
{
  char *log = NULL;
  const char *out = stories_run (&log);
  if (out == NULL)
    return;
  double mem = lp_test_report_metric (out, "e", "perplexity");
  const char *dirs[] = { "gptq-hf", "gptq-ct" };
  const char *files[G_N_ELEMENTS (dirs) + 2] = { out_file ("gptq.gguf") };
  for (guint i = 0; i < G_N_ELEMENTS (dirs); i++)
    {
      g_autofree char *name = g_strconcat (dirs[i], ".gguf", NULL);
      files[i + 1] = out_file (name);
      g_autofree char *o = NULL, *err = NULL;
      const char *args[] = { "convert", out_file (dirs[i]), files[i + 1], NULL };
      if (lp_test_run_cliv (&o, &err, args) != 0)
        g_error ("%s", err);
      g_assert_nonnull (strstr (err, "weights changed, by at most"));
      g_assert_cmpint (file_type (files[i + 1], "blk.0.attn_v.weight"), ==, LP_DTYPE_Q4_1);
      g_assert_cmpint (file_type (files[i + 1], "blk.0.attn_q.weight"), ==, LP_DTYPE_Q4_1);
    }
  double ppl[G_N_ELEMENTS (dirs) + 1];
  eval_files (files, ppl);
  for (guint i = 0; i < G_N_ELEMENTS (dirs); i++)
    {
      g_test_message ("%s -> GGUF: perplexity %.6f (in memory %.6f, the pipeline's GGUF %.6f)", dirs[i], ppl[i + 1], mem,
                      ppl[0]);
      if (strcmp (dirs[i], "gptq-ct") == 0)
        g_assert_cmpfloat (ppl[i + 1], ==, ppl[0]);
      g_assert_cmpfloat (fabs (ppl[i + 1] - mem), <=, 1e-3);
    }
}

/* ---- gguf-py and llama.cpp ---- */

static const char oracle[] =
  "import sys, numpy as np\n"
  "from gguf import GGUFReader, quants\n"
  "cmd = sys.argv[1]\n"
  "if cmd == 'compare':\n"
  "    # every block-typed tensor dequantized by gguf-py against the f32 file\n"
  "    blocks, dense = GGUFReader(sys.argv[2]), GGUFReader(sys.argv[3])\n"
  "    ref = {t.name: t for t in dense.tensors}\n"
  "    types, changed, most = set(), 0, 0.0\n"
  "    for t in blocks.tensors:\n"
  "        if t.tensor_type.name in ('F32', 'F16'): continue\n"
  "        types.add(t.tensor_type.name)\n"
  "        got = quants.dequantize(t.data, t.tensor_type).reshape(-1)\n"
  "        want = np.asarray(ref[t.name].data, dtype=np.float32).reshape(-1)\n"
  "        d = np.abs(got.astype(np.float64) - want)\n"
  "        changed += int((got != want).sum()); most = max(most, float(d.max()))\n"
  "    print('types', ','.join(sorted(types)), 'changed', changed, 'max %.6g' % most)\n"
  "elif cmd == 'autogptq':\n"
  "    # a tiny AutoGPTQ writer: RTN asymmetric int4 g32 of every *_proj of a\n"
  "    # dense Hugging Face directory whose shape AutoGPTQ packs, as\n"
  "    # qweight / qzeros (zero - 1) / scales / g_idx and quantize_config.json\n"
  "    import json, os\n"
  "    from safetensors.numpy import load_file, save_file\n"
  "    d = sys.argv[2]\n"
  "    st, out, n = load_file(os.path.join(d, 'model.safetensors')), {}, 0\n"
  "    for name, w in st.items():\n"
  "        if not name.endswith('_proj.weight') or w.shape[0] % 8 or w.shape[1] % 32:\n"
  "            out[name] = w; continue\n"
  "        N, K = w.shape; G = K // 32\n"
  "        x = w.astype(np.float32).reshape(N, G, 32)\n"
  "        lo, hi = np.minimum(x.min(axis=2), 0), np.maximum(x.max(axis=2), 0)\n"
  "        scale = ((hi - lo) / 15).astype(np.float16); scale[scale == 0] = 1e-3\n"
  "        s = scale.astype(np.float32)\n"
  "        zero = np.clip(np.round(-lo / s), 1, 15).astype(np.int64)\n"
  "        q = np.clip(np.round(x / s[..., None]) + zero[..., None], 0, 15).astype(np.uint32)\n"
  "        qk = q.reshape(N, K)\n"
  "        qw = np.zeros((K // 8, N), np.uint32)\n"
  "        for j in range(8): qw |= qk[:, j::8].T << np.uint32(4 * j)\n"
  "        zs = (zero - 1).astype(np.uint32).T\n"
  "        qz = np.zeros((G, N // 8), np.uint32)\n"
  "        for j in range(8): qz |= zs[:, j::8] << np.uint32(4 * j)\n"
  "        p = name[:-len('weight')]\n"
  "        out[p + 'qweight'], out[p + 'qzeros'] = qw.view(np.int32), qz.view(np.int32)\n"
  "        out[p + 'scales'], out[p + 'g_idx'] = scale.T.copy(), (np.arange(K) // 32).astype(np.int32)\n"
  "        if name == 'model.layers.0.self_attn.v_proj.weight':\n"
  "            np.save(os.path.join(d, 'v_proj.npy'), (s[..., None] * (q.astype(np.float32) - zero[..., None])).reshape(N, K))\n"
  "            np.save(os.path.join(d, 'v_proj_m.npy'), np.repeat(s * zero, 32, axis=1))\n"
  "        n += 1\n"
  "    os.remove(os.path.join(d, 'model.safetensors'))\n"
  "    save_file(out, os.path.join(d, 'model.safetensors'), metadata={'format': 'pt'})\n"
  "    # AutoGPTQ's own quantize_config.json (no quant_method), not config.json's\n"
  "    json.dump({'bits': 4, 'group_size': 32, 'damp_percent': 0.01, 'desc_act': False, 'static_groups': False,\n"
  "               'sym': False, 'true_sequential': True, 'model_name_or_path': None, 'model_file_base_name': 'model'},\n"
  "              open(os.path.join(d, 'quantize_config.json'), 'w'), indent=2)\n"
  "    print('quantized', n)\n"
  "elif cmd == 'autogptq-check':\n"
  "    # the GGUF's v_proj (not row-permuted) against the writer's own values:\n"
  "    # equal but for Q4_1's f16 offset, within half an f16 step of it\n"
  "    d, f = sys.argv[2], sys.argv[3]\n"
  "    t = [t for t in GGUFReader(f).tensors if t.name == 'blk.0.attn_v.weight'][0]\n"
  "    got = quants.dequantize(t.data, t.tensor_type).astype(np.float64)\n"
  "    want = np.load(d + '/v_proj.npy').astype(np.float64)\n"
  "    bound = np.load(d + '/v_proj_m.npy').astype(np.float64) * 2.0 ** -11\n"
  "    diff = np.abs(got - want)\n"
  "    print(t.tensor_type.name, 'changed', int((diff > 0).sum()), 'of', diff.size, 'within', bool((diff <= bound).all()))\n"
  "elif cmd == 'load':\n"
  "    import llama_cpp\n"
  "    llm = llama_cpp.Llama(model_path=sys.argv[2], n_ctx=64, verbose=False)\n"
  "    ids = llm.tokenize(b'Once upon a time, there was a little girl.', add_bos=True)\n"
  "    llm.eval(ids)\n"
  "    print('loaded', llm.n_vocab(), 'tokens', len(ids), 'finite', bool(np.isfinite(np.asarray(llm.scores[:len(ids)])).all()))\n";

/* gguf-py reads Q4_1, Q4_0 and Q8_0 and decodes them to the f32 file's
 * values: exactly for the symmetric grids, and for GPTQ's Q4_1 with as many
 * weights changed as the writer reported. */
static void
test_gguf_py (void)
{
  if (!lp_test_python_has ("gguf, numpy", "no gguf-py to decode the blocks with"))
    return;
  char *log = NULL;
  if (stories_run (&log) == NULL)
    return;
  static const struct {
    const char *node, *types;
  } want[] = { { "gptq", "Q4_1" }, { "r4", "Q4_0" }, { "r8", "Q8_0" } };
  for (guint i = 0; i < G_N_ELEMENTS (want); i++)
    {
      g_autofree char *b = g_strdup_printf ("%s.gguf", want[i].node), *d = g_strdup_printf ("%s-f32.gguf", want[i].node);
      const char *args[] = { "compare", out_file (b), out_file (d), NULL };
      g_autofree char *got = lp_test_python_run (oracle, args);
      char types[64];
      guint64 changed = 0;
      g_assert_cmpint (sscanf (got, "types %63s changed %" G_GUINT64_FORMAT, types, &changed), ==, 2);
      g_assert_cmpstr (types, ==, want[i].types);
      if (i > 0)
        {
          g_assert_cmpuint (changed, ==, 0);
          continue;
        }
      g_autofree char *line = g_strdup_printf ("%s: integer grids as ggml blocks: %" G_GUINT64_FORMAT " of ",
                                               out_file (b), changed);
      g_assert_cmpuint (changed, >, 0);
      g_assert_nonnull (strstr (log, line));
    }
}

/* A checkpoint made outside llmpress: a dense Hugging Face directory of
 * stories260K turned into AutoGPTQ's layout by a tiny numpy writer
 * (RTN int4 g32, quantize_config.json as AutoGPTQ writes it beside
 * config.json), converted to GGUF: Q4_1 whose values are the writer's
 * own but for the f16 offset, and the directory's perplexity. */
static void
test_autogptq_fixture (void)
{
  if (!lp_test_python_has ("numpy, safetensors, gguf", "no AutoGPTQ-layout fixture"))
    return;
  const LpTestStories *s = stories ();
  if (s == NULL)
    return;
  const char *dir = out_file ("autogptq"), *gguf = out_file ("autogptq.gguf");
  g_autofree char *o = NULL, *err = NULL;
  const char *to_hf[] = { "convert", s->model, dir, "--format", "hf", NULL };
  if (lp_test_run_cliv (&o, &err, to_hf) != 0)
    g_error ("%s", err);
  const char *make[] = { "autogptq", dir, NULL };
  g_autofree char *made = lp_test_python_run (oracle, make);
  g_assert_nonnull (strstr (made, "quantized 20"));
  g_clear_pointer (&o, g_free);
  g_clear_pointer (&err, g_free);
  const char *convert[] = { "convert", dir, gguf, NULL };
  if (lp_test_run_cliv (&o, &err, convert) != 0)
    g_error ("%s", err);
  g_assert_nonnull (strstr (err, "weights changed, by at most"));
  const char *check[] = { "autogptq-check", dir, gguf, NULL };
  g_autofree char *checked = lp_test_python_run (oracle, check);
  g_assert_true (g_str_has_prefix (checked, "Q4_1 "));
  g_assert_nonnull (strstr (checked, "within True"));
  const char *files[] = { dir, gguf, NULL };
  double ppl[2];
  eval_files (files, ppl);
  g_test_message ("AutoGPTQ-layout checkpoint: perplexity %.6f from the directory, %.6f from its GGUF", ppl[0], ppl[1]);
  g_assert_cmpfloat (fabs (ppl[0] - ppl[1]), <=, 1e-3);
}

/* llama.cpp loads the Q4_1 file and runs it. */
static void
test_llama_cpp_loads (void)
{
  if (!lp_test_python_has ("llama_cpp, gguf, numpy", "no llama.cpp to load the file"))
    return;
  char *log = NULL;
  if (stories_run (&log) == NULL)
    return;
  const char *args[] = { "load", out_file ("gptq.gguf"), NULL };
  g_autofree char *got = lp_test_python_run (oracle, args);
  g_assert_nonnull (strstr (got, "loaded 512 "));
  g_assert_nonnull (strstr (got, "finite True"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/grid-gguf/types", test_types);
  g_test_add_func ("/grid-gguf/act-order", test_act_order);
  g_test_add_func ("/grid-gguf/pruned", test_pruned);
  g_test_add_func ("/grid-gguf/stories-gptq", test_stories_gptq);
  g_test_add_func ("/grid-gguf/checkpoints-convert", test_checkpoints_convert);
  g_test_add_func ("/grid-gguf/gguf-py", test_gguf_py);
  g_test_add_func ("/grid-gguf/autogptq", test_autogptq_fixture);
  g_test_add_func ("/grid-gguf/llama-cpp", test_llama_cpp_loads);
  return g_test_run ();
}
