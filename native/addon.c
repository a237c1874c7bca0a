/*
 * Node-API surface of the cokv kernels (see kernels.h). One call carries a whole matmul: the typed arrays are
 * unwrapped once and their sizes checked against the shape before any kernel runs.
 *
 *   matmul(out: Float32Array, x: Float32Array, rows, n, k, w: TypedArray, dtype, flags?): void
 *   attend(out, oOff, oStride, q, qOff, qStride, nq, hd, scale, k1, v1, from1, to1, count1: Int32Array|null,
 *          k2, v2, from2, to2): void
 *   attend16(...): the same over Uint16Array k1/v1/k2/v2 (IEEE half bits: an F16 KV cache)
 *   swiglu(gate, up, n): void     rmsNorm(out, x, w, rows, dim, eps): void     add(out, x, n): void (out += x)
 *   info(): { avx2, simd, vnni, vnniKind, threads }      setThreads(n): number      setSimd(level): number
 *   firstNonFinite(data: TypedArray, dtype, n): number   (index of the first NaN/Inf of n elements, or -1)
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels.h"

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "cokv_native: N-API call failed: " #call);   \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

static size_t elem_size(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;
  }
}

/* Data pointer and byte length of a typed array argument; throws and returns 0 if it is not one. */
static int get_ta(napi_env env, napi_value v, const char *what, void **data, size_t *bytes, napi_typedarray_type *type) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) {
    char msg[96];
    snprintf(msg, sizeof msg, "cokv_native: %s must be a typed array", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  napi_typedarray_type t;
  size_t len;
  if (napi_get_typedarray_info(env, v, &t, &len, data, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "cokv_native: napi_get_typedarray_info failed");
    return 0;
  }
  if (type) *type = t;
  *bytes = len * elem_size(t);
  return 1;
}

static int get_int(napi_env env, napi_value v, const char *what, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "cokv_native: %s must be a number", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

static napi_value range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

static napi_value js_matmul(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 7) return range_error(env, "cokv_native.matmul: expected (out, x, rows, n, k, w, dtype[, flags])");
  void *out, *x, *w;
  size_t ob, xb, wb;
  napi_typedarray_type ot, xt;
  int64_t m, n, k, dt, flags = 0;
  if (!get_ta(env, a[0], "out", &out, &ob, &ot) || !get_ta(env, a[1], "x", &x, &xb, &xt) ||
      !get_int(env, a[2], "rows", &m) || !get_int(env, a[3], "n", &n) || !get_int(env, a[4], "k", &k) ||
      !get_ta(env, a[5], "w", &w, &wb, NULL) || !get_int(env, a[6], "dtype", &dt) ||
      (argc > 7 && !get_int(env, a[7], "flags", &flags)))
    return NULL;
  if (ot != napi_float32_array || xt != napi_float32_array) return range_error(env, "cokv_native.matmul: out and x must be Float32Array");
  if (m < 0 || n <= 0 || k <= 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return range_error(env, "cokv_native.matmul: bad shape");
  if (m == 0) return NULL;
  size_t rb = cokv_row_bytes((int)dt, (int)k);
  if (rb == 0) return range_error(env, "cokv_native.matmul: unknown dtype or k not a whole number of blocks");
  if (ob / 4 < (size_t)m * (size_t)n) return range_error(env, "cokv_native.matmul: out is smaller than rows*n");
  if (xb / 4 < (size_t)m * (size_t)k) return range_error(env, "cokv_native.matmul: x is smaller than rows*k");
  if (wb < rb * (size_t)n) return range_error(env, "cokv_native.matmul: w is smaller than n rows");
  if (cokv_matmul(out, x, (int)m, (int)n, (int)k, w, (int)dt, (int)flags) != 0) {
    napi_throw_error(env, NULL, "cokv_native.matmul: out of memory");
  }
  return NULL;
}

static napi_value attend_common(napi_env env, napi_callback_info info, int half) {
  size_t argc = 18;
  napi_value a[18];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  const char *name = half ? "cokv_native.attend16" : "cokv_native.attend";
  char msg[128];
#define ATT_ERR(what) (snprintf(msg, sizeof msg, "%s: %s", name, what), range_error(env, msg))
  if (argc < 18) return ATT_ERR("expected 18 arguments");
  void *out, *q, *k1, *v1, *k2, *v2, *cnt = NULL;
  size_t ob, qb, k1b, v1b, k2b, v2b, cb = 0;
  napi_typedarray_type k1t, v1t, k2t, v2t;
  int64_t oOff, oStride, qOff, qStride, nq, hd, from1, to1, from2, to2;
  double scale;
  napi_valuetype ct;
  if (!get_ta(env, a[0], "out", &out, &ob, NULL) || !get_int(env, a[1], "oOff", &oOff) ||
      !get_int(env, a[2], "oStride", &oStride) || !get_ta(env, a[3], "q", &q, &qb, NULL) ||
      !get_int(env, a[4], "qOff", &qOff) || !get_int(env, a[5], "qStride", &qStride) ||
      !get_int(env, a[6], "nq", &nq) || !get_int(env, a[7], "hd", &hd) ||
      napi_get_value_double(env, a[8], &scale) != napi_ok || !get_ta(env, a[9], "k1", &k1, &k1b, &k1t) ||
      !get_ta(env, a[10], "v1", &v1, &v1b, &v1t) || !get_int(env, a[11], "from1", &from1) ||
      !get_int(env, a[12], "to1", &to1) || napi_typeof(env, a[13], &ct) != napi_ok ||
      (ct != napi_null && ct != napi_undefined && !get_ta(env, a[13], "count1", &cnt, &cb, NULL)) ||
      !get_ta(env, a[14], "k2", &k2, &k2b, &k2t) || !get_ta(env, a[15], "v2", &v2, &v2b, &v2t) ||
      !get_int(env, a[16], "from2", &from2) || !get_int(env, a[17], "to2", &to2))
    return NULL;
  if (nq <= 0) return NULL;
  if (hd <= 0 || oOff < 0 || qOff < 0 || oStride < hd || qStride < hd || from1 < 0 || to1 < from1 || from2 < 0 ||
      to2 < from2 || (to1 - from1) + (to2 - from2) <= 0)
    return ATT_ERR("bad shape");
  const size_t es = half ? 2 : 4; /* bytes per K/V element */
  if (half && (k1t != napi_uint16_array || v1t != napi_uint16_array || k2t != napi_uint16_array || v2t != napi_uint16_array))
    return ATT_ERR("k1, v1, k2 and v2 must be Uint16Array (IEEE half bits)");
  if ((size_t)(oOff + (nq - 1) * oStride + hd) > ob / 4 || (size_t)(qOff + (nq - 1) * qStride + hd) > qb / 4 ||
      (size_t)(to1 * hd) > k1b / es || (size_t)(to1 * hd) > v1b / es || (size_t)(to2 * hd) > k2b / es ||
      (size_t)(to2 * hd) > v2b / es)
    return ATT_ERR("an array is too small for the shape");
  if (cnt) {
    if (cb / 4 < (size_t)nq) return ATT_ERR("count1 too short");
    for (int64_t i = 0; i < nq; i++) {
      int c = ((const int32_t *)cnt)[i];
      if (c < 0 || c > to1 - from1 || c + (to2 - from2) <= 0) return ATT_ERR("bad count1");
    }
  }
  int rc = half ? cokv_attend16((float *)out + oOff, (int)oStride, (const float *)q + qOff, (int)qStride, (int)nq, (int)hd,
                                (float)scale, k1, v1, (int)from1, (int)to1, cnt, k2, v2, (int)from2, (int)to2)
               : cokv_attend((float *)out + oOff, (int)oStride, (const float *)q + qOff, (int)qStride, (int)nq, (int)hd,
                             (float)scale, k1, v1, (int)from1, (int)to1, cnt, k2, v2, (int)from2, (int)to2);
  if (rc != 0) {
    snprintf(msg, sizeof msg, "%s: out of memory", name);
    napi_throw_error(env, NULL, msg);
  }
#undef ATT_ERR
  return NULL;
}

static napi_value js_attend(napi_env env, napi_callback_info info) { return attend_common(env, info, 0); }
static napi_value js_attend16(napi_env env, napi_callback_info info) { return attend_common(env, info, 1); }

/* (a: Float32Array, b: Float32Array, n) -> fn(a, b, n), in place on a: swiglu and add. */
static napi_value elementwise2(napi_env env, napi_callback_info info, const char *name, const char *an, const char *bn,
                               void (*fn)(float *, const float *, size_t)) {
  size_t argc = 3;
  napi_value a[3];
  char msg[160];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 3) {
    snprintf(msg, sizeof msg, "cokv_native.%s: expected (%s, %s, n)", name, an, bn);
    return range_error(env, msg);
  }
  void *x, *y;
  size_t xb, yb;
  napi_typedarray_type xt, yt;
  int64_t n;
  if (!get_ta(env, a[0], an, &x, &xb, &xt) || !get_ta(env, a[1], bn, &y, &yb, &yt) || !get_int(env, a[2], "n", &n)) return NULL;
  if (xt != napi_float32_array || yt != napi_float32_array) {
    snprintf(msg, sizeof msg, "cokv_native.%s: %s and %s must be Float32Array", name, an, bn);
    return range_error(env, msg);
  }
  if (n < 0 || (size_t)n > xb / 4 || (size_t)n > yb / 4) {
    snprintf(msg, sizeof msg, "cokv_native.%s: n exceeds an array", name);
    return range_error(env, msg);
  }
  fn(x, y, (size_t)n);
  return NULL;
}

static napi_value js_swiglu(napi_env env, napi_callback_info info) { return elementwise2(env, info, "swiglu", "gate", "up", cokv_swiglu); }
static napi_value js_add(napi_env env, napi_callback_info info) { return elementwise2(env, info, "add", "out", "x", cokv_add); }

static napi_value js_rmsnorm(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 6) return range_error(env, "cokv_native.rmsNorm: expected (out, x, w, rows, dim, eps)");
  void *o, *x, *w;
  size_t ob, xb, wb;
  napi_typedarray_type ot, xt, wt;
  int64_t rows, dim;
  double eps;
  if (!get_ta(env, a[0], "out", &o, &ob, &ot) || !get_ta(env, a[1], "x", &x, &xb, &xt) || !get_ta(env, a[2], "w", &w, &wb, &wt) ||
      !get_int(env, a[3], "rows", &rows) || !get_int(env, a[4], "dim", &dim) || napi_get_value_double(env, a[5], &eps) != napi_ok)
    return NULL;
  if (ot != napi_float32_array || xt != napi_float32_array || wt != napi_float32_array)
    return range_error(env, "cokv_native.rmsNorm: out, x and w must be Float32Array");
  if (rows < 0 || dim <= 0 || rows > INT32_MAX || dim > INT32_MAX || (size_t)dim > wb / 4 ||
      (size_t)(rows * dim) > ob / 4 || (size_t)(rows * dim) > xb / 4)
    return range_error(env, "cokv_native.rmsNorm: an array is too small for the shape");
  cokv_rmsnorm(o, x, w, (int)rows, (int)dim, (float)eps);
  return NULL;
}

static napi_value make_int(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o;
  CHECK(napi_create_object(env, &o));
  napi_value t, f;
  napi_get_boolean(env, 1, &t);
  napi_get_boolean(env, 0, &f);
  CHECK(napi_set_named_property(env, o, "avx2", cokv_cpu_avx2() ? t : f));
  CHECK(napi_set_named_property(env, o, "simd", make_int(env, cokv_simd())));
  const int vnni = cokv_vnni();
  CHECK(napi_set_named_property(env, o, "vnni", vnni ? t : f));
  napi_value kind;
  const char *kname = vnni == 1 ? "avx512-vnni" : vnni == 2 ? "avx-vnni" : "none";
  CHECK(napi_create_string_utf8(env, kname, NAPI_AUTO_LENGTH, &kind));
  CHECK(napi_set_named_property(env, o, "vnniKind", kind));
  CHECK(napi_set_named_property(env, o, "threads", make_int(env, cokv_threads())));
  return o;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  int64_t n;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 1 || !get_int(env, a[0], "n", &n)) return NULL;
  return make_int(env, cokv_set_threads(n > 64 ? 64 : (int)n));
}

static napi_value js_set_simd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  int64_t n;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 1 || !get_int(env, a[0], "level", &n)) return NULL;
  cokv_set_simd((int)n);
  return make_int(env, cokv_simd());
}

static napi_value js_first_nonfinite(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 3) return range_error(env, "cokv_native.firstNonFinite: expected (data, dtype, n)");
  void *d;
  size_t db;
  int64_t dt, n;
  if (!get_ta(env, a[0], "data", &d, &db, NULL) || !get_int(env, a[1], "dtype", &dt) || !get_int(env, a[2], "n", &n)) return NULL;
  if (n < 0) return range_error(env, "cokv_native.firstNonFinite: bad n");
  /* The bytes n elements need, checked against the array before the scan reads them. */
  size_t need;
  if (dt == DT_F32) need = (size_t)n * 4;
  else if (dt == DT_F16 || dt == DT_BF16) need = (size_t)n * 2;
  else {
    size_t rb = cokv_row_bytes((int)dt, 256), rb32 = cokv_row_bytes((int)dt, 32);
    if (rb32) need = (size_t)(n / 32) * rb32;
    else if (rb) need = (size_t)(n / 256) * rb;
    else return range_error(env, "cokv_native.firstNonFinite: unknown dtype");
  }
  if (need > db) return range_error(env, "cokv_native.firstNonFinite: data is smaller than n elements");
  int64_t r = cokv_first_nonfinite(d, (int)dt, n);
  if (r == -2) return range_error(env, "cokv_native.firstNonFinite: unknown dtype or n not a whole number of blocks");
  napi_value out;
  CHECK(napi_create_double(env, (double)r, &out));
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor d[] = {
      {"matmul", NULL, js_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"attend", NULL, js_attend, NULL, NULL, NULL, napi_default, NULL},
      {"attend16", NULL, js_attend16, NULL, NULL, NULL, napi_default, NULL},
      {"swiglu", NULL, js_swiglu, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, js_rmsnorm, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"setSimd", NULL, js_set_simd, NULL, NULL, NULL, napi_default, NULL},
      {"firstNonFinite", NULL, js_first_nonfinite, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof d / sizeof d[0], d) != napi_ok) return NULL;
  return exports;
}
