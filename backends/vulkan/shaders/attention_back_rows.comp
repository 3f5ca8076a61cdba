#version 450
// attention_back.comp for small heads (hd a multiple of 4, at most 32),
// R rows an invocation and no barriers, as attention_rows.comp does the
// forward (loads, not arithmetic, are what such small heads cost):
//   pass 0, work group (x, h): query rows x*WG*R .. of head h; a sweep over
//     the keys for the row's max and sum (lse), a second for
//     D = sum_s P dP, A = sum_s P dP k[s] and B = sum_s P k[s], so that
//     dq = scale (A - D B); (lse, D) into st[t, h];
//   pass 1, work group (x, kh): key rows x*WG*R .. of key head kh; over the
//     query heads of its group and the query rows that see them,
//     dk = scale sum P (dP - D) q and dv = sum P dy.
// P[t, s] = exp (scale q[t] . k[s] - lse[t]), dP = dy[t] . v[s]; key s is
// visible to query row t when s <= T_kv - T + t.  Every invocation runs
// over the group's whole range, rows outside their own adding nothing.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD4 = 2; // hd / 4
#define WG gl_WorkGroupSize.x
#define R 4

layout(std430, binding = 0) readonly buffer DyBuf { vec4 dy[]; }; // [T, H*hd]
layout(std430, binding = 1) readonly buffer QBuf { vec4 q[]; };   // [T, H*hd]
layout(std430, binding = 2) readonly buffer KBuf { vec4 k[]; };   // [T_kv, Hkv*hd]
layout(std430, binding = 3) readonly buffer VBuf { vec4 v[]; };   // [T_kv, Hkv*hd]
layout(std430, binding = 4) writeonly buffer DqBuf { vec4 dq[]; };
layout(std430, binding = 5) writeonly buffer DkBuf { vec4 dk[]; };
layout(std430, binding = 6) writeonly buffer DvBuf { vec4 dv[]; };
layout(std430, binding = 7) buffer StBuf { vec2 st[]; };          // [T, H]: (lse, D)

layout(push_constant) uniform Params {
  uint T, T_kv, H, Hkv, hd;
  float scale;
  uint pass;
} p;

float dot4 (vec4 a[HD4], vec4 b[HD4])
{
  float s = 0.0;
  for (uint d = 0; d < HD4; d++)
    s += dot (a[d], b[d]);
  return s;
}

void query_rows ()
{
  uint h = gl_WorkGroupID.y, past = p.T_kv - p.T, tid = gl_LocalInvocationID.x;
  uint t0 = gl_WorkGroupID.x * WG * R, t_last = min (t0 + WG * R, p.T) - 1u;
  uint kh = h / (p.H / p.Hkv), group_last = past + t_last, kstride = p.Hkv * HD4;
  vec4 qr[R][HD4], gr[R][HD4], A[R][HD4], B[R][HD4];
  float m[R], l[R], Dt[R];
  uint last[R];
  for (uint j = 0; j < R; j++)
    {
      uint t = min (t0 + j * WG + tid, t_last);
      last[j] = past + t;
      for (uint d = 0; d < HD4; d++)
        {
          qr[j][d] = q[(t * p.H + h) * HD4 + d] * p.scale;
          gr[j][d] = dy[(t * p.H + h) * HD4 + d];
          A[j][d] = vec4 (0.0);
          B[j][d] = vec4 (0.0);
        }
      m[j] = -3.0e38;
      l[j] = 0.0;
      Dt[j] = 0.0;
    }
  for (uint s = 0; s <= group_last; s++)
    {
      vec4 kr[HD4];
      for (uint d = 0; d < HD4; d++)
        kr[d] = k[s * kstride + kh * HD4 + d];
      for (uint j = 0; j < R; j++)
        {
          float score = dot4 (qr[j], kr);
          bool visible = s <= last[j], grows = visible && score > m[j];
          float e = exp (-abs (score - m[j]));
          l[j] = l[j] * (grows ? e : 1.0) + (grows ? 1.0 : (visible ? e : 0.0));
          m[j] = grows ? score : m[j];
        }
    }
  for (uint j = 0; j < R; j++)
    m[j] += log (l[j]); // now the lse
  for (uint s = 0; s <= group_last; s++)
    {
      vec4 kr[HD4], vr[HD4];
      for (uint d = 0; d < HD4; d++)
        {
          kr[d] = k[s * kstride + kh * HD4 + d];
          vr[d] = v[s * kstride + kh * HD4 + d];
        }
      for (uint j = 0; j < R; j++)
        {
          float pr = s <= last[j] ? exp (dot4 (qr[j], kr) - m[j]) : 0.0;
          float pdp = pr * dot4 (gr[j], vr);
          Dt[j] += pdp;
          for (uint d = 0; d < HD4; d++)
            {
              A[j][d] += pdp * kr[d];
              B[j][d] += pr * kr[d];
            }
        }
    }
  for (uint j = 0; j < R; j++)
    {
      uint t = t0 + j * WG + tid;
      if (t > t_last)
        continue;
      for (uint d = 0; d < HD4; d++)
        dq[(t * p.H + h) * HD4 + d] = p.scale * (A[j][d] - Dt[j] * B[j][d]);
      st[t * p.H + h] = vec2 (m[j], Dt[j]);
    }
}

void key_rows ()
{
  uint kh = gl_WorkGroupID.y, past = p.T_kv - p.T, tid = gl_LocalInvocationID.x;
  uint s0 = gl_WorkGroupID.x * WG * R, s_last = min (s0 + WG * R, p.T_kv) - 1u;
  uint group = p.H / p.Hkv, kstride = p.Hkv * HD4;
  // Query rows that see at least the group's first key.
  uint t_first = s0 > past ? s0 - past : 0u;
  vec4 kr[R][HD4], vr[R][HD4], ak[R][HD4], av[R][HD4];
  uint first[R];
  for (uint j = 0; j < R; j++)
    {
      uint s = min (s0 + j * WG + tid, s_last);
      first[j] = s > past ? s - past : 0u; // the first query row that sees key s
      for (uint d = 0; d < HD4; d++)
        {
          kr[j][d] = k[s * kstride + kh * HD4 + d] * p.scale;
          vr[j][d] = v[s * kstride + kh * HD4 + d];
          ak[j][d] = vec4 (0.0);
          av[j][d] = vec4 (0.0);
        }
    }
  for (uint h = kh * group; h < (kh + 1u) * group; h++)
    for (uint t = t_first; t < p.T; t++)
      {
        vec4 qr[HD4], gr[HD4];
        for (uint d = 0; d < HD4; d++)
          {
            qr[d] = q[(t * p.H + h) * HD4 + d];
            gr[d] = dy[(t * p.H + h) * HD4 + d];
          }
        vec2 ld = st[t * p.H + h];
        for (uint j = 0; j < R; j++)
          {
            float pr = t >= first[j] ? exp (dot4 (qr, kr[j]) - ld.x) : 0.0;
            float ds = pr * (dot4 (gr, vr[j]) - ld.y);
            for (uint d = 0; d < HD4; d++)
              {
                ak[j][d] += ds * qr[d];
                av[j][d] += pr * gr[d];
              }
          }
      }
  for (uint j = 0; j < R; j++)
    {
      uint s = s0 + j * WG + tid;
      if (s > s_last)
        continue;
      for (uint d = 0; d < HD4; d++)
        {
          dk[s * kstride + kh * HD4 + d] = p.scale * ak[j][d];
          dv[s * kstride + kh * HD4 + d] = av[j][d];
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
