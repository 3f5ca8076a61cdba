/* llmpress — SentencePiece's tokenizer.model: a protobuf ModelProto.
 *
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL = 1)
 *   TrainerSpec     3 model_type (UNIGRAM 1, BPE 2, ...; default 1), 4 vocab_size,
 *                   35 byte_fallback, 40 unk_id (default 0), 41 bos_id (1),
 *                   42 eos_id (2), 43 pad_id (-1)
 *   NormalizerSpec  1 name, 3 add_dummy_prefix (default true),
 *                   4 remove_extra_whitespaces (default true), 5 escape_whitespaces
 * Piece types have GGUF's token-type numbering.  Unknown fields are skipped. */
#include "config.h"

#include <string.h>

#include "tokenizer-internal.h"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* A bounds-checked cursor over one message; offsets are the file's. */
typedef struct {
  const char *path;
  const guint8 *data; /* the whole file */
  gsize off, end;
} PbReader;

typedef struct {
  guint32 field;
  guint wire;
  gsize off;      /* of the tag */
  guint64 u;      /* varint, fixed32, fixed64 */
  gsize start, len; /* WIRE_LEN payload */
} PbField;

static gboolean
pb_varint (PbReader *r, guint64 *out, const char *what, GError **error)
{
  gsize start = r->off;
  guint64 v = 0;
  for (int shift = 0; shift < 64; shift += 7)
    {
      if (r->off >= r->end)
        {
          lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a varint, found the end of the message at offset %" G_GSIZE_FORMAT,
                        r->path, start, what, r->end);
          return FALSE;
        }
      guint8 b = r->data[r->off++];
      v |= (guint64) (b & 0x7f) << shift;
      if (!(b & 0x80))
        {
          *out = v;
          return TRUE;
        }
    }
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a varint of at most 10 bytes, found more",
                r->path, start, what);
  return FALSE;
}

/* The next field, or FALSE with *done set at the end of the message. */
static gboolean
pb_next (PbReader *r, const char *msg, PbField *f, gboolean *done, GError **error)
{
  *done = r->off >= r->end;
  if (*done)
    return FALSE;
  f->off = r->off;
  guint64 tag;
  if (!pb_varint (r, &tag, msg, error))
    return FALSE;
  f->field = (guint32) (tag >> 3);
  f->wire = tag & 7;
  gsize need = 0;
  switch (f->wire)
    {
    case WIRE_VARINT:
      return pb_varint (r, &f->u, msg, error);
    case WIRE_FIXED64: need = 8; break;
    case WIRE_FIXED32: need = 4; break;
    case WIRE_LEN:
      if (!pb_varint (r, &f->u, msg, error))
        return FALSE;
      need = f->u <= G_MAXSIZE ? (gsize) f->u : G_MAXSIZE;
      break;
    default:
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s field %u: expected wire type 0, 1, 2 or 5, found %u",
                    r->path, f->off, msg, f->field, f->wire);
      return FALSE;
    }
  if (need > r->end - r->off)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s field %u: expected %" G_GSIZE_FORMAT " bytes, found %" G_GSIZE_FORMAT " left in the message",
                    r->path, r->off, msg, f->field, need, r->end - r->off);
      return FALSE;
    }
  f->start = r->off;
  f->len = need;
  f->u = 0;
  for (gsize i = 0; f->wire != WIRE_LEN && i < need; i++)
    f->u |= (guint64) r->data[r->off + i] << (8 * i);
  r->off += need;
  return TRUE;
}

static gboolean
pb_expect_wire (const PbReader *r, const char *msg, const char *name, const PbField *f, guint wire,
                GError **error)
{
  if (f->wire == wire)
    return TRUE;
  lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s.%s (field %u): expected wire type %u, found %u",
                r->path, f->off, msg, name, f->field, wire, f->wire);
  return FALSE;
}

static PbReader
pb_sub (const PbReader *r, const PbField *f)
{
  return (PbReader) { r->path, r->data, f->start, f->start + f->len };
}

typedef struct {
  GPtrArray *tokens;
  GArray *scores, *types;
  gint64 model_type, unk, bos, eos, pad;
  gboolean byte_fallback, add_dummy_prefix, remove_extra_ws;
} SpmModel;

static gboolean
read_piece (PbReader *r, SpmModel *m, GError **error)
{
  char *piece = NULL;
  float score = 0;
  gint32 type = LP_TOKEN_NORMAL;
  PbField f;
  gboolean done;
  guint idx = m->tokens->len;
  g_autofree char *msg = g_strdup_printf ("pieces[%u]", idx);
  while (pb_next (r, msg, &f, &done, error))
    {
      if (f.field == 1)
        {
          if (!pb_expect_wire (r, msg, "piece", &f, WIRE_LEN, error))
            goto fail;
          const char *bad;
          if (!g_utf8_validate_len ((const char *) r->data + f.start, f.len, &bad))
            {
              lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s.piece: expected UTF-8, found byte 0x%02x",
                            r->path, (gsize) ((const guint8 *) bad - r->data), msg, (guint8) *bad);
              goto fail;
            }
          g_free (piece);
          piece = g_strndup ((const char *) r->data + f.start, f.len);
        }
      else if (f.field == 2)
        {
          if (!pb_expect_wire (r, msg, "score", &f, WIRE_FIXED32, error))
            goto fail;
          union { guint32 u; float f; } u = { (guint32) f.u };
          score = u.f;
        }
      else if (f.field == 3)
        {
          if (!pb_expect_wire (r, msg, "type", &f, WIRE_VARINT, error))
            goto fail;
          if (f.u < LP_TOKEN_NORMAL || f.u > LP_TOKEN_BYTE)
            {
              lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s.type: expected 1 (NORMAL) to 6 (BYTE), found %" G_GUINT64_FORMAT,
                            r->path, f.off, msg, f.u);
              goto fail;
            }
          type = (gint32) f.u;
        }
    }
  if (!done)
    goto fail;
  if (piece == NULL)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset %" G_GSIZE_FORMAT ": %s: expected a piece (field 1), found none",
                    r->path, r->off, msg);
      return FALSE;
    }
  g_ptr_array_add (m->tokens, piece);
  g_array_append_val (m->scores, score);
  g_array_append_val (m->types, type);
  return TRUE;
fail:
  g_free (piece);
  return FALSE;
}

/* Read the varint fields listed (field number -> destination) of a message. */
typedef struct {
  guint32 field;
  const char *name;
  gint64 *i;
  gboolean *b;
} PbVarintField;

static gboolean
read_varints (PbReader *r, const char *msg, const PbVarintField *fields, gsize n, GError **error)
{
  PbField f;
  gboolean done;
  while (pb_next (r, msg, &f, &done, error))
    for (gsize k = 0; k < n; k++)
      if (fields[k].field == f.field)
        {
          if (!pb_expect_wire (r, msg, fields[k].name, &f, WIRE_VARINT, error))
            return FALSE;
          if (fields[k].i)
            *fields[k].i = (gint32) (guint32) f.u; /* int32 fields: negatives are sign-extended */
          else
            *fields[k].b = f.u != 0;
        }
  return done;
}

static const char *const model_types[] = { NULL, "UNIGRAM", "BPE", "WORD", "CHAR" };

gboolean
lp_tokenizer_read_spm (const char *path, LpMeta *meta, GError **error)
{
  g_autoptr (GMappedFile) mf = lp_map_file (path, error);
  if (mf == NULL)
    return FALSE;
  PbReader r = { path, (const guint8 *) g_mapped_file_get_contents (mf), 0, g_mapped_file_get_length (mf) };
  SpmModel m = { g_ptr_array_new_with_free_func (g_free), g_array_new (FALSE, FALSE, sizeof (float)),
                 g_array_new (FALSE, FALSE, sizeof (gint32)), 1, 0, 1, 2, -1, FALSE, TRUE, TRUE };
  const PbVarintField trainer[] = {
    { 3, "model_type", &m.model_type, NULL }, { 35, "byte_fallback", NULL, &m.byte_fallback },
    { 40, "unk_id", &m.unk, NULL }, { 41, "bos_id", &m.bos, NULL },
    { 42, "eos_id", &m.eos, NULL }, { 43, "pad_id", &m.pad, NULL } };
  const PbVarintField normalizer[] = {
    { 3, "add_dummy_prefix", NULL, &m.add_dummy_prefix },
    { 4, "remove_extra_whitespaces", NULL, &m.remove_extra_ws } };
  gboolean ok = FALSE, done;
  PbField f;
  while (pb_next (&r, "ModelProto", &f, &done, error))
    {
      static const char *const names[4] = { NULL, "pieces", "trainer_spec", "normalizer_spec" };
      if (f.field < 1 || f.field > 3)
        continue;
      if (!pb_expect_wire (&r, "ModelProto", names[f.field], &f, WIRE_LEN, error))
        goto out;
      PbReader sub = pb_sub (&r, &f);
      if ((f.field == 1 && !read_piece (&sub, &m, error))
          || (f.field == 2 && !read_varints (&sub, "trainer_spec", trainer, G_N_ELEMENTS (trainer), error))
          || (f.field == 3 && !read_varints (&sub, "normalizer_spec", normalizer, G_N_ELEMENTS (normalizer), error)))
        goto out;
    }
  if (!done)
    goto out;
  if (m.tokens->len == 0)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: expected a SentencePiece model with pieces (field 1), found none", path);
      goto out;
    }
  if (m.model_type != 2)
    {
      const char *name = m.model_type >= 1 && m.model_type <= 4 ? model_types[m.model_type] : "unknown";
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: trainer_spec.model_type: expected 2 (BPE), found %" G_GINT64_FORMAT " (%s)",
                    path, m.model_type, name);
      goto out;
    }
  gint64 n = m.tokens->len;
  lp_tok_meta_set_vocab (meta, "llama", n, (char **) m.tokens->pdata, (float *) m.scores->data,
                         (gint32 *) m.types->data);
  /* The keys llama.cpp's converter writes for SentencePiece vocabularies
   * (stories260K-f32.gguf): SentencePiece has no separator, and 4294967295
   * says "none" for it and for a missing pad. */
  const struct { const char *key; gint64 id; } ids[] = {
    { "tokenizer.ggml.unknown_token_id", m.unk }, { "tokenizer.ggml.bos_token_id", m.bos },
    { "tokenizer.ggml.eos_token_id", m.eos } };
  for (gsize k = 0; k < G_N_ELEMENTS (ids); k++)
    if (ids[k].id >= 0 && ids[k].id < n)
      lp_tok_meta_set_id (meta, ids[k].key, ids[k].id);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.seperator_token_id", -1);
  lp_tok_meta_set_id (meta, "tokenizer.ggml.padding_token_id", m.pad < n ? m.pad : -1);
  /* Only what differs from llama.cpp's defaults, so that a GGUF -> HF -> GGUF
   * trip adds no keys. */
  if (!m.add_dummy_prefix)
    lp_meta_set_bool (meta, "tokenizer.ggml.add_space_prefix", FALSE);
  if (m.remove_extra_ws)
    lp_meta_set_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", TRUE);
  ok = TRUE;
out:
  g_ptr_array_unref (m.tokens);
  g_array_unref (m.scores);
  g_array_unref (m.types);
  return ok;
}

static void
pb_put_varint (GByteArray *b, guint64 v)
{
  do
    {
      guint8 c = (v & 0x7f) | (v > 0x7f ? 0x80 : 0);
      g_byte_array_append (b, &c, 1);
      v >>= 7;
    }
  while (v);
}

static void
pb_put_tag (GByteArray *b, guint32 field, guint wire)
{
  pb_put_varint (b, (guint64) field << 3 | wire);
}

static void
pb_put_int (GByteArray *b, guint32 field, gint64 v)
{
  pb_put_tag (b, field, WIRE_VARINT);
  pb_put_varint (b, (guint64) v);
}

static void
pb_put_bytes (GByteArray *b, guint32 field, const void *data, gsize n)
{
  pb_put_tag (b, field, WIRE_LEN);
  pb_put_varint (b, n);
  g_byte_array_append (b, data, n);
}

gboolean
lp_tokenizer_write_spm (const LpMeta *meta, const char *path, GError **error)
{
  LpTokVocab v;
  if (!lp_tok_vocab_from_meta (meta, path, &v, error))
    return FALSE;
  if (!lp_tok_vocab_require_spm (&v, path, "tokenizer.model", error))
    return FALSE;
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GByteArray) msg = g_byte_array_new ();
  gboolean has_bytes = FALSE;
  for (guint64 i = 0; i < v.n; i++)
    {
      gint32 type = lp_tok_vocab_type (&v, i);
      if (type < LP_TOKEN_NORMAL || type > LP_TOKEN_BYTE)
        type = LP_TOKEN_NORMAL;
      has_bytes = has_bytes || type == LP_TOKEN_BYTE;
      union { float f; guint32 u; } score = { v.scores ? v.scores[i] : 0.0f };
      guint32 le = GUINT32_TO_LE (score.u);
      g_byte_array_set_size (msg, 0);
      pb_put_bytes (msg, 1, v.tokens[i], strlen (v.tokens[i]));
      pb_put_tag (msg, 2, WIRE_FIXED32);
      g_byte_array_append (msg, (const guint8 *) &le, 4);
      pb_put_int (msg, 3, type);
      pb_put_bytes (out, 1, msg->data, msg->len);
    }
  g_byte_array_set_size (msg, 0);
  pb_put_int (msg, 3, 2); /* BPE */
  pb_put_int (msg, 4, (gint64) v.n);
  pb_put_int (msg, 35, has_bytes);
  pb_put_int (msg, 40, lp_tok_meta_id (meta, "tokenizer.ggml.unknown_token_id", v.n));
  pb_put_int (msg, 41, lp_tok_meta_id (meta, "tokenizer.ggml.bos_token_id", v.n));
  pb_put_int (msg, 42, lp_tok_meta_id (meta, "tokenizer.ggml.eos_token_id", v.n));
  pb_put_int (msg, 43, lp_tok_meta_id (meta, "tokenizer.ggml.padding_token_id", v.n));
  pb_put_bytes (out, 2, msg->data, msg->len);
  gboolean prefix = TRUE, remove_ws = FALSE;
  lp_meta_get_bool (meta, "tokenizer.ggml.add_space_prefix", &prefix, NULL);
  lp_meta_get_bool (meta, "tokenizer.ggml.remove_extra_whitespaces", &remove_ws, NULL);
  g_byte_array_set_size (msg, 0);
  pb_put_bytes (msg, 1, "identity", 8);
  pb_put_int (msg, 3, prefix);
  pb_put_int (msg, 4, remove_ws);
  pb_put_int (msg, 5, 1);
  pb_put_bytes (out, 3, msg->data, msg->len);

  return lp_tok_write_file (path, out->data, out->len, NULL, 0, error);
}
