/* llmpress transform plugin — function-preserving transforms of a model's
 * weights (transform.rotate), and the orthogonal matrices they are made of. */
#pragma once

#include <llmpress/llmpress.h>

typedef enum {
  ROTATION_HADAMARD, /* randomized Hadamard where an order is known, else random */
  ROTATION_RANDOM,   /* a Haar-random orthogonal matrix: QR of a Gaussian, sign-fixed */
} RotationKind;

extern const char *const rotation_kinds[];

/* An orthogonal Q [n, n] (row-major f32, Q Q^T = I) of `kind`, drawn from
 * rng.  *what gets a description for the log ("randomized Hadamard,
 * Paley II (q = 17) x Sylvester 16"; g_free it).  NULL with an error when
 * LAPACK fails. */
float *rotation_new (RotationKind kind, int n, GRand *rng, char **what, GError **error);

/* transform.rotate (rotate.c). */
extern const LpPassInfo transform_rotate_pass;
