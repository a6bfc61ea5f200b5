/* Native CPU kernels of corel: Prim's minimum spanning tree (0-dim persistence) and latent ball counts.
 *
 * Prim's minimum spanning tree over the complete graph of a point cloud.
 *
 * The 0-dim Vietoris-Rips death times of a cloud are the edge lengths of its MST.  Prim's O(n^2)
 * algorithm suits a complete graph: every step scans the vertices not yet in the tree.
 * Distances are computed on the fly from the points (O(n d) memory, so 50,000 x 160 fits), or read
 * from a dense distance matrix.  The points not yet in the tree are kept compacted (swap-remove)
 * and stored column by column, so each step streams over contiguous memory in SIMD registers and
 * the total work is n^2 d / 2, half of a full distance matrix.  Large steps are split into blocks
 * shared by OpenMP threads.
 *
 * Edges are ordered by (length, smaller vertex index, larger vertex index), a strict total order,
 * so the tree is unique; it is returned in that order.  corel's torch engine uses the same order,
 * so every engine returns the same tree.  Only the edges are returned; torch recomputes their
 * lengths so that autograd sees them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { METRIC_L1 = 0, METRIC_L2 = 1, METRIC_LINF = 2, METRIC_P = 3, METRIC_MATRIX = 4 };

#define BLOCK 256 /* positions per relax call: its distances stay in L1 */
#define NACC 4  /* independent vector accumulators: hides the add latency */
#define CHUNK 32 /* points per sweep at the widest: 4 x 256-bit of float */
/* The points not yet in the tree are stored in tiles of CHUNK points, coordinate-major inside a
 * tile: one sweep reads one contiguous tile, and the last tile is padded. */
#define TILE(k, i, d) (((k) / CHUNK * (d) + (i)) * CHUNK + (k) % CHUNK)
/* Below this many distance terms per step, threads cost more than they save. */
#define PARALLEL_WORK 200000

/* An edge's place among edges of equal length: (smaller index, larger index), packed. */
static inline uint64_t edge_code(int32_t a, int32_t b) {
    return a < b ? ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) : ((uint64_t)(uint32_t)b << 32 | (uint32_t)a);
}

/* A tree edge: the bits of its length (I of the float type) and its edge_code. */
typedef struct {
    int32_t w;
    uint64_t code;
} edge_f32;
typedef struct {
    int64_t w;
    uint64_t code;
} edge_f64;

/* Each type is compiled twice: for AVX2+FMA, chosen at import when the CPU has them, and for the
 * baseline instruction set.  Vector types must be declared under the target that uses them, or
 * GCC keeps them in memory. */
#define T float
#define I int32_t
#define EDGE edge_f32
#define INF_BITS ((int32_t)0x7f800000)
#define SIGN_BIT ((int32_t)0x80000000)
#define FABS fabsf
#define POW powf
#define VEC_BYTES 16
#define SUF f32
#include "kernels_impl.h"
#if defined(__x86_64__) && defined(__GNUC__)
#undef VEC_BYTES
#undef SUF
#define VEC_BYTES 32
#define SUF f32_avx2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "kernels_impl.h"
#pragma GCC pop_options
#endif
#undef T
#undef I
#undef EDGE
#undef INF_BITS
#undef SIGN_BIT
#undef FABS
#undef POW
#undef VEC_BYTES
#undef SUF

#define T double
#define I int64_t
#define EDGE edge_f64
#define INF_BITS ((int64_t)0x7ff0000000000000LL)
#define SIGN_BIT ((int64_t)0x8000000000000000ULL)
#define FABS fabs
#define POW pow
#define VEC_BYTES 16
#define SUF f64
#include "kernels_impl.h"
#if defined(__x86_64__) && defined(__GNUC__)
#undef VEC_BYTES
#undef SUF
#define VEC_BYTES 32
#define SUF f64_avx2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "kernels_impl.h"
#pragma GCC pop_options
#endif

typedef void (*count_f32_fn)(const float *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int, float,
                             float, int64_t *);
typedef void (*count_f64_fn)(const double *, const double *, int64_t, int64_t, int64_t, int64_t, int64_t, int, double,
                             double, int64_t *);
static count_f32_fn count_float = count_within_f32;
static count_f64_fn count_double = count_within_f64;
typedef void (*prim_f32_fn)(const float *, int64_t, int64_t, int, float, int64_t *, float *, int64_t, int32_t *,
                            int32_t *, int32_t *, int64_t *, edge_f32 *);
typedef void (*prim_f64_fn)(const double *, int64_t, int64_t, int, double, int64_t *, double *, int64_t, int64_t *,
                            int32_t *, int32_t *, int64_t *, edge_f64 *);
static prim_f32_fn prim_float = prim_f32;
static prim_f64_fn prim_double = prim_f64;

static PyObject *mst_edges(PyObject *self, PyObject *args) {
    Py_buffer xbuf, ebuf;
    Py_ssize_t batch, n, d;
    int metric, is_double;
    double p;
    if (!PyArg_ParseTuple(args, "y*w*nnnidp", &xbuf, &ebuf, &batch, &n, &d, &metric, &p, &is_double))
        return NULL;
    const size_t item = is_double ? sizeof(double) : sizeof(float);
    const int64_t row = metric == METRIC_MATRIX ? n : d;
    if (n < 2 || n > INT32_MAX - 1 || (size_t)xbuf.len < (size_t)(batch * n * row) * item ||
        (size_t)ebuf.len < (size_t)(batch * (n - 1) * 2) * sizeof(int64_t)) {
        PyBuffer_Release(&xbuf);
        PyBuffer_Release(&ebuf);
        PyErr_SetString(PyExc_ValueError, "mst_edges: buffer sizes do not match batch, n, d");
        return NULL;
    }
    const int64_t cap = (n + CHUNK - 1) / CHUNK * CHUNK, nblocks = (n + BLOCK - 1) / BLOCK;
    const size_t cols_size = metric == METRIC_MATRIX ? 0 : (size_t)(d * cap) * item;
    const size_t tree_size = (size_t)n * (is_double ? sizeof(edge_f64) : sizeof(edge_f32));
    /* tree first: its structs need 8-byte alignment, which malloc gives */
    char *tree = malloc(tree_size + (size_t)nblocks * sizeof(int64_t) + (size_t)n * item + cols_size +
                        (size_t)(2 * n) * sizeof(int32_t));
    if (!tree) {
        PyBuffer_Release(&xbuf);
        PyBuffer_Release(&ebuf);
        return PyErr_NoMemory();
    }
    int64_t *best = (int64_t *)(tree + tree_size);
    char *key = (char *)(best + nblocks), *cols = key + (size_t)n * item;
    int32_t *rem = (int32_t *)(cols + cols_size), *par = rem + n;
    int finite = 1;
    Py_BEGIN_ALLOW_THREADS
    finite = is_double ? all_finite_f64(xbuf.buf, batch * n * row) : all_finite_f32(xbuf.buf, batch * n * row);
    for (Py_ssize_t b = 0; finite && b < batch; ++b) {
        int64_t *edges = (int64_t *)ebuf.buf + b * (n - 1) * 2;
        if (is_double)
            prim_double((const double *)xbuf.buf + b * n * row, n, d, metric, p, edges, (double *)cols, cap,
                        (int64_t *)key, rem, par, best, (edge_f64 *)tree);
        else
            prim_float((const float *)xbuf.buf + b * n * row, n, d, metric, (float)p, edges, (float *)cols, cap,
                       (int32_t *)key, rem, par, best, (edge_f32 *)tree);
    }
    Py_END_ALLOW_THREADS
    free(tree);
    PyBuffer_Release(&xbuf);
    PyBuffer_Release(&ebuf);
    return PyBool_FromLong(finite);
}

static PyObject *count_within(PyObject *self, PyObject *args) {
    Py_buffer qbuf, cbuf, obuf;
    Py_ssize_t M, K, n, d;
    int metric, is_double;
    double p, radius;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnniddp", &qbuf, &cbuf, &obuf, &M, &K, &n, &d, &metric, &p, &radius,
                          &is_double))
        return NULL;
    const size_t item = is_double ? sizeof(double) : sizeof(float);
    PyObject *result = NULL;
    if (metric == METRIC_MATRIX || (size_t)qbuf.len < (size_t)(M * K * d) * item ||
        (size_t)cbuf.len < (size_t)(K * n * d) * item || (size_t)obuf.len < (size_t)M * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "count_within: buffer sizes do not match M, K, n, d");
        goto done;
    }
    const int64_t cap = (n + CHUNK - 1) / CHUNK * CHUNK;
    void *tiles = malloc((size_t)(K * cap * d) * item + 1);
    if (!tiles) {
        PyErr_NoMemory();
        goto done;
    }
    /* the threshold in block_dist's units: squared for l2 */
    const double thr = metric == METRIC_L2 ? radius * radius : radius;
    Py_BEGIN_ALLOW_THREADS
    if (is_double) {
        tile_codes_f64(cbuf.buf, K, n, d, cap, tiles);
        count_double(qbuf.buf, tiles, M, K, n, d, cap, metric, p, thr, obuf.buf);
    } else {
        tile_codes_f32(cbuf.buf, K, n, d, cap, tiles);
        count_float(qbuf.buf, tiles, M, K, n, d, cap, metric, (float)p, (float)thr, obuf.buf);
    }
    Py_END_ALLOW_THREADS
    free(tiles);
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&qbuf);
    PyBuffer_Release(&cbuf);
    PyBuffer_Release(&obuf);
    return result;
}

static PyMethodDef methods[] = {
    {"count_within", count_within, METH_VARARGS,
     "count_within(queries, codes, counts, M, K, n, d, metric, p, radius, is_double): per query (M, K, d), the\n"
     "number of codes (K, n, d) within radius in its own branch, summed over branches, into counts (M,)."},
    {"mst_edges", mst_edges, METH_VARARGS,
     "mst_edges(x, edges, batch, n, d, metric, p, is_double) -> bool: Prim MST edges of each cloud into\n"
     "edges; False (and edges unset) when x holds a NaN or inf."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit__ext(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        prim_float = prim_f32_avx2;
        prim_double = prim_f64_avx2;
        count_float = count_within_f32_avx2;
        count_double = count_within_f64_avx2;
    }
#endif
    return PyModule_Create(&module);
}
