#version 450
// The backward of attention.comp, in two passes without atomics (the
// softmax recomputed from q and k, as flash attention does):
//   pass 0, a work group per (head h, query row t): the row's log-sum-exp
//     lse and D = sum_s P[s] dP[s] (dP[s] = dy . v[s]) into st[t, h], and
//     dq = scale sum_s P[s] (dP[s] - D) k[s];
//   pass 1, a work group per (key head kh, key row s): over the query heads
//     of its group and the query rows that see key s,
//     dk = scale sum P (dP - D) q and dv = sum P dy.
// P[t, s] = exp (scale q[t] . k[s] - lse[t]); key s is visible to query row
// t when s <= T_kv - T + t.  hd <= 4 * WG.
layout(local_size_x_id = 0) in;
#define WG gl_WorkGroupSize.x
#define MAX_PER_THREAD 4
#define MAX_HD (MAX_PER_THREAD * WG)
#define NEG_BIG -3.0e38

layout(std430, binding = 0) readonly buffer DyBuf { float dy[]; }; // [T, H*hd]
layout(std430, binding = 1) readonly buffer QBuf { float q[]; };   // [T, H*hd]
layout(std430, binding = 2) readonly buffer KBuf { float k[]; };   // [T_kv, Hkv*hd]
layout(std430, binding = 3) readonly buffer VBuf { float v[]; };   // [T_kv, Hkv*hd]
layout(std430, binding = 4) writeonly buffer DqBuf { float dq[]; };
layout(std430, binding = 5) writeonly buffer DkBuf { float dk[]; };
layout(std430, binding = 6) writeonly buffer DvBuf { float dv[]; };
layout(std430, binding = 7) buffer StBuf { vec2 st[]; };          // [T, H]: (lse, D)

layout(push_constant) uniform Params {
  uint T, T_kv, H, Hkv, hd;
  float scale;
  uint pass;
} p;

shared float xs[MAX_HD]; // pass 0: q[t]; pass 1: k[s]
shared float ys[MAX_HD]; // pass 0: dy[t]; pass 1: v[s]
shared float ps[WG];
shared float ds[WG];
shared float red[WG];

float reduce (float x, bool is_max)
{
  uint tid = gl_LocalInvocationID.x;
  red[tid] = x;
  barrier ();
  for (uint s = WG / 2; s > 0; s /= 2)
    {
      if (tid < s)
        red[tid] = is_max ? max (red[tid], red[tid + s]) : red[tid] + red[tid + s];
      barrier ();
    }
  float r = red[0];
  barrier ();
  return r;
}

float dot_shared (bool of_x, uint base)
{
  float acc = 0.0;
  for (uint d = 0; d < p.hd; d++)
    acc = fma (of_x ? xs[d] : ys[d], of_x ? k[base + d] : v[base + d], acc);
  return acc;
}

void query_rows ()
{
  uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  uint kh = h / (p.H / p.Hkv), last = p.T_kv - p.T + t;
  uint qbase = (t * p.H + h) * p.hd;
  for (uint d = tid; d < p.hd; d += WG)
    {
      xs[d] = q[qbase + d];
      ys[d] = dy[qbase + d];
    }
  barrier ();
  // The row's max and sum, online per thread, then combined.
  float m = NEG_BIG, l = 0.0;
  for (uint s = tid; s <= last; s += WG)
    {
      float sc = dot_shared (true, (s * p.Hkv + kh) * p.hd) * p.scale;
      if (sc > m)
        {
          l = l * exp (m - sc) + 1.0;
          m = sc;
        }
      else
        l += exp (sc - m);
    }
  float mx = reduce (m, true);
  float lse = mx + log (reduce (l * exp (m - mx), false));
  float dsum = 0.0;
  for (uint s = tid; s <= last; s += WG)
    {
      uint kb = (s * p.Hkv + kh) * p.hd;
      dsum += exp (dot_shared (true, kb) * p.scale - lse) * dot_shared (false, kb);
    }
  float D = reduce (dsum, false);
  float acc[MAX_PER_THREAD];
  for (uint r = 0; r < MAX_PER_THREAD; r++)
    acc[r] = 0.0;
  for (uint c0 = 0; c0 <= last; c0 += WG)
    {
      uint s = c0 + tid;
      float g = 0.0;
      if (s <= last)
        {
          uint kb = (s * p.Hkv + kh) * p.hd;
          g = exp (dot_shared (true, kb) * p.scale - lse) * (dot_shared (false, kb) - D);
        }
      ds[tid] = g;
      barrier ();
      uint n_valid = min (WG, last + 1 - c0);
      for (uint r = 0; r < MAX_PER_THREAD; r++)
        {
          uint d = tid + r * WG;
          if (d >= p.hd)
            break;
          float a = acc[r];
          for (uint j = 0; j < n_valid; j++)
            a = fma (ds[j], k[((c0 + j) * p.Hkv + kh) * p.hd + d], a);
          acc[r] = a;
        }
      barrier ();
    }
  for (uint r = 0; r < MAX_PER_THREAD; r++)
    {
      uint d = tid + r * WG;
      if (d < p.hd)
        dq[qbase + d] = acc[r] * p.scale;
    }
  if (tid == 0u)
    st[t * p.H + h] = vec2 (lse, D);
}

void key_rows ()
{
  uint kh = gl_WorkGroupID.x, s = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  uint group = p.H / p.Hkv, kbase = (s * p.Hkv + kh) * p.hd;
  uint past = p.T_kv - p.T; // query row t sits at position past + t
  uint t0 = s > past ? s - past : 0u;
  for (uint d = tid; d < p.hd; d += WG)
    {
      xs[d] = k[kbase + d];
      ys[d] = v[kbase + d];
    }
  barrier ();
  float ak[MAX_PER_THREAD], av[MAX_PER_THREAD];
  for (uint r = 0; r < MAX_PER_THREAD; r++)
    {
      ak[r] = 0.0;
      av[r] = 0.0;
    }
  for (uint h = kh * group; h < (kh + 1u) * group; h++)
    for (uint c0 = t0; c0 < p.T; c0 += WG)
      {
        uint t = c0 + tid;
        float pr = 0.0, g = 0.0;
        if (t < p.T)
          {
            uint qb = (t * p.H + h) * p.hd;
            float sc = 0.0, dp = 0.0;
            for (uint d = 0; d < p.hd; d++)
              {
                sc = fma (q[qb + d], xs[d], sc);
                dp = fma (dy[qb + d], ys[d], dp);
              }
            vec2 ld = st[t * p.H + h];
            pr = exp (sc * p.scale - ld.x);
            g = pr * (dp - ld.y);
          }
        ps[tid] = pr;
        ds[tid] = g;
        barrier ();
        uint n_valid = min (WG, p.T - c0);
        for (uint r = 0; r < MAX_PER_THREAD; r++)
          {
            uint d = tid + r * WG;
            if (d >= p.hd)
              break;
            float a = ak[r], b = av[r];
            for (uint j = 0; j < n_valid; j++)
              {
                uint qb = ((c0 + j) * p.H + h) * p.hd + d;
                a = fma (ds[j], q[qb], a);
                b = fma (ps[j], dy[qb], b);
              }
            ak[r] = a;
            av[r] = b;
          }
        barrier ();
      }
  for (uint r = 0; r < MAX_PER_THREAD; r++)
    {
      uint d = tid + r * WG;
      if (d < p.hd)
        {
          dk[kbase + d] = ak[r] * p.scale;
          dv[kbase + d] = av[r];
        }
    }
}

void main ()
{
  if (p.pass == 0u)
    query_rows ();
  else
    key_rows ();
}
