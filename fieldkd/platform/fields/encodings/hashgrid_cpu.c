/* The multiresolution hash grid's forward and table gradient on the CPU, in C.
 *
 * The same arithmetic as hashgrid_math.py and hashgrid.py, one point and one level at a
 * time, with no intermediate arrays: pos = u * scale + 0.5 (two float32 roundings: built
 * with -ffp-contract=off), cell = floor(pos), eight corners k = 4*b0 + 2*b1 + b2 with weight
 * (w0 * w1) * w2, a dense index for coarse levels and the uint32 spatial hash for fine ones.
 *
 * Work is split by level: a level owns its slice of the table and its columns of the
 * output, so threads never write the same memory and the gradient needs no atomics.
 * Tensors arrive as addresses of contiguous float32 / int64 buffers, checked in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define MAX_THREADS 256
#ifndef BLOCK
#define BLOCK 32  /* points whose table rows are prefetched together */
#endif

typedef struct {
    const float *u;          /* (n, 3) points in [0, 1] */
    const float *grad_out;   /* (n, n_levels * F), backward only */
    const float *table;      /* (entries, F), forward only */
    float *out;              /* forward: (n, n_levels * F); backward: table gradient (entries, F) */
    const float *scales;     /* (n_levels,) */
    const int64_t *levels;   /* (n_levels, 4): resolution, size, offset, dense */
    int64_t n;
    int n_levels, F, backward, thread, n_threads;
} Job;

static int64_t positive_mod(int64_t a, int64_t m) {
    int64_t r = a % m;
    return r < 0 ? r + m : r;
}

/* Rows and weights of the eight corners of point i on one level. */
static void corners(const Job *job, int level, int64_t i, int64_t *row, float *weight) {
    const int64_t *lv = job->levels + 4 * level;
    const int64_t res = lv[0], size = lv[1], offset = lv[2], dense = lv[3];
    const float scale = job->scales[level];
    int64_t cell[3];
    float w[3][2];
    for (int d = 0; d < 3; d++) {
        float pos = job->u[3 * i + d] * scale + 0.5f;  /* built with -ffp-contract=off: two roundings */
        float lower = floorf(pos);
        float frac = pos - lower;
        cell[d] = (int64_t)lower;
        w[d][0] = 1.0f - frac;
        w[d][1] = frac;
    }
    for (int k = 0; k < 8; k++) {
        int b0 = (k >> 2) & 1, b1 = (k >> 1) & 1, b2 = k & 1;
        int64_t x = cell[0] + b0, y = cell[1] + b1, z = cell[2] + b2;
        int64_t index;
        if (dense) {
            index = positive_mod(x + y * res + z * res * res, size);
        } else {  /* size is a power of two: the low bits of the uint32 hash */
            uint32_t h = (uint32_t)x * 1u ^ (uint32_t)y * 2654435761u ^ (uint32_t)z * 805459861u;
            index = (int64_t)(h & (uint32_t)(size - 1));
        }
        row[k] = offset + index;
        weight[k] = (w[0][b0] * w[1][b1]) * w[2][b2];
    }
}

/* Features accumulate corner by corner with fused multiply-adds, as torch's embedding_bag does
 * on x86 (fbgemm): the forward then matches the torch operations bit for bit there, and so does
 * a whole training. Where the CPU has FMA instructions, the clone that uses them runs. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("fma", "default")))
#endif
static void run_level(const Job *job, int level) {
    const int F = job->F, width = job->n_levels * F;
    const float *rows_of = job->backward ? job->out : job->table;
    int64_t row[BLOCK][8];
    float weight[BLOCK][8];
    for (int64_t first = 0; first < job->n; first += BLOCK) {
        const int m = job->n - first < BLOCK ? (int)(job->n - first) : BLOCK;
        /* A step's points meet a table that is not in cache: ask for a block's rows before
         * using any of them, so that their loads from memory overlap. */
        for (int j = 0; j < m; j++) {
            corners(job, level, first + j, row[j], weight[j]);
            for (int k = 0; k < 8; k++) {
                if (job->backward) __builtin_prefetch(rows_of + row[j][k] * F, 1, 3);  /* to write */
                else __builtin_prefetch(rows_of + row[j][k] * F, 0, 3);
            }
        }
        for (int j = 0; j < m; j++) {
            const int64_t i = first + j;
            if (job->backward) {
                const float *g = job->grad_out + i * width + level * F;
                for (int k = 0; k < 8; k++) {
                    float *dst = job->out + row[j][k] * F;
                    for (int f = 0; f < F; f++) dst[f] += g[f] * weight[j][k];
                }
            } else {
                float *dst = job->out + i * width + level * F;
                for (int f = 0; f < F; f++) {
                    float acc = 0.0f;
                    for (int k = 0; k < 8; k++) acc = fmaf(weight[j][k], job->table[row[j][k] * F + f], acc);
                    dst[f] = acc;
                }
            }
        }
    }
}

static void *run_thread(void *arg) {
    const Job *job = (const Job *)arg;
    for (int level = job->thread; level < job->n_levels; level += job->n_threads) run_level(job, level);
    return NULL;
}

static void run_all(Job base, int n_threads) {
    if (n_threads > base.n_levels) n_threads = base.n_levels;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads < 1) n_threads = 1;
    Job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = base;
        jobs[t].thread = t;
        jobs[t].n_threads = n_threads;
        started[t] = t > 0 && pthread_create(&ids[t], NULL, run_thread, &jobs[t]) == 0;
    }
    run_thread(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t]) pthread_join(ids[t], NULL);
        else run_thread(&jobs[t]);  /* no thread to be had: do its share here */
    }
}

static PyObject *encode(PyObject *self, PyObject *args, int backward) {
    unsigned long long u, data, out, scales, levels;
    long long n;
    int n_levels, F, n_threads;
    if (!PyArg_ParseTuple(args, "KKKKKLiii", &u, &data, &out, &scales, &levels, &n, &n_levels, &F,
                          &n_threads))
        return NULL;
    Job job;
    memset(&job, 0, sizeof job);
    job.u = (const float *)(uintptr_t)u;
    if (backward) job.grad_out = (const float *)(uintptr_t)data;
    else job.table = (const float *)(uintptr_t)data;
    job.out = (float *)(uintptr_t)out;
    job.scales = (const float *)(uintptr_t)scales;
    job.levels = (const int64_t *)(uintptr_t)levels;
    job.n = n;
    job.n_levels = n_levels;
    job.F = F;
    job.backward = backward;
    Py_BEGIN_ALLOW_THREADS
    run_all(job, n_threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *forward(PyObject *self, PyObject *args) { return encode(self, args, 0); }
static PyObject *backward(PyObject *self, PyObject *args) { return encode(self, args, 1); }

static PyMethodDef methods[] = {
    {"forward", forward, METH_VARARGS,
     "forward(u, table, out, scales, levels, n, n_levels, F, threads): features into out"},
    {"backward", backward, METH_VARARGS,
     "backward(u, grad_out, grad_table, scales, levels, n, n_levels, F, threads): adds into grad_table"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hashgrid_cpu", NULL, -1, methods};

/* Raised whenever the arguments or the arithmetic change: Python refuses a copy of another version. */
#define KERNEL_VERSION 2

PyMODINIT_FUNC PyInit__hashgrid_cpu(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", KERNEL_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
