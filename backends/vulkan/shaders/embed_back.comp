#version 450
// dst[V, D] = the scatter-add of dy[T, D]'s rows at rows ids[t]: one thread
// per column d, which zeroes its column and adds the rows in order of t, so
// that repeated ids need no atomics and the sums come in the reference's
// order.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer DyBuf { float dy[]; };
layout(std430, binding = 1) readonly buffer IBuf { int ids[]; };
layout(std430, binding = 2) buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint T, D, V;
} p;

void main ()
{
  uint d = gl_GlobalInvocationID.x;
  if (d >= p.D)
    return;
  for (uint v = 0; v < p.V; v++)
    dst[v * p.D + d] = 0.0;
  for (uint t = 0; t < p.T; t++)
    {
      int id = ids[t];
      if (id >= 0 && uint (id) < p.V)
        dst[uint (id) * p.D + d] += dy[t * p.D + d];
    }
}
