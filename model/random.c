/* llmpress — the one pseudo-random generator: splitmix64 (tiny, well mixed,
 * the same on every machine), and the uniform and normal draws made from it.
 * Calibration sampling, synthetic models and randomized SVD's test matrices
 * all use it, so the same seed gives the same numbers everywhere. */
#include "config.h"

#include <math.h>

#include "lp-internal.h"

guint64
lp_random_next (guint64 *state)
{
  guint64 z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double
lp_random_uniform (guint64 *state)
{
  return ((lp_random_next (state) >> 11) + 1) * 0x1p-53;
}

double
lp_random_normal (guint64 *state)
{
  double u1 = lp_random_uniform (state), u2 = lp_random_uniform (state);
  return sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2);
}
