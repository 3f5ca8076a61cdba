/* llmpress report: on a hand-made report.json the Pareto front is the one
 * worked out by hand, the SVGs parse (GMarkup), the table names the best
 * model within the budget, a bad report.json is one line and exit 1, and
 * headless Chromium renders the page into a screenshot that is not blank
 * (skipped without chromium). */
#include "config.h"

#include <string.h>
#include <gio/gio.h>

#include "testutil.h"

/* Bits per weight and perplexity: the front by hand is load, q[bits=4],
 * q[bits=3] and r[bits=2]; r[bits=3] loses to q[bits=3] (bigger and
 * worse), t[bits=4] to q[bits=4] (as big, worse), u[bits=2] to r[bits=2]
 * (bigger and worse). */
static const char report_json[] =
  "{\"llmpress\":\"0.1.0\",\"spec\":\"hand.ini\",\"started\":\"2026-12-03T00:00:00Z\",\"nodes\":[\n"
  "{\"name\":\"load\",\"pass\":\"load\",\"inputs\":{},\"duration\":0.1,\"output_bytes\":1000000},\n"
  "{\"name\":\"eval-dense\",\"pass\":\"eval\",\"inputs\":{\"input\":\"load\"},\"duration\":1.0,\"metrics\":{\"perplexity\":5.0,"
  "\"nll_stderr\":0.01,\"bytes\":1000000,\"bits_per_weight\":32.0,\"windows\":8,\"ctx\":256,\"tokens_per_s\":1000}},\n"
  "{\"name\":\"q[bits=4]\",\"pass\":\"quantize.rtn\",\"inputs\":{\"input\":\"load\"},\"duration\":0.5},\n"
  "{\"name\":\"eval[bits=4]\",\"pass\":\"eval\",\"inputs\":{\"input\":\"q[bits=4]\",\"reference\":\"load\"},\"duration\":1.0,"
  "\"metrics\":{\"perplexity\":5.2,\"kl\":0.01,\"top1\":0.97,\"bytes\":150000,\"bits_per_weight\":4.5,"
  "\"error.blk.0.attn_q.weight\":0.05,\"error.blk.1.attn_q.weight\":0.07,\"error.blk.0.ffn_up.weight\":0.04,"
  "\"error.token_embd.weight\":0.02}},\n"
  "{\"name\":\"q[bits=3]\",\"pass\":\"quantize.rtn\",\"inputs\":{\"input\":\"load\"},\"duration\":0.5},\n"
  "{\"name\":\"eval[bits=3]\",\"pass\":\"eval\",\"inputs\":{\"input\":\"q[bits=3]\",\"reference\":\"load\"},\"duration\":1.0,"
  "\"metrics\":{\"perplexity\":6.0,\"bytes\":120000,\"bits_per_weight\":3.5,\"error.blk.0.attn_q.weight\":0.15,"
  "\"error.blk.1.attn_q.weight\":0.17}},\n"
  "{\"name\":\"e-r3\",\"pass\":\"eval\",\"inputs\":{\"input\":\"r[bits=3]\",\"reference\":\"load\"},\"metrics\":"
  "{\"perplexity\":6.5,\"bytes\":125000,\"bits_per_weight\":3.6}},\n"
  "{\"name\":\"e-t4\",\"pass\":\"eval\",\"inputs\":{\"input\":\"t[bits=4]\",\"reference\":\"load\"},\"metrics\":"
  "{\"perplexity\":5.5,\"bytes\":150000,\"bits_per_weight\":4.5}},\n"
  "{\"name\":\"e-r2\",\"pass\":\"eval\",\"inputs\":{\"input\":\"r[bits=2]\",\"reference\":\"load\"},\"metrics\":"
  "{\"perplexity\":9.0,\"bytes\":90000,\"bits_per_weight\":2.7}},\n"
  "{\"name\":\"e-u2\",\"pass\":\"eval\",\"inputs\":{\"input\":\"u[bits=2]\",\"reference\":\"load\"},\"metrics\":"
  "{\"perplexity\":9.5,\"bytes\":100000,\"bits_per_weight\":3.0}},\n"
  "{\"name\":\"save\",\"pass\":\"save\",\"inputs\":{\"input\":\"q[bits=4]\"},\"output_bytes\":151000}\n"
  "]}\n";

static char *
write_run (const char *name, const char *json)
{
  g_autofree char *dir = lp_test_mkdir (name);
  g_autofree char *path = g_build_filename (dir, "report.json", NULL);
  lp_test_write_text (path, json);
  return g_steal_pointer (&dir);
}

/* What the parser saw of an SVG: circles by class, cells, the front's line. */
typedef struct {
  GPtrArray *front, *others;  /* data-node of each circle */
  guint cells, front_points;
  gboolean svg_root;
} Seen;

static void
seen_start (GMarkupParseContext *ctx, const char *element, const char **names, const char **values, gpointer user_data,
            GError **error)
{
  Seen *s = user_data;
  const char *cls = NULL, *node = NULL, *points = NULL;
  for (guint i = 0; names[i]; i++)
    if (strcmp (names[i], "class") == 0)
      cls = values[i];
    else if (strcmp (names[i], "data-node") == 0)
      node = values[i];
    else if (strcmp (names[i], "points") == 0)
      points = values[i];
  if (strcmp (element, "svg") == 0 && g_markup_parse_context_get_element_stack (ctx)->next == NULL)
    s->svg_root = TRUE;
  if (strcmp (element, "circle") == 0 && node)
    g_ptr_array_add (g_strcmp0 (cls, "front") == 0 ? s->front : s->others, g_strdup (node));
  if (strcmp (element, "rect") == 0 && g_strcmp0 (cls, "cell") == 0)
    s->cells++;
  if (strcmp (element, "polyline") == 0 && g_strcmp0 (cls, "front-line") == 0 && points)
    {
      g_auto (GStrv) pts = g_strsplit (points, " ", -1);
      s->front_points = g_strv_length (pts);
    }
}

static void
parse_svg (const char *path, Seen *s)
{
  g_autofree char *text = lp_test_read_text (path);
  static const GMarkupParser parser = { .start_element = seen_start };
  s->front = g_ptr_array_new_with_free_func (g_free);
  s->others = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GMarkupParseContext) ctx = g_markup_parse_context_new (&parser, 0, s, NULL);
  g_autoptr (GError) error = NULL;
  gboolean ok = g_markup_parse_context_parse (ctx, text, -1, &error) && g_markup_parse_context_end_parse (ctx, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
  g_assert_true (s->svg_root);
}

static void
seen_clear (Seen *s)
{
  g_ptr_array_unref (s->front);
  g_ptr_array_unref (s->others);
}

static gboolean
has_name (GPtrArray *a, const char *name)
{
  return g_ptr_array_find_with_equal_func (a, name, g_str_equal, NULL);
}

static void
test_front (void)
{
  g_autofree char *run = write_run ("run-front", report_json);
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "report", run, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 0);
  g_test_message ("%s", out);
  Seen s = { 0 };
  g_autofree char *svg = g_build_filename (run, "frontier.svg", NULL);
  parse_svg (svg, &s);
  const char *front[] = { "load", "q[bits=4]", "q[bits=3]", "r[bits=2]" };
  const char *others[] = { "r[bits=3]", "t[bits=4]", "u[bits=2]" };
  g_assert_cmpuint (s.front->len, ==, G_N_ELEMENTS (front));
  g_assert_cmpuint (s.others->len, ==, G_N_ELEMENTS (others));
  for (guint i = 0; i < G_N_ELEMENTS (front); i++)
    g_assert_true (has_name (s.front, front[i]));
  for (guint i = 0; i < G_N_ELEMENTS (others); i++)
    g_assert_true (has_name (s.others, others[i]));
  g_assert_cmpuint (s.front_points, ==, G_N_ELEMENTS (front));
  /* Every point labelled with its node (escaped as XML wants). */
  g_autofree char *text = lp_test_read_text (svg);
  g_assert_nonnull (strstr (text, ">u[bits=2]</text>"));
  seen_clear (&s);

  /* The heat map: a cell per error.* figure of every compressed model. */
  Seen h = { 0 };
  g_autofree char *heat = g_build_filename (run, "heatmap.svg", NULL);
  parse_svg (heat, &h);
  g_assert_cmpuint (h.cells, ==, 4 + 2);
  seen_clear (&h);

  /* The table: a row per evaluated model, the front starred, the best
   * model within 3.2 bits per weight against the dense model. */
  g_assert_nonnull (strstr (out, "\nq[bits=3] *"));
  g_assert_nonnull (strstr (out, "\nr[bits=3] "));
  g_assert_nonnull (strstr (out, "compression (q[bits=4], quantize.rtn): 0.5 s; 6.67x smaller; KL to the original 0.0100"));
  g_assert_nonnull (strstr (out, "saved: 151000 bytes (save)"));
  g_assert_nonnull (strstr (out, "best at <= 3.2 bits/weight: r[bits=2], 2.700 bits/weight (90000 bytes), perplexity "
                                 "9.0000, +80.00% against the dense model's 5.0000 (load)"));

  /* The page holds both pictures and needs no other file. */
  g_autofree char *html_path = g_build_filename (run, "report.html", NULL);
  g_autofree char *html = lp_test_read_text (html_path);
  g_assert_nonnull (strstr (html, "<svg"));
  g_assert_nonnull (strstr (strstr (html, "<svg") + 4, "<svg"));
  g_assert_null (strstr (html, "src="));
  g_assert_null (strstr (html, "href="));

  /* -o DIR and another budget. */
  g_autofree char *o = g_build_filename (lp_test_tmpdir (), "report-o", NULL);
  g_autofree char *out2 = NULL, *err2 = NULL;
  const char *args2[] = { "report", run, "-o", o, "--max-bpw", "4.5", NULL };
  g_assert_cmpint (lp_test_run_cliv (&out2, &err2, args2), ==, 0);
  g_assert_nonnull (strstr (out2, "best at <= 4.5 bits/weight: q[bits=4], 4.500 bits/weight"));
  g_autofree char *o_svg = g_build_filename (o, "frontier.svg", NULL);
  g_assert_true (g_file_test (o_svg, G_FILE_TEST_IS_REGULAR));
}

/* One line on stderr, exit 1. */
static void
assert_refused (const char *run, const char *fragment)
{
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "report", run, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 1);
  g_test_message ("%s", err);
  g_assert_true (g_str_has_prefix (err, "llmpress: "));
  g_assert_nonnull (strstr (err, fragment));
  g_assert_cmpuint (strlen (err), ==, (gsize) (strchr (err, '\n') - err) + 1);
}

static void
test_bad_report (void)
{
  g_autofree char *none = g_build_filename (lp_test_tmpdir (), "no-such-run", NULL);
  assert_refused (none, "cannot read the run's report");
  g_autofree char *junk = write_run ("run-junk", "{\"nodes\": [1, 2");
  assert_refused (junk, "cannot read the run's report");
  g_autofree char *shape = write_run ("run-shape", "[1, 2, 3]");
  assert_refused (shape, "expected a run's report (an object with a \"nodes\" array)");
  g_autofree char *nameless = write_run ("run-nameless", "{\"nodes\": [{\"pass\": \"eval\"}]}");
  assert_refused (nameless, "node 1: expected an object with a \"name\"");
  g_autofree char *no_ppl = write_run ("run-no-ppl", "{\"nodes\": [{\"name\": \"eval\", \"metrics\": {\"bytes\": 5}}]}");
  assert_refused (no_ppl, "no node measured a perplexity");
}

/* ---- a PNG's pixels, for the screenshot (8-bit RGB or RGBA, not interlaced) ---- */

static guint32
be32 (const guint8 *p)
{
  return (guint32) p[0] << 24 | (guint32) p[1] << 16 | (guint32) p[2] << 8 | p[3];
}

static int
paeth (int a, int b, int c)
{
  int p = a + b - c, pa = abs (p - a), pb = abs (p - b), pc = abs (p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Rows of width*channels bytes, unfiltered. */
static guint8 *
png_pixels (const guint8 *png, gsize len, guint *width, guint *height, guint *channels)
{
  g_assert_true (len > 33 && memcmp (png, "\x89PNG\r\n\x1a\n", 8) == 0);
  g_autoptr (GByteArray) idat = g_byte_array_new ();
  for (gsize at = 8; at + 12 <= len;)
    {
      guint32 n = be32 (png + at);
      const guint8 *type = png + at + 4, *data = png + at + 8;
      g_assert_true (at + 12 + n <= len);
      if (memcmp (type, "IHDR", 4) == 0)
        {
          *width = be32 (data), *height = be32 (data + 4);
          g_assert_cmpuint (data[8], ==, 8);   /* bit depth */
          g_assert_cmpuint (data[12], ==, 0);  /* not interlaced */
          g_assert_true (data[9] == 2 || data[9] == 6);
          *channels = data[9] == 6 ? 4 : 3;
        }
      else if (memcmp (type, "IDAT", 4) == 0)
        g_byte_array_append (idat, data, n);
      at += 12 + n;
    }
  gsize stride = (gsize) *width * *channels, raw_len = (stride + 1) * *height;
  g_autofree guint8 *raw = g_malloc (raw_len);
  g_autoptr (GZlibDecompressor) z = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_ZLIB);
  g_autoptr (GInputStream) mem = g_memory_input_stream_new_from_data (idat->data, idat->len, NULL);
  g_autoptr (GInputStream) in = g_converter_input_stream_new (mem, G_CONVERTER (z));
  gsize got = 0;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_input_stream_read_all (in, raw, raw_len, &got, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (got, ==, raw_len);
  guint8 *px = g_malloc (stride * *height);
  guint bpp = *channels;
  for (guint y = 0; y < *height; y++)
    {
      const guint8 *f = raw + y * (stride + 1);
      guint8 *row = px + y * stride, *up = y ? row - stride : NULL;
      for (gsize x = 0; x < stride; x++)
        {
          int a = x >= bpp ? row[x - bpp] : 0, b = up ? up[x] : 0, c = up && x >= bpp ? up[x - bpp] : 0;
          int pred = f[0] == 0 ? 0 : f[0] == 1 ? a : f[0] == 2 ? b : f[0] == 3 ? (a + b) / 2 : paeth (a, b, c);
          g_assert_cmpuint (f[0], <=, 4);
          row[x] = (guint8) (f[1 + x] + pred);
        }
    }
  return px;
}

static void
test_chromium (void)
{
  g_autofree char *chromium = g_find_program_in_path ("chromium");
  if (chromium == NULL)
    chromium = g_find_program_in_path ("chromium-browser");
  if (chromium == NULL)
    {
      g_test_skip ("chromium is not installed (apt-get install chromium): the page is not rendered");
      return;
    }
  g_autofree char *run = write_run ("run-chromium", report_json);
  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = { "report", run, NULL };
  g_assert_cmpint (lp_test_run_cliv (&out, &err, args), ==, 0);
  g_autofree char *html = g_build_filename (run, "report.html", NULL);
  g_autofree char *uri = g_filename_to_uri (html, NULL, NULL);
  g_autofree char *png = g_build_filename (run, "shot.png", NULL);
  g_autofree char *shot = g_strdup_printf ("--screenshot=%s", png);
  g_autofree char *profile = g_build_filename (run, "profile", NULL);
  g_autofree char *user_dir = g_strdup_printf ("--user-data-dir=%s", profile);
  /* --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. */
  const char *argv[] = { "timeout", "120", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                         user_dir, "--window-size=1000,1400", shot, uri, NULL };
  g_autofree char *c_out = NULL, *c_err = NULL;
  int status = 0;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &c_out, &c_err, &status, &error));
  g_assert_no_error (error);
  if (!g_file_test (png, G_FILE_TEST_IS_REGULAR))
    g_error ("chromium wrote no screenshot (status %d): %s", status, c_err);
  g_autofree guint8 *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (png, (char **) &data, &len, NULL));
  guint w = 0, h = 0, ch = 0;
  g_autofree guint8 *px = png_pixels (data, len, &w, &h, &ch);
  g_assert_cmpuint (w, ==, 1000);
  /* Not blank: ink on the page, and the front's red among it (the SVG was drawn). */
  guint64 ink = 0, red = 0;
  for (gsize i = 0; i < (gsize) w * h; i++)
    {
      const guint8 *p = px + i * ch;
      ink += p[0] < 200 || p[1] < 200 || p[2] < 200;
      red += p[0] > 180 && p[1] < 90 && p[2] < 90;
    }
  g_test_message ("screenshot %ux%u: %" G_GUINT64_FORMAT " dark pixels, %" G_GUINT64_FORMAT " red", w, h, ink, red);
  g_assert_cmpuint (ink, >, (guint64) w * h / 200);
  g_assert_cmpuint (red, >, 50);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/report/front", test_front);
  g_test_add_func ("/report/bad", test_bad_report);
  g_test_add_func ("/report/chromium", test_chromium);
  return g_test_run ();
}
