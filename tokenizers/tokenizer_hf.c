/* llmpress — Hugging Face tokenizers: tokenizer.json (the `tokenizers`
 * library's serialization), with tokenizer_config.json beside it for the
 * special tokens.
 *
 * Only BPE models are handled, in the two shapes llama.cpp distinguishes:
 *   SentencePiece-style ("llama"): byte_fallback and "▁" for spaces (a
 *     Metaspace pre-tokenizer, or Prepend/Replace normalizers), as
 *     LlamaTokenizerFast has them.  GGUF keeps scores, not merges: a token's
 *     score is minus the rank of the first merge that produces it, so
 *     merging by highest score merges in the same order as HF's BPE;
 *   byte-level ("gpt2"): a ByteLevel pre-tokenizer, merges kept as they are,
 *     and tokenizer.ggml.pre naming its split regex. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>

#include "tokenizer-internal.h"
#include "outputs.h"

#define SPACE_MARK "\xe2\x96\x81"

/* obj[key] as an object / array / string, NULL when absent or null; an error
 * when present with another type. */
static JsonNode *
member (JsonObject *obj, const char *key)
{
  JsonNode *n = obj ? json_object_get_member (obj, key) : NULL;
  return n == NULL || JSON_NODE_HOLDS_NULL (n) ? NULL : n;
}

static gboolean
wrong_type (const char *path, const char *key, const char *expected, JsonNode *n, GError **error)
{
  lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected %s, found %s", path, key, expected,
                json_node_type_name (n));
  return FALSE;
}

/* obj[key] that must be an object; `name` is its full key for messages. */
static JsonObject *
required_object (JsonObject *obj, const char *key, const char *name, const char *path, GError **error)
{
  JsonNode *n = member (obj, key);
  if (n != NULL && JSON_NODE_HOLDS_OBJECT (n))
    return json_node_get_object (n);
  if (n == NULL)
    lp_set_error (error, LP_ERROR_FORMAT, "%s: key %s: expected an object, found none", path, name);
  else
    wrong_type (path, name, "an object", n, error);
  return NULL;
}

static JsonObject *
member_object (JsonObject *obj, const char *key)
{
  JsonNode *n = member (obj, key);
  return n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static const char *
member_string (JsonObject *obj, const char *key)
{
  JsonNode *n = member (obj, key);
  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING ? json_node_get_string (n) : NULL;
}

static gboolean
member_bool (JsonObject *obj, const char *key, gboolean dflt)
{
  JsonNode *n = member (obj, key);
  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_BOOLEAN ? json_node_get_boolean (n) : dflt;
}

/* Pre-tokenizers, normalizers and decoders nest in "Sequence"s: visit each. */
typedef gboolean (*ComponentFunc) (JsonObject *c, gpointer user);

static gboolean
any_component (JsonObject *c, ComponentFunc f, gpointer user)
{
  if (c == NULL)
    return FALSE;
  const char *lists[] = { "pretokenizers", "normalizers", "decoders" };
  if (g_strcmp0 (member_string (c, "type"), "Sequence") == 0)
    for (gsize k = 0; k < G_N_ELEMENTS (lists); k++)
      {
        JsonNode *n = member (c, lists[k]);
        if (n == NULL || !JSON_NODE_HOLDS_ARRAY (n))
          continue;
        JsonArray *a = json_node_get_array (n);
        for (guint i = 0; i < json_array_get_length (a); i++)
          {
            JsonNode *e = json_array_get_element (a, i);
            if (JSON_NODE_HOLDS_OBJECT (e) && any_component (json_node_get_object (e), f, user))
              return TRUE;
          }
      }
  return f (c, user);
}

static gboolean
is_type (JsonObject *c, gpointer type)
{
  return g_strcmp0 (member_string (c, "type"), type) == 0;
}

/* A space marker: Metaspace, or Replace/Prepend with "▁". */
static gboolean
uses_space_mark (JsonObject *c, gpointer user)
{
  (void) user;
  return is_type (c, "Metaspace") || g_strcmp0 (member_string (c, "content"), SPACE_MARK) == 0
         || g_strcmp0 (member_string (c, "prepend"), SPACE_MARK) == 0;
}

static gboolean
adds_prefix (JsonObject *c, gpointer user)
{
  (void) user;
  if (is_type (c, "Prepend"))
    return g_strcmp0 (member_string (c, "prepend"), SPACE_MARK) == 0;
  if (is_type (c, "Metaspace"))
    {
      const char *scheme = member_string (c, "prepend_scheme");
      return scheme ? strcmp (scheme, "never") != 0 : member_bool (c, "add_prefix_space", TRUE);
    }
  return FALSE;
}

/* The split regexes of a byte-level pre-tokenizer, in order: ByteLevel's
 * own (GPT-2's) when use_regex, a Split's pattern, Digits' one-by-one. */
static gboolean
find_regex (JsonObject *c, gpointer user)
{
  GPtrArray *out = user;
  if (is_type (c, "ByteLevel") && member_bool (c, "use_regex", TRUE))
    g_ptr_array_add (out, (gpointer) lp_tok_bpe_pre_find ("gpt2")->regexes[0]);
  else if (is_type (c, "Digits") && member_bool (c, "individual_digits", FALSE))
    g_ptr_array_add (out, (gpointer) "\\p{N}");
  else if (is_type (c, "Split"))
    {
      JsonObject *p = member_object (c, "pattern");
      g_ptr_array_add (out, (gpointer) (member_string (p, "Regex") ? member_string (p, "Regex") : "(a string pattern)"));
    }
  return FALSE; /* visit them all */
}

/* The text of a special token in tokenizer_config.json: a string or an
 * AddedToken object. */
static const char *
config_token (JsonObject *config, const char *key)
{
  JsonNode *n = member (config, key);
  if (n && JSON_NODE_HOLDS_OBJECT (n))
    return member_string (json_node_get_object (n), "content");
  return member_string (config, key);
}

typedef struct {
  const char *path;
  GPtrArray *tokens;     /* by id; NULL where none yet */
  GHashTable *ids;       /* text -> id + 1 */
  GArray *types;
  gint64 n_entries;      /* vocab + added_tokens entries */
  gint64 max_id;         /* the largest id seen, -1 when none */
} HfVocab;

static gint64 vocab_id (const HfVocab *v, const char *text);

static gboolean
vocab_put (HfVocab *v, gint64 id, const char *text, gint32 type, const char *where, GError **error)
{
  if (id < 0 || id >= G_MAXINT32)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: %s \"%s\": expected an id in 0..%d, found %" G_GINT64_FORMAT,
                    v->path, where, text, G_MAXINT32 - 1, id);
      return FALSE;
    }
  v->max_id = MAX (v->max_id, id);
  /* Ids run 0..n-1 without gaps: one past the file's entry count leaves a
   * gap below it (reported after reading), and must not size the table. */
  if (id >= v->n_entries)
    return TRUE;
  if ((guint64) id >= v->tokens->len)
    {
      g_ptr_array_set_size (v->tokens, id + 1);
      g_array_set_size (v->types, id + 1);
    }
  const char *old = v->tokens->pdata[id];
  if (old != NULL && vocab_id (v, old) == id)
    g_hash_table_remove (v->ids, old);
  g_free (v->tokens->pdata[id]);
  v->tokens->pdata[id] = g_strdup (text);
  g_array_index (v->types, gint32, id) = type;
  g_hash_table_replace (v->ids, g_strdup (text), GINT_TO_POINTER ((gint) id + 1));
  return TRUE;
}

static gint64
vocab_id (const HfVocab *v, const char *text)
{
  return text ? GPOINTER_TO_INT (g_hash_table_lookup (v->ids, text)) - 1 : -1;
}

/* merges: "a b" strings, or [a, b] pairs (tokenizers >= 0.20). */
static gboolean
read_merges (const char *path, JsonObject *model, GPtrArray *out, GError **error)
{
  JsonNode *n = member (model, "merges");
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY (n))
    return wrong_type (path, "model.merges", "an array", n, error);
  JsonArray *a = json_node_get_array (n);
  for (guint i = 0; i < json_array_get_length (a); i++)
    {
      JsonNode *e = json_array_get_element (a, i);
      if (JSON_NODE_HOLDS_VALUE (e) && json_node_get_value_type (e) == G_TYPE_STRING)
        g_ptr_array_add (out, g_strdup (json_node_get_string (e)));
      else if (JSON_NODE_HOLDS_ARRAY (e) && json_array_get_length (json_node_get_array (e)) == 2
               && json_array_get_string_element (json_node_get_array (e), 0)
               && json_array_get_string_element (json_node_get_array (e), 1))
        g_ptr_array_add (out, g_strdup_printf ("%s %s", json_array_get_string_element (json_node_get_array (e), 0),
                                               json_array_get_string_element (json_node_get_array (e), 1)));
      else
        {
          g_autofree char *key = g_strdup_printf ("model.merges[%u]", i);
          return wrong_type (path, key, "\"a b\" or [\"a\", \"b\"]", e, error);
        }
    }
  return TRUE;
}

/* Scores for SentencePiece-style encoding from merge ranks. */
static float *
scores_from_merges (const char *path, const HfVocab *v, GPtrArray *merges, GError **error)
{
  guint n = v->tokens->len;
  float *scores = g_new0 (float, n);
  gboolean *made = g_new0 (gboolean, n);
  for (guint r = 0; r < merges->len; r++)
    {
      const char *m = merges->pdata[r];
      const char *sp = m[0] ? strchr (m + 1, ' ') : NULL;
      g_autofree char *joined = sp ? g_strdup_printf ("%.*s%s", (int) (sp - m), m, sp + 1) : NULL;
      gint64 id = vocab_id (v, joined);
      if (id < 0)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: key model.merges[%u]: expected \"a b\" with ab in the vocabulary, found \"%s\"",
                        path, r, m);
          g_free (scores);
          g_free (made);
          return NULL;
        }
      if (!made[id])
        scores[id] = -(float) r;
      made[id] = TRUE;
    }
  /* Tokens no merge makes come after every merge (single characters never
   * compete: only pairs are scored); special and byte tokens keep 0. */
  for (guint i = 0; i < n; i++)
    if (!made[i] && g_array_index (v->types, gint32, i) == LP_TOKEN_NORMAL)
      scores[i] = -(float) merges->len;
  g_free (made);
  return scores;
}

gboolean
lp_tokenizer_read_hf (const char *path_in, LpMeta *meta, GError **error)
{
  g_autofree char *path = g_file_test (path_in, G_FILE_TEST_IS_DIR)
                            ? g_build_filename (path_in, "tokenizer.json", NULL) : g_strdup (path_in);
  g_autoptr (JsonNode) root = lp_json_load_object (path, error);
  if (root == NULL)
    return FALSE;
  JsonObject *top = json_node_get_object (root);
  JsonObject *model = required_object (top, "model", "model", path, error);
  if (model == NULL)
    return FALSE;
  const char *type = member_string (model, "type");
  if (g_strcmp0 (type, "BPE") != 0)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key model.type: expected \"BPE\", found \"%s\"", path, type ? type : "(none)");
      return FALSE;
    }
  JsonObject *pre = member_object (top, "pre_tokenizer"), *norm = member_object (top, "normalizer");
  JsonObject *dec = member_object (top, "decoder");
  gboolean byte_level = any_component (pre, is_type, "ByteLevel") || any_component (dec, is_type, "ByteLevel");
  gboolean byte_fallback = member_bool (model, "byte_fallback", FALSE);
  gboolean spm = byte_fallback || any_component (pre, uses_space_mark, NULL) || any_component (norm, uses_space_mark, NULL);
  if (!byte_level && !spm)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: expected a byte-level (ByteLevel pre-tokenizer) or SentencePiece-style (\"▁\" Metaspace, byte_fallback) BPE tokenizer, found neither",
                    path);
      return FALSE;
    }

  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *config_path = g_build_filename (dir, "tokenizer_config.json", NULL);
  g_autoptr (JsonNode) config_root = NULL;
  if (g_file_test (config_path, G_FILE_TEST_EXISTS) && (config_root = lp_json_load_object (config_path, error)) == NULL)
    return FALSE;
  JsonObject *config = config_root ? json_node_get_object (config_root) : NULL;

  HfVocab v = { path, g_ptr_array_new_with_free_func (g_free), g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL),
                g_array_new (FALSE, TRUE, sizeof (gint32)) };
  g_autoptr (GPtrArray) merges = g_ptr_array_new_with_free_func (g_free);
  g_autofree float *scores = NULL;
  gboolean ok = FALSE;
  JsonObject *vocab = required_object (model, "vocab", "model.vocab", path, error);
  if (vocab == NULL)
    goto out;
  JsonNode *an = member (top, "added_tokens");
  JsonArray *added = an && JSON_NODE_HOLDS_ARRAY (an) ? json_node_get_array (an) : NULL;
  v.n_entries = (gint64) json_object_get_size (vocab) + (added ? json_array_get_length (added) : 0);
  v.max_id = -1;
  JsonObjectIter it;
  const char *text;
  JsonNode *idn;
  json_object_iter_init (&it, vocab);
  while (json_object_iter_next (&it, &text, &idn))
    {
      if (!JSON_NODE_HOLDS_VALUE (idn) || json_node_get_value_type (idn) != G_TYPE_INT64)
        {
          g_autofree char *key = g_strdup_printf ("model.vocab[\"%s\"]", text);
          wrong_type (path, key, "an integer id", idn, error);
          goto out;
        }
      gint32 t = LP_TOKEN_NORMAL;
      if (spm && byte_fallback && lp_tok_parse_byte_token (text) >= 0)
        t = LP_TOKEN_BYTE;
      if (!vocab_put (&v, json_node_get_int (idn), text, t, "model.vocab", error))
        goto out;
    }
  for (guint i = 0; added && i < json_array_get_length (added); i++)
    {
      JsonNode *e = json_array_get_element (added, i);
      JsonObject *o = JSON_NODE_HOLDS_OBJECT (e) ? json_node_get_object (e) : NULL;
      JsonNode *id = member (o, "id");
      const char *content = member_string (o, "content");
      if (id == NULL || !JSON_NODE_HOLDS_VALUE (id) || json_node_get_value_type (id) != G_TYPE_INT64 || content == NULL)
        {
          g_autofree char *key = g_strdup_printf ("added_tokens[%u]", i);
          wrong_type (path, key, "{\"id\": integer, \"content\": string, ...}", e, error);
          goto out;
        }
      gint32 t = member_bool (o, "special", FALSE) ? LP_TOKEN_CONTROL : LP_TOKEN_USER_DEFINED;
      if (!vocab_put (&v, json_node_get_int (id), content, t, "added_tokens", error))
        goto out;
    }
  for (guint i = 0; (gint64) i <= v.max_id; i++)
    if (i >= v.tokens->len || v.tokens->pdata[i] == NULL)
      {
        lp_set_error (error, LP_ERROR_FORMAT, "%s: key model.vocab: expected ids 0..%" G_GINT64_FORMAT " without gaps, found no token with id %u",
                      path, v.max_id, i);
        goto out;
      }
  if (v.tokens->len == 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: key model.vocab: expected tokens, found none", path);
      goto out;
    }
  gint64 unk = vocab_id (&v, member_string (model, "unk_token"));
  if (!read_merges (path, model, merges, error))
    goto out;

  guint n = v.tokens->len;
  if (!byte_level)
    {
      if (unk >= 0)
        g_array_index (v.types, gint32, unk) = LP_TOKEN_UNKNOWN;
      scores = scores_from_merges (path, &v, merges, error);
      if (scores == NULL)
        goto out;
      lp_tok_meta_set_vocab (meta, "llama", n, (char **) v.tokens->pdata, scores, (gint32 *) v.types->data);
      if (!any_component (norm, adds_prefix, NULL) && !any_component (pre, adds_prefix, NULL))
        lp_meta_set_bool (meta, "tokenizer.ggml.add_space_prefix", FALSE); /* llama.cpp's default is true */
    }
  else
    {
      g_autoptr (GPtrArray) regexes = g_ptr_array_new ();
      any_component (pre, find_regex, regexes);
      const char *pre_name = lp_tok_bpe_pre_name ((const char *const *) regexes->pdata, regexes->len);
      if (pre_name == NULL)
        {
          g_autofree char *known = lp_tok_bpe_pre_known ();
          g_ptr_array_add (regexes, NULL);
          g_autofree char *found = regexes->len > 1 ? g_strjoinv ("\", then ", (char **) regexes->pdata) : g_strdup ("none");
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key pre_tokenizer: expected the split regexes of one of %s (as llama.cpp has them), found %s%s%s",
                        path, known, regexes->len > 1 ? "\"" : "", found, regexes->len > 1 ? "\"" : "");
          goto out;
        }
      lp_tok_meta_set_vocab (meta, "gpt2", n, (char **) v.tokens->pdata, NULL, (gint32 *) v.types->data);
      lp_meta_set_string (meta, "tokenizer.ggml.pre", pre_name);
      lp_meta_set_array (meta, "tokenizer.ggml.merges", LP_VALUE_STRING, merges->len, merges->pdata);
    }
  if (unk >= 0)
    lp_tok_meta_set_id (meta, "tokenizer.ggml.unknown_token_id", unk);
  static const struct { const char *config, *key; } specials[] = {
    { "bos_token", "tokenizer.ggml.bos_token_id" }, { "eos_token", "tokenizer.ggml.eos_token_id" },
    { "pad_token", "tokenizer.ggml.padding_token_id" } };
  for (gsize k = 0; k < G_N_ELEMENTS (specials); k++)
    {
      gint64 id = vocab_id (&v, config_token (config, specials[k].config));
      if (id >= 0)
        lp_tok_meta_set_id (meta, specials[k].key, id);
    }
  static const char *const adds[] = { "add_bos_token", "add_eos_token" };
  for (gsize k = 0; k < G_N_ELEMENTS (adds); k++)
    {
      JsonNode *b = member (config, adds[k]);
      if (b && JSON_NODE_HOLDS_VALUE (b) && json_node_get_value_type (b) == G_TYPE_BOOLEAN)
        {
          g_autofree char *key = g_strconcat ("tokenizer.ggml.", adds[k], NULL);
          lp_meta_set_bool (meta, key, json_node_get_boolean (b));
        }
    }
  ok = TRUE;
out:
  g_ptr_array_unref (v.tokens);
  g_hash_table_unref (v.ids);
  g_array_unref (v.types);
  return ok;
}

/* ---- writing ---- */

static gboolean
write_json (const char *dir, const char *name, JsonBuilder *b, GError **error)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  json_generator_set_indent (gen, 2);
  gsize len;
  g_autofree char *data = json_generator_to_data (gen, &len);
  return lp_tok_write_file (path, data, len, "\n", 1, error);
}

static void
add_string_or_null (JsonBuilder *b, const char *key, const char *s)
{
  json_builder_set_member_name (b, key);
  if (s)
    json_builder_add_string_value (b, s);
  else
    json_builder_add_null_value (b);
}

static void
add_type (JsonBuilder *b, const char *type)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, type);
}

/* {"type": "Replace", "pattern": {"String": from}, "content": to} */
static void
add_replace (JsonBuilder *b, const char *from, const char *to)
{
  add_type (b, "Replace");
  json_builder_set_member_name (b, "pattern");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "String");
  json_builder_add_string_value (b, from);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "content");
  json_builder_add_string_value (b, to);
  json_builder_end_object (b);
}

static void
add_byte_level (JsonBuilder *b, gboolean use_regex)
{
  add_type (b, "ByteLevel");
  json_builder_set_member_name (b, "add_prefix_space");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "trim_offsets");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_set_member_name (b, "use_regex");
  json_builder_add_boolean_value (b, use_regex);
  json_builder_end_object (b);
}

typedef struct {
  double score;
  guint64 result, left, right;
} SpmMerge;

static gint
spm_merge_order (gconstpointer a, gconstpointer b)
{
  const SpmMerge *x = a, *y = b;
  if (x->score != y->score)
    return x->score > y->score ? -1 : 1;
  if (x->result != y->result)
    return x->result < y->result ? -1 : 1;
  return x->left < y->left ? -1 : x->left > y->left;
}

/* HF's BPE needs the merges SentencePiece implies: every split of a normal
 * token into two normal tokens, best-scored result first. */
static GPtrArray *
merges_from_scores (const LpTokVocab *v, GHashTable *ids)
{
  g_autoptr (GArray) all = g_array_new (FALSE, FALSE, sizeof (SpmMerge));
  for (guint64 i = 0; i < v->n; i++)
    {
      if (lp_tok_vocab_type (v, i) != LP_TOKEN_NORMAL)
        continue;
      const char *t = v->tokens[i];
      for (const char *p = t[0] ? g_utf8_next_char (t) : t; *p; p = g_utf8_next_char (p))
        {
          g_autofree char *left = g_strndup (t, p - t);
          gpointer l = g_hash_table_lookup (ids, left), r = g_hash_table_lookup (ids, p);
          if (l == NULL || r == NULL)
            continue;
          guint64 li = GPOINTER_TO_SIZE (l) - 1, ri = GPOINTER_TO_SIZE (r) - 1;
          if (lp_tok_vocab_type (v, li) != LP_TOKEN_NORMAL || lp_tok_vocab_type (v, ri) != LP_TOKEN_NORMAL)
            continue;
          SpmMerge m = { v->scores ? v->scores[i] : 0.0, i, li, ri };
          g_array_append_val (all, m);
        }
    }
  g_array_sort (all, spm_merge_order);
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  for (guint k = 0; k < all->len; k++)
    {
      SpmMerge *m = &g_array_index (all, SpmMerge, k);
      g_ptr_array_add (out, g_strdup_printf ("%s %s", v->tokens[m->left], v->tokens[m->right]));
    }
  return out;
}

static gboolean
write_tokenizer_json (const char *dir, const LpMeta *meta, const LpTokVocab *v, gboolean spm,
                      GError **error)
{
  g_autoptr (GHashTable) ids = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint64 i = 0; i < v->n; i++)
    {
      gpointer prev = g_hash_table_lookup (ids, v->tokens[i]);
      if (prev != NULL)
        {
          lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: token %" G_GUINT64_FORMAT " \"%s\": tokenizer.json needs distinct token texts, token %" G_GSIZE_FORMAT " has the same",
                        dir, i, v->tokens[i], GPOINTER_TO_SIZE (prev) - 1);
          return FALSE;
        }
      g_hash_table_insert (ids, v->tokens[i], GSIZE_TO_POINTER (i + 1));
    }
  gint32 bos = lp_tok_meta_id (meta, "tokenizer.ggml.bos_token_id", v->n);
  gint32 unk = lp_tok_meta_id (meta, "tokenizer.ggml.unknown_token_id", v->n);
  gboolean add_bos = spm, prefix = TRUE;
  lp_meta_get_bool (meta, "tokenizer.ggml.add_bos_token", &add_bos, NULL);
  lp_meta_get_bool (meta, "tokenizer.ggml.add_space_prefix", &prefix, NULL);
  gboolean byte_fallback = FALSE;
  for (guint64 i = 0; i < v->n; i++)
    byte_fallback = byte_fallback || lp_tok_vocab_type (v, i) == LP_TOKEN_BYTE;

  g_autoptr (GPtrArray) derived = NULL;
  char **merges;
  guint64 n_merges;
  if (spm)
    {
      derived = merges_from_scores (v, ids);
      merges = (char **) derived->pdata;
      n_merges = derived->len;
    }
  else
    {
      const LpValue *m = lp_meta_get_array (meta, "tokenizer.ggml.merges", LP_VALUE_STRING, NULL);
      merges = m ? m->array : NULL;
      n_merges = m ? m->n_elems : 0;
    }
  /* "a b" strings unless a part holds a space: then [a, b] pairs. */
  gboolean pairs = FALSE;
  for (guint64 k = 0; k < n_merges; k++)
    {
      const char *sp = merges[k][0] ? strchr (merges[k] + 1, ' ') : NULL;
      pairs = pairs || sp == NULL || strchr (sp + 1, ' ') != NULL;
    }

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "version");
  json_builder_add_string_value (b, "1.0");
  json_builder_set_member_name (b, "truncation");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "padding");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "added_tokens");
  json_builder_begin_array (b);
  for (guint64 i = 0; i < v->n; i++)
    {
      gint32 t = lp_tok_vocab_type (v, i);
      if (t != LP_TOKEN_CONTROL && t != LP_TOKEN_USER_DEFINED && t != LP_TOKEN_UNKNOWN)
        continue;
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "id");
      json_builder_add_int_value (b, (gint64) i);
      json_builder_set_member_name (b, "content");
      json_builder_add_string_value (b, v->tokens[i]);
      static const char *const flags[] = { "single_word", "lstrip", "rstrip", "normalized", "special" };
      for (gsize f = 0; f < G_N_ELEMENTS (flags); f++)
        {
          json_builder_set_member_name (b, flags[f]);
          json_builder_add_boolean_value (b, f == 4 ? t != LP_TOKEN_USER_DEFINED : FALSE);
        }
      json_builder_end_object (b);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "normalizer");
  if (spm)
    {
      /* As LlamaTokenizerFast: prepend the dummy prefix, spaces -> "▁". */
      add_type (b, "Sequence");
      json_builder_set_member_name (b, "normalizers");
      json_builder_begin_array (b);
      if (prefix)
        {
          add_type (b, "Prepend");
          json_builder_set_member_name (b, "prepend");
          json_builder_add_string_value (b, SPACE_MARK);
          json_builder_end_object (b);
        }
      add_replace (b, " ", SPACE_MARK);
      json_builder_end_array (b);
      json_builder_end_object (b);
    }
  else
    json_builder_add_null_value (b);

  json_builder_set_member_name (b, "pre_tokenizer");
  const char *pre = spm ? NULL : lp_meta_get_string (meta, "tokenizer.ggml.pre");
  const LpTokPre *split = spm ? NULL : lp_tok_bpe_pre_find (pre ? pre : "default");
  if (spm)
    json_builder_add_null_value (b);
  else if (split->regexes == lp_tok_bpe_pre_find ("gpt2")->regexes)
    add_byte_level (b, TRUE);
  else
    {
      /* Each regex an isolating Split, in llama.cpp's order. */
      add_type (b, "Sequence");
      json_builder_set_member_name (b, "pretokenizers");
      json_builder_begin_array (b);
      for (const char *const *re = split->regexes; *re; re++)
        {
          add_type (b, "Split");
          json_builder_set_member_name (b, "pattern");
          json_builder_begin_object (b);
          json_builder_set_member_name (b, "Regex");
          json_builder_add_string_value (b, *re);
          json_builder_end_object (b);
          json_builder_set_member_name (b, "behavior");
          json_builder_add_string_value (b, "Isolated");
          json_builder_set_member_name (b, "invert");
          json_builder_add_boolean_value (b, FALSE);
          json_builder_end_object (b);
        }
      add_byte_level (b, FALSE);
      json_builder_end_array (b);
      json_builder_end_object (b);
    }

  json_builder_set_member_name (b, "post_processor");
  if (spm && add_bos && bos >= 0)
    {
      /* <s> $A, and <s> $A <s> $B for pairs. */
      add_type (b, "TemplateProcessing");
      static const char *const seqs[2] = { "single", "pair" };
      for (int s = 0; s < 2; s++)
        {
          json_builder_set_member_name (b, seqs[s]);
          json_builder_begin_array (b);
          for (int part = 0; part <= s; part++)
            {
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "SpecialToken");
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "id");
              json_builder_add_string_value (b, v->tokens[bos]);
              json_builder_set_member_name (b, "type_id");
              json_builder_add_int_value (b, part);
              json_builder_end_object (b);
              json_builder_end_object (b);
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "Sequence");
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "id");
              json_builder_add_string_value (b, part ? "B" : "A");
              json_builder_set_member_name (b, "type_id");
              json_builder_add_int_value (b, part);
              json_builder_end_object (b);
              json_builder_end_object (b);
            }
          json_builder_end_array (b);
        }
      json_builder_set_member_name (b, "special_tokens");
      json_builder_begin_object (b);
      json_builder_set_member_name (b, v->tokens[bos]);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "id");
      json_builder_add_string_value (b, v->tokens[bos]);
      json_builder_set_member_name (b, "ids");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, bos);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "tokens");
      json_builder_begin_array (b);
      json_builder_add_string_value (b, v->tokens[bos]);
      json_builder_end_array (b);
      json_builder_end_object (b);
      json_builder_end_object (b);
      json_builder_end_object (b);
    }
  else if (!spm)
    add_byte_level (b, FALSE);
  else
    json_builder_add_null_value (b);

  json_builder_set_member_name (b, "decoder");
  if (spm)
    {
      add_type (b, "Sequence");
      json_builder_set_member_name (b, "decoders");
      json_builder_begin_array (b);
      add_replace (b, SPACE_MARK, " ");
      add_type (b, "ByteFallback");
      json_builder_end_object (b);
      add_type (b, "Fuse");
      json_builder_end_object (b);
      if (prefix)
        {
          add_type (b, "Strip");
          json_builder_set_member_name (b, "content");
          json_builder_add_string_value (b, " ");
          json_builder_set_member_name (b, "start");
          json_builder_add_int_value (b, 1);
          json_builder_set_member_name (b, "stop");
          json_builder_add_int_value (b, 0);
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      json_builder_end_object (b);
    }
  else
    add_byte_level (b, TRUE);

  json_builder_set_member_name (b, "model");
  add_type (b, "BPE");
  json_builder_set_member_name (b, "dropout");
  json_builder_add_null_value (b);
  add_string_or_null (b, "unk_token", spm && unk >= 0 ? v->tokens[unk] : NULL);
  add_string_or_null (b, "continuing_subword_prefix", NULL);
  add_string_or_null (b, "end_of_word_suffix", NULL);
  json_builder_set_member_name (b, "fuse_unk");
  json_builder_add_boolean_value (b, spm);
  json_builder_set_member_name (b, "byte_fallback");
  json_builder_add_boolean_value (b, spm && byte_fallback);
  json_builder_set_member_name (b, "ignore_merges");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "vocab");
  json_builder_begin_object (b);
  for (guint64 i = 0; i < v->n; i++)
    {
      json_builder_set_member_name (b, v->tokens[i]);
      json_builder_add_int_value (b, (gint64) i);
    }
  json_builder_end_object (b);
  json_builder_set_member_name (b, "merges");
  json_builder_begin_array (b);
  for (guint64 k = 0; k < n_merges; k++)
    {
      if (!pairs)
        {
          json_builder_add_string_value (b, merges[k]);
          continue;
        }
      const char *sp = merges[k][0] ? strchr (merges[k] + 1, ' ') : NULL;
      g_autofree char *left = sp ? g_strndup (merges[k], sp - merges[k]) : g_strdup (merges[k]);
      json_builder_begin_array (b);
      json_builder_add_string_value (b, left);
      json_builder_add_string_value (b, sp ? sp + 1 : "");
      json_builder_end_array (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  json_builder_end_object (b);
  return write_json (dir, "tokenizer.json", b, error);
}

static const struct {
  const char *name, *key;
} special_names[] = {
  { "bos_token", "tokenizer.ggml.bos_token_id" },
  { "eos_token", "tokenizer.ggml.eos_token_id" },
  { "unk_token", "tokenizer.ggml.unknown_token_id" },
  { "pad_token", "tokenizer.ggml.padding_token_id" },
};

static void
add_special_names (JsonBuilder *b, const LpMeta *meta, const LpTokVocab *v)
{
  for (gsize k = 0; k < G_N_ELEMENTS (special_names); k++)
    {
      gint32 id = lp_tok_meta_id (meta, special_names[k].key, v->n);
      if (id >= 0)
        {
          json_builder_set_member_name (b, special_names[k].name);
          json_builder_add_string_value (b, v->tokens[id]);
        }
    }
}

gboolean
lp_tokenizer_write_hf (const LpMeta *meta, const char *dir, GError **error)
{
  LpTokVocab v;
  if (!lp_tok_vocab_from_meta (meta, dir, &v, error))
    return FALSE;
  gboolean spm = strcmp (v.model, "llama") == 0;
  if (!spm && strcmp (v.model, "gpt2") != 0)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key tokenizer.ggml.model: expected \"llama\" or \"gpt2\", found \"%s\"", dir, v.model);
      return FALSE;
    }
  const char *pre = lp_meta_get_string (meta, "tokenizer.ggml.pre");
  if (!spm && lp_tok_bpe_pre_find (pre ? pre : "default") == NULL)
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: key tokenizer.ggml.pre: no known split regex for \"%s\"", dir, pre);
      return FALSE;
    }
  if (g_mkdir_with_parents (dir, 0755) != 0)
    {
      int err = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create the directory: %s", dir, g_strerror (err));
      return FALSE;
    }
  if (!write_tokenizer_json (dir, meta, &v, spm, error))
    return FALSE;

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  gboolean add_bos = spm, add_eos = FALSE;
  lp_meta_get_bool (meta, "tokenizer.ggml.add_bos_token", &add_bos, NULL);
  lp_meta_get_bool (meta, "tokenizer.ggml.add_eos_token", &add_eos, NULL);
  json_builder_set_member_name (b, "add_bos_token");
  json_builder_add_boolean_value (b, add_bos);
  json_builder_set_member_name (b, "add_eos_token");
  json_builder_add_boolean_value (b, add_eos);
  add_special_names (b, meta, &v);
  json_builder_set_member_name (b, "clean_up_tokenization_spaces");
  json_builder_add_boolean_value (b, FALSE);
  const char *arch = lp_meta_get_string (meta, "general.architecture");
  g_autofree char *ctx_key = g_strdup_printf ("%s.context_length", arch ? arch : "");
  gint64 ctx;
  if (arch && lp_meta_get_int (meta, ctx_key, &ctx, NULL))
    {
      json_builder_set_member_name (b, "model_max_length");
      json_builder_add_int_value (b, ctx);
    }
  json_builder_set_member_name (b, "tokenizer_class");
  json_builder_add_string_value (b, spm ? "LlamaTokenizer"
                                    : lp_tok_bpe_pre_find (pre ? pre : "default")->regexes == lp_tok_bpe_pre_find ("gpt2")->regexes
                                      ? "GPT2Tokenizer" : "PreTrainedTokenizerFast");
  json_builder_end_object (b);
  if (!write_json (dir, "tokenizer_config.json", b, error))
    return FALSE;

  g_autoptr (JsonBuilder) s = json_builder_new ();
  json_builder_begin_object (s);
  add_special_names (s, meta, &v);
  json_builder_end_object (s);
  if (!write_json (dir, "special_tokens_map.json", s, error))
    return FALSE;
  if (spm)
    {
      g_autofree char *model = g_build_filename (dir, "tokenizer.model", NULL);
      return lp_tokenizer_write_spm (meta, model, error);
    }
  return TRUE;
}
