/* fuzz/c_engine_harness.c: the generated C engine (sbts.c, sbts.h) under a fuzzer. Any byte string becomes a
   sequence of calls -- sbts_forward with any n_steps and any float bit patterns, sbts_init, and for a streamable
   model sbts_stream_update and sbts_stream_reset in any order and number -- and every call's outcome is held to
   the engine's contract; a violation is an abort(), which the sanitizers or libFuzzer report like their own
   findings. fuzz/c_engine.py builds it for each model kind and runs it:

     cc -std=c99 -Wall -Wextra -Werror -pedantic -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
        -I DIR fuzz/c_engine_harness.c -o harness -lm                   (DIR: a generated sbts.h and sbts.c)
     ./harness -seed=1 -seconds=60 [-crash_file=PATH] [-timeout=5]      seeded random inputs (gcc or clang)
     ./harness FILE...                                                  replay inputs
     clang ... -fsanitize=fuzzer,address,undefined -DSBTS_LIBFUZZER ... ; ./harness CORPUS -max_total_time=60

   The engine is included, not linked: the harness reads its scaling constants (INPUT_MEAN, INPUT_STD) and mode
   macros, and its arena. Before every call all the arena's scratch (everything but the stream's state: the step
   counter and the key and value rings) is overwritten with a poison value (a NaN, an infinity, a huge or zero
   float), and at the start of each input the whole arena is, so a result that reads anything the call has not
   written -- stale padding steps, an unwritten ring slot -- shows as a non-finite output or a result that
   changes with the poison. Input and output buffers are malloc'd to exactly what the call may read or write
   (an n_steps beyond FUZZ_CAP_ROWS gets a mapping whose unread rows are inaccessible or NaN), so an over-read
   or over-write is an AddressSanitizer report.

   The contract checked (rules, named as they are reported):
     return-code      the code is SBTS_OK, SBTS_BAD_LENGTH or SBTS_NOT_FINITE, and exactly the documented one:
                      BAD_LENGTH for an n_steps the model does not take (classification: 1 to SBTS_MAX_LEN,
                      exactly SBTS_MAX_LEN for a fixed-length model, at least 2 under Step-T without self
                      attention; anomaly and forecasting: at least 1), else NOT_FINITE when a value of a row
                      read (all n rows; the last SBTS_WINDOW rows for a detector, SBTS_WINDOW - 1 for a
                      forecaster) is NaN or infinite or scales to it, else OK (a NaN in a row not read is fine)
     out-written-on-error / out-not-written   a refused call leaves every out value as it was; an accepted one
                      writes all SBTS_OUT_DIM (a forecaster's SBTS_HORIZON x SBTS_IN_CHANNELS, step ahead first),
                      and not one past them (out is malloc'd to exactly SBTS_OUT_DIM)
     input-written    x is left as it was
     not-finite-output  an accepted call whose rows read all scale to |z| <= FUZZ_MODERATE gives finite
                      outputs (for a stream: every row still in its window). Not promised beyond: huge finite
                      inputs overflow by design (every test model here returns SBTS_OK with NaN outputs from
                      rows of |z| ~ 1e19 to 1e20: squares in the attention scores and the norms pass FLT_MAX)
     score / decision   a detector's score is >= 0 (or NaN), its decision 0 or 1 and 1 exactly when the score
                      exceeds SBTS_THRESHOLD (up to the float rounding of the score)
     forward-changed-stream / bad-row-changed-stream   sbts_forward, and a refused stream row, leave the
                      stream's state (step, keys, values) as it was
     stream-not-forward  a stream update equals sbts_forward on the stream's last rows, within
                      FUZZ_TOLERANCE, while every row in the window scales to |z| <= FUZZ_TYPICAL (every out
                      value: each step ahead of a forecaster)
     not-deterministic  the same forward, or the same stream update from the same state, under another poison,
                      gives the same bits
     hang             an input runs past -timeout seconds (standalone; libFuzzer has its own -timeout)

   Input format: byte 0 picks the poison; then operations until the bytes run out (missing bytes read as 0)
   or FUZZ_MAX_CALLS engine calls are made: forward (n_steps: small, near SBTS_MAX_LEN, near whole blocks of
   steps, the bounds, or any 32-bit value; values in one of FUZZ_MODES ways: typical, mixed with special
   values, raw bits, wide magnitudes, one special value at a chosen row, all special, constant), init,
   stream update (one row), stream burst (up to 64 + 3 * SBTS_MAX_LEN rows from a seeded generator, some of
   them bad, crossing the ring's wrap-around), stream reset, recheck (the last forward, or a stream update
   twice from one state, under another poison), and a change of poison. */

#define _DEFAULT_SOURCE 1  /* mmap, alarm, clock_gettime with -std=c99 */
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "sbts.c"

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

#ifndef FUZZ_MODERATE
#define FUZZ_MODERATE 1e6     /* |scaled input| up to this: every output finite (the test models overflow past 1e19) */
#endif
#ifndef FUZZ_TYPICAL
#define FUZZ_TYPICAL 8.0      /* |scaled input| up to this: a stream equals sbts_forward within FUZZ_TOLERANCE */
#endif
#ifndef FUZZ_TOLERANCE
#define FUZZ_TOLERANCE 1e-5   /* |a - b| <= FUZZ_TOLERANCE * (1 + |a| + |b|) */
#endif
#define FUZZ_CAP_ROWS 4096    /* n_steps up to this: malloc'd rows; beyond, a mapping of the rows read */
#define FUZZ_MAX_CALLS 2000   /* engine calls per input */
#define FUZZ_SENTINEL 0x7fa1b2c3u  /* what out holds before a call (a signalling NaN no engine computes) */
#define FUZZ_MAX_INPUT 4096   /* standalone random inputs: at most this many bytes */

#if TASK == TASK_ANOMALY
#define FUZZ_WINDOW_READ MAX_LEN
#elif TASK == TASK_FORECASTING
#define FUZZ_WINDOW_READ (MAX_LEN - 1)
#endif

/* The header's out size is the one the engine writes: a classifier's logits, a detector's score (and
   decision), a forecaster's SBTS_HORIZON steps of every variable (the network's NET_OUT outputs). */
#if TASK == TASK_CLASSIFICATION
#define FUZZ_OUT_DIM NET_OUT
#elif TASK == TASK_ANOMALY
#define FUZZ_OUT_DIM (1 + HAS_THRESHOLD)
#else
#define FUZZ_OUT_DIM (SBTS_HORIZON * SBTS_IN_CHANNELS)
typedef char fuzz_forecast_is_every_step_of_every_variable[NET_OUT == SBTS_HORIZON * IN_CH && SBTS_HORIZON >= 1
                                                           ? 1 : -1];
typedef char fuzz_one_name_per_variable[sizeof sbts_column_names / sizeof sbts_column_names[0] == IN_CH ? 1 : -1];
#endif
typedef char fuzz_out_dim_is_what_the_engine_writes[SBTS_OUT_DIM == FUZZ_OUT_DIM ? 1 : -1];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

/* ---- reporting ---- */

static const uint8_t *fuzz_input;  /* the input being run: written to fuzz_crash_path on a failure */
static size_t fuzz_input_size;
static const char *fuzz_crash_path;

static void fuzz_write_crash(void)  /* async-signal-safe: also on a hang */
{
    int fd;
    size_t done = 0;
    if (!fuzz_crash_path || !fuzz_input) return;
    fd = open(fuzz_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    while (done < fuzz_input_size) {
        const ssize_t wrote = write(fd, fuzz_input + done, fuzz_input_size - done);
        if (wrote <= 0) break;
        done += (size_t)wrote;
    }
    close(fd);
}

static void fuzz_print_stats(void);

static void fuzz_on_death(void)  /* the sanitizers' death callback too; once */
{
    static volatile sig_atomic_t done;
    if (done) return;
    done = 1;
    fuzz_write_crash();
    fuzz_print_stats();
}

/* UndefinedBehaviorSanitizer calls this at every report (-fno-sanitize-recover: its first is its last). gcc links
   its runtime apart from AddressSanitizer's, each with its own death callback, and the one
   __sanitizer_set_death_callback sets below is AddressSanitizer's: without this hook a UBSan finding under gcc
   would leave no crash file. */
void __ubsan_on_report(void);
void __ubsan_on_report(void)
{
    fuzz_on_death();
}

static void fuzz_fail(const char *rule, const char *format, ...)
{
    va_list args;
    fprintf(stderr, "==sbts-fuzz== contract violated: %s: ", rule);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    fuzz_on_death();
    fflush(stderr);
    abort();
}

/* ---- statistics (printed at exit, as libFuzzer prints its stat:: lines) ---- */

static struct {
    unsigned long inputs, calls, forward[3], stream[3], compared, rechecks, bounded, mapped;
    double gap;  /* the largest stream/forward difference seen, in units of FUZZ_TOLERANCE's bound */
} fuzz_stats;

static void fuzz_print_stats(void)
{
    fprintf(stderr, "stat::sbts_inputs: %lu\nstat::sbts_calls: %lu\n", fuzz_stats.inputs, fuzz_stats.calls);
    fprintf(stderr, "stat::sbts_forward_ok: %lu\nstat::sbts_forward_bad_length: %lu\n"
            "stat::sbts_forward_not_finite: %lu\n", fuzz_stats.forward[0], fuzz_stats.forward[1],
            fuzz_stats.forward[2]);
    fprintf(stderr, "stat::sbts_stream_ok: %lu\nstat::sbts_stream_not_finite: %lu\n", fuzz_stats.stream[0],
            fuzz_stats.stream[2]);
    fprintf(stderr, "stat::sbts_finite_checked: %lu\nstat::sbts_stream_compared: %lu\nstat::sbts_rechecks: %lu\n"
            "stat::sbts_stream_gap: %.3g\nstat::sbts_mapped: %lu\n", fuzz_stats.bounded, fuzz_stats.compared,
            fuzz_stats.rechecks, fuzz_stats.gap, fuzz_stats.mapped);
}

/* ---- the input ---- */

typedef struct { const uint8_t *at, *end; } fuzz_reader;

static unsigned fuzz_byte(fuzz_reader *in)
{
    return in->at < in->end ? *in->at++ : 0u;
}

static uint32_t fuzz_u32(fuzz_reader *in)
{
    uint32_t value = 0;
    int i;
    for (i = 0; i < 4; ++i) value |= (uint32_t)fuzz_byte(in) << (8 * i);
    return value;
}

static float fuzz_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint32_t fuzz_bits_of(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static const uint32_t FUZZ_SPECIAL[] = {
    0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu,  /* quiet NaN, its negative, two signalling NaNs */
    0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u,  /* +inf, -inf, +0, -0 */
    0x00000001u, 0x807fffffu, 0x00800000u, 0x7f7fffffu,  /* the smallest denormal, -the largest, FLT_MIN, FLT_MAX */
    0xff7fffffu, 0x7149f2cau, 0xf149f2cau, 0x7f61b1e6u,  /* -FLT_MAX, 1e30, -1e30, 3e38 */
    0x60ad78ecu, 0x501502f9u, 0x49742400u, 0x447a0000u,  /* 1e20, 1e10, 1e6, 1e3 */
};
#define FUZZ_SPECIALS (sizeof FUZZ_SPECIAL / sizeof FUZZ_SPECIAL[0])

static const uint32_t FUZZ_POISON[] = {
    0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u, 0x7149f2cau, 0xf149f2cau, 0x00000000u,
};
#define FUZZ_POISONS (sizeof FUZZ_POISON / sizeof FUZZ_POISON[0])

/* A raw value whose scaled value (the engine's INPUT_MEAN and INPUT_STD) is z. */
static float fuzz_raw(double z, int c)
{
    return (float)(z * INPUT_STD[c] + INPUT_MEAN[c]);
}

static float fuzz_scaled(float raw, int c)  /* as the engine's load_rows computes it */
{
    return (float)(((double)raw - INPUT_MEAN[c]) / INPUT_STD[c]);
}

/* 0: every value scales to |z| <= FUZZ_TYPICAL; 1: to <= FUZZ_MODERATE; 2: finite; 3: one is not finite */
static int fuzz_row_class(const float *row)
{
    int c, worst = 0;
    for (c = 0; c < IN_CH; ++c) {
        const float z = fuzz_scaled(row[c], c);
        const int k = !(z - z == 0.0f) ? 3 : fabsf(z) > FUZZ_MODERATE ? 2 : fabsf(z) > FUZZ_TYPICAL ? 1 : 0;
        if (k > worst) worst = k;
    }
    return worst;
}

enum { MODE_TYPICAL, MODE_MIXED, MODE_BITS, MODE_WIDE, MODE_ONE_SPECIAL, MODE_SPECIALS, MODE_CONSTANT, FUZZ_MODES };

static float fuzz_value(fuzz_reader *in, int mode, int c)
{
    unsigned b;
    switch (mode) {
    case MODE_BITS:
        return fuzz_bits(fuzz_u32(in));
    case MODE_WIDE: {  /* |z| from 2^-20 to 2^25, either side of FUZZ_MODERATE */
        const unsigned mantissa = fuzz_byte(in), exponent = fuzz_byte(in) % 45;
        const double z = ldexp(1.0 + mantissa / 256.0, (int)exponent - 20);
        return fuzz_raw(fuzz_byte(in) & 1 ? -z : z, c);
    }
    case MODE_SPECIALS:
        return fuzz_bits(FUZZ_SPECIAL[fuzz_byte(in) % FUZZ_SPECIALS]);
    case MODE_MIXED:
        b = fuzz_byte(in);
        if (b >= 0xF0) return fuzz_bits(FUZZ_SPECIAL[(b - 0xF0 + fuzz_byte(in)) % FUZZ_SPECIALS]);
        return fuzz_raw(((int)b - 120) / 30.0, c);
    default:  /* typical: |z| <= 4.27 */
        return fuzz_raw(((int)fuzz_byte(in) - 128) / 30.0, c);
    }
}

/* Rows x[0 .. rows-1] (all filled), of which the last `read` are the ones the call reads. */
static void fuzz_fill(fuzz_reader *in, float *x, long rows, long read)
{
    const int mode = (int)(fuzz_byte(in) % FUZZ_MODES);
    long i;
    if (mode == MODE_CONSTANT) {
        const unsigned how = fuzz_byte(in);
        const uint32_t bits = fuzz_u32(in);
        for (i = 0; i < rows * IN_CH; ++i) {
            const int c = (int)(i % IN_CH);
            x[i] = how & 1 ? fuzz_bits(bits) : fuzz_raw((double)(int32_t)bits / 65536.0 / 8192.0, c);
        }
        return;
    }
    for (i = 0; i < rows * IN_CH; ++i) x[i] = fuzz_value(in, mode == MODE_ONE_SPECIAL ? MODE_TYPICAL : mode,
                                                         (int)(i % IN_CH));
    if (mode == MODE_ONE_SPECIAL && rows > 0) {  /* one special value: anywhere, at the window's edges, last */
        const unsigned where = fuzz_byte(in) % 4, channel = fuzz_byte(in) % IN_CH;
        long row = where == 0 ? (long)(fuzz_u32(in) % (uint32_t)rows) : where == 1 ? rows - read
                   : where == 2 ? rows - read - 1 : rows - 1;
        if (row < 0) row = 0;
        if (row >= rows) row = rows - 1;
        x[row * IN_CH + channel] = fuzz_bits(FUZZ_SPECIAL[fuzz_byte(in) % FUZZ_SPECIALS]);
    }
}

/* ---- the engine's state: what a call may keep, and the scratch it must not depend on ---- */

typedef struct {
    uint64_t step;
#if STREAMABLE
    float keys[sizeof arena.keys / sizeof(float)], values[sizeof arena.values / sizeof(float)];
#endif
} fuzz_state;

static void fuzz_get_state(fuzz_state *s)
{
    memset(s, 0, sizeof *s);
    s->step = arena.step;
#if STREAMABLE
    memcpy(s->keys, arena.keys, sizeof arena.keys);
    memcpy(s->values, arena.values, sizeof arena.values);
#endif
}

static void fuzz_set_state(const fuzz_state *s)
{
    arena.step = s->step;
#if STREAMABLE
    memcpy(arena.keys, s->keys, sizeof arena.keys);
    memcpy(arena.values, s->values, sizeof arena.values);
#endif
}

static int fuzz_same_state(const fuzz_state *a, const fuzz_state *b)
{
    return a->step == b->step
#if STREAMABLE
           && !memcmp(a->keys, b->keys, sizeof a->keys) && !memcmp(a->values, b->values, sizeof a->values)
#endif
           ;
}

static fuzz_state fuzz_before, fuzz_after, fuzz_saved;  /* static: a ring of a long window is big */
static uint32_t fuzz_poison = 0x7fc00000u;

static void fuzz_fill_arena(uint32_t pattern)
{
    unsigned char *bytes = (unsigned char *)&arena;
    size_t at;
    for (at = 0; at + sizeof pattern <= sizeof arena; at += sizeof pattern) memcpy(bytes + at, &pattern, sizeof pattern);
}

static void fuzz_poison_scratch(uint32_t pattern)  /* everything but the stream's state */
{
    fuzz_get_state(&fuzz_saved);
    fuzz_fill_arena(pattern);
    fuzz_set_state(&fuzz_saved);
}

/* ---- the calls, each checked ---- */

static long fuzz_calls_left;

static float *fuzz_out_buffer(void)
{
    float *out = malloc(SBTS_OUT_DIM * sizeof(float));
    int i;
    if (!out) abort();
    for (i = 0; i < SBTS_OUT_DIM; ++i) out[i] = fuzz_bits(FUZZ_SENTINEL);
    return out;
}

/* What out[i] is, for a report: "" or, for a forecaster, " (variable c, k steps ahead)". */
static const char *fuzz_out_what(int i)
{
#if TASK == TASK_FORECASTING
    static char what[64];
    snprintf(what, sizeof what, " (variable %d, %d step(s) ahead)", i % IN_CH, i / IN_CH + 1);
    return what;
#else
    (void)i;
    return "";
#endif
}

static void fuzz_check_out(int code, const float *out, int bounded, const char *call)
{
    int i;
    for (i = 0; i < SBTS_OUT_DIM; ++i) {
        const int untouched = fuzz_bits_of(out[i]) == FUZZ_SENTINEL;
        if (code != SBTS_OK && !untouched)
            fuzz_fail("out-written-on-error", "%s returned %d but wrote out[%d]%s = %g", call, code, i,
                      fuzz_out_what(i), out[i]);
        if (code == SBTS_OK && untouched)
            fuzz_fail("out-not-written", "%s returned SBTS_OK but left out[%d]%s", call, i, fuzz_out_what(i));
    }
    if (code != SBTS_OK) return;
    if (bounded) {
        fuzz_stats.bounded++;
        for (i = 0; i < SBTS_OUT_DIM; ++i)
            if (!isfinite(out[i]))
                fuzz_fail("not-finite-output", "%s: out[%d]%s = %g from inputs within |z| <= %g", call, i,
                          fuzz_out_what(i), out[i], FUZZ_MODERATE);
    }
#if TASK == TASK_ANOMALY
    if (out[0] < 0.0f) fuzz_fail("score", "%s: a negative score %g", call, out[0]);
#if HAS_THRESHOLD
    if (out[1] != 0.0f && out[1] != 1.0f) fuzz_fail("decision", "%s: decision %g", call, out[1]);
    if ((isnan(out[0]) && out[1] != 0.0f) || (isinf(out[0]) && out[1] != 1.0f)
        || ((double)out[0] > SBTS_THRESHOLD * (1.0 + 1e-6) && out[1] != 1.0f)
        || ((double)out[0] < SBTS_THRESHOLD * (1.0 - 1e-6) && out[1] != 0.0f))
        fuzz_fail("decision", "%s: score %.9g, threshold %.9g, decision %g", call, out[0], SBTS_THRESHOLD, out[1]);
#endif
#endif
}

/* The rows of a forward call: malloc'd exactly, or (beyond FUZZ_CAP_ROWS) a mapping whose bytes before the rows
   read are inaccessible, past a page, or NaN, and whose end is followed by an inaccessible page. */
typedef struct {
    float *x;
    void *map;
    size_t map_bytes;
} fuzz_rows;

static int fuzz_make_rows(fuzz_reader *in, int n, long read, fuzz_rows *rows)
{
    memset(rows, 0, sizeof *rows);
    if (n <= FUZZ_CAP_ROWS) {
        const size_t count = n > 0 ? (size_t)n * IN_CH : 0;
        rows->x = malloc(count * sizeof(float));  /* malloc(0) too: any read of it is an overflow */
        if (!rows->x && count) abort();
        if (n > 0) fuzz_fill(in, rows->x, n, read);
        return 1;
    }
    {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (size_t)n * IN_CH * sizeof(float);
        const size_t body = (bytes + page - 1) / page * page, tail = (size_t)read * IN_CH * sizeof(float);
        unsigned char *base, *end, *open_from;
        size_t i;
        rows->map_bytes = body + page;
        rows->map = mmap(0, rows->map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (rows->map == MAP_FAILED) { rows->map = 0; return 0; }  /* no address space: the call is skipped */
        fuzz_stats.mapped++;
        base = rows->map;
        end = base + body;
        rows->x = (float *)(void *)(end - bytes);
        open_from = base + (size_t)(end - tail - base) / page * page;
        if (end > open_from && mprotect(open_from, (size_t)(end - open_from), PROT_READ | PROT_WRITE) != 0) abort();
        for (i = 0; open_from + (i + 1) * sizeof(float) <= end - tail; ++i)
            memcpy(open_from + i * sizeof(float), &FUZZ_SPECIAL[0], sizeof(float));
        if (read > 0) fuzz_fill(in, (float *)(void *)(end - tail), read, read);
        if (end > open_from && mprotect(open_from, (size_t)(end - open_from), PROT_READ) != 0) abort();
        return 1;
    }
}

static void fuzz_free_rows(fuzz_rows *rows)
{
    if (rows->map) munmap(rows->map, rows->map_bytes);
    else free(rows->x);
}

static int fuzz_length_ok(int n)
{
#if TASK == TASK_CLASSIFICATION
    return n >= 1 && n <= MAX_LEN && !(FIXED_LENGTH && n != MAX_LEN)
           && !(ATTENTION == ATTENTION_STEP_T && !STEP_T_SELF && n < 2);
#else
    return n >= 1;
#endif
}

static long fuzz_rows_read(int n)  /* of a call with a length the model takes */
{
#if TASK == TASK_CLASSIFICATION
    return n;
#else
    return n < FUZZ_WINDOW_READ ? n : FUZZ_WINDOW_READ;
#endif
}

static int fuzz_length(fuzz_reader *in)
{
    static const int bounds[] = {0, 1, 2, MAX_LEN - 2, MAX_LEN - 1, MAX_LEN, MAX_LEN + 1, MAX_LEN + 2, -1,
                                 INT_MIN, INT_MAX, FUZZ_CAP_ROWS, FUZZ_CAP_ROWS + 1, INT_MAX / IN_CH};
    const unsigned b = fuzz_byte(in);
    switch (b >> 5) {
    case 0: case 1: case 2: return (int)(b & 31) - 3;                   /* -3 .. 28 */
    case 3: case 4: return MAX_LEN - 4 + (int)(b & 7);                   /* around the window */
    case 5: return (int)(b & 7) * ROW_BLOCK + (int)((b >> 3) & 3) - 1;   /* around whole blocks of steps */
    case 6: return bounds[(b & 31) % (sizeof bounds / sizeof bounds[0])];
    default: return (int)fuzz_u32(in);                                   /* any */
    }
}

static struct {  /* the last accepted forward with malloc'd rows, for a recheck */
    float *x;
    int n, valid;
    float out[SBTS_OUT_DIM];
} fuzz_last;

static void fuzz_forward(fuzz_reader *in)
{
    const int n = fuzz_length(in);
    const int length_ok = fuzz_length_ok(n);
    const long read = length_ok ? fuzz_rows_read(n) : 0;
    const long first = (long)n - read;  /* the first row read */
    fuzz_rows rows;
    float *out, *copy = 0;
    int code, expected, worst = 0;
    long r;
    if (!fuzz_make_rows(in, n, read, &rows)) return;
    if (!rows.map && n > 0) {
        copy = malloc((size_t)n * IN_CH * sizeof(float));
        if (!copy) abort();
        memcpy(copy, rows.x, (size_t)n * IN_CH * sizeof(float));
    }
    for (r = first; length_ok && r < n; ++r) {
        const int k = fuzz_row_class(rows.x + r * IN_CH);
        if (k > worst) worst = k;
    }
    expected = !length_ok ? SBTS_BAD_LENGTH : worst == 3 ? SBTS_NOT_FINITE : SBTS_OK;
    out = fuzz_out_buffer();
    fuzz_get_state(&fuzz_before);
    fuzz_poison_scratch(fuzz_poison);
    code = sbts_forward(rows.x, n, out);
    fuzz_stats.calls++;
    --fuzz_calls_left;
    if (code != SBTS_OK && code != SBTS_BAD_LENGTH && code != SBTS_NOT_FINITE)
        fuzz_fail("return-code", "sbts_forward(n_steps=%d) returned %d, not a documented code", n, code);
    if (code != expected)
        fuzz_fail("return-code", "sbts_forward(n_steps=%d) returned %d, expected %d (rows read: %ld, worst: %d)", n,
                  code, expected, read, worst);
    fuzz_stats.forward[code]++;
    fuzz_get_state(&fuzz_after);
    if (!fuzz_same_state(&fuzz_before, &fuzz_after))
        fuzz_fail("forward-changed-stream", "sbts_forward(n_steps=%d) changed the stream's state", n);
    if (copy && memcmp(copy, rows.x, (size_t)n * IN_CH * sizeof(float)))
        fuzz_fail("input-written", "sbts_forward(n_steps=%d) changed its input", n);
    fuzz_check_out(code, out, worst <= 1, "sbts_forward");
    if (code == SBTS_OK && copy) {  /* kept for a recheck */
        free(fuzz_last.x);
        fuzz_last.x = copy;
        copy = 0;
        fuzz_last.n = n;
        fuzz_last.valid = 1;
        memcpy(fuzz_last.out, out, sizeof fuzz_last.out);
    }
    free(copy);
    free(out);
    fuzz_free_rows(&rows);
}

static void fuzz_recheck_forward(uint32_t poison)
{
    float *x, *out;
    int code;
    if (!fuzz_last.valid) return;
    x = malloc((size_t)fuzz_last.n * IN_CH * sizeof(float));
    if (!x) abort();
    memcpy(x, fuzz_last.x, (size_t)fuzz_last.n * IN_CH * sizeof(float));
    out = fuzz_out_buffer();
    fuzz_poison_scratch(poison);
    code = sbts_forward(x, fuzz_last.n, out);
    fuzz_stats.calls++;
    fuzz_stats.rechecks++;
    --fuzz_calls_left;
    if (code != SBTS_OK || memcmp(out, fuzz_last.out, sizeof fuzz_last.out))
        fuzz_fail("not-deterministic", "sbts_forward(n_steps=%d) again, poison 0x%08x: code %d, out[0] %.9g, was %.9g",
                  fuzz_last.n, (unsigned)poison, code, out[0], fuzz_last.out[0]);
    free(out);
    free(x);
}

#if STREAMABLE
static struct {  /* the stream as the harness sees it */
    float rows[MAX_LEN][IN_CH];  /* the last accepted rows, a ring */
    long accepted;               /* rows accepted since the last reset */
    long typical_run, moderate_run;  /* the newest accepted rows that were typical, moderate */
} fuzz_stream;

static void fuzz_stream_forget(void)
{
    fuzz_stream.accepted = fuzz_stream.typical_run = fuzz_stream.moderate_run = 0;
}

static int fuzz_window_clean(long run)  /* whether every row in the stream's window is within the bound */
{
    return run >= fuzz_stream.accepted || run >= MAX_LEN;
}

static double fuzz_gap(float a, float b)  /* in units of the tolerance's bound */
{
    return fabs((double)a - (double)b) / (FUZZ_TOLERANCE * (1.0 + fabs((double)a) + fabs((double)b)));
}

/* The stream's output against sbts_forward on the stream's last rows. */
static void fuzz_compare_with_forward(const float *streamed)
{
    const long count = fuzz_stream.accepted < MAX_LEN ? fuzz_stream.accepted : MAX_LEN;
    float *x = malloc((size_t)count * IN_CH * sizeof(float)), *out = fuzz_out_buffer();
    long r;
    int code, i;
    if (!x) abort();
    for (r = 0; r < count; ++r)
        memcpy(x + r * IN_CH, fuzz_stream.rows[(fuzz_stream.accepted - count + r) % MAX_LEN], IN_CH * sizeof(float));
    fuzz_get_state(&fuzz_before);
    fuzz_poison_scratch(fuzz_poison);
    code = sbts_forward(x, (int)count, out);
    fuzz_stats.calls++;
    --fuzz_calls_left;
    fuzz_get_state(&fuzz_after);
    if (!fuzz_same_state(&fuzz_before, &fuzz_after))
        fuzz_fail("forward-changed-stream", "sbts_forward(n_steps=%ld) changed the stream's state", count);
    if (code != SBTS_OK) fuzz_fail("return-code", "sbts_forward on the stream's typical rows returned %d", code);
    fuzz_stats.compared++;
    for (i = 0; i < SBTS_OUT_DIM; ++i) {
        double gap = fuzz_gap(streamed[i], out[i]);
#if TASK == TASK_ANOMALY && HAS_THRESHOLD
        if (i == 1) {  /* a decision: compared where neither score is at the threshold */
            const double margin = 1e-3 * (1.0 + SBTS_THRESHOLD);
            if (fabs(streamed[0] - SBTS_THRESHOLD) < margin || fabs(out[0] - SBTS_THRESHOLD) < margin) continue;
            gap = streamed[1] == out[1] ? 0.0 : 1e9;
        }
#endif
        if (gap > fuzz_stats.gap) fuzz_stats.gap = gap;
        if (!(gap <= 1.0))
            fuzz_fail("stream-not-forward", "after %ld rows, stream out[%d]%s = %.9g, sbts_forward on the last %ld "
                      "rows = %.9g", fuzz_stream.accepted, i, fuzz_out_what(i), streamed[i], count, out[i]);
    }
    free(out);
    free(x);
}

/* One stream update, checked; out (SBTS_OUT_DIM) gets the result when out_copy is given. */
static int fuzz_update(const float *row, float *out_copy)
{
    float *x = malloc(IN_CH * sizeof(float)), *out = fuzz_out_buffer();
    const int k = fuzz_row_class(row), expected = k == 3 ? SBTS_NOT_FINITE : SBTS_OK;
    int code;
    if (!x) abort();
    memcpy(x, row, IN_CH * sizeof(float));
    fuzz_get_state(&fuzz_before);
    fuzz_poison_scratch(fuzz_poison);
    code = sbts_stream_update(x, out);
    fuzz_stats.calls++;
    --fuzz_calls_left;
    if (code != expected)
        fuzz_fail("return-code", "sbts_stream_update returned %d, expected %d (after %ld rows)", code, expected,
                  fuzz_stream.accepted);
    fuzz_stats.stream[code]++;
    if (memcmp(x, row, IN_CH * sizeof(float))) fuzz_fail("input-written", "sbts_stream_update changed its row");
    if (code != SBTS_OK) {
        fuzz_get_state(&fuzz_after);
        if (!fuzz_same_state(&fuzz_before, &fuzz_after))
            fuzz_fail("bad-row-changed-stream", "a refused row changed the stream's state (after %ld rows)",
                      fuzz_stream.accepted);
        fuzz_check_out(code, out, 0, "sbts_stream_update");
    } else {
        memcpy(fuzz_stream.rows[fuzz_stream.accepted % MAX_LEN], row, IN_CH * sizeof(float));
        fuzz_stream.accepted++;
        fuzz_stream.typical_run = k == 0 ? fuzz_stream.typical_run + 1 : 0;
        fuzz_stream.moderate_run = k <= 1 ? fuzz_stream.moderate_run + 1 : 0;
        fuzz_check_out(code, out, fuzz_window_clean(fuzz_stream.moderate_run), "sbts_stream_update");
        if (!INPUT_NORM_WINDOW && fuzz_window_clean(fuzz_stream.typical_run)) fuzz_compare_with_forward(out);
    }
    if (out_copy) memcpy(out_copy, out, SBTS_OUT_DIM * sizeof(float));
    free(out);
    free(x);
    return code;
}

static void fuzz_row(fuzz_reader *in, float *row)
{
    fuzz_fill(in, row, 1, 1);
}

/* A run of rows from a seeded generator: typical (or scaled up), some of them bad. */
static void fuzz_burst(fuzz_reader *in)
{
    const unsigned how = fuzz_byte(in);
    const long count = 1 + (how & 63) + (how & 64 ? 3 * MAX_LEN : 0);
    const unsigned every = fuzz_byte(in), scale_code = fuzz_byte(in) % 4;
    const double scale = scale_code == 0 ? 1.0 : scale_code == 1 ? 3.0 : scale_code == 2 ? 1e3 : 4e5;
    uint64_t state = fuzz_u32(in);
    long i;
    for (i = 0; i < count && fuzz_calls_left > 0; ++i) {
        float row[IN_CH];
        int c;
        for (c = 0; c < IN_CH; ++c) {
            const uint64_t r = sbts_splitmix64(state, (uint64_t)(i * IN_CH + c));
            row[c] = fuzz_raw(((double)(r >> 11) / 9007199254740992.0 * 4.0 - 2.0) * scale, c);
        }
        if (every && i % (long)(every % 16 + 2) == (long)(every % 16 + 1))
            row[every % IN_CH] = fuzz_bits(FUZZ_SPECIAL[(every >> 4) % 6]);  /* NaNs and infinities */
        fuzz_update(row, 0);
    }
}

/* The same update twice from one state, under two poisons: the same code, out and state. */
static void fuzz_recheck_stream(fuzz_reader *in, uint32_t poison)
{
    float row[IN_CH], first[SBTS_OUT_DIM], *x = malloc(IN_CH * sizeof(float)), *out = fuzz_out_buffer();
    static fuzz_state start, end;
    int code, again;
    if (!x) abort();
    fuzz_row(in, row);
    fuzz_get_state(&start);
    code = fuzz_update(row, first);
    fuzz_get_state(&end);
    fuzz_set_state(&start);
    memcpy(x, row, IN_CH * sizeof(float));
    fuzz_poison_scratch(poison);
    again = sbts_stream_update(x, out);
    fuzz_stats.calls++;
    fuzz_stats.rechecks++;
    --fuzz_calls_left;
    fuzz_get_state(&fuzz_after);
    if (again != code || memcmp(out, first, sizeof first) || !fuzz_same_state(&end, &fuzz_after))
        fuzz_fail("not-deterministic", "sbts_stream_update again from the same state, poison 0x%08x: code %d (was "
                  "%d), out[0] %.9g (was %.9g), state %s", (unsigned)poison, again, code, out[0], first[0],
                  fuzz_same_state(&end, &fuzz_after) ? "the same" : "different");
    free(out);
    free(x);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_reader in;
    in.at = data;
    in.end = data + size;
    fuzz_input = data;
    fuzz_input_size = size;
    fuzz_stats.inputs++;
    fuzz_calls_left = FUZZ_MAX_CALLS;
    fuzz_poison = FUZZ_POISON[fuzz_byte(&in) % FUZZ_POISONS];
    fuzz_fill_arena(fuzz_poison);  /* nothing from an earlier input, nothing the engine has not written */
    sbts_init();
    fuzz_last.valid = 0;
#if STREAMABLE
    fuzz_stream_forget();
#endif
    while (in.at < in.end && fuzz_calls_left > 0) {
        const unsigned op = fuzz_byte(&in) % 10;
#if STREAMABLE
        float row[IN_CH];
#endif
        switch (op) {
        case 3:
            sbts_init();
#if STREAMABLE
            fuzz_stream_forget();
#endif
            break;
#if STREAMABLE
        case 4: case 5:
            fuzz_row(&in, row);
            fuzz_update(row, 0);
            break;
        case 6:
            fuzz_burst(&in);
            break;
        case 7:
            sbts_stream_reset();
            fuzz_stream_forget();
            break;
#endif
        case 8: {
            const uint32_t other = FUZZ_POISON[fuzz_byte(&in) % FUZZ_POISONS];
#if STREAMABLE
            if (fuzz_byte(&in) & 1) { fuzz_recheck_stream(&in, other); break; }
#endif
            fuzz_recheck_forward(other);
            break;
        }
        case 9:
            fuzz_poison = FUZZ_POISON[fuzz_byte(&in) % FUZZ_POISONS];
            break;
        default:
            fuzz_forward(&in);
        }
    }
    free(fuzz_last.x);
    fuzz_last.x = 0;
    fuzz_last.valid = 0;
    fuzz_input = 0;
    return 0;
}

#ifdef SBTS_LIBFUZZER
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    atexit(fuzz_print_stats);
    return 0;
}
#else
/* ---- standalone: replay files, or seeded random inputs for a while ---- */

static void fuzz_on_alarm(int signum)
{
    static const char message[] = "==sbts-fuzz== contract violated: hang: an input ran past its time limit\n";
    (void)signum;
    if (write(2, message, sizeof message - 1) < 0) abort();
    fuzz_write_crash();
    abort();
}

static uint64_t fuzz_seed, fuzz_drawn;

static uint64_t fuzz_next(void)
{
    return sbts_splitmix64(fuzz_seed, fuzz_drawn++);
}

static double fuzz_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static int fuzz_replay(const char *path, unsigned timeout)
{
    FILE *file = fopen(path, "rb");
    uint8_t *data;
    long size;
    if (!file || fseek(file, 0, SEEK_END) != 0 || (size = ftell(file)) < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    data = malloc(size ? (size_t)size : 1);
    if (!data || fread(data, 1, (size_t)size, file) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    fclose(file);
    fprintf(stderr, "replaying %s (%ld bytes)\n", path, size);
    alarm(timeout);
    LLVMFuzzerTestOneInput(data, (size_t)size);
    alarm(0);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    static uint8_t input[FUZZ_MAX_INPUT];
    double seconds = 10.0, start;
    long runs = -1, done = 0;
    unsigned long long seed = 0;
    unsigned timeout = 5;
    size_t max_len = FUZZ_MAX_INPUT;
    int i, files = 0;
    for (i = 1; i < argc; ++i) {
        if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, 0, 10);
        else if (!strncmp(argv[i], "-seconds=", 9)) seconds = strtod(argv[i] + 9, 0);
        else if (!strncmp(argv[i], "-runs=", 6)) runs = strtol(argv[i] + 6, 0, 10);
        else if (!strncmp(argv[i], "-timeout=", 9)) timeout = (unsigned)strtoul(argv[i] + 9, 0, 10);
        else if (!strncmp(argv[i], "-crash_file=", 12)) fuzz_crash_path = argv[i] + 12;
        else if (!strncmp(argv[i], "-max_len=", 9)) max_len = (size_t)strtoul(argv[i] + 9, 0, 10);
        else if (argv[i][0] == '-') { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
        else ++files;
    }
    if (max_len < 1 || max_len > FUZZ_MAX_INPUT) max_len = FUZZ_MAX_INPUT;
    signal(SIGALRM, fuzz_on_alarm);
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(fuzz_on_death);
    atexit(fuzz_print_stats);
    if (files) {
        for (i = 1; i < argc; ++i)
            if (argv[i][0] != '-' && fuzz_replay(argv[i], timeout)) return 2;
        fprintf(stderr, "replayed %d files\n", files);
        return 0;
    }
    fuzz_seed = seed;
    start = fuzz_now();
    while ((runs < 0 || done < runs) && (done % 16 || fuzz_now() - start < seconds)) {
        /* lengths mostly short (a few operations), sometimes up to max_len; bytes mostly uniform, some of them
           the values the format gives a meaning (0, the specials' range, 0xFF) */
        const uint64_t shape = fuzz_next();
        const size_t cap = shape % 100 < 50 ? 64 : shape % 100 < 85 ? 512 : max_len;
        const size_t size = 1 + (size_t)((shape >> 8) % (cap < max_len ? cap : max_len));
        size_t b;
        for (b = 0; b < size; ++b) {
            const uint64_t r = fuzz_next();
            input[b] = (uint8_t)(r % 8 ? r >> 8 : (uint8_t[]){0, 1, 0x7f, 0x80, 0xf0, 0xf8, 0xfe, 0xff}[(r >> 8) % 8]);
        }
        alarm(timeout);
        LLVMFuzzerTestOneInput(input, size);
        alarm(0);
        ++done;
    }
    fprintf(stderr, "Done %ld runs in %.1f second(s)\nstat::number_of_executed_units: %ld\n", done,
            fuzz_now() - start, done);
    return 0;
}
#endif
