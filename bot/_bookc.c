/* The compiled level store behind bot.book.OrderBook (see bot/_book_kernel.py).
 *
 * Plain C against the CPython API and the buffer protocol: no numpy headers, so the
 * build needs only a C compiler and Python's headers.
 *
 * Layout: each side is one array of (key, size) pairs sorted ascending by key, with
 * the best level LAST. Bids are keyed by price, asks by -price, so "better" is
 * "greater" on both sides and one set of code serves both. Keeping the best level at
 * the end matters: feed activity is concentrated near the top of the book, and an
 * insert or removal only moves the levels between it and the top.
 *
 * Atomicity ("a rejected input leaves the last good book"): a delta is validated
 * (finite, price > 0, size >= 0) and checked for crossing against the book it WOULD
 * produce before anything is written, and all memory it may need is reserved first,
 * so once mutation starts it cannot fail. A snapshot is built in fresh arrays and only
 * swapped in if it is good.
 *
 * Result codes (bot/_book_kernel.py mirrors them): 0 applied, 1 non-finite, 2 negative
 * size or price <= 0, 3 crossed, 5 "not a 2-D float64 buffer: convert and retry".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

enum { RC_OK = 0, RC_NON_FINITE = 1, RC_NEGATIVE = 2, RC_CROSSED = 3, RC_CONVERT = 5 };

typedef struct {
    double k; /* bid: price, ask: -price */
    double s;
} Level;

typedef struct {
    Level *lv;
    Py_ssize_t n, cap;
} Side;

typedef struct {
    Level l;
    Py_ssize_t pos; /* where it goes in the side after the removals */
} Insert;

typedef struct {
    PyObject_HEAD
    Side side[2]; /* 0: bids, 1: asks */
    Level *rows;  /* a message's rows, sorted per side */
    Py_ssize_t rows_cap;
    Level *tmp; /* merge-sort scratch */
    Py_ssize_t tmp_cap;
    Insert *ins;
    Py_ssize_t ins_cap;
} Book;

/* ------------------------------------------------------------------ memory */

static int
reserve(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t item)
{
    if (need <= *cap) {
        return 0;
    }
    Py_ssize_t n = *cap ? *cap : 64;
    while (n < need) {
        n *= 2;
    }
    void *q = PyMem_Realloc(*p, (size_t)n * item);
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

#define RESERVE(ptr, cap, need) reserve((void **)&(ptr), &(cap), (need), sizeof(*(ptr)))

/* ------------------------------------------------------------------ input rows */

typedef struct {
    const char *buf;
    Py_ssize_t n, s0, s1;
} Rows;

#define PRICE(r, i) (*(const double *)((r)->buf + (i) * (r)->s0))
#define SIZE(r, i) (*(const double *)((r)->buf + (i) * (r)->s0 + (r)->s1))

static int
is_double_format(const char *f)
{
    if (f == NULL) {
        return 0;
    }
    if (f[0] == '@' || f[0] == '=') {
        f++;
    }
#if PY_LITTLE_ENDIAN
    else if (f[0] == '<') {
        f++;
    }
#else
    else if (f[0] == '>' || f[0] == '!') {
        f++;
    }
#endif
    return f[0] == 'd' && f[1] == '\0';
}

/* A (n, >=2) float64 buffer, any strides: 0 with *view held, RC_CONVERT (nothing
 * held) when obj is anything else, -1 on a real error. */
static int
get_rows(PyObject *obj, Py_buffer *view, Rows *r)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) ||
            PyErr_ExceptionMatches(PyExc_BufferError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return RC_CONVERT;
        }
        return -1;
    }
    if (view->ndim != 2 || view->itemsize != 8 || view->shape[1] < 2 ||
        !is_double_format(view->format)) {
        PyBuffer_Release(view);
        return RC_CONVERT;
    }
    r->buf = (const char *)view->buf;
    r->n = view->shape[0];
    r->s0 = view->strides[0];
    r->s1 = view->strides[1];
    return 0;
}

/* Non-finite anywhere outranks a negative size or a price <= 0 anywhere. */
static int
check_rows(const Rows *r, int *nonfinite, int *negative)
{
    for (Py_ssize_t i = 0; i < r->n; i++) {
        double p = PRICE(r, i), s = SIZE(r, i);
        if (!isfinite(p) || !isfinite(s)) {
            *nonfinite = 1;
            return 0;
        }
        if (p <= 0.0 || s < 0.0) {
            *negative = 1;
        }
    }
    return 0;
}

static void
insertion_sort(Level *a, Py_ssize_t n)
{
    for (Py_ssize_t i = 1; i < n; i++) {
        Level x = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1].k > x.k) { /* strict: equal keys keep their order */
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Stable sort by key: insertion-sorted runs, then bottom-up merges. */
static void
stable_sort(Level *a, Py_ssize_t n, Level *tmp)
{
    const Py_ssize_t run = 16;
    for (Py_ssize_t i = 0; i < n; i += run) {
        insertion_sort(a + i, (i + run <= n ? run : n - i));
    }
    Level *src = a, *dst = tmp;
    for (Py_ssize_t width = run; width < n; width *= 2) {
        for (Py_ssize_t lo = 0; lo < n; lo += 2 * width) {
            Py_ssize_t mid = lo + width < n ? lo + width : n;
            Py_ssize_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            Py_ssize_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                dst[o++] = src[j].k < src[i].k ? src[j++] : src[i++];
            }
            while (i < mid) {
                dst[o++] = src[i++];
            }
            while (j < hi) {
                dst[o++] = src[j++];
            }
        }
        Level *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) {
        memcpy(a, src, (size_t)n * sizeof(Level));
    }
}

/* One side's rows as ascending unique keys (the last row of a repeated price wins).
 * Venues send each side sorted one way or the other: those need no sort. */
static Py_ssize_t
side_levels(const Rows *r, int ask, Level *out, Level *tmp)
{
    Py_ssize_t m = r->n;
    for (Py_ssize_t i = 0; i < m; i++) {
        double p = PRICE(r, i);
        out[i].k = ask ? -p : p;
        out[i].s = SIZE(r, i);
    }
    if (m < 2) {
        return m;
    }
    Py_ssize_t i = 1;
    while (i < m && out[i - 1].k < out[i].k) {
        i++;
    }
    if (i == m) {
        return m;
    }
    if (i == 1) {
        while (i < m && out[i - 1].k > out[i].k) {
            i++;
        }
        if (i == m) {
            for (Py_ssize_t a = 0, b = m - 1; a < b; a++, b--) {
                Level t = out[a];
                out[a] = out[b];
                out[b] = t;
            }
            return m;
        }
    }
    stable_sort(out, m, tmp);
    Py_ssize_t w = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (j + 1 < m && out[j + 1].k == out[j].k) {
            continue;
        }
        out[w++] = out[j];
    }
    return w;
}

/* ------------------------------------------------------------------ book */

/* First index in [lo, hi) whose key is >= key. */
static inline Py_ssize_t
lower_bound(const Level *a, Py_ssize_t lo, Py_ssize_t hi, double key)
{
    while (lo < hi) {
        Py_ssize_t mid = lo + ((hi - lo) >> 1);
        if (a[mid].k < key) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* The best key of side `sd` once the sorted unique rows d[0..m) are applied. */
static int
best_after(const Side *sd, const Level *d, Py_ssize_t m, double *best)
{
    int have = 0;
    double b = 0.0;
    for (Py_ssize_t j = m - 1; j >= 0; j--) {
        if (d[j].s > 0.0) {
            b = d[j].k;
            have = 1;
            break;
        }
    }
    Py_ssize_t j = m - 1;
    for (Py_ssize_t i = sd->n - 1; i >= 0; i--) {
        double k = sd->lv[i].k;
        while (j >= 0 && d[j].k > k) {
            j--;
        }
        if (j >= 0 && d[j].k == k && !(d[j].s > 0.0)) {
            continue; /* removed by the delta */
        }
        if (!have || k > b) {
            b = k;
            have = 1;
        }
        break;
    }
    *best = b;
    return have;
}

/* Merge sorted unique rows into a side, in place. Capacity for sd->n + m levels and
 * m inserts must already be reserved. Removals and updates go first, in one pass from
 * the lowest row up (only levels above the first removal move, left); inserts then go
 * from the top down (only levels above the lowest insert move, right). */
static void
apply_side(Side *sd, const Level *d, Py_ssize_t m, Insert *ins)
{
    Level *L = sd->lv;
    Py_ssize_t n = sd->n, lo = 0, r = 0, w = 0, removed = 0, k_ins = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t pos = lower_bound(L, lo, n, d[j].k);
        if (pos < n && L[pos].k == d[j].k) {
            if (d[j].s > 0.0) {
                L[pos].s = d[j].s; /* not moved yet: moves only write below pos */
            }
            else {
                if (removed && pos > r) {
                    memmove(L + w, L + r, (size_t)(pos - r) * sizeof(Level));
                }
                w += pos - r;
                r = pos + 1;
                removed++;
            }
            lo = pos + 1;
        }
        else {
            if (d[j].s > 0.0) {
                ins[k_ins].l = d[j];
                ins[k_ins].pos = pos - removed;
                k_ins++;
            }
            lo = pos;
        }
    }
    if (removed) {
        if (n > r) {
            memmove(L + w, L + r, (size_t)(n - r) * sizeof(Level));
        }
        n -= removed;
    }
    Py_ssize_t hi = n;
    for (Py_ssize_t i = k_ins - 1; i >= 0; i--) {
        Py_ssize_t pos = ins[i].pos;
        if (hi > pos) {
            memmove(L + pos + i + 1, L + pos, (size_t)(hi - pos) * sizeof(Level));
        }
        L[pos + i] = ins[i].l;
        hi = pos;
    }
    sd->n = n + k_ins;
}

static PyObject *
result(int code)
{
    return PyLong_FromLong(code);
}

/* Both sides' rows, validated and sorted into self->rows: bids at [0, *ub), asks at
 * [*ub, *ub + *ua). Returns a result code, or -1 with an exception set. */
static int
load_rows(Book *self, PyObject *ob, PyObject *oa, Py_ssize_t *ub, Py_ssize_t *ua)
{
    Py_buffer vb, va;
    Rows rb, ra;
    int code = get_rows(ob, &vb, &rb);
    if (code) {
        return code;
    }
    code = get_rows(oa, &va, &ra);
    if (code) {
        PyBuffer_Release(&vb);
        return code;
    }
    int nonfinite = 0, negative = 0;
    check_rows(&rb, &nonfinite, &negative);
    if (!nonfinite) {
        check_rows(&ra, &nonfinite, &negative);
    }
    if (nonfinite || negative) {
        code = nonfinite ? RC_NON_FINITE : RC_NEGATIVE;
    }
    else if (RESERVE(self->rows, self->rows_cap, rb.n + ra.n + 1) < 0 || /* never NULL */
             RESERVE(self->tmp, self->tmp_cap, rb.n > ra.n ? rb.n : ra.n) < 0) {
        code = -1;
    }
    else {
        *ub = side_levels(&rb, 0, self->rows, self->tmp);
        *ua = side_levels(&ra, 1, self->rows + *ub, self->tmp);
    }
    PyBuffer_Release(&vb);
    PyBuffer_Release(&va);
    return code;
}

static int
crossed(int have_b, double kb, int have_a, double ka)
{
    return have_b && have_a && kb >= -ka; /* best bid >= best ask */
}

PyDoc_STRVAR(delta_doc,
             "delta(bids, asks) -> int\n\n"
             "Apply absolute sizes (0 removes) from two (n, 2) float64 buffers of\n"
             "[price, size]; all or nothing. Returns a result code.");

static PyObject *
Book_delta(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "delta(bids, asks)");
        return NULL;
    }
    Py_ssize_t ub = 0, ua = 0;
    int code = load_rows(self, args[0], args[1], &ub, &ua);
    if (code) {
        return code < 0 ? NULL : result(code);
    }
    if (ub + ua == 0) {
        return result(RC_OK);
    }
    const Level *db = self->rows, *da = self->rows + ub;
    double kb, ka;
    int hb = best_after(&self->side[0], db, ub, &kb);
    int ha = best_after(&self->side[1], da, ua, &ka);
    if (crossed(hb, kb, ha, ka)) {
        return result(RC_CROSSED);
    }
    Side *sb = &self->side[0], *sa = &self->side[1];
    if (RESERVE(sb->lv, sb->cap, sb->n + ub) < 0 || RESERVE(sa->lv, sa->cap, sa->n + ua) < 0 ||
        RESERVE(self->ins, self->ins_cap, ub > ua ? ub : ua) < 0) {
        return NULL;
    }
    apply_side(sb, db, ub, self->ins);
    apply_side(sa, da, ua, self->ins);
    return result(RC_OK);
}

/* Sorted unique rows -> a fresh level array without the zero sizes. */
static Level *
fresh_side(const Level *d, Py_ssize_t m, Py_ssize_t *n, Py_ssize_t *cap)
{
    Py_ssize_t c = m > 64 ? m : 64;
    Level *out = PyMem_Malloc((size_t)c * sizeof(Level));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (d[i].s > 0.0) {
            out[w++] = d[i];
        }
    }
    *n = w;
    *cap = c;
    return out;
}

PyDoc_STRVAR(snapshot_doc,
             "snapshot(bids, asks) -> int\n\n"
             "Replace the book (size 0 rows skipped, last repeated price wins) unless the\n"
             "rows are bad or the result is crossed. Returns a result code.");

static PyObject *
Book_snapshot(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "snapshot(bids, asks)");
        return NULL;
    }
    Py_ssize_t ub = 0, ua = 0;
    int code = load_rows(self, args[0], args[1], &ub, &ua);
    if (code) {
        return code < 0 ? NULL : result(code);
    }
    Side nb, na;
    nb.lv = fresh_side(self->rows, ub, &nb.n, &nb.cap);
    if (nb.lv == NULL) {
        return NULL;
    }
    na.lv = fresh_side(self->rows + ub, ua, &na.n, &na.cap);
    if (na.lv == NULL) {
        PyMem_Free(nb.lv);
        return NULL;
    }
    if (nb.n && na.n && crossed(1, nb.lv[nb.n - 1].k, 1, na.lv[na.n - 1].k)) {
        PyMem_Free(nb.lv);
        PyMem_Free(na.lv);
        return result(RC_CROSSED);
    }
    PyMem_Free(self->side[0].lv);
    PyMem_Free(self->side[1].lv);
    self->side[0] = nb;
    self->side[1] = na;
    return result(RC_OK);
}

/* ------------------------------------------------------------------ queries */

static int
side_arg(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v != 0 && v != 1) {
        PyErr_SetString(PyExc_ValueError, "side must be 0 (bid) or 1 (ask)");
        return -1;
    }
    return (int)v;
}

/* The (side, number) arguments of depth, fill and size_at: 0 with both read, -1 with
 * the error set (usage is the TypeError's text for a wrong count). */
static int
side_number_args(PyObject *const *args, Py_ssize_t nargs, const char *usage, int *side, double *x)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *side = side_arg(args[0]);
    if (*side < 0) {
        return -1;
    }
    *x = PyFloat_AsDouble(args[1]);
    if (*x == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

static PyObject *
Book_best_bid(Book *self, PyObject *Py_UNUSED(ignored))
{
    const Side *s = &self->side[0];
    if (!s->n) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(s->lv[s->n - 1].k);
}

static PyObject *
Book_best_ask(Book *self, PyObject *Py_UNUSED(ignored))
{
    const Side *s = &self->side[1];
    if (!s->n) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(-s->lv[s->n - 1].k);
}

/* Mid as bot.book computes it: (ask + bid) / 2. */
static int
get_mid(const Book *self, double *mid)
{
    const Side *b = &self->side[0], *a = &self->side[1];
    if (!b->n || !a->n) {
        return 0;
    }
    *mid = (-a->lv[a->n - 1].k + b->lv[b->n - 1].k) / 2.0;
    return 1;
}

static PyObject *
Book_mid(Book *self, PyObject *Py_UNUSED(ignored))
{
    double mid;
    if (!get_mid(self, &mid)) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(mid);
}

static PyObject *
Book_spread_bps(Book *self, PyObject *Py_UNUSED(ignored))
{
    double mid;
    if (!get_mid(self, &mid)) {
        Py_RETURN_NONE;
    }
    const Side *b = &self->side[0], *a = &self->side[1];
    double ask = -a->lv[a->n - 1].k, bid = b->lv[b->n - 1].k;
    return PyFloat_FromDouble((ask - bid) / mid * 1e4);
}

static PyObject *
Book_count(Book *self, PyObject *arg)
{
    int side = side_arg(arg);
    if (side < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(self->side[side].n);
}

/* Sums of size and key x size over levels [lo, hi), best (hi - 1) first. Four
 * accumulators: a single chain is bound by the add latency, not by the loads. */
static void
sum_range(const Level *L, Py_ssize_t lo, Py_ssize_t hi, double *base, double *kq)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    double q0 = 0.0, q1 = 0.0, q2 = 0.0, q3 = 0.0;
    Py_ssize_t i = hi;
    while (i - lo >= 4) {
        i -= 4;
        s0 += L[i + 3].s;
        q0 += L[i + 3].k * L[i + 3].s;
        s1 += L[i + 2].s;
        q1 += L[i + 2].k * L[i + 2].s;
        s2 += L[i + 1].s;
        q2 += L[i + 1].k * L[i + 1].s;
        s3 += L[i].s;
        q3 += L[i].k * L[i].s;
    }
    while (i > lo) {
        i--;
        s0 += L[i].s;
        q0 += L[i].k * L[i].s;
    }
    *base = (s0 + s1) + (s2 + s3);
    *kq = (q0 + q1) + (q2 + q3);
}

/* First level inside `bps` of mid: bid price >= mid * (1 - bps/1e4), ask price <=
 * mid * (1 + bps/1e4), the same floating-point operations as bot.book's numpy path. */
static Py_ssize_t
band_start(const Side *sd, int side, double mid, double bps)
{
    double key = side ? -(mid * (1.0 + bps / 1e4)) : mid * (1.0 - bps / 1e4);
    return lower_bound(sd->lv, 0, sd->n, key);
}

PyDoc_STRVAR(depth_doc,
             "depth(side, bps) -> (base, quote, levels)\n\n"
             "Size and notional resting within bps of mid on one side (0 bid, 1 ask).");

static PyObject *
Book_depth(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    double bps;
    if (side_number_args(args, nargs, "depth(side, bps)", &side, &bps) < 0) {
        return NULL;
    }
    double mid, base = 0.0, kq = 0.0;
    Py_ssize_t cnt = 0;
    if (get_mid(self, &mid)) {
        const Side *sd = &self->side[side];
        Py_ssize_t k0 = band_start(sd, side, mid, bps);
        cnt = sd->n - k0;
        sum_range(sd->lv, k0, sd->n, &base, &kq);
    }
    return Py_BuildValue("ddn", base, side ? -kq : kq, cnt);
}

static int
get_out(PyObject *o, Py_buffer *view, Py_ssize_t items)
{
    if (PyObject_GetBuffer(o, view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (!is_double_format(view->format) || view->len != items * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous float64 array of the right size");
        return -1;
    }
    return 0;
}

/* A bands_bps argument read as doubles, with room for each band's first level. */
typedef struct {
    PyObject *seq;
    Py_ssize_t n;
    double *bps;
    Py_ssize_t *ks;
    double small[16];
    Py_ssize_t small_k[16];
} Bands;

static void
bands_release(Bands *bs)
{
    if (bs->bps != bs->small) {
        PyMem_Free(bs->bps);
        PyMem_Free(bs->ks);
    }
    Py_DECREF(bs->seq);
}

static int
bands_read(PyObject *o, Bands *bs)
{
    bs->seq = PySequence_Fast(o, "bands_bps must be a sequence");
    if (bs->seq == NULL) {
        return -1;
    }
    bs->n = PySequence_Fast_GET_SIZE(bs->seq);
    PyObject **items = PySequence_Fast_ITEMS(bs->seq);
    bs->bps = bs->small;
    bs->ks = bs->small_k;
    if (bs->n > 16) {
        bs->bps = PyMem_Malloc((size_t)bs->n * sizeof(double));
        bs->ks = PyMem_Malloc((size_t)bs->n * sizeof(Py_ssize_t));
        if (bs->bps == NULL || bs->ks == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
    }
    for (Py_ssize_t j = 0; j < bs->n; j++) {
        bs->bps[j] = PyFloat_AsDouble(items[j]);
        if (bs->bps[j] == -1.0 && PyErr_Occurred()) {
            goto fail;
        }
    }
    return 0;
fail:
    bands_release(bs);
    return -1;
}

/* Depth within each band on both sides into out, (side, band, [base, quote]). */
static void
bands_fill(const Book *self, Bands *bs, double *out)
{
    Py_ssize_t nb = bs->n, *ks = bs->ks;
    double mid;
    if (!get_mid(self, &mid)) {
        memset(out, 0, (size_t)(4 * nb) * sizeof(double));
        return;
    }
    for (int side = 0; side < 2; side++) {
        const Side *sd = &self->side[side];
        for (Py_ssize_t j = 0; j < nb; j++) {
            ks[j] = band_start(sd, side, mid, bs->bps[j]);
        }
        /* Narrowest band first: each band adds the segment down to its edge to the
         * running sums, so the levels are summed once for all bands. */
        Py_ssize_t done_to = sd->n;
        double base = 0.0, kq = 0.0;
        for (Py_ssize_t left = nb; left > 0; left--) {
            Py_ssize_t best = -1;
            for (Py_ssize_t j = 0; j < nb; j++) { /* the unfilled band nearest the top */
                if (ks[j] >= 0 && (best < 0 || ks[j] > ks[best])) {
                    best = j;
                }
            }
            Py_ssize_t k0 = ks[best];
            if (k0 < done_to) {
                double b, q;
                sum_range(sd->lv, k0, done_to, &b, &q);
                base += b;
                kq += q;
                done_to = k0;
            }
            double *o = out + (side * nb + best) * 2;
            o[0] = base;
            o[1] = side ? -kq : kq;
            ks[best] = -1;
        }
    }
}

/* Depth within each band of bands_obj into out_obj (see bands_doc): 0, or -1 with an
   exception set. Shared by bands() and sample(). */
static int
bands_into(const Book *self, PyObject *bands_obj, PyObject *out_obj)
{
    Bands bs;
    Py_buffer view;
    if (bands_read(bands_obj, &bs) < 0) {
        return -1;
    }
    if (get_out(out_obj, &view, 4 * bs.n) < 0) {
        bands_release(&bs);
        return -1;
    }
    bands_fill(self, &bs, (double *)view.buf);
    PyBuffer_Release(&view);
    bands_release(&bs);
    return 0;
}

PyDoc_STRVAR(bands_doc,
             "bands(bands_bps, out) -> None\n\n"
             "Depth within each band on both sides into out, a C-contiguous float64\n"
             "array of 4 * len(bands_bps) items laid out as (side, band, [base, quote]).");

static PyObject *
Book_bands(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bands(bands_bps, out)");
        return NULL;
    }
    if (bands_into(self, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(top_doc,
             "top(side, out) -> None\n\n"
             "The best len(out) // 2 levels of a side, best first, into out: a C-contiguous\n"
             "float64 array of [price, size] rows (at most count(side) rows).");

static PyObject *
Book_top(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "top(side, out)");
        return NULL;
    }
    int side = side_arg(args[0]);
    if (side < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    const Side *sd = &self->side[side];
    Py_ssize_t k = view.len / (Py_ssize_t)(2 * sizeof(double));
    if (!is_double_format(view.format) || k > sd->n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "out must be a float64 (k <= count, 2) array");
        return NULL;
    }
    double *out = (double *)view.buf;
    for (Py_ssize_t i = 0; i < k; i++) {
        const Level *l = &sd->lv[sd->n - 1 - i];
        out[2 * i] = side ? -l->k : l->k;
        out[2 * i + 1] = l->s;
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(size_at_doc,
             "size_at(side, price) -> float\n\n"
             "The size of the level at exactly price on side (0 bid, 1 ask), 0.0 if none.");

static PyObject *
Book_size_at(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    double price;
    if (side_number_args(args, nargs, "size_at(side, price)", &side, &price) < 0) {
        return NULL;
    }
    /* Ascending keys (bid: price, ask: -price): a binary search for the exact key. */
    const Side *sd = &self->side[side];
    double key = side ? -price : price;
    Py_ssize_t lo = 0, hi = sd->n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (sd->lv[mid].k < key) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (lo < sd->n && sd->lv[lo].k == key) {
        return PyFloat_FromDouble(sd->lv[lo].s);
    }
    return PyFloat_FromDouble(0.0);
}

/* Walk a non-empty side best first until want > 0 is filled: 1 if it is, with the
 * filled quote and base and the worst price reached, 0 with the whole side's. The
 * running notional is summed best first, as numpy's cumsum does (same value). */
static int
fill_walk(const Side *sd, int side, double want, double *quote, double *base, double *worst)
{
    const Level *L = sd->lv;
    double cq = 0.0, b = 0.0;
    for (Py_ssize_t i = sd->n - 1; i >= 0; i--) {
        double price = side ? -L[i].k : L[i].k;
        double before = cq;
        cq += price * L[i].s;
        if (cq >= want) {
            *quote = want;
            *base = b + (want - before) / price;
            *worst = price;
            return 1;
        }
        b += L[i].s;
    }
    *quote = cq;
    *base = b;
    *worst = side ? -L[0].k : L[0].k;
    return 0;
}

PyDoc_STRVAR(fill_doc,
             "fill(side, notional) -> (filled_quote, filled_base, worst_price, complete)\n\n"
             "Walk a non-empty side best first until notional > 0 is filled.");

static PyObject *
Book_fill(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    double want;
    if (side_number_args(args, nargs, "fill(side, notional)", &side, &want) < 0) {
        return NULL;
    }
    const Side *sd = &self->side[side];
    if (!sd->n) {
        PyErr_SetString(PyExc_ValueError, "fill on an empty side");
        return NULL;
    }
    double quote, base, worst;
    int complete = fill_walk(sd, side, want, &quote, &base, &worst);
    return Py_BuildValue("dddO", quote, base, worst, complete ? Py_True : Py_False);
}

/* bot.book.OrderBook.fill_slippage_bps on a book with both sides: None (a new
 * reference) for a zero notional or a fill the side cannot complete, else the
 * average price against mid in bps, positive = cost (side 1, the asks, is a buy). */
static PyObject *
slippage(const Book *self, int side, double want, double mid)
{
    double quote, base, worst;
    if (want == 0.0 || !fill_walk(&self->side[side], side, want, &quote, &base, &worst)) {
        Py_RETURN_NONE;
    }
    if (base == 0.0) { /* Python's quote / base would raise */
        PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
        return NULL;
    }
    double avg = quote / base;
    return PyFloat_FromDouble(side ? (avg - mid) / mid * 1e4 : (mid - avg) / mid * 1e4);
}

PyDoc_STRVAR(sample_doc,
             "sample(bands_bps, notional, out)\n"
             "    -> (bid, ask, mid, spread_bps, out, buy_slippage_bps, sell_slippage_bps) | None\n\n"
             "One depth reading (bot.monitor.DepthMonitor's) in one call: None when a side\n"
             "is empty, else the best prices, mid = (ask + bid) / 2, spread = (ask - bid) /\n"
             "mid * 1e4, bands(bands_bps, out), and the slippage of buying (walking the asks)\n"
             "and selling notional as bot.book.OrderBook.fill_slippage_bps computes it: None\n"
             "for 0 or a fill the side cannot complete; ValueError for a notional that is\n"
             "not finite or < 0 (checked after the bands, as the monitor's calls were).");

static PyObject *
Book_sample(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "sample(bands_bps, notional, out)");
        return NULL;
    }
    const Side *b = &self->side[0], *a = &self->side[1];
    if (!b->n || !a->n) {
        Py_RETURN_NONE;
    }
    if (bands_into(self, args[0], args[2]) < 0) {
        return NULL;
    }
    double want = PyFloat_AsDouble(args[1]);
    if (want == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!isfinite(want) || want < 0.0) {
        PyErr_Format(PyExc_ValueError, "notional must be finite and >= 0, got %S", args[1]);
        return NULL;
    }
    double bid = b->lv[b->n - 1].k, ask = -a->lv[a->n - 1].k;
    double mid = (ask + bid) / 2.0;
    PyObject *t = PyTuple_New(7);
    if (t == NULL) {
        return NULL;
    }
    PyObject *o;
    if ((o = PyFloat_FromDouble(bid)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 0, o);
    if ((o = PyFloat_FromDouble(ask)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 1, o);
    if ((o = PyFloat_FromDouble(mid)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 2, o);
    if ((o = PyFloat_FromDouble((ask - bid) / mid * 1e4)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 3, o);
    Py_INCREF(args[2]);
    PyTuple_SET_ITEM(t, 4, args[2]);
    if ((o = slippage(self, 1, want, mid)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 5, o);
    if ((o = slippage(self, 0, want, mid)) == NULL) {
        goto fail;
    }
    PyTuple_SET_ITEM(t, 6, o);
    return t;
fail:
    Py_DECREF(t); /* unset items are NULL: tuple dealloc skips them */
    return NULL;
}

/* ------------------------------------------------------------------ type */

static void
Book_dealloc(Book *self)
{
    PyMem_Free(self->side[0].lv);
    PyMem_Free(self->side[1].lv);
    PyMem_Free(self->rows);
    PyMem_Free(self->tmp);
    PyMem_Free(self->ins);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Book_methods[] = {
    {"delta", (PyCFunction)(void (*)(void))Book_delta, METH_FASTCALL, delta_doc},
    {"snapshot", (PyCFunction)(void (*)(void))Book_snapshot, METH_FASTCALL, snapshot_doc},
    {"best_bid", (PyCFunction)Book_best_bid, METH_NOARGS, "Best bid price or None."},
    {"best_ask", (PyCFunction)Book_best_ask, METH_NOARGS, "Best ask price or None."},
    {"mid", (PyCFunction)Book_mid, METH_NOARGS, "(ask + bid) / 2, or None if a side is empty."},
    {"spread_bps", (PyCFunction)Book_spread_bps, METH_NOARGS, "(ask - bid) / mid * 1e4 or None."},
    {"count", (PyCFunction)Book_count, METH_O, "count(side) -> levels on a side."},
    {"depth", (PyCFunction)(void (*)(void))Book_depth, METH_FASTCALL, depth_doc},
    {"bands", (PyCFunction)(void (*)(void))Book_bands, METH_FASTCALL, bands_doc},
    {"top", (PyCFunction)(void (*)(void))Book_top, METH_FASTCALL, top_doc},
    {"size_at", (PyCFunction)(void (*)(void))Book_size_at, METH_FASTCALL, size_at_doc},
    {"fill", (PyCFunction)(void (*)(void))Book_fill, METH_FASTCALL, fill_doc},
    {"sample", (PyCFunction)(void (*)(void))Book_sample, METH_FASTCALL, sample_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bot._bookc.Levels",
    .tp_doc = PyDoc_STR("Both sides of an L2 book as sorted (key, size) arrays, best last."),
    .tp_basicsize = sizeof(Book),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Book_dealloc,
    .tp_methods = Book_methods,
};

/* ------------------------------------------------------------------ top-level flow */

/* The early warning's cancel/add flow between two reads of the best levels
 * (bot/warning/features.py). bot/_book_numpy.py's top_flow is the reference: every
 * sum here is taken in the order numpy's cumsum takes it, so the two give the same
 * bits. Both snapshots are laid out as one ascending key sequence: bids (keyed by
 * minus their price, best first), then asks (by price, best first). */

typedef struct {
    const Rows *b, *a;
    Py_ssize_t nb, n;
} Top;

static inline double
top_key(const Top *t, Py_ssize_t i)
{
    return i < t->nb ? -PRICE(t->b, i) : PRICE(t->a, i - t->nb);
}

static inline double
top_size(const Top *t, Py_ssize_t i)
{
    return i < t->nb ? SIZE(t->b, i) : SIZE(t->a, i - t->nb);
}

/* First i in [0, hi) with key(i) > v (numpy's searchsorted side="right"). */
static Py_ssize_t
top_upper(const Top *t, Py_ssize_t hi, double v)
{
    Py_ssize_t lo = 0;
    while (lo < hi) {
        Py_ssize_t m = lo + (hi - lo) / 2;
        if (top_key(t, m) <= v) {
            lo = m + 1;
        }
        else {
            hi = m;
        }
    }
    return lo;
}

/* Running totals of the sizes (cumsum order) read at up to three indices; an index
 * < 0 reads nothing. */
static void
top_cums(const Top *t, const Py_ssize_t at[3], double out[3])
{
    Py_ssize_t last = -1;
    for (int j = 0; j < 3; j++) {
        out[j] = 0.0;
        if (at[j] > last) {
            last = at[j];
        }
    }
    double c = 0.0;
    for (Py_ssize_t i = 0; i <= last; i++) {
        c += top_size(t, i);
        for (int j = 0; j < 3; j++) {
            if (at[j] == i) {
                out[j] = c;
            }
        }
    }
}

/* TopLevels.total(lo, hi) given cum[lo - 1] and cum[hi - 1]. */
static inline double
top_total(Py_ssize_t lo, Py_ssize_t hi, double c_lo1, double c_hi1)
{
    if (hi <= lo) {
        return 0.0;
    }
    return c_hi1 - (lo ? c_lo1 : 0.0);
}

static inline double
max0(double x)
{
    return 0.0 > x ? 0.0 : x; /* Python's max(x, 0.0): x unless 0.0 is greater */
}

/* The flow between the previous best levels (rows[0] bids, rows[1] asks) and the
 * current ones (rows[2], rows[3]) into out: bid size, ask size, removed bid, added bid,
 * removed ask, added ask. */
static void
flow_rows(const Rows rows[4], double out[6])
{
    Top p = {&rows[0], &rows[1], rows[0].n, rows[0].n + rows[1].n};
    Top c = {&rows[2], &rows[3], rows[2].n, rows[2].n + rows[3].n};
    Py_ssize_t pn = p.n, cn = c.n, pnb = p.nb, cnb = c.nb;

    /* The sizes now: TopLevels.total(0, nb) and total(nb, n). */
    Py_ssize_t c_at[3] = {cnb - 1, cn - 1, -1};
    double cc[3];
    top_cums(&c, c_at, cc);
    double size_b = top_total(0, cnb, 0.0, cc[0]);
    double size_a = top_total(cnb, cn, cc[0], cc[1]);
    double rem_b = 0.0, add_b = 0.0, rem_a = 0.0, add_a = 0.0;

    if (0 < pnb && pnb < pn && 0 < cnb && cnb < cn) {
        /* Each side's range ends at the nearer of the two last levels. */
        Py_ssize_t ib = pnb, jb = cnb, ia = pn, ja = cn;
        double pl = top_key(&p, pnb - 1), cl = top_key(&c, cnb - 1);
        if (pl <= cl) {
            jb = top_upper(&c, cnb, pl);
        }
        else {
            ib = top_upper(&p, pnb, cl);
        }
        pl = top_key(&p, pn - 1);
        cl = top_key(&c, cn - 1);
        if (pl <= cl) {
            ja = top_upper(&c, cn, pl);
        }
        else {
            ia = top_upper(&p, pn, cl);
        }
        /* Fall in size at each earlier level's price (0 if it is gone now), summed:
         * one walk, both key sequences ascend. */
        double cut = 0.0, cut_ib = 0.0, cut_pnb = 0.0, cut_ia = 0.0;
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < pn; i++) {
            double k = top_key(&p, i);
            while (j < cn && top_key(&c, j) < k) {
                j++;
            }
            Py_ssize_t jj = j < cn ? j : cn - 1;
            double now = top_key(&c, jj) != k ? 0.0 : top_size(&c, jj);
            double fall = top_size(&p, i) - now;
            if (!(fall >= 0.0 || isnan(fall))) { /* np.maximum(fall, 0.0) */
                fall = 0.0;
            }
            cut += fall;
            if (i == ib - 1) {
                cut_ib = cut;
            }
            if (i == pnb - 1) {
                cut_pnb = cut;
            }
            if (i == ia - 1) {
                cut_ia = cut;
            }
        }
        rem_b = ib ? cut_ib : 0.0;
        rem_a = ia > pnb ? cut_ia - cut_pnb : 0.0;
        Py_ssize_t c2_at[3] = {jb - 1, cnb - 1, ja - 1};
        double c2[3];
        top_cums(&c, c2_at, c2);
        Py_ssize_t p_at[3] = {ib - 1, pnb - 1, ia - 1};
        double pc[3];
        top_cums(&p, p_at, pc);
        add_b = rem_b + top_total(0, jb, 0.0, c2[0]) - top_total(0, ib, 0.0, pc[0]);
        add_a = rem_a + top_total(cnb, ja, c2[1], c2[2]) - top_total(pnb, ia, pc[1], pc[2]);
        add_b = max0(add_b);
        add_a = max0(add_a);
    }
    out[0] = size_b;
    out[1] = size_a;
    out[2] = rem_b;
    out[3] = add_b;
    out[4] = rem_a;
    out[5] = add_a;
}

/* get_rows for the flow's arrays: 0 with *view held, or -1 with an exception (a
 * TypeError for anything but (n, >=2) float64). */
static int
get_top(PyObject *obj, Py_buffer *view, Rows *r)
{
    int rc = get_rows(obj, view, r);
    if (rc == RC_CONVERT) {
        PyErr_SetString(PyExc_TypeError, "top_flow wants (n, 2) float64 arrays");
        return -1;
    }
    return rc;
}

PyDoc_STRVAR(top_flow_doc,
             "top_flow(prev_bids, prev_asks, bids, asks)\n"
             "    -> (bid size, ask size, removed bid, added bid, removed ask, added ask)\n\n"
             "The sizes of the best levels now and the flow since the previous ones; all\n"
             "four are float64 [price, size] rows, best first (OrderBook.top).");

static PyObject *
top_flow(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "top_flow(prev_bids, prev_asks, bids, asks)");
        return NULL;
    }
    Py_buffer views[4];
    Rows rows[4];
    int held = 0;
    PyObject *ret = NULL;
    for (; held < 4; held++) {
        if (get_top(args[held], &views[held], &rows[held]) < 0) {
            goto done;
        }
    }
    double out[6];
    flow_rows(rows, out);
    ret = Py_BuildValue("dddddd", out[0], out[1], out[2], out[3], out[4], out[5]);
done:
    for (int i = 0; i < held; i++) {
        PyBuffer_Release(&views[i]);
    }
    return ret;
}

/* ------------------------------------------------------------------ early-warning features */

/* FeatureTracker.update's arithmetic (bot/warning/features.py) for the compiled kernel.
 * The Python method is the reference and this gives its bits: every operation is the
 * one it performs, in its order, on IEEE doubles (Python's floats), with no fused
 * multiply-add (setup.py builds with -ffp-contract=off). Python's min(x, y) is y only
 * if y < x and max(x, y) is y only if y > x (so a NaN or a -0.0 in x stays); abs is
 * fabs; math.exp, math.log and math.sqrt are the same libm calls under CPython's rules
 * (py_exp, py_log, py_sqrt). Where Python would raise, this raises the same exception
 * at the same point, with the state updated exactly as far as the Python method had
 * updated it: the state is written in the Python method's order. The one thing not
 * matched is which NaN comes out of an operation on two different NaNs (a sign, a
 * payload): IEEE 754 leaves it open, and CPython itself answers differently once its
 * interpreter has specialised an operation; no operation here lets it reach a number.
 *
 * Inputs are taken as Python takes them where they meet a float: PyFloat_AsDouble,
 * exact for floats and their subclasses and the same conversion as Python's for an int.
 * The timestamps are Python ints, subtracted exactly (ts_after). The depth must be a
 * float64 (2, bands, 2) array and the levels (n, 2) float64 arrays (top_flow's). */

static const double F_EPS = 1e-12, F_MAX_TTF_S = 60.0, F_MIN_TTF_S = 0.05, F_BPS = 1e4;

static PyObject *str_price, *str_amount, *str_side, *str_buy; /* interned at import */

typedef struct {
    PyObject_HEAD
    PyObject *last_ns; /* NULL: no reading yet (None) */
    double w[4];       /* the Python method's _w, _a, _q, ... one for one */
    double a[16];
    double q[6];
    double ofi, c[2], wd[2], buy, sell;
    long long n_trades;
    double traded_quote, buy_base, sell_base, mid;
    double touch[4];
    int have_touch;    /* _touch is not None */
    Py_buffer prev[2]; /* _pb, _pa: the previous best levels, their buffers held */
    Rows prev_rows[2];
    int have_prev;     /* 0: none yet (_NO_LEVELS, empty) */
} Features;

static inline double
py_max(double x, double y)
{
    return y > x ? y : x;
}

static inline double
py_min(double x, double y)
{
    return y < x ? y : x;
}

static inline int
as_double(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *out = v;
    return 0;
}

/* x / y, or ZeroDivisionError as Python's float division. For the divisors no guard
 * keeps from 0: the cancel scales (0 only if the 60 s weight could exceed 2) and
 * quote_rel's (a negative traded notional can cancel its 1.0). */
static inline int
py_div(double x, double y, double *out)
{
    if (y == 0.0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
        return -1;
    }
    *out = x / y;
    return 0;
}

/* math.exp: OverflowError for an infinite result of a finite argument (never here: the
 * arguments are -dt / tau <= 0; an underflow to 0 is not an error in Python either). */
static inline int
py_exp(double x, double *out)
{
    double r = exp(x);
    if (isinf(r) && isfinite(x)) {
        PyErr_SetString(PyExc_OverflowError, "math range error");
        return -1;
    }
    *out = r;
    return 0;
}

/* math.log: CPython's m_log (a NaN and +inf come back as they are) under math_1's rule,
 * ValueError for x <= 0 and -inf. */
static inline int
py_log(double x, double *out)
{
    if (isfinite(x) && x > 0.0) {
        *out = log(x);
        return 0;
    }
    if (isnan(x) || x > 0.0) {
        *out = x;
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "math domain error");
    return -1;
}

/* math.sqrt: ValueError for x < 0 (-0.0 is its own root). */
static inline int
py_sqrt(double x, double *out)
{
    if (x < 0.0) {
        PyErr_SetString(PyExc_ValueError, "math domain error");
        return -1;
    }
    *out = sqrt(x);
    return 0;
}

/* features.py's _rel: x over its bias-corrected average, 1 with no history. */
static inline double
rel(double x, double avg_sum, double weight)
{
    double mean = weight > 0.0 ? avg_sum / weight : x;
    return mean > 0.0 ? x / mean : 1.0;
}

/* ts > last as Python compares them and, when it is, *dt = (ts - last) / 10**9 as
 * Python computes it: an exact difference, one correctly rounded division. For exact
 * ints less than 2**53 ns apart (104 days) that is one IEEE division of the difference,
 * which is what CPython does too; anything else takes Python's own operators. 1, 0, or
 * -1 with an exception. */
static int
ts_after(PyObject *ts, PyObject *last, double *dt)
{
    if (PyLong_CheckExact(ts) && PyLong_CheckExact(last)) {
        int over_t, over_l;
        long long t = PyLong_AsLongLongAndOverflow(ts, &over_t);
        long long l = PyLong_AsLongLongAndOverflow(last, &over_l);
        if (!over_t && !over_l) {
            if (t <= l) {
                return 0;
            }
            unsigned long long d = (unsigned long long)t - (unsigned long long)l;
            if (d < (1ULL << 53)) {
                *dt = (double)d / 1e9;
                return 1;
            }
        }
    }
    int later = PyObject_RichCompareBool(ts, last, Py_GT);
    if (later <= 0) {
        return later;
    }
    PyObject *ns = PyLong_FromLong(1000000000L);
    PyObject *diff = ns ? PyNumber_Subtract(ts, last) : NULL;
    PyObject *q = diff ? PyNumber_TrueDivide(diff, ns) : NULL;
    Py_XDECREF(ns);
    Py_XDECREF(diff);
    if (q == NULL) {
        return -1;
    }
    int rc = as_double(q, dt);
    Py_DECREF(q);
    return rc < 0 ? -1 : 1;
}

/* `a <= b` of the detector's two ratios: plain for floats, Python's comparison else
 * (an int and a float compare exactly). 1, 0, or -1 with an exception. */
static inline int
py_le(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b)) {
        return PyFloat_AS_DOUBLE(a) <= PyFloat_AS_DOUBLE(b);
    }
    return PyObject_RichCompareBool(a, b, Py_LE);
}

/* depth[side][band][1] of a (2, bands, 2) float64 buffer, any strides. */
static inline double
depth_quote(const Py_buffer *v, Py_ssize_t side, Py_ssize_t band)
{
    return *(const double *)((const char *)v->buf + side * v->strides[0] +
                             band * v->strides[1] + v->strides[2]);
}

/* Features.update's arguments. */
enum { FA_TS, FA_RATIO, FA_READY, FA_DEPTH, FA_MID, FA_SPREAD, FA_BIDS, FA_ASKS, FA_FRAC, FA_N };

PyDoc_STRVAR(features_update_doc,
             "update(ts_ns, ratio, baseline_ready, depth, mid, spread_bps, bids, asks,\n"
             "       fracture_ratio) -> list[float]\n\n"
             "FeatureTracker.update on a reading's fields (reading.ts_ns, .ratio,\n"
             ".baseline_ready; sample.depth, .mid, .spread_bps), the best levels it compares\n"
             "(OrderBook.top rows) and the tracker's fracture_ratio: the same vector, bit\n"
             "for bit.");

static PyObject *
Features_update(Features *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != FA_N) {
        PyErr_SetString(PyExc_TypeError,
                        "update(ts_ns, ratio, baseline_ready, depth, mid, spread_bps, bids, asks, "
                        "fracture_ratio)");
        return NULL;
    }
    PyObject *ret = NULL, *pair = NULL;

    /* Time since the last reading; a late one (not after it) counts as simultaneous. */
    PyObject *ts = args[FA_TS], *last = self->last_ns;
    double dt = 0.0;
    int later = 1;
    if (last != NULL && last != Py_None) {
        later = ts_after(ts, last, &dt);
        if (later < 0) {
            return NULL;
        }
    }
    if (later) {
        Py_INCREF(ts);
        Py_XSETREF(self->last_ns, ts);
    }
    double k1, k2, k10, k60;
    if (py_exp(-dt, &k1) < 0 || py_exp(-dt / 2.0, &k2) < 0 || py_exp(-dt / 10.0, &k10) < 0 ||
        py_exp(-dt / 60.0, &k60) < 0) {
        return NULL;
    }
    double j1 = 1.0 - k1, j2 = 1.0 - k2, j10 = 1.0 - k10, j60 = 1.0 - k60;
    double *w = self->w, *a = self->a, *q = self->q;
    w[0] = k1 * w[0] + j1;
    w[1] = k2 * w[1] + j2;
    w[2] = k10 * w[2] + j10;
    w[3] = k60 * w[3] + j60;
    double w1 = w[0], w2 = w[1], w10 = w[2], w60 = w[3];

    /* The detector's ratio, thinner side, and its trend. `given` is the ratio object the
     * vector returns as it is (Python's `ratio = rb`), NULL for the 1.0 default. */
    pair = PySequence_Fast(args[FA_RATIO], "cannot unpack non-iterable ratio");
    if (pair == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_ValueError, "ratio must unpack to (bid, ask)");
        goto done;
    }
    PyObject *rb = PySequence_Fast_GET_ITEM(pair, 0), *ra = PySequence_Fast_GET_ITEM(pair, 1);
    PyObject *given = NULL;
    int thin_bid = 0;
    double ratio = 1.0;
    if (rb != Py_None && ra != Py_None) {
        thin_bid = py_le(rb, ra);
        int ready = thin_bid < 0 ? -1 : PyObject_IsTrue(args[FA_READY]);
        if (ready < 0) {
            goto done;
        }
        if (ready) {
            given = thin_bid ? rb : ra;
            if (as_double(given, &ratio) < 0) {
                goto done;
            }
        }
    }
    a[12] = k2 * a[12] + j2 * ratio;
    a[13] = k10 * a[13] + j10 * ratio;
    a[14] = k1 * a[14] + j1 * ratio;
    double r2 = w2 > 0.0 ? a[12] / w2 : ratio;
    double r10 = w10 > 0.0 ? a[13] / w10 : ratio;
    double trend = ratio - (w1 > 0.0 ? a[14] / w1 : ratio);
    double ttf = F_MAX_TTF_S;
    if (trend < 0.0) {
        double fracture;
        if (as_double(args[FA_FRAC], &fracture) < 0) {
            goto done;
        }
        ttf = py_min(py_max(ratio - fracture, 0.0) / -trend, F_MAX_TTF_S); /* -trend > 0 */
    }

    /* Depth across bands (quote notional per side and band), each over its 60 s mean:
     * sample.depth.tolist() read in place, an IndexError where it has no such item. */
    Py_buffer dv;
    if (PyObject_GetBuffer(args[FA_DEPTH], &dv, PyBUF_RECORDS_RO) < 0) {
        goto done;
    }
    if (dv.ndim != 3 || dv.itemsize != 8 || !is_double_format(dv.format)) {
        PyBuffer_Release(&dv);
        PyErr_SetString(PyExc_TypeError, "depth must be a float64 (2, bands, 2) array");
        goto done;
    }
    Py_ssize_t nb = dv.shape[1];
    if (dv.shape[0] < 2 || nb < 1 || dv.shape[2] < 2) {
        PyBuffer_Release(&dv);
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        goto done;
    }
    double b0 = depth_quote(&dv, 0, 0), a0 = depth_quote(&dv, 1, 0);
    double b1 = nb > 1 ? depth_quote(&dv, 0, 1) : b0, a1 = nb > 1 ? depth_quote(&dv, 1, 1) : a0;
    double b2 = nb > 2 ? depth_quote(&dv, 0, 2) : b1, a2 = nb > 2 ? depth_quote(&dv, 1, 2) : a1;
    PyBuffer_Release(&dv);
    double sb = b1 > 0.0 ? b0 / b1 : 1.0;
    double sa = a1 > 0.0 ? a0 / a1 : 1.0;
    const double band_x[6] = {b1, a1, b2, a2, sb, sa};
    for (int i = 0; i < 6; i++) {
        a[i] = k60 * a[i] + j60 * band_x[i];
    }
    double band1 = py_min(rel(b1, a[0], w60), rel(a1, a[1], w60));
    double band2 = py_min(rel(b2, a[2], w60), rel(a2, a[3], w60));
    a[15] = k2 * a[15] + j2 * band1;
    double band1_trend = band1 - (w2 > 0.0 ? a[15] / w2 : band1);
    double near = py_min(rel(sb, a[4], w60), rel(sa, a[5], w60));
    double imbalance = b0 + a0 > 0.0 ? fabs(b0 - a0) / (b0 + a0) : 0.0;

    /* The touch and the best levels: order-flow imbalance, cancels and adds. The levels
     * are held as the next call's previous ones (the Python method keeps the arrays). */
    Py_buffer cur[2];
    Rows rows[4];
    if (get_top(args[FA_BIDS], &cur[0], &rows[2]) < 0) {
        goto done;
    }
    if (get_top(args[FA_ASKS], &cur[1], &rows[3]) < 0) {
        PyBuffer_Release(&cur[0]);
        goto done;
    }
    const Rows none = {NULL, 0, 0, 0};
    rows[0] = self->have_prev ? self->prev_rows[0] : none;
    rows[1] = self->have_prev ? self->prev_rows[1] : none;
    double flow[6], mid;
    flow_rows(rows, flow);
    if (as_double(args[FA_MID], &mid) < 0) {
        PyBuffer_Release(&cur[0]);
        PyBuffer_Release(&cur[1]);
        goto done;
    }
    double size_b = flow[0], size_a = flow[1], rem_b = flow[2], add_b = flow[3];
    double rem_a = flow[4], add_a = flow[5];
    const Rows *bids = &rows[2], *asks = &rows[3];
    double touch[4] = {
        bids->n ? PRICE(bids, 0) : 0.0,
        bids->n ? SIZE(bids, 0) : 0.0,
        asks->n ? PRICE(asks, 0) : 0.0,
        asks->n ? SIZE(asks, 0) : 0.0,
    };
    double top_b = size_b * mid;
    double top_a = size_a * mid;
    double ofi = 0.0, can_b = 0.0, can_a = 0.0, wd_b = 0.0, wd_a = 0.0;
    if (self->have_touch) {
        double pbp = self->touch[0], pbs = self->touch[1], pap = self->touch[2];
        double pas = self->touch[3];
        double bp = touch[0], bsz = touch[1], ap = touch[2], asz = touch[3];
        ofi = (bp >= pbp ? bsz : 0.0) - (bp <= pbp ? pbs : 0.0) - (ap <= pap ? asz : 0.0) +
              (ap >= pap ? pas : 0.0);
        /* Sells hit bids, buys lift asks: what traded is not a cancel. */
        can_b = py_max(rem_b - self->sell_base, 0.0) * mid;
        can_a = py_max(rem_a - self->buy_base, 0.0) * mid;
        wd_b = can_b - add_b * mid;
        wd_a = can_a - add_a * mid;
    }
    memcpy(self->touch, touch, sizeof(touch));
    self->have_touch = 1;
    for (int i = 0; i < 2; i++) {
        if (self->have_prev) {
            PyBuffer_Release(&self->prev[i]);
        }
        self->prev[i] = cur[i];
        self->prev_rows[i] = rows[2 + i];
    }
    self->have_prev = 1;
    a[6] = k60 * a[6] + j60 * (touch[1] + touch[3]) / 2.0;
    a[8] = k60 * a[8] + j60 * top_b;
    a[9] = k60 * a[9] + j60 * top_a;
    self->ofi = k1 * self->ofi + ofi;
    double per_s1 = w1 > 0.0 ? 1.0 / w1 : 0.0;
    double touch_avg = w60 > 0.0 ? a[6] / w60 : 0.0;
    double ofi_abs = touch_avg > 0.0 ? fabs(self->ofi) * per_s1 / touch_avg : 0.0;
    /* Cancels and adds over the side's 60 s mean of the same top-level depth. */
    double scale_b = w60 > 0.0 && a[8] > 0.0 ? a[8] / w60 : (top_b != 0.0 ? top_b : 1.0);
    double scale_a = w60 > 0.0 && a[9] > 0.0 ? a[9] / w60 : (top_a != 0.0 ? top_a : 1.0);
    double *c = self->c, *wd = self->wd, x = 0.0;
    if (py_div(can_b, scale_b, &x) < 0) {
        goto done;
    }
    c[0] = k1 * c[0] + x;
    if (py_div(can_a, scale_a, &x) < 0) {
        goto done;
    }
    c[1] = k1 * c[1] + x;
    if (py_div(wd_b, scale_b, &x) < 0) {
        goto done;
    }
    wd[0] = k1 * wd[0] + x;
    if (py_div(wd_a, scale_a, &x) < 0) {
        goto done;
    }
    wd[1] = k1 * wd[1] + x;
    double cancel_max = py_max(c[0], c[1]) * per_s1;
    double withdraw_max = py_max(wd[0], wd[1]) * per_s1;

    /* Spread. s60 >= 1e-12 or NaN: no zero divisor below. */
    double spread;
    if (as_double(args[FA_SPREAD], &spread) < 0) {
        goto done;
    }
    a[7] = k60 * a[7] + j60 * spread;
    a[10] = k1 * a[10] + j1 * spread;
    double s60 = py_max(w60 > 0.0 ? a[7] / w60 : spread, F_EPS);
    double s1 = w1 > 0.0 ? a[10] / w1 : spread;
    double spread_rel;
    if (py_log(py_max(spread, F_EPS) / s60, &spread_rel) < 0) {
        goto done;
    }
    double spread_change = fabs(spread - s1) / s60;

    /* Realised volatility of the mid; trades since the previous sample. */
    double pmid = self->mid;
    double ret_bps = pmid > 0.0 ? (mid - pmid) / pmid * F_BPS : 0.0;
    self->mid = mid;
    double sq = ret_bps * ret_bps;
    q[0] = k2 * q[0] + sq;
    q[1] = k60 * q[1] + sq;
    double nt = (double)self->n_trades, tq = self->traded_quote;
    q[2] = k2 * q[2] + nt;
    q[3] = k60 * q[3] + nt;
    q[4] = k2 * q[4] + tq;
    q[5] = k60 * q[5] + tq;
    self->buy = k2 * self->buy + self->buy_base * mid;
    self->sell = k2 * self->sell + self->sell_base * mid;
    self->n_trades = 0;
    self->traded_quote = self->buy_base = self->sell_base = 0.0;
    double per_s2 = w2 > 0.0 ? 1.0 / (2.0 * w2) : 0.0;
    double per_s60 = w60 > 0.0 ? 1.0 / (60.0 * w60) : 0.0;
    /* Kernel sums of squares and counts are >= 0, so only the traded quote (negative
     * for a negative price or amount) can make a zero divisor. */
    double vol_short, vol_60, vol_ratio, trade_rel, quote_x = 0.0, quote_rel;
    if (py_sqrt(q[0] * per_s2, &vol_short) < 0 || py_sqrt(q[1] * per_s60, &vol_60) < 0 ||
        py_log((vol_short + 0.1) / (vol_60 + 0.1), &vol_ratio) < 0 ||
        py_log((q[2] * per_s2 + 0.1) / (q[3] * per_s60 + 0.1), &trade_rel) < 0 ||
        py_div(q[4] * per_s2 + 1.0, q[5] * per_s60 + 1.0, &quote_x) < 0 ||
        py_log(quote_x, &quote_rel) < 0) {
        goto done;
    }
    double buy = self->buy, sell = self->sell, total = buy + sell, toward = 0.0;
    if (total > 0.0) {
        toward = thin_bid ? (sell - buy) / total : (buy - sell) / total;
    }

    double log_ratio, log_ttf;
    if (py_log(py_max(ratio, 1e-3), &log_ratio) < 0 ||
        py_log(py_max(ttf, F_MIN_TTF_S), &log_ttf) < 0) {
        goto done;
    }
    const double vec[21] = {
        /* FEATURES order */
        ratio, log_ratio, trend, r2 - r10, log_ttf,
        band1, band2, band1_trend, near, imbalance,
        ofi_abs, cancel_max, withdraw_max,
        spread, spread_rel, spread_change,
        vol_short, vol_ratio, trade_rel, quote_rel, toward,
    };
    PyObject *out = PyList_New(21);
    if (out == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < 21; i++) {
        /* ratio_min and spread_bps are the objects given, as the Python method returns. */
        PyObject *item = i == 0 && given ? given : i == 13 ? args[FA_SPREAD] : NULL;
        if (item != NULL) {
            Py_INCREF(item);
        }
        else if ((item = PyFloat_FromDouble(vec[i])) == NULL) {
            Py_DECREF(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, item);
    }
    ret = out;
done:
    Py_XDECREF(pair);
    return ret;
}

PyDoc_STRVAR(features_on_trade_doc,
             "on_trade(trade) -> None\n\n"
             "FeatureTracker.on_trade: count a trade (its price, amount and side) until the\n"
             "next update.");

static PyObject *
Features_on_trade(Features *self, PyObject *trade)
{
    self->n_trades++;
    PyObject *price = PyObject_GetAttr(trade, str_price);
    if (price == NULL) {
        return NULL;
    }
    PyObject *amount = PyObject_GetAttr(trade, str_amount);
    if (amount == NULL) {
        Py_DECREF(price);
        return NULL;
    }
    /* price * amount: two floats multiply as doubles; anything else (two ints multiply
     * exactly) takes Python's operator, and the product then meets a float. */
    double quote, base;
    int rc;
    if (PyFloat_Check(price) && PyFloat_Check(amount)) {
        quote = PyFloat_AS_DOUBLE(price) * PyFloat_AS_DOUBLE(amount);
        rc = 0;
    }
    else {
        PyObject *product = PyNumber_Multiply(price, amount);
        rc = product ? as_double(product, &quote) : -1;
        Py_XDECREF(product);
    }
    Py_DECREF(price);
    if (rc < 0) {
        Py_DECREF(amount);
        return NULL;
    }
    self->traded_quote += quote;
    PyObject *side = PyObject_GetAttr(trade, str_side);
    int buy = side ? PyObject_RichCompareBool(side, str_buy, Py_EQ) : -1;
    Py_XDECREF(side);
    rc = buy < 0 ? -1 : as_double(amount, &base);
    Py_DECREF(amount);
    if (rc < 0) {
        return NULL;
    }
    if (buy) {
        self->buy_base += base;
    }
    else {
        self->sell_base += base;
    }
    Py_RETURN_NONE;
}

static PyObject *
Features_get_last_ns(Features *self, void *Py_UNUSED(closure))
{
    PyObject *v = self->last_ns ? self->last_ns : Py_None;
    Py_INCREF(v);
    return v;
}

static int
Features_set_last_ns(Features *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete last_ns");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->last_ns, value);
    return 0;
}

static void
Features_dealloc(Features *self)
{
    Py_XDECREF(self->last_ns);
    if (self->have_prev) {
        PyBuffer_Release(&self->prev[0]);
        PyBuffer_Release(&self->prev[1]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Features_methods[] = {
    {"update", (PyCFunction)(void (*)(void))Features_update, METH_FASTCALL, features_update_doc},
    {"on_trade", (PyCFunction)Features_on_trade, METH_O, features_on_trade_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Features_getset[] = {
    {"last_ns", (getter)Features_get_last_ns, (setter)Features_set_last_ns,
     "The latest reading's ts_ns (None before the first).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FeaturesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bot._bookc.Features",
    .tp_doc = PyDoc_STR("One market's early-warning feature state (FeatureTracker's, compiled)."),
    .tp_basicsize = sizeof(Features),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Features_dealloc,
    .tp_methods = Features_methods,
    .tp_getset = Features_getset,
};

/* ------------------------------------------------------------------ depth message rows */

/* The price levels of a Binance depth message, as bot/feeds/binance_raw.py's fast path
 * reads them: `"b":[ROWS],"a":[ROWS]` where a row is `["price","size"]` (or bare
 * numbers). Only strict JSON numbers are taken, each converted exactly as the JSON
 * path converts it (a number with a fraction or exponent: correctly rounded, as
 * orjson's parser; a bare integer: as numpy converts orjson's int), so the arrays are
 * the same bits. Anything else (whitespace, other columns, other keys, long integers,
 * out-of-range values) answers None and the caller takes its general path. */

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path: a decimal whose digits make an integer m <= 2^53 and whose
 * power of ten is within 1e22 is m * 10^e or m / 10^-e, one IEEE operation on two
 * exact operands, so correctly rounded: the value the full conversion gives (Python's
 * dtoa, orjson's parser), at a fraction of its cost. 0 when it does not apply. `s` is
 * a strict JSON number with a fraction or an exponent. */
static int
depth_fast(const char *s, double *out)
{
    int neg = *s == '-';
    s += neg;
    unsigned long long m = 0;
    int digits = 0, e = 0;
    for (; is_digit(*s); s++) {
        if (m || *s != '0') {
            if (++digits > 19) {
                return 0;
            }
        }
        m = m * 10 + (unsigned long long)(*s - '0');
    }
    if (*s == '.') {
        for (s++; is_digit(*s); s++) {
            if (m || *s != '0') {
                if (++digits > 19) {
                    return 0;
                }
            }
            m = m * 10 + (unsigned long long)(*s - '0');
            e--;
        }
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        int eneg = *s == '-';
        s += (*s == '-' || *s == '+');
        int x = 0;
        for (; is_digit(*s); s++) {
            if (x > 10000) {
                return 0;
            }
            x = x * 10 + (*s - '0');
        }
        e += eneg ? -x : x;
    }
    if (m > (1ULL << 53) || e < -22 || e > 22) {
        return 0;
    }
    double v = (double)m;
    v = e < 0 ? v / POW10[-e] : v * POW10[e];
    *out = neg ? -v : v;
    return 1;
}

/* One number at *pp (< end), optionally quoted; 0 and *pp moved past it, or -1. */
static int
depth_number(const char **pp, const char *end, double *out)
{
    const char *p = *pp;
    int quoted = 0;
    if (p < end && *p == '"') {
        quoted = 1;
        p++;
    }
    const char *s = p;
    if (p < end && *p == '-') {
        p++;
    }
    if (p >= end) {
        return -1;
    }
    if (*p == '0') {
        p++;
    }
    else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    else {
        return -1;
    }
    int real = 0;
    if (p < end && *p == '.') {
        real = 1;
        p++;
        if (!(p < end && is_digit(*p))) {
            return -1;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (!(p < end && is_digit(*p))) {
            return -1;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    Py_ssize_t len = p - s;
    char buf[64];
    if (len >= (Py_ssize_t)sizeof(buf) || (!real && len - (*s == '-') > 15)) {
        return -1;
    }
    if (quoted) {
        if (!(p < end && *p == '"')) {
            return -1;
        }
        p++;
    }
    memcpy(buf, s, (size_t)len);
    buf[len] = '\0';
    double v;
    if (real && depth_fast(buf, &v)) {
        /* exact: see depth_fast */
    }
    else if (real) {
        char *stop = NULL;
        v = PyOS_string_to_double(buf, &stop, NULL);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        if (stop != buf + len || !isfinite(v)) {
            return -1;
        }
    }
    else {
        /* At most 15 digits: exact as a double; "-0" is the integer 0 (+0.0), as JSON
         * decoding it to an int and then to a float gives. */
        long long n = 0;
        const char *q = buf[0] == '-' ? buf + 1 : buf;
        for (; *q; q++) {
            n = n * 10 + (*q - '0');
        }
        v = (double)(buf[0] == '-' ? -n : n);
    }
    *out = v;
    *pp = p;
    return 0;
}

/* `[ROWS]` at *pp into a new bytearray of float64 pairs; NULL with no error set when
 * the text is not that, NULL with an error on a real failure. */
static PyObject *
depth_side(const char **pp, const char *end)
{
    const char *p = *pp;
    if (!(p < end && *p == '[')) {
        return NULL;
    }
    p++;
    /* Rows are at least 5 bytes ("[0,0]"): bounds the room needed. */
    Py_ssize_t cap = ((end - p) / 5 + 1) * 2;
    double *vals = PyMem_Malloc((size_t)cap * sizeof(double));
    if (vals == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t n = 0;
    PyObject *out = NULL;
    if (p < end && *p == ']') {
        p++;
        goto ok;
    }
    for (;;) {
        if (!(p < end && *p == '[')) {
            goto fail;
        }
        p++;
        if (n + 2 > cap || depth_number(&p, end, &vals[n]) < 0) {
            goto fail;
        }
        if (!(p < end && *p == ',')) {
            goto fail;
        }
        p++;
        if (depth_number(&p, end, &vals[n + 1]) < 0) {
            goto fail;
        }
        if (!(p < end && *p == ']')) {
            goto fail;
        }
        p++;
        n += 2;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == ']') {
            p++;
            break;
        }
        goto fail;
    }
ok:
    out = PyByteArray_FromStringAndSize((const char *)vals, (Py_ssize_t)(n * sizeof(double)));
    if (out != NULL) {
        *pp = p;
    }
fail:
    PyMem_Free(vals);
    return out;
}

PyDoc_STRVAR(depth_rows_doc,
             "depth_rows(text, start, stop) -> (bids, asks) | None\n\n"
             "text[start:stop] must be exactly '\"b\":[ROWS],\"a\":[ROWS]' (rows of two JSON\n"
             "numbers, quoted or not, no whitespace); the rows as bytearrays of native float64\n"
             "[price, size] pairs, or None when the text is anything else.");

static PyObject *
depth_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "depth_rows(text: bytes, start, stop)");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || stop > size || start > stop) {
        Py_RETURN_NONE;
    }
    const char *base = PyBytes_AS_STRING(args[0]);
    const char *p = base + start, *end = base + stop;
    if (end - p < 4 || memcmp(p, "\"b\":", 4) != 0) {
        Py_RETURN_NONE;
    }
    p += 4;
    PyObject *bids = depth_side(&p, end);
    if (bids == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (end - p < 5 || memcmp(p, ",\"a\":", 5) != 0) {
        Py_DECREF(bids);
        Py_RETURN_NONE;
    }
    p += 5;
    PyObject *asks = depth_side(&p, end);
    if (asks == NULL) {
        Py_DECREF(bids);
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (p != end) {
        Py_DECREF(bids);
        Py_DECREF(asks);
        Py_RETURN_NONE;
    }
    PyObject *ret = PyTuple_Pack(2, bids, asks);
    Py_DECREF(bids);
    Py_DECREF(asks);
    return ret;
}

/* ------------------------------------------------------------------ ccxt book sides */

/* A number as numpy's float64 conversion takes it: a float as is, an int correctly
 * rounded. Anything else (strings, bools, None, other types) answers -1 without an
 * error set, and the caller takes its general path. */
static inline int
pair_number(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    if (PyLong_CheckExact(o)) {
        double v = PyLong_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        *out = v;
        return 0;
    }
    return -1;
}

PyDoc_STRVAR(pair_rows_doc,
             "pair_rows(side, limit) -> bytearray | None\n\n"
             "The first `limit` rows of a ccxt order book side (a list of [price, amount, ...]\n"
             "lists) as native float64 [price, amount] pairs: the first two items of each row,\n"
             "exactly as numpy.asarray(rows, float64)[:, :2] gives them. None when a row is not\n"
             "a list or tuple of at least two floats or ints, or rows differ in width.");

static PyObject *
pair_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        if (nargs == 2) {
            Py_RETURN_NONE;
        }
        PyErr_SetString(PyExc_TypeError, "pair_rows(side: list, limit: int)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *side = args[0];
    Py_ssize_t n = PyList_GET_SIZE(side);
    if (limit >= 0 && limit < n) {
        n = limit;
    }
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(n * 2 * sizeof(double)));
    if (out == NULL) {
        return NULL;
    }
    double *vals = (double *)PyByteArray_AS_STRING(out);
    /* numpy refuses ragged rows: so does this, by asking every row for the first's width. */
    Py_ssize_t width = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(side, i);
        PyObject *price, *amount;
        Py_ssize_t w;
        if (PyList_Check(row) && (w = PyList_GET_SIZE(row)) >= 2) {
            price = PyList_GET_ITEM(row, 0);
            amount = PyList_GET_ITEM(row, 1);
        }
        else if (PyTuple_Check(row) && (w = PyTuple_GET_SIZE(row)) >= 2) {
            price = PyTuple_GET_ITEM(row, 0);
            amount = PyTuple_GET_ITEM(row, 1);
        }
        else {
            goto general;
        }
        if (width < 0) {
            width = w;
        }
        else if (w != width) {
            goto general;
        }
        if (pair_number(price, &vals[2 * i]) < 0 || pair_number(amount, &vals[2 * i + 1]) < 0) {
            goto general;
        }
    }
    return out;
general:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"top_flow", (PyCFunction)(void (*)(void))top_flow, METH_FASTCALL, top_flow_doc},
    {"depth_rows", (PyCFunction)(void (*)(void))depth_rows, METH_FASTCALL, depth_rows_doc},
    {"pair_rows", (PyCFunction)(void (*)(void))pair_rows, METH_FASTCALL, pair_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bookc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bot._bookc",
    .m_doc = "Compiled level store for bot.book.OrderBook.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__bookc(void)
{
    if (PyType_Ready(&BookType) < 0 || PyType_Ready(&FeaturesType) < 0) {
        return NULL;
    }
    if ((str_price = PyUnicode_InternFromString("price")) == NULL ||
        (str_amount = PyUnicode_InternFromString("amount")) == NULL ||
        (str_side = PyUnicode_InternFromString("side")) == NULL ||
        (str_buy = PyUnicode_InternFromString("buy")) == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&bookc_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&BookType);
    if (PyModule_AddObject(m, "Levels", (PyObject *)&BookType) < 0) {
        Py_DECREF(&BookType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FeaturesType);
    if (PyModule_AddObject(m, "Features", (PyObject *)&FeaturesType) < 0) {
        Py_DECREF(&FeaturesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
