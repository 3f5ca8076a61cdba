/* llmpress — does a shared object export a symbol?  Answered from the file's
 * ELF dynamic symbol table, without dlopen: dlopen runs the object's
 * constructors, and a file that is not a plugin must never run anything.
 *
 * ELF64, in the host's (little-endian) byte order, as the plugins this
 * build can load are.  Layouts (System V gABI):
 *   header:  e_ident[16] ... e_type u16 @16, e_shoff u64 @40,
 *            e_shentsize u16 @58, e_shnum u16 @60
 *   section: sh_type u32 @4, sh_offset u64 @24, sh_size u64 @32,
 *            sh_link u32 @40, sh_entsize u64 @56 (64 bytes)
 *   symbol:  st_name u32 @0, st_info u8 @4, st_other u8 @5,
 *            st_shndx u16 @6 (24 bytes) */
#include "config.h"

#include <string.h>

#include "lp-internal.h"
#include "registry.h"

#define ELF_HEADER_SIZE 64
#define ELF_SECTION_SIZE 64
#define ELF_SYMBOL_SIZE 24
#define ET_DYN 3
#define SHT_STRTAB 3
#define SHT_DYNSYM 11
#define STB_GLOBAL 1
#define STB_WEAK 2
#define STB_GNU_UNIQUE 10
#define STV_DEFAULT 0
#define STV_PROTECTED 3

static gboolean
read_u16 (LpByteReader *r, guint16 *out, const char *what, GError **error)
{
  const guint8 *p;
  if (!lp_byte_reader_bytes (r, 2, &p, what, error))
    return FALSE;
  memcpy (out, p, 2);
  return TRUE;
}

/* The section header at index i: its type, offset, size, link, entsize. */
typedef struct {
  guint32 type, link;
  guint64 offset, size, entsize;
} Section;

static gboolean
read_section (LpByteReader *r, guint64 shoff, guint i, Section *s, GError **error)
{
  g_autofree char *what = g_strdup_printf ("section header %u", i);
  r->off = (gsize) shoff + (gsize) i * ELF_SECTION_SIZE;
  return lp_byte_reader_need (r, ELF_SECTION_SIZE, what, error)
         && lp_byte_reader_skip (r, 4, what, error) && lp_byte_reader_u32 (r, &s->type, what, error)
         && lp_byte_reader_skip (r, 16, what, error) && lp_byte_reader_u64 (r, &s->offset, what, error)
         && lp_byte_reader_u64 (r, &s->size, what, error) && lp_byte_reader_u32 (r, &s->link, what, error)
         && lp_byte_reader_skip (r, 12, what, error) && lp_byte_reader_u64 (r, &s->entsize, what, error);
}

/* Section s lies inside the file. */
static gboolean
section_in_file (const LpByteReader *r, const Section *s, const char *what, GError **error)
{
  if (s->offset > r->size || s->size > r->size - s->offset)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: %s: expected its %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT " within the file, found end of file at %" G_GSIZE_FORMAT,
                    r->path, what, s->size, s->offset, r->size);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_elf_exports (const char *path, gconstpointer data, gsize size, const char *symbol, gboolean *found,
                GError **error)
{
  *found = FALSE;
  LpByteReader r;
  lp_byte_reader_init (&r, path, data, size);
  static const guint8 ident[6] = { 0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */ };
  if (size < ELF_HEADER_SIZE || memcmp (data, ident, sizeof ident) != 0)
    {
      const guint8 *d = data;
      g_autofree char *what = size < 4 ? g_strdup_printf ("a file of %" G_GSIZE_FORMAT " bytes", size)
                               : memcmp (d, ident, sizeof ident) == 0 ? g_strdup_printf ("an ELF file of %" G_GSIZE_FORMAT " bytes, shorter than its header", size)
                               : memcmp (d, ident, 4) == 0 ? g_strdup ("an ELF file of another class or byte order")
                               : g_strdup_printf ("bytes %02x %02x %02x %02x", d[0], d[1], d[2], d[3]);
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 0: expected a 64-bit little-endian ELF shared object, found %s",
                    path, what);
      return FALSE;
    }
  guint16 type, shentsize, shnum;
  guint64 shoff;
  r.off = 16;
  if (!read_u16 (&r, &type, "e_type", error))
    return FALSE;
  if (type != ET_DYN)
    {
      lp_set_error (error, LP_ERROR_FORMAT, "%s: offset 16: expected ELF type %d (a shared object), found %u", path, ET_DYN,
                    type);
      return FALSE;
    }
  r.off = 40;
  if (!lp_byte_reader_u64 (&r, &shoff, "e_shoff", error))
    return FALSE;
  r.off = 58;
  if (!read_u16 (&r, &shentsize, "e_shentsize", error) || !read_u16 (&r, &shnum, "e_shnum", error))
    return FALSE;
  if (shnum == 0 || shentsize != ELF_SECTION_SIZE || shoff > size)
    {
      lp_set_error (error, LP_ERROR_FORMAT,
                    "%s: offset 40: expected section headers of %d bytes within the file, found %u of %u bytes at offset %" G_GUINT64_FORMAT,
                    path, ELF_SECTION_SIZE, shnum, shentsize, shoff);
      return FALSE;
    }
  for (guint i = 0; i < shnum; i++)
    {
      Section sym, str;
      if (!read_section (&r, shoff, i, &sym, error))
        return FALSE;
      if (sym.type != SHT_DYNSYM)
        continue;
      if (sym.link >= shnum || !read_section (&r, shoff, sym.link, &str, error))
        {
          if (sym.link >= shnum)
            lp_set_error (error, LP_ERROR_FORMAT, "%s: section %u (.dynsym): expected a string table section below %u, found %u",
                          path, i, shnum, sym.link);
          return FALSE;
        }
      if (str.type != SHT_STRTAB || sym.entsize != ELF_SYMBOL_SIZE)
        {
          lp_set_error (error, LP_ERROR_FORMAT,
                        "%s: section %u (.dynsym): expected %d-byte symbols naming a string table, found %" G_GUINT64_FORMAT "-byte ones and section type %u",
                        path, i, ELF_SYMBOL_SIZE, sym.entsize, str.type);
          return FALSE;
        }
      if (!section_in_file (&r, &sym, ".dynsym", error) || !section_in_file (&r, &str, ".dynstr", error))
        return FALSE;
      const char *strtab = (const char *) data + str.offset;
      gsize want = strlen (symbol);
      for (guint64 k = 0; k < sym.size / ELF_SYMBOL_SIZE; k++)
        {
          const guint8 *e = (const guint8 *) data + sym.offset + k * ELF_SYMBOL_SIZE;
          guint32 name;
          guint16 shndx;
          memcpy (&name, e, 4);
          memcpy (&shndx, e + 6, 2);
          guint bind = e[4] >> 4, vis = e[5] & 3;
          /* The name and its NUL inside the string table. */
          if (name >= str.size || str.size - name < want + 1 || memcmp (strtab + name, symbol, want + 1) != 0)
            continue;
          if (shndx != 0 /* defined here */ && (bind == STB_GLOBAL || bind == STB_WEAK || bind == STB_GNU_UNIQUE)
              && (vis == STV_DEFAULT || vis == STV_PROTECTED))
            *found = TRUE;
        }
      return TRUE;
    }
  return TRUE; /* no dynamic symbol table: nothing exported */
}
