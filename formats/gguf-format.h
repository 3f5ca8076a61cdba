/* llmpress — facts about the GGUF layout shared by the reader (gguf.c) and
 * the writer (gguf_write.c).  Not part of the SDK.
 *
 * A GGUF file, all little-endian:
 *   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
 *   kv_count x { string key, u32 value type, value }
 *   tensor_count x { string name, u32 n_dims, u64 ne[n_dims] (ne[0] innermost),
 *                    u32 ggml type, u64 offset (from the data section) }
 *   padding to general.alignment, then the data section.
 * A string is u64 length + bytes (no NUL); an array value is u32 element
 * type, u64 count, then the elements (a nested array element is again
 * u32 type, u64 count, elements). */
#pragma once

#define LP_GGUF_MAGIC "GGUF"
#define LP_GGUF_VERSION 3
#define LP_GGUF_DEFAULT_ALIGNMENT 32
/* Bytes of the fixed header: magic, version, tensor_count, kv_count. */
#define LP_GGUF_HEADER_SIZE 24
