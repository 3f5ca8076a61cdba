/* llmpress fuzz targets — one per file format or text the library parses.
 * A target returns 1 when the library accepted the input, 0 when it
 * refused it (the replay test checks that well-formed seeds are accepted).
 *
 * Each target file defines its body with LP_FUZZ_TARGET (name).  Built with
 * -DLP_FUZZ_LIBFUZZER it is also LLVMFuzzerTestOneInput (tests/fuzz/fuzz-NAME,
 * `make fuzz`); without, tests/test-fuzz links every target and replays the
 * seeds and every past crash through the same function under `make check`. */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#ifdef LP_FUZZ_LIBFUZZER
#define LP_FUZZ_TARGET(name)                                              \
  int lp_fuzz_##name (const uint8_t *data, size_t size);                 \
  int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);         \
  int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)          \
  {                                                                       \
    lp_fuzz_init ();                                                      \
    lp_fuzz_##name (data, size);                                          \
    return 0;                                                             \
  }                                                                       \
  int lp_fuzz_##name (const uint8_t *data, size_t size)
#else
#define LP_FUZZ_TARGET(name) int lp_fuzz_##name (const uint8_t *data, size_t size)
#endif

typedef int (*LpFuzzFunc) (const uint8_t *data, size_t size);

/* Once per process: criticals become aborts (a g_return_if_fail reached from
 * a file's bytes is a bug), warnings are dropped (speed), and the scratch
 * directory exists. */
void lp_fuzz_init (void);
/* The process's scratch directory: under /dev/shm when there is one, so
 * inputs written there never reach a disk; removed at exit. */
const char *lp_fuzz_dir (void);
/* Write the input to `name` in the scratch directory (truncating what the
 * previous input left) and return its path (owned by the harness: valid
 * until the next call with the same name). */
const char *lp_fuzz_write (const char *name, const uint8_t *data, size_t size);
/* Exercise a tokenizer built from `meta` on a fixed text (encode, decode,
 * pieces), so the vocabulary a file brought is used, not only read. */
struct _LpMeta;
void lp_fuzz_use_tokenizer (const struct _LpMeta *meta);

/* Seeds for `target`, written into `dir` (made from a small synthetic model
 * through the library's writers): every format's well-formed file, so the
 * fuzzer starts past the magic numbers.  FALSE with *error when a writer fails. */
gboolean lp_fuzz_make_seeds (const char *target, const char *dir, GError **error);

/* A small synthetic model (D 16, 1 layer, vocab 260) with a SentencePiece
 * vocabulary: what the seeds and the fixed files beside a fuzzed one hold. */
struct _LpModel;
struct _LpModel *lp_fuzz_tiny_model (void);
/* A directory in the scratch directory holding the tiny model saved as
 * `format` ("hf", "hf-sharded" or "llama2c"), written on first use. */
const char *lp_fuzz_model_dir (const char *format);
