/* Kernels for one floating type and one instruction set; included by kernels.c once per
 * combination with T (float type), I (signed integer of T's width), INF_BITS (bits of +inf),
 * SIGN_BIT, EDGE (a tree edge: its length's bits and edge_code), VEC_BYTES (native vector
 * width), SUF, FABS and POW defined. */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define NAME(f) CAT(f, SUF)

/* aligned(sizeof(T)): loads and stores at any element */
typedef T NAME(vec) __attribute__((vector_size(VEC_BYTES), aligned(sizeof(T)), may_alias));
typedef I NAME(ivec) __attribute__((vector_size(VEC_BYTES)));
#define WIDTH ((int64_t)(VEC_BYTES / sizeof(T)))
#define LANES (NACC * WIDTH)

/* out[k - lo] = distance-like value from xu to the points lo <= k < hi: squared for l2 (monotone in
 * the distance, all that Prim compares), the distance for the others.  Accumulates LANES points at
 * once in vector registers; the last tile is padded and out holds BLOCK values, so the last sweep
 * may read and write past hi. */
#define SWEEP(UPDATE)                                                                           \
    for (int64_t k0 = lo; k0 < hi; k0 += LANES) {                                               \
        NAME(vec) acc[NACC] = {{0}}, t;                                                         \
        for (int64_t i = 0; i < d; ++i) {                                                       \
            for (int a = 0; a < NACC; ++a) {                                                    \
                t = xu[i] - *(const NAME(vec) *)(cols + TILE(k0, i, d) + a * WIDTH);           \
                t = (NAME(vec))((NAME(ivec))t & ~SIGN_BIT); /* |t| */                           \
                UPDATE;                                                                         \
            }                                                                                   \
        }                                                                                       \
        for (int a = 0; a < NACC; ++a) *(NAME(vec) *)(out + (k0 - lo) + a * WIDTH) = acc[a];     \
    }
/* l1 and l2 (squared) in corel's one summation order, the order of torch's side
 * (corel.topology.distances.fixed_order_sum): coordinate i goes into partial sum i mod 8, each
 * partial in increasing i, then the partials are added in halves, ((p0 + p4) + (p2 + p6)) +
 * ((p1 + p5) + (p3 + p7)).  Built with -ffp-contract=off, every step is one exactly rounded
 * operation, so every engine on every device computes the same bits.  The eight partials are
 * independent chains that hide the add latency. */
#define TERM(i) ({ NAME(vec) t_ = xu[i] - *(const NAME(vec) *)(cols + TILE(k0, i, d)); \
                   t_ = (NAME(vec))((NAME(ivec))t_ & ~SIGN_BIT); if (SQUARE) t_ = t_ * t_; t_; })
#define FIXED_ORDER_SWEEP                                                                      \
    for (int64_t k0 = lo; k0 < hi; k0 += WIDTH) {                                               \
        NAME(vec) q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0}, q4 = {0}, q5 = {0}, q6 = {0}, q7 = {0}; \
        int64_t i = 0;                                                                          \
        for (; i + 8 <= d; i += 8) {                                                            \
            q0 += TERM(i); q1 += TERM(i + 1); q2 += TERM(i + 2); q3 += TERM(i + 3);             \
            q4 += TERM(i + 4); q5 += TERM(i + 5); q6 += TERM(i + 6); q7 += TERM(i + 7);         \
        }                                                                                       \
        switch (d - i) { /* the last coordinates, partials 0 .. d mod 8 - 1 */                   \
        case 7: q6 += TERM(i + 6); /* fall through */                                           \
        case 6: q5 += TERM(i + 5); /* fall through */                                           \
        case 5: q4 += TERM(i + 4); /* fall through */                                           \
        case 4: q3 += TERM(i + 3); /* fall through */                                           \
        case 3: q2 += TERM(i + 2); /* fall through */                                           \
        case 2: q1 += TERM(i + 1); /* fall through */                                           \
        case 1: q0 += TERM(i);                                                                  \
        }                                                                                       \
        *(NAME(vec) *)(out + (k0 - lo)) = ((q0 + q4) + (q2 + q6)) + ((q1 + q5) + (q3 + q7));      \
    }
static void NAME(block_dist)(const T *xu, const T *cols, int64_t lo, int64_t hi, int64_t d, int metric, T p,
                             T *out) {
    switch (metric) {
    case METRIC_L1: {
        const int SQUARE = 0;
        FIXED_ORDER_SWEEP
        break;
    }
    case METRIC_L2: {
        const int SQUARE = 1;
        FIXED_ORDER_SWEEP
        break;
    }
    case METRIC_LINF:
        SWEEP(NAME(ivec) more = t > acc[a]; acc[a] = (NAME(vec))(((NAME(ivec))t & more) | ((NAME(ivec))acc[a] & ~more)))
        break;
    default:
        /* the length itself, its differences taken relative to their largest: p-th powers of terms
         * <= 1 never overflow, and those that underflow are below the sum's rounding, at any p and
         * scale (sums of raw p-th powers chose wrong trees beyond p = 512 in double, and lost short
         * edges to underflow from p = 10 in float) */
        for (int64_t k = lo; k < hi; ++k) {
            T top = 0, s = 0;
            for (int64_t i = 0; i < d; ++i) {
                const T t = FABS(xu[i] - cols[TILE(k, i, d)]);
                top = t > top ? t : top;
            }
            if (top > 0)
                for (int64_t i = 0; i < d; ++i) s += POW(FABS(xu[i] - cols[TILE(k, i, d)]) / top, p);
            out[k - lo] = top > 0 ? top * POW(s, 1 / p) : 0;
        }
    }
}
#undef SWEEP
#undef FIXED_ORDER_SWEEP
#undef TERM
#undef LANES
#undef WIDTH

/* Relaxes the keys of positions [lo, hi) from the new tree vertex u; returns the position of the
 * best outside vertex.  Keys are non-negative floats held as their bit patterns: integer order
 * equals float order, and integer min/compare vectorise without fast-math.  Edges of equal length
 * are ordered by (smaller, larger) vertex index, which makes the tree unique: for one outside
 * vertex that is the order of its tree neighbours' indices, so a tie goes to the smaller u. */
static int64_t NAME(relax)(const T *x, int64_t n, int64_t d, int metric, T p, const T *cols,
                           int64_t u, int64_t lo, int64_t hi, I *key, const int32_t *rem, int32_t *par) {
    union { T f[BLOCK]; I i[BLOCK]; } dist;
    if (metric == METRIC_MATRIX) {
        for (int64_t k = lo; k < hi; ++k) dist.f[k - lo] = x[u * n + rem[k]];
    } else {
        NAME(block_dist)(x + u * d, cols, lo, hi, d, metric, p, dist.f);
    }
    I mn = INF_BITS;
    for (int64_t k = lo; k < hi; ++k) {
        const I dk = dist.i[k - lo], kk = key[k];
        const int closer = (dk < kk) | ((dk == kk) & ((int32_t)u < par[k]));
        key[k] = closer ? dk : kk;
        par[k] = closer ? (int32_t)u : par[k];
        mn = key[k] < mn ? key[k] : mn;
    }
    int64_t bk = lo;
    uint64_t best = UINT64_MAX;
    for (int64_t k = lo; k < hi; ++k) {
        const uint64_t c = key[k] == mn ? edge_code(par[k], rem[k]) : UINT64_MAX;
        if (c < best) {
            best = c;
            bk = k;
        }
    }
    return bk;
}

static int NAME(edge_cmp)(const void *pa, const void *pb) {
    const EDGE *a = pa, *b = pb;
    if (a->w != b->w) return a->w < b->w ? -1 : 1;
    return (a->code > b->code) - (a->code < b->code);
}

/* 1 when all count values are finite (x - x is 0 for finite x, NaN for NaN and inf). */
static int NAME(all_finite)(const T *x, int64_t count) {
    int ok = 1;
    for (int64_t k = 0; k < count; ++k) ok &= (x[k] - x[k]) == 0;
    return ok;
}

/* The minimum spanning tree of one cloud under the order (length, smaller index, larger index),
 * which makes it unique, as pairs (i < j) into edges (n-1, 2) in that order.
 * x: (n, d) points, or (n, n) distances when metric == METRIC_MATRIX. */
static void NAME(prim)(const T *x, int64_t n, int64_t d, int metric, T p, int64_t *edges, T *cols, int64_t cap,
                       I *key, int32_t *rem, int32_t *par, int64_t *best, EDGE *tree) {
    int64_t m = n - 1, u = 0;
    for (int64_t k = 0; k < m; ++k) {
        rem[k] = (int32_t)(k + 1);
        key[k] = INF_BITS;
        par[k] = 0;
    }
    if (metric != METRIC_MATRIX) {
        memset(cols, 0, (size_t)(d * cap) * sizeof(T));
        for (int64_t k = 0; k < m; ++k)
            for (int64_t i = 0; i < d; ++i) cols[TILE(k, i, d)] = x[(k + 1) * d + i];
    }
    for (int64_t step = 0; step < n - 1; ++step) {
        const int64_t nblocks = (m + BLOCK - 1) / BLOCK;
        int64_t bk;
        if (nblocks == 1) {
            /* a parallel region costs about a microsecond even on one thread: skip it */
            bk = NAME(relax)(x, n, d, metric, p, cols, u, 0, m, key, rem, par);
        } else {
#pragma omp parallel for schedule(static) if (m * d >= PARALLEL_WORK)
            for (int64_t b = 0; b < nblocks; ++b) {
                const int64_t lo = b * BLOCK, hi = lo + BLOCK < m ? lo + BLOCK : m;
                best[b] = NAME(relax)(x, n, d, metric, p, cols, u, lo, hi, key, rem, par);
            }
            bk = best[0];
            for (int64_t b = 1; b < nblocks; ++b) {
                const int64_t k = best[b];
                if (key[k] < key[bk] || (key[k] == key[bk] && edge_code(par[k], rem[k]) < edge_code(par[bk], rem[bk])))
                    bk = k;
            }
        }
        u = rem[bk];
        tree[step].w = key[bk];
        tree[step].code = edge_code(par[bk], (int32_t)u);
        --m; /* swap-remove position bk: the remaining points stay contiguous */
        rem[bk] = rem[m];
        key[bk] = key[m];
        par[bk] = par[m];
        if (metric != METRIC_MATRIX)
            for (int64_t i = 0; i < d; ++i) cols[TILE(bk, i, d)] = cols[TILE(m, i, d)];
    }
    qsort(tree, (size_t)(n - 1), sizeof(EDGE), NAME(edge_cmp));
    for (int64_t k = 0; k < n - 1; ++k) {
        edges[2 * k] = (int64_t)(tree[k].code >> 32);
        edges[2 * k + 1] = (int64_t)(tree[k].code & 0xffffffffu);
    }
}

/* counts[q] = number of (branch k, code j) with dist(queries[q, k], codes[k, j]) <= thr, where
 * queries is (M, K, d), tiles holds each branch's n codes in the tiled layout (K blocks of cap * d)
 * and thr is the radius in block_dist's units (squared for l2). */
static void NAME(count_within)(const T *queries, const T *tiles, int64_t M, int64_t K, int64_t n, int64_t d,
                               int64_t cap, int metric, T p, T thr, int64_t *counts) {
#pragma omp parallel for schedule(static) if (M * K * n * d >= PARALLEL_WORK)
    for (int64_t q = 0; q < M; ++q) {
        T out[BLOCK];
        int64_t c = 0;
        for (int64_t k = 0; k < K; ++k) {
            for (int64_t lo = 0; lo < n; lo += BLOCK) {
                const int64_t hi = lo + BLOCK < n ? lo + BLOCK : n;
                NAME(block_dist)(queries + (q * K + k) * d, tiles + k * cap * d, lo, hi, d, metric, p, out);
                for (int64_t j = 0; j < hi - lo; ++j) c += out[j] <= thr;
            }
        }
        counts[q] = c;
    }
}

/* codes (K, n, d) -> tiles (K blocks of cap * d, padding zeroed) */
static void NAME(tile_codes)(const T *codes, int64_t K, int64_t n, int64_t d, int64_t cap, T *tiles) {
    memset(tiles, 0, (size_t)(K * cap * d) * sizeof(T));
    for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < n; ++j)
            for (int64_t i = 0; i < d; ++i) tiles[k * cap * d + TILE(j, i, d)] = codes[(k * n + j) * d + i];
}

#undef NAME
#undef CAT
#undef CAT_
