/* llmpress transform plugin — orthogonal matrices for rotations.
 *
 * Randomized Hadamard (QuaRot): Q = H diag(s) / sqrt(n) with H a Hadamard
 * matrix (entries ±1, H H^T = n I) and s random signs.  Its rows spread
 * every input direction evenly over all outputs, which is what flattens
 * outlier channels; a Hadamard matrix of order n exists only for n = 1, 2
 * or a multiple of 4, and we build the ones that are cheap:
 *   n = m 2^k,  H_n = H_m ⊗ Sylvester(2^k),  with H_m one of
 *   - m = 1 (plain Sylvester: every power of two),
 *   - Paley I:  m = q + 1,     q prime, q ≡ 3 (mod 4)  (12, 20, 24, 32, 44, ...),
 *   - Paley II: m = 2 (q + 1), q prime, q ≡ 1 (mod 4)  (12, 28, 36, 60, ...),
 * the smallest such m (the most Sylvester, the cheapest to build).  For
 * SmolLM2's dim 576 = 36 x 16 that is Paley II with q = 17.  Another order
 * (92, or any n not a multiple of 4) falls back to a random orthogonal
 * matrix, and says so.
 *
 * Random (SpinQuant's starting point): the Q factor of an n x n Gaussian
 * matrix, its columns' signs fixed so that R's diagonal is positive, which
 * makes Q Haar-distributed (Mezzadri 2007).  Computed in double by LAPACK
 * (dgeqrf, dorgqr). */
#include "config.h"

#include <math.h>

#include <lapacke.h>

#include "transform.h"

const char *const rotation_kinds[] = { "hadamard", "random", NULL };

/* χ(a): the quadratic character of a mod the odd prime q (0, 1 or -1). */
static int
quadratic_character (gint64 a, int q)
{
  a %= q;
  if (a < 0)
    a += q;
  if (a == 0)
    return 0;
  /* Euler's criterion: a^((q-1)/2) ≡ 1 (mod q) exactly for the residues. */
  gint64 r = 1, b = a, e = (q - 1) / 2;
  for (; e > 0; e >>= 1, b = b * b % q)
    if (e & 1)
      r = r * b % q;
  return r == 1 ? 1 : -1;
}

static gboolean
is_prime (int q)
{
  if (q < 2)
    return FALSE;
  for (int d = 2; (gint64) d * d <= q; d++)
    if (q % d == 0)
      return FALSE;
  return TRUE;
}

typedef enum { BASE_NONE, BASE_ONE, BASE_PALEY1, BASE_PALEY2 } BaseKind;

/* Which construction gives a Hadamard matrix of order m, and its prime. */
static BaseKind
hadamard_base (int m, int *q)
{
  if (m == 1)
    return BASE_ONE;
  if (m >= 4 && is_prime (m - 1) && (m - 1) % 4 == 3)
    {
      *q = m - 1;
      return BASE_PALEY1;
    }
  if (m >= 12 && m % 2 == 0 && is_prime (m / 2 - 1) && (m / 2 - 1) % 4 == 1)
    {
      *q = m / 2 - 1;
      return BASE_PALEY2;
    }
  return BASE_NONE;
}

/* Jacobsthal matrix entry J[i][j] = χ(j - i) of GF(q). */
#define JACOBSTHAL(i, j, q) quadratic_character ((gint64) (j) - (i), q)

/* H [m, m] (row-major, ±1) for a base hadamard_base found. */
static void
hadamard_base_fill (BaseKind kind, int m, int q, gint8 *h)
{
  if (kind == BASE_ONE)
    {
      h[0] = 1;
      return;
    }
  if (kind == BASE_PALEY1)
    {
      /* H = I + S, S = [[0, 1^T], [-1, J]] (J antisymmetric for q ≡ 3 mod 4). */
      for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++)
          {
            int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : JACOBSTHAL (i - 1, j - 1, q);
            h[(gsize) i * m + j] = (gint8) (s + (i == j));
          }
      return;
    }
  /* Paley II: C = [[0, 1^T], [1, J]] (a symmetric conference matrix for
   * q ≡ 1 mod 4), H = C ⊗ [[1, -1], [-1, -1]] + I ⊗ [[1, 1], [1, -1]]. */
  static const int a[2][2] = { { 1, -1 }, { -1, -1 } }, b[2][2] = { { 1, 1 }, { 1, -1 } };
  int c_n = q + 1;
  for (int i = 0; i < c_n; i++)
    for (int j = 0; j < c_n; j++)
      {
        int c = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : JACOBSTHAL (i - 1, j - 1, q);
        for (int u = 0; u < 2; u++)
          for (int v = 0; v < 2; v++)
            h[(gsize) (2 * i + u) * m + 2 * j + v] = (gint8) (c * a[u][v] + (i == j) * b[u][v]);
      }
}

/* A Hadamard matrix of order n as ±1 [n, n], or NULL when no construction
 * above gives one; *what describes it. */
static gint8 *
hadamard_new (int n, char **what)
{
  int m = 0, q = 0, sylvester = 1;
  BaseKind kind = BASE_NONE;
  /* The smallest base: the largest power of two first. */
  for (int p = n & -n; p >= 1 && kind == BASE_NONE; p >>= 1)
    {
      m = n / p;
      sylvester = p;
      kind = hadamard_base (m, &q);
    }
  if (kind == BASE_NONE)
    return NULL;
  g_autofree gint8 *base = g_new (gint8, (gsize) m * m);
  hadamard_base_fill (kind, m, q, base);
  /* H_n = H_m ⊗ S_p, S_p[i][j] = (-1)^popcount(i & j) (Sylvester). */
  gint8 *h = g_new (gint8, (gsize) n * n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      {
        int bi = i / sylvester, bj = j / sylvester, si = i % sylvester, sj = j % sylvester;
        int sign = __builtin_popcount ((unsigned) (si & sj)) & 1 ? -1 : 1;
        h[(gsize) i * n + j] = (gint8) (base[(gsize) bi * m + bj] * sign);
      }
  if (kind == BASE_ONE)
    *what = g_strdup_printf ("Sylvester %d", n);
  else
    *what = g_strdup_printf ("Paley %s (q = %d, order %d) x Sylvester %d", kind == BASE_PALEY1 ? "I" : "II", q, m,
                             sylvester);
  return h;
}

/* A standard normal draw from rng (Box–Muller). */
static double
normal_draw (GRand *rng)
{
  double u1 = 1.0 - g_rand_double (rng), u2 = g_rand_double (rng); /* u1 in (0, 1] */
  return sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2);
}

static float *
random_orthogonal_new (int n, GRand *rng, GError **error)
{
  g_autofree double *a = g_new (double, (gsize) n * n), *tau = g_new (double, n), *sign = g_new (double, n);
  for (gsize i = 0; i < (gsize) n * n; i++)
    a[i] = normal_draw (rng);
  lapack_int info = LAPACKE_dgeqrf (LAPACK_ROW_MAJOR, n, n, a, n, tau);
  for (int i = 0; info == 0 && i < n; i++)
    sign[i] = a[(gsize) i * n + i] < 0 ? -1.0 : 1.0;
  if (info == 0)
    info = LAPACKE_dorgqr (LAPACK_ROW_MAJOR, n, n, n, a, n, tau);
  if (info != 0)
    {
      lp_set_error (error, LP_ERROR_FAILED, "random orthogonal matrix of order %d: LAPACK QR failed (info %d)", n,
                    (int) info);
      return NULL;
    }
  float *q = g_new (float, (gsize) n * n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      q[(gsize) i * n + j] = (float) (a[(gsize) i * n + j] * sign[j]);
  return q;
}

float *
rotation_new (RotationKind kind, int n, GRand *rng, char **what, GError **error)
{
  g_autofree char *how = NULL;
  g_autofree gint8 *h = kind == ROTATION_HADAMARD ? hadamard_new (n, &how) : NULL;
  if (h == NULL)
    {
      *what = g_strdup_printf (kind == ROTATION_HADAMARD
                                 ? "random orthogonal (QR of a Gaussian): no Hadamard matrix of order %d is built here"
                                 : "random orthogonal (QR of a Gaussian), order %d",
                               n);
      return random_orthogonal_new (n, rng, error);
    }
  float *q = g_new (float, (gsize) n * n);
  g_autofree float *sign = g_new (float, n);
  float norm = (float) (1.0 / sqrt ((double) n));
  for (int j = 0; j < n; j++)
    sign[j] = g_rand_boolean (rng) ? norm : -norm;
  for (gsize i = 0; i < (gsize) n; i++)
    for (int j = 0; j < n; j++)
      q[i * n + j] = h[i * n + j] * sign[j];
  *what = g_strdup_printf ("randomized Hadamard, %s", how);
  return q;
}
