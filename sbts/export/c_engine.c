/* ---------------------------------------------------------------------------------------------------
   The engine: the same C for every sbts model; the macros and constants above select and feed its parts.

   Layout. Every activation is stored feature-major: channel c of step t of an n-step buffer sits at
   [c * STRIDE(n) + t], so the steps of one channel are contiguous; the stride rounds n up to whole blocks of
   ROW_BLOCK steps, so that a kernel always works on whole blocks (the padding steps carry values no output
   reads). A linear then visits each weight once and,
   for all the steps at once, adds (or, for a ternary weight, adds or subtracts) one contiguous column:
   a loop a compiler turns into vector instructions, and, for a sparse-binary layer, work in proportion
   to the kept weights only, with alpha applied once per output.
   --------------------------------------------------------------------------------------------------- */

typedef struct {
    int in, out;                   /* features in and out */
    const unsigned char *bits;     /* ternary: 2-bit codes; mask: 1 bit (kept or not) per weight */
    uint64_t seed;                 /* mask: the seed whose SplitMix64 stream gives the signs */
    const unsigned short *counts;  /* lists: per output, how many kept inputs have +alpha, then -alpha */
    const INDEX_T *index;          /* lists: those inputs, output after output, the +alpha ones first */
    float alpha;                   /* sparse-binary: the magnitude of every kept weight */
    const float *w;                /* float linear: weights (out x in, row-major); 0 for a sparse-binary one */
    const float *bias;             /* 0: no bias */
} linear_t;

typedef struct { const float *a1, *b1, *a2, *b2; } norms_t;  /* scale and shift of norm1 and norm2 */
typedef struct { const unsigned char *q, *k, *v; } masks_t;  /* 1 bit per (step, channel) */
typedef struct { int q, k, v, out, ff1, ff2; } layer_t;      /* indices into LINEARS */

/* With GCC or clang the kernels use the vector extension: LANES floats that the compiler maps onto the
   target's vector registers (SSE, AVX, AVX-512, NEON) or, without any, onto scalar ones; elsewhere plain
   loops. A kernel's block of ROW_BLOCK steps is VECTORS such vectors, summed in registers. */
#if defined(__GNUC__)
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
#define VECTORS (ROW_BLOCK / LANES)
typedef char row_block_is_whole_vectors[ROW_BLOCK % LANES == 0 && VECTORS <= 8 ? 1 : -1];  /* FOR_VECTORS below */
typedef float lanes_t __attribute__((vector_size(LANES * sizeof(float))));
/* X(0) .. X(VECTORS - 1), written out: constant indices keep a block's vectors in registers even at -O2 */
#if VECTORS == 8
#define FOR_VECTORS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#elif VECTORS == 4
#define FOR_VECTORS(X) X(0) X(1) X(2) X(3)
#elif VECTORS == 2
#define FOR_VECTORS(X) X(0) X(1)
#else
#define FOR_VECTORS(X) X(0)
#endif
/* One step of a block kernel on vector v of the block: they work on the kernel's locals acc (the block's
   sums), column (a loaded vector), c (the input column at the block), wi (a float weight), scale, bias. */
#define BLOCK_ZERO(v) acc[v] = zero;
#define BLOCK_ADD(v) memcpy(&column, c + (v) * LANES, sizeof column); acc[v] += column;  /* unaligned loads */
#define BLOCK_SUBTRACT(v) memcpy(&column, c + (v) * LANES, sizeof column); acc[v] -= column;
#define BLOCK_MULTIPLY_ADD(v) memcpy(&column, c + (v) * LANES, sizeof column); acc[v] += wi * column;
#define BLOCK_STORE(v) acc[v] = acc[v] * scale + bias; memcpy(yo + r + (v) * LANES, &acc[v], sizeof column);
#endif

/* @tables: the model's descriptor tables are generated here */

#define HALF (HEAD_DIM / 2)  /* RoPE turns this many channel pairs per head */

/* Every buffer the engine uses, and nothing else: the one piece of mutable state. */
static struct {
    uint64_t step;  /* the stream's next absolute step; 0: an empty stream */
    float xin[IN_CH * PADDED_LEN], h[D * PADDED_LEN], q[D * PADDED_LEN], k[D * PADDED_LEN], v[D * PADDED_LEN];
    float mixed[D * PADDED_LEN], ff[FF * PADDED_LEN], scores[QUERY_ROWS * MAX_LEN];
#if POSITIONS == POSITIONS_ROPE
    float rope[2 * MAX_LEN * HALF];  /* cos, then sin, of every (position, pair) of a window */
#endif
    float row_keys[LAYERS * D], row_values[LAYERS * D], pooled[D], out[NET_OUT];
    float shift[IN_CH], spread[IN_CH], last[IN_CH];  /* a forecast window's own scaling; a stream's newest row */
#if STREAMABLE
    float keys[LAYERS * D * 2 * CACHE], values[LAYERS * D * 2 * CACHE];  /* per layer, channel: a double ring */
#endif
#if LINEAR_PATH == LINEAR_PATH_JOINT
    float window[IN_CH * MAX_LEN];  /* the joint path's input: the window, variable-major, contiguous */
#endif
#if LINEAR_PATH != LINEAR_PATH_NONE
    float path_out[NET_OUT];  /* the linear path's outputs */
#endif
} arena;

/* The compiler checks the exporter's arithmetic: the header's size is the arena's. */
typedef char arena_size_matches_the_header[sizeof(arena) == SBTS_ARENA_BYTES ? 1 : -1];

/* Element `index` of the SplitMix64 stream of `seed`, as sbts.frozen_tensors.splitmix64 computes it. */
uint64_t sbts_splitmix64(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1u) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* sum of a[j] * b[j] over j < n */
static float dot(const float *a, const float *b, int n)
{
    float total = 0.0f;
    int j = 0;
#if defined(__GNUC__)
    lanes_t acc = {0.0f}, x, y;
    int k;
    for (; j + LANES <= n; j += LANES) {
        memcpy(&x, a + j, sizeof x);
        memcpy(&y, b + j, sizeof y);
        acc += x * y;
    }
    for (k = 0; k < LANES; ++k) total += acc[k];
#endif
    for (; j < n; ++j) total += a[j] * b[j];
    return total;
}

/* y[j] += a * x[j] over j < n */
static void axpy(float *restrict y, float a, const float *restrict x, int n)
{
    int j = 0;
#if defined(__GNUC__)
    lanes_t xv, yv;
    for (; j + LANES <= n; j += LANES) {
        memcpy(&xv, x + j, sizeof xv);
        memcpy(&yv, y + j, sizeof yv);
        yv += a * xv;
        memcpy(y + j, &yv, sizeof yv);
    }
#endif
    for (; j < n; ++j) y[j] += a * x[j];
}

#if FORM != FORM_LISTS
/* acc[r] += column[r] (or -=) for r < rows: eight at a time, a block compilers turn into vector instructions
   even at -O2, then the rest. */
static void add_column(float *restrict acc, const float *restrict column, int rows)
{
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        acc[r] += column[r]; acc[r + 1] += column[r + 1]; acc[r + 2] += column[r + 2]; acc[r + 3] += column[r + 3];
        acc[r + 4] += column[r + 4]; acc[r + 5] += column[r + 5]; acc[r + 6] += column[r + 6];
        acc[r + 7] += column[r + 7];
    }
    for (; r < rows; ++r) acc[r] += column[r];
}

static void subtract_column(float *restrict acc, const float *restrict column, int rows)
{
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        acc[r] -= column[r]; acc[r + 1] -= column[r + 1]; acc[r + 2] -= column[r + 2]; acc[r + 3] -= column[r + 3];
        acc[r + 4] -= column[r + 4]; acc[r + 5] -= column[r + 5]; acc[r + 6] -= column[r + 6];
        acc[r + 7] -= column[r + 7];
    }
    for (; r < rows; ++r) acc[r] -= column[r];
}
#endif

#if FORM == FORM_LISTS

/* The kept inputs of one output, `count` indices: the sum of x over them, for one step (channel i at
   x[i * xs]). */
static inline float gather_sum(const float *x, int xs, const INDEX_T *index, int count)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int j = 0;
    if (xs == 1)  /* a stream's rows: no multiply per index */
        for (; j + 4 <= count; j += 4) {
            s0 += x[index[j]]; s1 += x[index[j + 1]]; s2 += x[index[j + 2]]; s3 += x[index[j + 3]];
        }
    for (; j < count; ++j) s0 += x[(long)index[j] * xs];
    return (s0 + s1) + (s2 + s3);
}
#endif

/* y = W x + b for `rows` steps: x holds l->in channels, channel i at x + i * xs; y channel o at y + o * ys. */
static void linear(const linear_t *l, const float *x, int xs, float *y, int ys, int rows)
{
    int o, i, r;
#if FORM == FORM_LISTS
    const INDEX_T *index = l->index;
#endif
    for (o = 0; o < l->out; ++o) {
        float *restrict yo = y + (long)o * ys;
        const float bias = l->bias ? l->bias[o] : 0.0f;
        if (l->w) {  /* a float linear: every weight, multiplied */
            const float *wo = l->w + (long)o * l->in;
#if defined(__GNUC__)
            if (rows > 1) {  /* whole blocks of steps, their sums in registers (the strides are padded) */
                static const lanes_t zero = {0.0f};
                const float scale = 1.0f;
                lanes_t acc[VECTORS], column;
                for (r = 0; r < rows; r += ROW_BLOCK) {
                    FOR_VECTORS(BLOCK_ZERO)
                    for (i = 0; i < l->in; ++i) {
                        const float wi = wo[i], *c = x + (long)i * xs + r;
                        FOR_VECTORS(BLOCK_MULTIPLY_ADD)
                    }
                    FOR_VECTORS(BLOCK_STORE)
                }
                continue;
            }
            if (xs == 1) {  /* one step, its channels contiguous */
                yo[0] = dot(wo, x, l->in) + bias;
                continue;
            }
#endif
            for (r = 0; r < rows; ++r) yo[r] = 0.0f;
            for (i = 0; i < l->in; ++i) {
                const float wi = wo[i];
                const float *restrict xi = x + (long)i * xs;
                for (r = 0; r < rows; ++r) yo[r] += wi * xi[r];
            }
            for (r = 0; r < rows; ++r) yo[r] += bias;
            continue;
        }
#if FORM == FORM_LISTS
        {   /* the output's kept inputs, those with +alpha first, then those with -alpha */
            const int plus = l->counts[2 * o], minus = l->counts[2 * o + 1];
            if (rows == 1) {  /* one step: a gather-add per kept weight, no branch */
                yo[0] = (gather_sum(x, xs, index, plus) - gather_sum(x, xs, index + plus, minus)) * l->alpha + bias;
                index += plus + minus;
                continue;
            }
            /* ROW_BLOCK steps at a time (whole blocks: the strides are padded), their sums held in registers
               across the whole list: one load per kept weight and step, alpha and the stores once per output. */
            for (r = 0; r < rows; r += ROW_BLOCK) {
                const float *base = x + r;
#if defined(__GNUC__)
                static const lanes_t zero = {0.0f};
                const float scale = l->alpha;
                lanes_t acc[VECTORS], column;
                FOR_VECTORS(BLOCK_ZERO)
                for (i = 0; i < plus; ++i) {
                    const float *c = base + (long)index[i] * xs;
                    FOR_VECTORS(BLOCK_ADD)
                }
                for (i = plus; i < plus + minus; ++i) {
                    const float *c = base + (long)index[i] * xs;
                    FOR_VECTORS(BLOCK_SUBTRACT)
                }
                FOR_VECTORS(BLOCK_STORE)
#else
                float acc[ROW_BLOCK] = {0.0f};
                int k;
                for (i = 0; i < plus; ++i) for (k = 0; k < ROW_BLOCK; ++k) acc[k] += base[(long)index[i] * xs + k];
                for (i = plus; i < plus + minus; ++i)
                    for (k = 0; k < ROW_BLOCK; ++k) acc[k] -= base[(long)index[i] * xs + k];
                for (k = 0; k < ROW_BLOCK; ++k) yo[r + k] = acc[k] * l->alpha + bias;
#endif
            }
            index += plus + minus;
            continue;  /* alpha and the bias are applied */
        }
#else
        {   /* a code per weight, walked a byte at a time (bytes of dropped weights skipped): 2 bits each
               (0 dropped, 1 +alpha, 2 -alpha), or 1 bit (kept or not; a kept weight's sign is the top bit of its
               seed's stream element); each output's row byte-aligned */
            const int per_byte = FORM == FORM_MASK ? 8 : 4, row_bytes = (l->in + per_byte - 1) / per_byte;
            const unsigned char *row = l->bits + (long)o * row_bytes;
            int j, b;
            for (r = 0; r < rows; ++r) yo[r] = 0.0f;
            for (j = 0; j < row_bytes; ++j) {
                if (!row[j]) continue;
                for (b = 0; b < per_byte; ++b) {
                    int code;
                    i = per_byte * j + b;
                    if (FORM == FORM_MASK)
                        code = !((row[j] >> b) & 1) ? 0
                               : sbts_splitmix64(l->seed, (uint64_t)o * (uint64_t)l->in + (uint64_t)i) >> 63 ? 1 : 2;
                    else
                        code = (row[j] >> (2 * b)) & 3;
                    if (code == 1) add_column(yo, x + (long)i * xs, rows);
                    else if (code == 2) subtract_column(yo, x + (long)i * xs, rows);
                }
            }
        }
#endif
        for (r = 0; r < rows; ++r) yo[r] = yo[r] * l->alpha + bias;
    }
}

static void relu(float *x, int n)
{
    int i;
    for (i = 0; i < n; ++i) if (x[i] < 0.0f) x[i] = 0.0f;
}

#if ATTENTION == ATTENTION_QKV_MASK
static int bit(const unsigned char *bits, long at)
{
    return (bits[at >> 3] >> (at & 7)) & 1;
}
#endif

/* softmax(q k^T / sqrt(HEAD_DIM)) v, per head, for nq query rows (channel c of row r at q[c * qs + r])
   against nk keys and values (channel c of key j at k[c * ks + j]); writes out[c * os + r]. */
static void attend(const float *q, int qs, int nq, const float *k, const float *v, int ks, int nk,
                   float *out, int os)
{
    int h, c, r, j;
    for (h = 0; h < HEADS; ++h) {
        for (r = 0; r < nq * nk; ++r) arena.scores[r] = 0.0f;
        for (c = h * HEAD_DIM; c < (h + 1) * HEAD_DIM; ++c)
            for (r = 0; r < nq; ++r) axpy(arena.scores + r * nk, q[(long)c * qs + r], k + (long)c * ks, nk);
        for (r = 0; r < nq; ++r) {
            float *s = arena.scores + r * nk, top = -INFINITY, total = 0.0f;
            for (j = 0; j < nk; ++j) { s[j] *= ATTENTION_SCALE; if (s[j] > top) top = s[j]; }
            for (j = 0; j < nk; ++j) { s[j] = expf(s[j] - top); total += s[j]; }
            for (j = 0; j < nk; ++j) s[j] /= total;
            for (c = h * HEAD_DIM; c < (h + 1) * HEAD_DIM; ++c) out[(long)c * os + r] = dot(s, v + (long)c * ks, nk);
        }
    }
}

#if POSITIONS == POSITIONS_SINUSOIDAL
/* The fixed positional table, computed instead of stored: sin(t f_i) on channel 2i and cos(t f_i) on 2i + 1
   of every step t < n (the angle-addition recurrence in double: one libm pair per frequency). */
static void add_sinusoids(float *h, int s, int n)
{
    int i, t;
    for (i = 0; i < (D + 1) / 2; ++i) {
        const double c1 = cos(SIN_FREQUENCY[i]), s1 = sin(SIN_FREQUENCY[i]);
        double c = 1.0, sn = 0.0, next;
        for (t = 0; t < n; ++t) {
            h[2 * i * s + t] += (float)sn;
            if (2 * i + 1 < D) h[(2 * i + 1) * s + t] += (float)c;
            next = c * c1 - sn * s1;
            sn = sn * c1 + c * s1;
            c = next;
        }
    }
}
#endif

#if POSITIONS == POSITIONS_ROPE
/* cos and sin of the RoPE angles of positions 0..n-1, into arena.rope (by the angle-addition recurrence, in
   double: one libm call per pair, not per position) */
static void rope_table(int n)
{
    int p, t;
    for (p = 0; p < HALF; ++p) {
        const double c1 = cos(ROPE_FREQUENCY[p]), s1 = sin(ROPE_FREQUENCY[p]);
        double c = 1.0, s = 0.0, next;
        for (t = 0; t < n; ++t) {
            arena.rope[t * HALF + p] = (float)c;
            arena.rope[MAX_LEN * HALF + t * HALF + p] = (float)s;
            next = c * c1 - s * s1;
            s = s * c1 + c * s1;
            c = next;
        }
    }
}

/* Turn the channel pairs of every head of `rows` steps of x (stride xs) by the angles of positions
   `position`.. (cos and sin of position t at cos[t * HALF + p], sin[t * HALF + p]). */
static void rotate(float *x, int xs, int rows, const float *cos_t, const float *sin_t)
{
    int h, p, r;
    for (h = 0; h < HEADS; ++h)
        for (p = 0; p < HALF; ++p) {
            float *e = x + (long)(h * HEAD_DIM + 2 * p) * xs, *o = e + xs;
            for (r = 0; r < rows; ++r) {
                const float c = cos_t[r * HALF + p], s = sin_t[r * HALF + p], a = e[r], b = o[r];
                e[r] = a * c - b * s;
                o[r] = a * s + b * c;
            }
        }
}
#endif

#if NORM == NORM_LAYER || NORM == NORM_LAYER_TIME
/* n values x[0], x[stride], ... standardised, then scaled by a[j] and shifted by b[j]. */
static void standardise(float *x, int n, int stride, const float *a, const float *b)
{
    int j;
    float mean = 0.0f, var = 0.0f, spread;
    for (j = 0; j < n; ++j) mean += x[j * stride];
    mean /= (float)n;
    for (j = 0; j < n; ++j) { const float z = x[j * stride] - mean; var += z * z; }
    var /= (float)n;
    spread = sqrtf(var + NORM_EPS);
    for (j = 0; j < n; ++j) x[j * stride] = (x[j * stride] - mean) / spread * a[j] + b[j];
}
#endif

/* The norm of one residual: steps first..n-1 of h (stride hs). */
static void norm(const float *a, const float *b, float *h, int hs, int first, int n)
{
#if NORM == NORM_BATCH  /* eval mode: scale and shift per channel */
    int c, t;
    for (c = 0; c < D; ++c) for (t = first; t < n; ++t) h[c * hs + t] = h[c * hs + t] * a[c] + b[c];
#elif NORM == NORM_LAYER_TIME  /* every channel over the window's steps; weight and bias per step */
    int c;
    (void)first;
    for (c = 0; c < D; ++c) standardise(h + c * hs, n, 1, a, b);
#elif NORM == NORM_LAYER  /* the features of every step */
    int t;
    for (t = first; t < n; ++t) standardise(h + t, D, hs, a, b);
#else
    (void)a; (void)b; (void)h; (void)hs; (void)first; (void)n;
#endif
}

/* Feed-forward half of an encoder layer, after attention: steps first..n-1 of h get the out projection of
   `mixed`, the residual and norm1, the feed-forward, the residual and norm2 (stride s everywhere). */
static void finish_layer(int l, float *h, const float *mixed, int first, int n, int s)
{
    const int rows = n - first;
    float *tmp = arena.q;  /* the queries are spent by now */
    int c, t;
    linear(&LINEARS[LAYER_LINEARS[l].out], mixed + first, s, tmp + first, s, rows);
    for (c = 0; c < D; ++c) for (t = first; t < n; ++t) h[c * s + t] += tmp[c * s + t];
    norm(NORMS[l].a1, NORMS[l].b1, h, s, first, n);
    linear(&LINEARS[LAYER_LINEARS[l].ff1], h + first, s, arena.ff + first, s, rows);
    for (c = 0; c < FF; ++c) relu(arena.ff + c * s + first, rows);
    linear(&LINEARS[LAYER_LINEARS[l].ff2], arena.ff + first, s, tmp + first, s, rows);
    for (c = 0; c < D; ++c) for (t = first; t < n; ++t) h[c * s + t] += tmp[c * s + t];
    norm(NORMS[l].a2, NORMS[l].b2, h, s, first, n);
}

/* The encoder on the n prepared steps in arena.xin (feature-major, stride STRIDE(n)); afterwards arena.h
   holds the ReLU of the last layer's states of every step, or (last_only) of the last step, at
   [c * STRIDE(n) + n - 1]. */
static void network(int n, int last_only)
{
    float *h = arena.h, *q = arena.q, *k = arena.k, *v = arena.v, *mixed = arena.mixed;
    const int s = STRIDE(n);
    int l, c, t;
    linear(&LINEARS[EMBEDDING], arena.xin, s, h, s, n);
    for (c = 0; c < D; ++c)
        for (t = 0; t < n; ++t) h[c * s + t] = h[c * s + t] * EMBED_SCALE + (TABLE ? TABLE[t * D + c] : 0.0f);
#if POSITIONS == POSITIONS_SINUSOIDAL
    add_sinusoids(h, s, n);
#endif
#if POSITIONS == POSITIONS_ROPE
    rope_table(n);
#endif
    for (l = 0; l < LAYERS; ++l) {
        const layer_t *ids = &LAYER_LINEARS[l];
        /* the last layer of a per-step norm computes only the rows the output reads */
        const int first = (last_only && l == LAYERS - 1 && NORM != NORM_LAYER_TIME) ? n - 1 : 0;
#if ATTENTION == ATTENTION_STEP_T
        /* past steps attend to themselves only (their output is their value); the last step to the past */
        const int context = STEP_T_SELF ? n : n - 1;
        linear(&LINEARS[ids->k], h, s, k, s, context);
        linear(&LINEARS[ids->v], h, s, v, s, first == 0 ? n : context);
        linear(&LINEARS[ids->q], h + n - 1, s, q + n - 1, s, 1);
#if POSITIONS == POSITIONS_ROPE
        rotate(q + n - 1, s, 1, arena.rope + (n - 1) * HALF, arena.rope + MAX_LEN * HALF + (n - 1) * HALF);
        rotate(k, s, context, arena.rope, arena.rope + MAX_LEN * HALF);
#endif
        for (c = 0; c < D; ++c) for (t = first; t < n - 1; ++t) mixed[c * s + t] = v[c * s + t];
        attend(q + n - 1, s, 1, k, v, s, context, mixed + n - 1, s);
#else
        linear(&LINEARS[ids->q], h + first, s, q + first, s, n - first);
        linear(&LINEARS[ids->k], h, s, k, s, n);
        linear(&LINEARS[ids->v], h, s, v, s, n);
#if ATTENTION == ATTENTION_QKV_MASK
        for (c = 0; c < D; ++c)
            for (t = 0; t < n; ++t) {
                if (t >= first && !bit(MASKS[l].q, (long)t * D + c)) q[c * s + t] = 0.0f;
                if (!bit(MASKS[l].k, (long)t * D + c)) k[c * s + t] = 0.0f;
                if (!bit(MASKS[l].v, (long)t * D + c)) v[c * s + t] = 0.0f;
            }
#endif
#if POSITIONS == POSITIONS_ROPE
        rotate(q + first, s, n - first, arena.rope + first * HALF, arena.rope + MAX_LEN * HALF + first * HALF);
        rotate(k, s, n, arena.rope, arena.rope + MAX_LEN * HALF);
#endif
        attend(q + first, s, n - first, k, v, s, n, mixed + first, s);
#endif
        finish_layer(l, h, mixed, first, n, s);
        if (l == LAYERS - 1 && HEAD_RELU)
            for (c = 0; c < D; ++c) relu(h + c * s + first, n - first);
    }
}

/* Raw row-major rows -> arena.xin, scaled as in training: `count` steps, stride `stride`, from the last
   `count` of the n given rows (fewer: the earliest given row stands in for the missing ones). */
static int load_rows(const float *x, int n, int count, int stride)
{
    int t, c;
    for (t = 0; t < count; ++t) {
        const int row = n >= count ? n - count + t : (t < count - n ? 0 : t - (count - n));
        for (c = 0; c < IN_CH; ++c) {
            const float raw = x[(long)row * IN_CH + c];
            const float scaled = (float)(((double)raw - INPUT_MEAN[c]) / INPUT_STD[c]);
            if (!(scaled - scaled == 0.0f)) return SBTS_NOT_FINITE;  /* NaN and infinities fail x - x == 0 */
            arena.xin[c * stride + t] = scaled;
        }
    }
    return SBTS_OK;
}

/* The head on the pooled or last states: pooled (D) -> arena.out (NET_OUT). */
static void head(const float *states, int stride)
{
    linear(&LINEARS[HEAD], states, stride, arena.out, 1, 1);
}

void sbts_init(void)
{
    arena.step = 0;
}

#if TASK == TASK_CLASSIFICATION
int sbts_forward(const float *x, int n_steps, float *out)
{
    int c, t, status;
    if (n_steps < 1 || n_steps > MAX_LEN || (FIXED_LENGTH && n_steps != MAX_LEN)
        || (ATTENTION == ATTENTION_STEP_T && !STEP_T_SELF && n_steps < 2))
        return SBTS_BAD_LENGTH;
    if ((status = load_rows(x, n_steps, n_steps, STRIDE(n_steps))) != SBTS_OK) return status;
    network(n_steps, 0);
    /* The per-step logits averaged over the steps: the head is linear, so it runs once on the mean state. */
    for (c = 0; c < D; ++c) {
        float total = 0.0f;
        for (t = 0; t < n_steps; ++t) total += arena.h[c * STRIDE(n_steps) + t];
        arena.pooled[c] = total / (float)n_steps;
    }
    head(arena.pooled, 1);
    for (c = 0; c < NET_OUT; ++c) out[c] = arena.out[c];
    return SBTS_OK;
}
#endif

#if TASK == TASK_ANOMALY
static void score_into(const float *observed, int stride, float *out)
{
    double total = 0.0;
    int c;
    for (c = 0; c < NET_OUT; ++c) {
        const double error = (double)arena.out[c] - (double)observed[c * stride];
        total += error * error;
    }
    out[0] = (float)(total / NET_OUT);
#if HAS_THRESHOLD
    out[1] = total / NET_OUT > SBTS_THRESHOLD ? 1.0f : 0.0f;
#endif
}

int sbts_forward(const float *x, int n_steps, float *out)
{
    int status;
    if (n_steps < 1) return SBTS_BAD_LENGTH;
    if ((status = load_rows(x, n_steps, MAX_LEN, PADDED_LEN)) != SBTS_OK) return status;
    network(MAX_LEN, 1);
    head(arena.h + MAX_LEN - 1, PADDED_LEN);
    score_into(arena.xin + MAX_LEN - 1, PADDED_LEN, out);
    return SBTS_OK;
}
#endif

#if TASK == TASK_FORECASTING
/* The network's output at the target slot (arena.out: HORIZON steps ahead of IN_CH variables, step first) ->
   the forecasts in the data's units: the change from the last observed row `base` (stride `stride`) or the
   value, mapped back by the window's own scaling (arena.shift, arena.spread: 0 and 1 without one) and then by
   the training statistics. */
static void forecast_into(const float *base, int stride, float *out)
{
    int o;
    for (o = 0; o < NET_OUT; ++o) {
        const int c = o % IN_CH;  /* out[k * IN_CH + c]: variable c, k + 1 steps ahead */
        const float scaled = ((TARGET_CHANGE ? base[c * stride] : 0.0f) + arena.out[o]) * arena.spread[c]
                             + arena.shift[c];
        out[o] = (float)((double)scaled * INPUT_STD[c] + INPUT_MEAN[c]);
    }
}

#if LINEAR_PATH != LINEAR_PATH_NONE
/* The linear path, added to the network's output at the target slot. Joint: one map of the whole prepared window
   (variable c at step t is its input c * MAX_LEN + t). Shared: one map from a variable's MAX_LEN steps to its
   NET_OUT / IN_CH outputs, the same for every variable (its output k is out[k * IN_CH + c]). */
static void add_linear_path(void)
{
    int c, o;
#if LINEAR_PATH == LINEAR_PATH_JOINT
    int t;
    for (c = 0; c < IN_CH; ++c)
        for (t = 0; t < MAX_LEN; ++t) arena.window[c * MAX_LEN + t] = arena.xin[c * PADDED_LEN + t];
    linear(&LINEARS[PATH], arena.window, 1, arena.path_out, 1, 1);
    for (o = 0; o < NET_OUT; ++o) arena.out[o] += arena.path_out[o];
#else
    const int ahead = NET_OUT / IN_CH;
    for (c = 0; c < IN_CH; ++c) linear(&LINEARS[PATH], arena.xin + c * PADDED_LEN, 1, arena.path_out + c * ahead, 1, 1);
    for (c = 0; c < IN_CH; ++c)
        for (o = 0; o < ahead; ++o) arena.out[o * IN_CH + c] += arena.path_out[c * ahead + o];
#endif
}
#endif

int sbts_forward(const float *x, int n_steps, float *out)
{
    const int observed = MAX_LEN - 1;
    int c, t, status;
    if (n_steps < 1) return SBTS_BAD_LENGTH;
    if ((status = load_rows(x, n_steps, observed, PADDED_LEN)) != SBTS_OK) return status;
    for (c = 0; c < IN_CH; ++c) {
        float *row = arena.xin + c * PADDED_LEN, mean = 0.0f, var = 0.0f;
        arena.shift[c] = 0.0f;
        arena.spread[c] = 1.0f;
        if (INPUT_NORM_WINDOW) {  /* each window centred and scaled by its own observed steps */
            for (t = 0; t < observed; ++t) mean += row[t];
            mean /= (float)observed;
            for (t = 0; t < observed; ++t) { const float z = row[t] - mean; var += z * z; }
            var /= (float)observed;
            arena.shift[c] = mean;
            arena.spread[c] = sqrtf(var + WINDOW_NORM_EPS);
            for (t = 0; t < observed; ++t) row[t] = (row[t] - mean) / arena.spread[c];
        }
        row[observed] = 0.0f;  /* the target slot: never read */
    }
    network(MAX_LEN, 1);
    head(arena.h + MAX_LEN - 1, PADDED_LEN);
#if LINEAR_PATH != LINEAR_PATH_NONE
    add_linear_path();
#endif
    forecast_into(arena.xin + observed - 1, PADDED_LEN, out);
    return SBTS_OK;
}
#endif

#if STREAMABLE
/* ---- streaming: one step per observation (a streamable Step-T network; see sbts.runtime.streaming) ---- */

/* cos and sin of the RoPE angles of one absolute step, into cos_t and sin_t (HALF each) */
static void rope_at(uint64_t step, float *cos_t, float *sin_t)
{
#if POSITIONS == POSITIONS_ROPE
    int p;
    for (p = 0; p < HALF; ++p) {
        cos_t[p] = (float)cos((double)step * ROPE_FREQUENCY[p]);
        sin_t[p] = (float)sin((double)step * ROPE_FREQUENCY[p]);
    }
#else
    (void)step; (void)cos_t; (void)sin_t;
#endif
}

/* One row (prepared, IN_CH values at arena.xin) through the past stream: it attends to itself only. Its
   keys (not yet turned) and values at every layer go to arena.row_keys and arena.row_values. */
static void past_state(void)
{
    float *h = arena.h;
    int l;
    linear(&LINEARS[EMBEDDING], arena.xin, 1, h, 1, 1);
    for (l = 0; l < D; ++l) h[l] *= EMBED_SCALE;
    for (l = 0; l < LAYERS; ++l) {
        const layer_t *ids = &LAYER_LINEARS[l];
        linear(&LINEARS[ids->k], h, 1, arena.row_keys + l * D, 1, 1);
        linear(&LINEARS[ids->v], h, 1, arena.row_values + l * D, 1, 1);
        finish_layer(l, h, arena.row_values + l * D, 0, 1, 1);  /* a softmax over one key is 1: mixed = value */
    }
}

/* Append the row's keys (turned by its step) and values to every layer's ring, `copies` times (an empty
   stream's first row fills the window: it stands in for the history before it). */
static void push(int copies)
{
    float cos_t[HALF + 1], sin_t[HALF + 1], turned[D];
    int i, l, c;
    for (i = 0; i < copies; ++i, ++arena.step) {
        const long slot = (long)(arena.step % CACHE);
        rope_at(arena.step, cos_t, sin_t);
        for (l = 0; l < LAYERS; ++l) {
            float *keys = arena.keys + (long)l * D * 2 * CACHE, *values = arena.values + (long)l * D * 2 * CACHE;
            for (c = 0; c < D; ++c) turned[c] = arena.row_keys[l * D + c];
#if POSITIONS == POSITIONS_ROPE
            rotate(turned, 1, 1, cos_t, sin_t);
#endif
            for (c = 0; c < D; ++c) {
                keys[c * 2 * CACHE + slot] = keys[c * 2 * CACHE + slot + CACHE] = turned[c];
                values[c * 2 * CACHE + slot] = values[c * 2 * CACHE + slot + CACHE] = arena.row_values[l * D + c];
            }
        }
    }
}

/* The network's output (arena.out) at the last step of the window made of the cached steps and one more
   row, prepared at arena.xin (zeros: a forecast's target slot), at the stream's next step. */
static void query(void)
{
    float cos_t[HALF + 1], sin_t[HALF + 1], *g = arena.h, *q = arena.q;
    const long start = (long)(arena.step % CACHE);  /* the oldest cached step's slot */
    int l, c;
    rope_at(arena.step, cos_t, sin_t);
    linear(&LINEARS[EMBEDDING], arena.xin, 1, g, 1, 1);
    for (c = 0; c < D; ++c) g[c] *= EMBED_SCALE;
    for (l = 0; l < LAYERS; ++l) {
        const layer_t *ids = &LAYER_LINEARS[l];
        float *keys = arena.keys + (long)l * D * 2 * CACHE, *values = arena.values + (long)l * D * 2 * CACHE;
        linear(&LINEARS[ids->q], g, 1, q, 1, 1);
#if POSITIONS == POSITIONS_ROPE
        rotate(q, 1, 1, cos_t, sin_t);
#endif
#if STEP_T_SELF
        /* The last step also attends to itself. Its key and value go just past the window, over the mirror
           of the oldest slot: the next push rewrites that mirror before any window reads it. */
        linear(&LINEARS[ids->k], g, 1, arena.k, 1, 1);
        linear(&LINEARS[ids->v], g, 1, arena.v, 1, 1);
#if POSITIONS == POSITIONS_ROPE
        rotate(arena.k, 1, 1, cos_t, sin_t);
#endif
        for (c = 0; c < D; ++c) {
            keys[c * 2 * CACHE + start + CACHE] = arena.k[c];
            values[c * 2 * CACHE + start + CACHE] = arena.v[c];
        }
#endif
        attend(q, 1, 1, keys + start, values + start, 2 * CACHE, CACHE + STEP_T_SELF, arena.mixed, 1);
        finish_layer(l, g, arena.mixed, 0, 1, 1);
    }
    if (HEAD_RELU) relu(g, D);
    head(g, 1);
}

void sbts_stream_reset(void)
{
    arena.step = 0;
}

int sbts_stream_update(const float *x_t, float *out)
{
    int status;
    if ((status = load_rows(x_t, 1, 1, 1)) != SBTS_OK) return status;  /* a bad row changes nothing */
    past_state();
#if TASK == TASK_ANOMALY
    if (arena.step == 0) push(CACHE);  /* no history at all: the observation stands in for it */
    query();
    score_into(arena.xin, 1, out);
    push(1);
#else
    {
        int c;
        for (c = 0; c < IN_CH; ++c) {
            arena.last[c] = arena.xin[c];
            arena.xin[c] = 0.0f;  /* the target slot */
            arena.shift[c] = 0.0f;  /* a stream has no window scaling */
            arena.spread[c] = 1.0f;
        }
    }
    push(arena.step == 0 ? CACHE + 1 : 1);
    query();
    forecast_into(arena.last, 1, out);
#endif
    return SBTS_OK;
}
#endif
