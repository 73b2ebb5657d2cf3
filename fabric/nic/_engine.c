/* The emulated RDMA NIC's compiled datapath: fabric.nic._engine.Engine.
 *
 * Per-packet work of one agent's NICs, in C: line-rate and per-QP token
 * buckets, round-robin QP service, data framing, the go-back-N sender and
 * receiver, ACK/NAK generation and parsing, retransmission timeouts,
 * delivery accounting and delay samples. The Python control plane
 * (fabric/nic/compiled.py) keeps the per-event decisions: messages and their
 * release, rates (grants, CNP cuts and recovery), announce mode, records.
 *
 * It is a transcription of the Python reference (fabric/nic/port.py, qp.py,
 * gbn.py, pacing.py and the receive half of core.py): the same operations in
 * the same order on the same doubles, so that fed the same calls it sends the
 * same bytes (tests/unit/fabric/test_datapath_diff.py checks it). Where the
 * reference reads the clock, this code uses the `now` / `wall` of the call.
 *
 * Packets go either to a Python callable (sender(nic_ip, src_port, dst_ip,
 * payload) -> bool, the reference's Transport.send; tests) or straight to
 * UDP sockets (sendto on the descriptor fd_for(nic_ip, src_port) returns,
 * cached), received in batches with recvmmsg.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* ---- wire (fabric/nic/wire.py) ------------------------------------------ */
#define ROCE_PORT 4791
#define BTH_LEN 12
#define DATA_HEADER_LEN 24
#define DATA_HEAD_LEN (BTH_LEN + DATA_HEADER_LEN)
#define ICRC_LEN 4
#define DATA_MIN (DATA_HEAD_LEN + ICRC_LEN)
#define ACK_LEN (BTH_LEN + 4 + ICRC_LEN)
#define DATA_OVERHEAD (20 + 8 + BTH_LEN + DATA_HEADER_LEN + ICRC_LEN)
#define ETH_HEADER_LEN 14
#define ACK_WIRE_BYTES (20 + 8 + BTH_LEN + 4 + ICRC_LEN + ETH_HEADER_LEN)
#define OP_FIRST 0x00
#define OP_MIDDLE 0x01
#define OP_LAST 0x02
#define OP_ONLY 0x04
#define OP_ACK 0x11
#define OP_CNP 0x81
#define BECN 0x40000000u
#define CNP_LEN (BTH_LEN + 16 + ICRC_LEN)
#define PKEY 0xFFFF
#define U24 0xFFFFFFu
#define ACKREQ 0x80000000u
#define SYNDROME_ACK 0x1F
#define SYNDROME_NAK_PSN 0x60
#define PSN_MOD (1 << 24)
#define PSN_HALF (1 << 23)
#define RETRY_NS 200000
#define MAX_CTRL 128
#define RECV_BATCH 64
#define RECV_BUF 65536
#define MAX_RECEIVERS 64

/* Counters the datapath keeps (the rest of COUNTER_NAMES stay in Python). */
enum { C_DATA_SENT, C_WIRE_BYTES_SENT, C_LATE_BYTES, C_ACKS_SENT, C_CONTROL_SENT,
       C_DATA_RECEIVED, C_ACKS_RECEIVED, C_SENDS_REFUSED, C_CNPS_SENT, C_COUNT };
static const char *COUNTER_NAMES[C_COUNT] = {
    "data_sent", "wire_bytes_sent", "late_bytes", "acks_sent", "control_sent",
    "data_received", "acks_received", "sends_refused", "cnps_sent"};

/* Events for the control plane: (kind, value, mono_ns, wall_ns). */
enum { EV_SHARE_DONE = 1, EV_DELIVERED = 2, EV_IDLE = 3, EV_DRAINED = 4, EV_ECHO = 5 };

static inline void put16(uint8_t *p, uint32_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }
static inline uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }

static int64_t psn_diff(int64_t a, int64_t b) {
    int64_t d = (a - b + PSN_HALF) % PSN_MOD;
    if (d < 0) d += PSN_MOD;
    return d - PSN_HALF;
}

/* ---- u64 -> int map (open addressing) ------------------------------------ */
typedef struct { uint64_t *keys; int32_t *vals; size_t cap, used; } Map;

static size_t map_slot(const Map *m, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 17) & (m->cap - 1);
    while (m->vals[i] >= 0 && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    return i;
}
static int32_t map_get(const Map *m, uint64_t key) {
    return m->cap ? m->vals[map_slot(m, key)] : -1;
}
static int map_put(Map *m, uint64_t key, int32_t val) {
    if (2 * (m->used + 1) > m->cap) {
        Map bigger = {0};
        bigger.cap = m->cap ? 2 * m->cap : 64;
        bigger.keys = PyMem_Calloc(bigger.cap, sizeof(uint64_t));
        bigger.vals = PyMem_Malloc(bigger.cap * sizeof(int32_t));
        if (!bigger.keys || !bigger.vals) { PyMem_Free(bigger.keys); PyMem_Free(bigger.vals); PyErr_NoMemory(); return -1; }
        for (size_t i = 0; i < bigger.cap; i++) bigger.vals[i] = -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->vals[i] >= 0) { size_t j = map_slot(&bigger, m->keys[i]); bigger.keys[j] = m->keys[i]; bigger.vals[j] = m->vals[i]; }
        bigger.used = m->used;
        PyMem_Free(m->keys); PyMem_Free(m->vals);
        *m = bigger;
    }
    size_t i = map_slot(m, key);
    if (m->vals[i] < 0) m->used++;
    m->keys[i] = key; m->vals[i] = val;
    return 0;
}
static void map_free(Map *m) { PyMem_Free(m->keys); PyMem_Free(m->vals); memset(m, 0, sizeof *m); }

/* Grow a PyMem array to hold at least `need` items. */
static int grow(void **items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 8;
    while (n < need) n *= 2;
    void *p = PyMem_Realloc(*items, n * size);
    if (!p) { PyErr_NoMemory(); return -1; }
    *items = p; *cap = n;
    return 0;
}

/* ---- pacing (fabric/nic/pacing.py) ---------------------------------------- */
typedef struct { double rate, burst, tokens; int64_t last; } Bucket;

static void bucket_init(Bucket *b, double mbps, double burst, int64_t now) {
    b->rate = mbps / 8000.0; b->burst = burst; b->tokens = burst; b->last = now;
}
static double bucket_refill(Bucket *b, int64_t now) {
    double overflow = 0.0;
    if (now > b->last) {
        double earned = b->tokens + (double)(now - b->last) * b->rate;
        overflow = earned - b->burst;
        if (!(overflow > 0.0)) overflow = 0.0;
        b->tokens = b->burst <= earned ? b->burst : earned;
        b->last = now;
    }
    return overflow;
}
static int64_t bucket_ready_at(Bucket *b, int64_t size, int64_t now) {
    bucket_refill(b, now);
    if (b->tokens >= (double)size - 1e-6) return now;
    return now + (int64_t)(((double)size - b->tokens) / b->rate) + 1;
}

/* ---- send QPs (fabric/nic/qp.py, gbn.py GbnSender) -------------------------- */
typedef struct { int64_t start, end, length, base_offset; uint64_t message_id, message_size; int32_t slot; } Share;

typedef struct {
    uint32_t qp, remote_ip;
    int src_port, fd, held, has_gbn;
    int64_t chunk, window, ack_every;
    double timeout_s;
    Bucket bucket;
    /* go-back-N sender */
    int64_t total, base, next_index, gbn_high;
    int timer_on;
    double timer_start;
    int64_t high;  /* SendQP.high: one past the highest index handed to the kernel */
    int64_t fence; /* PLB: no index at or past it is sent (-1: none); EV_DRAINED once base reaches it */
    int fence_told;
    Share *shares; size_t nshares, cap_shares, done_shares;
    PyObject *remote_str;
} Qp;

/* ---- receive side (GbnReceiver, Delivery) -------------------------------- */
typedef struct {
    int64_t expected, unacked; int nak_pending; int ack_port;
    int64_t base_delay, last_cnp; uint64_t draws; int cnp_sent;  /* DCQCN marking */
    int nic; int64_t last_rx;  /* which NIC it reaches, its last frame (last-hop hint) */
} Receiver;
typedef struct { uint64_t id, size, bytes; int64_t first_ns, last_ns; int rail, complete; } Delivery;
typedef struct { int64_t packets, retransmits, timeouts, naks, start_ns; } MsgStats;
typedef struct { int64_t wall; uint32_t src_ip; int nic; int64_t delay; } Delay;

typedef struct { int src_port; uint32_t dst_ip; PyObject *dst_str; int len; int counter; uint8_t data[MAX_CTRL]; } Ctrl;

typedef struct {
    uint32_t ip;
    int rail;
    PyObject *ip_str;
    Bucket bucket;
    int waiting_on_line;
    int waiting_qp;          /* -1: none */
    int idle;                /* the last pump found no QP with work (a new NIC is idle) */
    int *qps; size_t nqps, cap_qps;
    size_t rr;
    Ctrl *ctrl; size_t ctrl_head, ctrl_len, ctrl_cap;  /* ring of queued ACKs / control */
    int64_t blocked_until;
    int32_t *fds;            /* by source port, -1 unknown (fd mode) */
} Nic;

typedef struct {
    PyObject_HEAD
    double line_mbps, nic_burst, idle_credit;
    int64_t mtu, ack_every, delay_every;
    int announce;
    uint64_t salt;
    int dcqcn;               /* receivers mark by queueing delay and send CNPs */
    int echo_events;         /* Swift: report the delay each ACK echoes (EV_ECHO: qp << 24 | us) */
    double kmin, kmax, pmax; int64_t cnp_interval;
    PyObject *sender;        /* callable or NULL */
    PyObject *fd_for;        /* callable or NULL */
    Nic *nics; size_t nnics, cap_nics;
    Qp *qps; size_t nqps, cap_qps;
    Map qp_by_number, rx_by_key, delivery_by_id;
    Receiver *rx; size_t nrx, cap_rx;
    Delivery *deliveries; size_t ndel, cap_del;
    MsgStats *msgs; size_t cap_msgs;
    Delay *delays; size_t ndelays, cap_delays;
    int64_t count[C_COUNT];
    PyObject *events;        /* list of (kind, value, mono_ns, wall_ns) */
    uint8_t *buf;            /* one frame */
    struct mmsghdr *mmsg; struct iovec *iov; struct sockaddr_in *addrs; uint8_t *rbufs;
    struct pollfd receivers[MAX_RECEIVERS]; int receiver_nic[MAX_RECEIVERS]; size_t nreceivers;
} Engine;


/* ---- helpers ------------------------------------------------------------- */
static int crc_ready;
static uint32_t crc_table[256];
static uint32_t crc32(const uint8_t *p, size_t n) {
    if (!crc_ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
        crc_ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}
/* wire.udp_source_port */
static int udp_source_port(uint32_t qp, uint64_t salt) {
    uint8_t b[16];
    put64(b, qp); put64(b + 8, salt);
    return 49152 + (int)(crc32(b, 16) % (65536 - 49152));
}

static PyObject *ip_text(uint32_t ip) {
    struct in_addr a = {htonl(ip)};
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, text, sizeof text);
    return PyUnicode_FromString(text);
}
static int ip_parse(PyObject *str, uint32_t *out) {
    const char *text = PyUnicode_AsUTF8(str);
    struct in_addr a;
    if (!text) return -1;
    if (inet_pton(AF_INET, text, &a) != 1) { PyErr_Format(PyExc_ValueError, "not an IPv4 address: %R", str); return -1; }
    *out = ntohl(a.s_addr);
    return 0;
}
static int64_t clock_ns(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int event(Engine *e, int kind, long long value, int64_t now, int64_t wall) {
    PyObject *t = Py_BuildValue("(iLLL)", kind, value, (long long)now, (long long)wall);
    if (!t) return -1;
    int r = PyList_Append(e->events, t);
    Py_DECREF(t);
    return r;
}

/* Send one UDP payload from (nic, src_port) to (dst, 4791): 1 sent, 0 retry later, -1 error. */
static int transmit(Engine *e, int nic_index, int src_port, uint32_t dst, PyObject *dst_str,
                    const uint8_t *data, size_t len, int *fd_cache) {
    Nic *nic = &e->nics[nic_index];
    if (e->sender) {
        PyObject *payload = PyBytes_FromStringAndSize((const char *)data, len);
        if (!payload) return -1;
        PyObject *dst_obj = dst_str;
        if (!dst_obj) { dst_obj = ip_text(dst); if (!dst_obj) { Py_DECREF(payload); return -1; } }
        else Py_INCREF(dst_obj);
        PyObject *r = PyObject_CallFunction(e->sender, "OiOO", nic->ip_str, src_port, dst_obj, payload);
        Py_DECREF(payload); Py_DECREF(dst_obj);
        if (!r) return -1;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        return ok;
    }
    int fd = fd_cache ? *fd_cache : -1;
    if (fd < 0) {
        if (!nic->fds) {
            nic->fds = PyMem_Malloc(65536 * sizeof(int32_t));
            if (!nic->fds) { PyErr_NoMemory(); return -1; }
            for (int i = 0; i < 65536; i++) nic->fds[i] = -1;
        }
        fd = nic->fds[src_port];
        if (fd < 0) {
            PyObject *r = PyObject_CallFunction(e->fd_for, "Oi", nic->ip_str, src_port);
            if (!r) return -1;
            fd = (int)PyLong_AsLong(r);
            Py_DECREF(r);
            if (fd < 0) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "fd_for: bad descriptor"); return -1; }
            nic->fds[src_port] = fd;
        }
        if (fd_cache) *fd_cache = fd;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(ROCE_PORT), .sin_addr = {htonl(dst)}};
    if (sendto(fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to) >= 0) return 1;
    if (errno == ENOBUFS) e->count[C_SENDS_REFUSED]++;  /* the NIC's qdisc dropped it (IP_RECVERR) */
    switch (errno) {
    case EAGAIN: case ENOBUFS: case ECONNREFUSED: case EHOSTUNREACH: case ENETUNREACH:
    case EHOSTDOWN: case EINTR:
        return 0;
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* ---- QP operations -------------------------------------------------------- */
static size_t share_of(const Qp *q, int64_t index) {  /* bisect_right(starts, index) - 1 */
    size_t lo = 0, hi = q->nshares;
    while (lo < hi) { size_t mid = (lo + hi) / 2; if (q->shares[mid].start <= index) lo = mid + 1; else hi = mid; }
    return lo - 1;
}
static int qp_has_work(const Qp *q) {
    return !q->held && q->has_gbn && q->next_index < q->total && q->next_index < q->base + q->window
        && (q->fence < 0 || q->next_index < q->fence);
}
static int64_t qp_next_wire_size(const Qp *q) {
    const Share *s = &q->shares[share_of(q, q->next_index)];
    int64_t offset = (q->next_index - s->start) * q->chunk;
    int64_t left = s->length - offset;
    return DATA_OVERHEAD + (q->chunk < left ? q->chunk : left) + ETH_HEADER_LEN;
}
static int64_t qp_deadline_ns(const Qp *q) {  /* -1: none */
    if (!q->has_gbn || !q->timer_on) return -1;
    return (int64_t)((q->timer_start + q->timeout_s) * 1e9) + 1000;
}
static int qp_done(const Qp *q) { return q->base >= q->total; }
static int32_t qp_oldest_slot(const Qp *q) {  /* -1: none */
    if (!q->has_gbn || qp_done(q)) return -1;
    return q->shares[share_of(q, q->base)].slot;
}
static void gbn_advance(Qp *q, int64_t new_base, double now) {
    q->base = new_base;
    if (q->next_index < new_base) q->next_index = new_base;
    if (q->base >= q->gbn_high) q->timer_on = 0; else { q->timer_on = 1; q->timer_start = now; }
}

static MsgStats *stats(Engine *e, int32_t slot) { return slot >= 0 && (size_t)slot < e->cap_msgs ? &e->msgs[slot] : NULL; }

/* Build the next packet of q in e->buf; its length, index, share and whether it is a resend. */
static size_t qp_take(Engine *e, Qp *q, double now_s, int64_t wall, int64_t *index_out, size_t *share_out, int *again) {
    int64_t index = q->next_index;
    /* gbn.next_to_send(now_s, limit=1): the caller checked has_work */
    int64_t stop = q->base + q->window < q->total ? q->base + q->window : q->total;
    if (q->next_index + 1 < stop) stop = q->next_index + 1;
    if (stop > q->next_index) {
        q->next_index = stop;
        if (stop > q->gbn_high) q->gbn_high = stop;
        if (!q->timer_on) { q->timer_on = 1; q->timer_start = now_s; }
    }
    size_t si = share_of(q, index);
    const Share *s = &q->shares[si];
    int64_t local = index - s->start;
    int64_t count = (s->length + q->chunk - 1) / q->chunk;
    int64_t offset = local * q->chunk;
    int64_t length = s->length - offset < q->chunk ? s->length - offset : q->chunk;
    int opcode = count == 1 ? OP_ONLY : local == 0 ? OP_FIRST : local == count - 1 ? OP_LAST : OP_MIDDLE;
    int ack_req = local == count - 1 || (index + 1) % q->ack_every == 0 || index + 1 == q->fence;
    uint8_t *p = e->buf;
    p[0] = opcode; p[1] = 0; put16(p + 2, PKEY); put32(p + 4, q->qp);
    put32(p + 8, (ack_req ? ACKREQ : 0) | (uint32_t)(index % PSN_MOD));
    put64(p + 12, (uint64_t)wall); put64(p + 20, s->message_id);
    put32(p + 28, (uint32_t)s->message_size); put32(p + 32, (uint32_t)(s->base_offset + offset));
    *index_out = index; *share_out = si; *again = index < q->high;
    return DATA_HEAD_LEN + length + ICRC_LEN;
}

/* ---- the NIC's transmit side (fabric/nic/port.py NicPort) --------------------- */
static int queue_ctrl(Nic *nic, int src_port, uint32_t dst, PyObject *dst_str, const uint8_t *data, size_t len, int counter) {
    if (len > MAX_CTRL) { PyErr_SetString(PyExc_ValueError, "control payload too long"); return -1; }
    if (nic->ctrl_len == nic->ctrl_cap) {
        size_t cap = nic->ctrl_cap ? 2 * nic->ctrl_cap : 16;
        Ctrl *ring = PyMem_Malloc(cap * sizeof(Ctrl));
        if (!ring) { PyErr_NoMemory(); return -1; }
        for (size_t i = 0; i < nic->ctrl_len; i++) ring[i] = nic->ctrl[(nic->ctrl_head + i) % nic->ctrl_cap];
        PyMem_Free(nic->ctrl);
        nic->ctrl = ring; nic->ctrl_cap = cap; nic->ctrl_head = 0;
    }
    Ctrl *c = &nic->ctrl[(nic->ctrl_head + nic->ctrl_len) % nic->ctrl_cap];
    c->src_port = src_port; c->dst_ip = dst; c->dst_str = dst_str; Py_XINCREF(dst_str);
    c->len = (int)len; c->counter = counter; memcpy(c->data, data, len);
    nic->ctrl_len++;
    return 0;
}

/* NicPort.send_ack: send now, or queue behind earlier ones if the kernel refuses. */
static int send_ack(Engine *e, int ni, int src_port, uint32_t dst, PyObject *dst_str, const uint8_t *data, size_t len, int counter) {
    Nic *nic = &e->nics[ni];
    if (!nic->ctrl_len) {
        int r = transmit(e, ni, src_port, dst, dst_str, data, len, NULL);
        if (r < 0) return -1;
        if (r) { nic->bucket.tokens -= ACK_WIRE_BYTES; e->count[counter]++; return 0; }
    }
    return queue_ctrl(nic, src_port, dst, dst_str, data, len, counter);
}

/* NicPort.pump: send what pacing allows at now; *next = when to try again (-1 idle). */
static int nic_pump(Engine *e, int ni, int64_t now, int64_t wall, int64_t *next) {
    Nic *nic = &e->nics[ni];
    while (nic->ctrl_len) {
        Ctrl *c = &nic->ctrl[nic->ctrl_head];
        int r = transmit(e, ni, c->src_port, c->dst_ip, c->dst_str, c->data, c->len, NULL);
        if (r < 0) return -1;
        if (!r) { *next = now + RETRY_NS; return 0; }
        Py_XDECREF(c->dst_str);
        nic->ctrl_head = (nic->ctrl_head + 1) % nic->ctrl_cap; nic->ctrl_len--;
        nic->bucket.tokens -= ACK_WIRE_BYTES;
        e->count[c->counter]++;
    }
    double overflow = bucket_refill(&nic->bucket, now);
    if (nic->waiting_on_line) e->count[C_LATE_BYTES] += (int64_t)overflow;
    else if (nic->waiting_qp >= 0) e->count[C_LATE_BYTES] += (int64_t)bucket_refill(&e->qps[nic->waiting_qp].bucket, now);
    /* nothing was due while idle: only idle_credit of that credit is kept */
    if (nic->idle && nic->bucket.tokens > e->idle_credit) nic->bucket.tokens = e->idle_credit;
    nic->waiting_on_line = 0; nic->waiting_qp = -1; nic->idle = 0;
    if (nic->blocked_until > now) { *next = nic->blocked_until; return 0; }
    size_t count = nic->nqps;
    for (;;) {
        int chosen = -1, waiting = -1;
        int64_t size = 0, wait = -1;
        size_t slot = 0;
        for (size_t step = 0; step < count; step++) {
            slot = (nic->rr + step) % count;
            Qp *q = &e->qps[nic->qps[slot]];
            if (!qp_has_work(q)) continue;
            size = qp_next_wire_size(q);
            int64_t ready = bucket_ready_at(&q->bucket, size, now);
            if (ready <= now) { chosen = nic->qps[slot]; break; }
            if (wait < 0 || ready < wait) { wait = ready; waiting = nic->qps[slot]; }
        }
        if (chosen < 0) {
            nic->waiting_qp = wait >= 0 ? waiting : -1;
            nic->idle = wait < 0;
            *next = wait;
            return 0;
        }
        int64_t ready = bucket_ready_at(&nic->bucket, size, now);
        if (ready > now) { nic->waiting_on_line = 1; *next = ready; return 0; }
        Qp *q = &e->qps[chosen];
        int64_t index; size_t si; int again;
        double now_s = (double)now / 1e9;
        size_t len = qp_take(e, q, now_s, wall, &index, &si, &again);
        int r = transmit(e, ni, q->src_port, q->remote_ip, q->remote_str, e->buf, len, &q->fd);
        if (r < 0) return -1;
        if (!r) {
            q->next_index = index;  /* unsend */
            nic->blocked_until = now + RETRY_NS;
            *next = nic->blocked_until;
            return 0;
        }
        nic->rr = (slot + 1) % count;
        if (index >= q->high) q->high = index + 1;
        nic->bucket.tokens -= (double)size;
        q->bucket.tokens -= (double)size;
        e->count[C_DATA_SENT]++;
        e->count[C_WIRE_BYTES_SENT] += size;
        MsgStats *m = stats(e, q->shares[si].slot);
        if (m) {
            m->packets++;
            if (again) m->retransmits++;
            if (m->start_ns < 0) m->start_ns = wall - (int64_t)((double)size / nic->bucket.rate);  /* its first bit */
        }
    }
}

/* ---- receive side (AgentCore._on_data, _on_ack) ------------------------------- */
static int on_ack(Engine *e, uint32_t qpn, uint32_t psn, int is_nak, uint32_t echo, int64_t now, int64_t wall) {
    int32_t h = map_get(&e->qp_by_number, qpn);
    if (h < 0) return 0;
    Qp *q = &e->qps[h];
    double now_s = (double)now / 1e9;
    if (q->has_gbn) {
        int64_t index = q->base + psn_diff(psn, q->base % PSN_MOD);
        if (is_nak) {
            if (q->base <= index && index <= q->gbn_high) {
                gbn_advance(q, index, now_s);
                if (index < q->gbn_high) { q->next_index = index; q->timer_on = 1; q->timer_start = now_s; }
                MsgStats *m = stats(e, qp_oldest_slot(q));
                if (m) m->naks++;
            }
        } else if (q->base <= index && index < q->gbn_high) {
            gbn_advance(q, index + 1, now_s);
        }
        while (q->done_shares < q->nshares && q->shares[q->done_shares].end <= q->base) {
            if (event(e, EV_SHARE_DONE, q->shares[q->done_shares].slot, now, wall) < 0) return -1;
            q->done_shares++;
        }
    }
    if (q->fence >= 0 && !q->fence_told && q->base >= q->fence) {  /* Python re-paths, lifts it */
        q->fence_told = 1;
        if (event(e, EV_DRAINED, h, now, wall) < 0) return -1;
    }
    if (e->announce && (!q->has_gbn || qp_done(q)))
        if (event(e, EV_IDLE, h, now, wall) < 0) return -1;
    if (e->echo_events && echo && !is_nak)
        if (event(e, EV_ECHO, ((long long)h << 24) | echo, now, wall) < 0) return -1;
    return 0;
}

/* DCQCN marking (fabric/nic/dcqcn.py): 1 when this full frame asks for a CNP now. */
static uint64_t splitmix(uint64_t salt, uint32_t src_ip, uint32_t qpn, uint64_t count) {
    uint64_t z = salt * 0x9E3779B97F4A7C15ULL + (((uint64_t)src_ip << 24) | qpn) * 0xBF58476D1CE4E5B9ULL + count;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static int mark(Engine *e, Receiver *r, uint32_t src_ip, uint32_t qpn, int64_t delay, int64_t now) {
    if (delay < r->base_delay) r->base_delay = delay;
    double queue = (double)(delay - r->base_delay) * (e->line_mbps / 8000.0);
    double p;
    if (queue < e->kmin) return 0;
    p = queue >= e->kmax ? 1.0 : e->pmax * (queue - e->kmin) / (e->kmax - e->kmin);
    double u = (double)(splitmix(e->salt, src_ip, qpn, r->draws++) >> 11) / 9007199254740992.0;
    if (!(u < p)) return 0;
    if (r->cnp_sent && now - r->last_cnp < e->cnp_interval) return 0;
    r->cnp_sent = 1; r->last_cnp = now;
    return 1;
}

static int on_data(Engine *e, int ni, uint32_t src_ip, PyObject *src_str, const uint8_t *d, size_t size, int64_t now, int64_t wall) {
    Nic *nic = &e->nics[ni];
    uint32_t qpn = get32(d + 4) & U24, psn_word = get32(d + 8);
    uint32_t psn = psn_word & U24;
    int ack_req = (psn_word & ACKREQ) != 0;
    int64_t ts = (int64_t)get64(d + 12);
    uint64_t mid = get64(d + 20);
    uint32_t mlen = get32(d + 28);
    int64_t padding = (int64_t)size - DATA_MIN;
    e->count[C_DATA_RECEIVED]++;
    if (e->delay_every && e->count[C_DATA_RECEIVED] % e->delay_every == 0) {
        if (grow((void **)&e->delays, &e->cap_delays, e->ndelays + 1, sizeof(Delay)) < 0) return -1;
        e->delays[e->ndelays++] = (Delay){wall, src_ip, ni, wall - ts};
    }
    uint64_t key = ((uint64_t)src_ip << 24) | qpn;
    int32_t ri = map_get(&e->rx_by_key, key);
    if (ri < 0) {
        if (grow((void **)&e->rx, &e->cap_rx, e->nrx + 1, sizeof(Receiver)) < 0) return -1;
        ri = (int32_t)e->nrx++;
        e->rx[ri] = (Receiver){0};
        e->rx[ri].ack_port = udp_source_port(qpn, e->salt);
        e->rx[ri].base_delay = INT64_MAX;
        if (map_put(&e->rx_by_key, key, ri) < 0) return -1;
    }
    Receiver *r = &e->rx[ri];
    if (e->dcqcn) { r->nic = ni; r->last_rx = now; }
    if (e->dcqcn && padding == e->mtu - DATA_OVERHEAD && mark(e, r, src_ip, qpn, wall - ts, now)) {
        uint8_t c[CNP_LEN] = {0};
        c[0] = OP_CNP; put16(c + 2, PKEY); put32(c + 4, BECN | qpn);
        for (size_t i = 0; i < e->nrx; i++)  /* another QP into this NIC lately: incast */
            if ((int32_t)i != ri && e->rx[i].nic == ni && e->rx[i].last_rx > 0
                && now - e->rx[i].last_rx <= 2 * e->cnp_interval) { c[BTH_LEN] = 1; break; }
        if (send_ack(e, ni, r->ack_port, src_ip, src_str, c, CNP_LEN, C_CNPS_SENT) < 0) return -1;
    }
    int deliver = 0, send = 0;
    uint32_t ack_psn = 0; int syndrome = SYNDROME_ACK;
    int64_t distance = psn_diff(psn, r->expected);
    if (distance == 0) {
        r->expected = (r->expected + 1) % PSN_MOD;
        r->unacked++; r->nak_pending = 0;
        deliver = 1;
        if (ack_req || r->unacked >= e->ack_every) {
            r->unacked = 0; send = 1; ack_psn = (uint32_t)((r->expected + PSN_MOD - 1) % PSN_MOD);
        }
    } else {
        if (distance > 0) {
            if (!r->nak_pending) {
                r->nak_pending = 1; r->unacked = 0;
                send = 1; ack_psn = (uint32_t)r->expected; syndrome = SYNDROME_NAK_PSN;
            }
        } else {
            r->unacked = 0; send = 1; ack_psn = (uint32_t)((r->expected + PSN_MOD - 1) % PSN_MOD);
        }
    }
    if (deliver) {
        int32_t di = map_get(&e->delivery_by_id, mid);
        if (di < 0) {
            if (grow((void **)&e->deliveries, &e->cap_del, e->ndel + 1, sizeof(Delivery)) < 0) return -1;
            di = (int32_t)e->ndel++;
            e->deliveries[di] = (Delivery){mid, mlen, 0, -1, -1, nic->rail, 0};
            if (map_put(&e->delivery_by_id, mid, di) < 0) return -1;
        }
        Delivery *dv = &e->deliveries[di];
        if (dv->first_ns < 0) dv->first_ns = wall;
        dv->bytes += padding;
        dv->last_ns = wall;
        if (dv->bytes >= dv->size && !dv->complete) {
            dv->complete = 1;
            if (event(e, EV_DELIVERED, (long long)mid, now, wall) < 0) return -1;
        }
    }
    if (send) {
        uint8_t a[ACK_LEN];
        /* An ACK echoes the one-way delay of the full frame that asked for it, in us (MSN). */
        int64_t echo = 0;
        if (syndrome == SYNDROME_ACK && padding == e->mtu - DATA_OVERHEAD) {
            echo = (wall - ts) / 1000;
            echo = echo < 1 ? 1 : echo > (int64_t)U24 ? (int64_t)U24 : echo;
        }
        a[0] = OP_ACK; a[1] = 0; put16(a + 2, PKEY); put32(a + 4, qpn); put32(a + 8, ack_psn);
        a[12] = syndrome; a[13] = (uint8_t)(echo >> 16); a[14] = (uint8_t)(echo >> 8); a[15] = (uint8_t)echo;
        put32(a + 16, 0);
        if (send_ack(e, ni, r->ack_port, src_ip, src_str, a, ACK_LEN, C_ACKS_SENT) < 0) return -1;
    }
    return 0;
}

static int is_data_op(uint8_t op) { return op == OP_FIRST || op == OP_MIDDLE || op == OP_LAST || op == OP_ONLY; }

/* 1 handled, 0 for the control plane, -1 error. */
static int datagram(Engine *e, int ni, uint32_t src_ip, PyObject *src_str, const uint8_t *d, size_t size, int64_t now, int64_t wall) {
    if (size >= DATA_MIN && is_data_op(d[0]))
        return on_data(e, ni, src_ip, src_str, d, size, now, wall) < 0 ? -1 : 1;
    if (size == ACK_LEN && d[0] == OP_ACK) {
        e->count[C_ACKS_RECEIVED]++;
        return on_ack(e, get32(d + 4) & U24, get32(d + 8) & U24, (d[12] >> 5) == 3,
                      ((uint32_t)d[13] << 16) | ((uint32_t)d[14] << 8) | d[15], now, wall) < 0 ? -1 : 1;
    }
    return 0;
}

/* ---- the Python type ------------------------------------------------------------ */
static int check_nic(Engine *e, int ni) {
    if (ni < 0 || (size_t)ni >= e->nnics) { PyErr_Format(PyExc_IndexError, "no NIC %d", ni); return -1; }
    return 0;
}
static int check_qp(Engine *e, int h) {
    if (h < 0 || (size_t)h >= e->nqps) { PyErr_Format(PyExc_IndexError, "no QP handle %d", h); return -1; }
    return 0;
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"line_mbps", "nic_burst", "idle_credit", "mtu", "ack_every", "delay_every",
                            "announce", "salt", "sender", "fd_for", "dcqcn", "echo_events", NULL};
    PyObject *sender = Py_None, *fd_for = Py_None, *dcqcn = Py_None;
    long long mtu, ack_every, delay_every;
    unsigned long long salt;
    int announce;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dddLLLpK|OOOp", names, &e->line_mbps, &e->nic_burst,
                                     &e->idle_credit, &mtu, &ack_every, &delay_every, &announce, &salt,
                                     &sender, &fd_for, &dcqcn, &e->echo_events))
        return -1;
    if (e->idle_credit < 0 || e->idle_credit > e->nic_burst) {
        PyErr_SetString(PyExc_ValueError, "idle_credit must be >= 0 and at most nic_burst");
        return -1;
    }
    if (dcqcn != Py_None) {  /* (kmin_bytes, kmax_bytes, pmax, cnp_interval_ns) */
        long long interval;
        if (!PyArg_ParseTuple(dcqcn, "dddL", &e->kmin, &e->kmax, &e->pmax, &interval)) return -1;
        e->dcqcn = 1; e->cnp_interval = interval;
    }
    if ((sender == Py_None) == (fd_for == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "give exactly one of sender (callable) and fd_for (callable)");
        return -1;
    }
    if (mtu <= DATA_OVERHEAD || mtu > 65000 || ack_every < 1) {
        PyErr_SetString(PyExc_ValueError, "mtu or ack_every out of range");
        return -1;
    }
    e->mtu = mtu; e->ack_every = ack_every; e->delay_every = delay_every; e->announce = announce; e->salt = salt;
    if (sender != Py_None) { Py_INCREF(sender); e->sender = sender; }
    if (fd_for != Py_None) { Py_INCREF(fd_for); e->fd_for = fd_for; }
    e->events = PyList_New(0);
    e->buf = PyMem_Calloc(1, (size_t)mtu);
    e->rbufs = PyMem_Malloc((size_t)RECV_BATCH * RECV_BUF);
    e->mmsg = PyMem_Calloc(RECV_BATCH, sizeof(struct mmsghdr));
    e->iov = PyMem_Calloc(RECV_BATCH, sizeof(struct iovec));
    e->addrs = PyMem_Calloc(RECV_BATCH, sizeof(struct sockaddr_in));
    if (!e->events || !e->buf || !e->rbufs || !e->mmsg || !e->iov || !e->addrs) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void Engine_dealloc(Engine *e) {
    for (size_t i = 0; i < e->nnics; i++) {
        Nic *n = &e->nics[i];
        for (size_t k = 0; k < n->ctrl_len; k++) Py_XDECREF(n->ctrl[(n->ctrl_head + k) % n->ctrl_cap].dst_str);
        PyMem_Free(n->ctrl); PyMem_Free(n->qps); PyMem_Free(n->fds); Py_XDECREF(n->ip_str);
    }
    for (size_t i = 0; i < e->nqps; i++) { PyMem_Free(e->qps[i].shares); Py_XDECREF(e->qps[i].remote_str); }
    PyMem_Free(e->nics); PyMem_Free(e->qps); PyMem_Free(e->rx); PyMem_Free(e->deliveries);
    PyMem_Free(e->msgs); PyMem_Free(e->delays); PyMem_Free(e->buf); PyMem_Free(e->rbufs);
    PyMem_Free(e->mmsg); PyMem_Free(e->iov); PyMem_Free(e->addrs);
    map_free(&e->qp_by_number); map_free(&e->rx_by_key); map_free(&e->delivery_by_id);
    Py_XDECREF(e->sender); Py_XDECREF(e->fd_for); Py_XDECREF(e->events);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_add_nic(Engine *e, PyObject *args) {
    PyObject *ip; int rail; long long now;
    if (!PyArg_ParseTuple(args, "UiL", &ip, &rail, &now)) return NULL;
    uint32_t addr;
    if (ip_parse(ip, &addr) < 0) return NULL;
    if (grow((void **)&e->nics, &e->cap_nics, e->nnics + 1, sizeof(Nic)) < 0) return NULL;
    Nic *n = &e->nics[e->nnics];
    memset(n, 0, sizeof *n);
    n->ip = addr; n->rail = rail; n->ip_str = ip; Py_INCREF(ip); n->waiting_qp = -1; n->idle = 1;
    bucket_init(&n->bucket, e->line_mbps, e->nic_burst, now);
    return PyLong_FromSize_t(e->nnics++);
}

static PyObject *Engine_add_qp(Engine *e, PyObject *args) {
    int ni, src_port; unsigned int qpn; PyObject *remote; long long window; double mbps, burst, timeout_s; long long now;
    if (!PyArg_ParseTuple(args, "iIUiLdddL", &ni, &qpn, &remote, &src_port, &window, &mbps, &burst, &timeout_s, &now))
        return NULL;
    if (check_nic(e, ni) < 0) return NULL;
    if (map_get(&e->qp_by_number, qpn) >= 0) return PyErr_Format(PyExc_ValueError, "QP %u exists", qpn);
    if (window < 1 || window >= PSN_HALF || mbps <= 0 || burst <= 0 || src_port < 0 || src_port > 65535)
        return PyErr_Format(PyExc_ValueError, "add_qp: window, rate, burst or port out of range");
    uint32_t addr;
    if (ip_parse(remote, &addr) < 0) return NULL;
    Nic *n = &e->nics[ni];
    if (grow((void **)&e->qps, &e->cap_qps, e->nqps + 1, sizeof(Qp)) < 0) return NULL;
    if (grow((void **)&n->qps, &n->cap_qps, n->nqps + 1, sizeof(int)) < 0) return NULL;
    int h = (int)e->nqps;
    Qp *q = &e->qps[h];
    memset(q, 0, sizeof *q);
    q->qp = qpn; q->remote_ip = addr; q->src_port = src_port; q->fd = -1; q->fence = -1;
    q->chunk = e->mtu - DATA_OVERHEAD; q->window = window; q->ack_every = e->ack_every;
    q->timeout_s = timeout_s;
    if (e->sender) { q->remote_str = remote; Py_INCREF(remote); }
    bucket_init(&q->bucket, mbps, burst, now);
    if (map_put(&e->qp_by_number, qpn, h) < 0) return NULL;
    e->nqps++;
    n->qps[n->nqps++] = h;
    return PyLong_FromLong(h);
}

static PyObject *Engine_add_share(Engine *e, PyObject *args) {
    int h, slot; unsigned long long mid, msize; long long base_offset, length;
    if (!PyArg_ParseTuple(args, "iiKKLL", &h, &slot, &mid, &msize, &base_offset, &length)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    if (length < 1 || slot < 0) return PyErr_Format(PyExc_ValueError, "add_share: length and slot must be >= 1 / >= 0");
    Qp *q = &e->qps[h];
    if (grow((void **)&q->shares, &q->cap_shares, q->nshares + 1, sizeof(Share)) < 0) return NULL;
    if ((size_t)slot >= e->cap_msgs) return PyErr_Format(PyExc_IndexError, "add_share: no message slot %d", slot);
    int64_t packets = (length + q->chunk - 1) / q->chunk;
    int64_t start = q->has_gbn ? q->total : 0;
    q->shares[q->nshares++] = (Share){start, start + packets, length, base_offset, mid, msize, slot};
    if (!q->has_gbn) {
        q->has_gbn = 1; q->total = packets; q->base = q->next_index = q->gbn_high = 0; q->timer_on = 0;
    } else {
        q->total += packets;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_add_message(Engine *e, PyObject *args) {
    int slot;
    if (!PyArg_ParseTuple(args, "i", &slot)) return NULL;
    if (slot < 0) return PyErr_Format(PyExc_ValueError, "slot must be >= 0");
    size_t old = e->cap_msgs;
    if (grow((void **)&e->msgs, &e->cap_msgs, (size_t)slot + 1, sizeof(MsgStats)) < 0) return NULL;
    for (size_t i = old; i < e->cap_msgs; i++) e->msgs[i] = (MsgStats){0, 0, 0, 0, -1};
    e->msgs[slot] = (MsgStats){0, 0, 0, 0, -1};
    Py_RETURN_NONE;
}

static PyObject *Engine_set_rate(Engine *e, PyObject *args) {
    int h; double mbps, timeout_s; long long now;
    if (!PyArg_ParseTuple(args, "iddL", &h, &mbps, &timeout_s, &now)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    if (mbps <= 0) return PyErr_Format(PyExc_ValueError, "rate: must be > 0 Mb/s, got %S", PyTuple_GET_ITEM(args, 1));
    Qp *q = &e->qps[h];
    bucket_refill(&q->bucket, now);
    q->bucket.rate = mbps / 8000.0;
    q->timeout_s = timeout_s;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_held(Engine *e, PyObject *args) {
    int h, held;
    if (!PyArg_ParseTuple(args, "ip", &h, &held)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    e->qps[h].held = held;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_fence(Engine *e, PyObject *args) {
    int h; long long fence;
    if (!PyArg_ParseTuple(args, "iL", &h, &fence)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    e->qps[h].fence = fence < 0 ? -1 : fence;
    e->qps[h].fence_told = 0;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_credit(Engine *e, PyObject *args) {
    int h; double tokens; long long now;
    if (!PyArg_ParseTuple(args, "idL", &h, &tokens, &now)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    Bucket *b = &e->qps[h].bucket;
    b->tokens = tokens < b->burst ? tokens : b->burst;
    b->last = now;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_src_port(Engine *e, PyObject *args) {
    int h, port;
    if (!PyArg_ParseTuple(args, "ii", &h, &port)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    if (port < 0 || port > 65535) return PyErr_Format(PyExc_ValueError, "set_src_port: bad port %d", port);
    e->qps[h].src_port = port; e->qps[h].fd = -1;  /* the socket of the new port, at the next send */
    Py_RETURN_NONE;
}

static PyObject *Engine_qp_state(Engine *e, PyObject *args) {
    int h;
    if (!PyArg_ParseTuple(args, "i", &h)) return NULL;
    if (check_qp(e, h) < 0) return NULL;
    Qp *q = &e->qps[h];
    int idle = !q->has_gbn || qp_done(q);
    int64_t unacked = q->has_gbn && q->total > q->base ? (q->total - q->base) * q->chunk : 0;
    int64_t deadline = qp_deadline_ns(q);
    return Py_BuildValue("(OLLLLLLd)", idle ? Py_True : Py_False, (long long)unacked, (long long)deadline,
                         (long long)q->base, (long long)q->next_index, (long long)q->total, (long long)q->high,
                         q->bucket.rate * 8000.0);
}

static PyObject *Engine_send_control(Engine *e, PyObject *args) {
    int ni, src_port, control; PyObject *dst; Py_buffer data;
    if (!PyArg_ParseTuple(args, "iiUy*p", &ni, &src_port, &dst, &data, &control)) return NULL;
    uint32_t addr;
    int r = check_nic(e, ni) < 0 || ip_parse(dst, &addr) < 0 ? -1
            : send_ack(e, ni, src_port, addr, e->sender ? dst : NULL, data.buf, data.len, control ? C_CONTROL_SENT : C_ACKS_SENT);
    PyBuffer_Release(&data);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* RTO polls (GbnSender.poll of every expired QP), then every NIC's pump; *deadline = the next
 * one (-1 none). */
static int pump_all(Engine *e, int64_t now, int64_t wall, int64_t *deadline_out) {
    double now_s = (double)now / 1e9;
    for (size_t i = 0; i < e->nqps; i++) {
        Qp *q = &e->qps[i];
        int64_t rto = qp_deadline_ns(q);
        if (rto < 0 || rto > now) continue;
        int32_t victim = qp_oldest_slot(q);
        if (now_s < q->timer_start + q->timeout_s || qp_done(q)) continue;
        q->next_index = q->base;
        q->timer_start = now_s;
        MsgStats *m = stats(e, victim);
        if (m) m->timeouts++;
    }
    int64_t deadline = -1;
    for (size_t i = 0; i < e->nnics; i++) {
        int64_t next = -1;
        if (nic_pump(e, (int)i, now, wall, &next) < 0) return -1;
        if (next >= 0 && (deadline < 0 || next < deadline)) deadline = next;
    }
    for (size_t i = 0; i < e->nqps; i++) {
        int64_t rto = qp_deadline_ns(&e->qps[i]);
        if (rto >= 0 && (deadline < 0 || rto < deadline)) deadline = rto;
    }
    *deadline_out = deadline;
    return 0;
}

static PyObject *Engine_pump(Engine *e, PyObject *args) {
    long long now, wall;
    if (!PyArg_ParseTuple(args, "LL", &now, &wall)) return NULL;
    int64_t deadline;
    if (pump_all(e, now, wall, &deadline) < 0) return NULL;
    if (deadline < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(deadline);
}

/* One datagram from the control plane (tests, or a transport without descriptors): True if handled. */
static PyObject *Engine_on_datagram(Engine *e, PyObject *args) {
    int ni; PyObject *src; Py_buffer data; long long now, wall;
    if (!PyArg_ParseTuple(args, "iUy*LL", &ni, &src, &data, &now, &wall)) return NULL;
    uint32_t addr;
    int r = check_nic(e, ni) < 0 || ip_parse(src, &addr) < 0 ? -1
            : datagram(e, ni, addr, e->sender ? src : NULL, data.buf, data.len, now, wall);
    PyBuffer_Release(&data);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* Drain up to `limit` datagrams of socket fd (NIC ni); the ones for the control plane are
 * appended to *rest as (nic, src_ip, bytes, mono_ns), the list made when first needed. */
static int recv_batch(Engine *e, int fd, int ni, int limit, PyObject **rest) {
    while (limit > 0) {
        int batch = limit < RECV_BATCH ? limit : RECV_BATCH;
        for (int i = 0; i < batch; i++) {
            e->iov[i] = (struct iovec){e->rbufs + (size_t)i * RECV_BUF, RECV_BUF};
            e->mmsg[i].msg_hdr = (struct msghdr){.msg_name = &e->addrs[i], .msg_namelen = sizeof(struct sockaddr_in),
                                                 .msg_iov = &e->iov[i], .msg_iovlen = 1};
        }
        int got = recvmmsg(fd, e->mmsg, batch, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        for (int i = 0; i < got; i++) {
            int64_t now = clock_ns(CLOCK_MONOTONIC), wall = clock_ns(CLOCK_REALTIME);
            uint32_t src = ntohl(e->addrs[i].sin_addr.s_addr);
            const uint8_t *d = e->rbufs + (size_t)i * RECV_BUF;
            size_t size = e->mmsg[i].msg_len;
            int r = datagram(e, ni, src, NULL, d, size, now, wall);
            if (r < 0) return -1;
            if (r == 0) {
                if (!*rest && !(*rest = PyList_New(0))) return -1;
                PyObject *ip = ip_text(src);
                PyObject *t = ip ? Py_BuildValue("(iNy#L)", ni, ip, d, (Py_ssize_t)size, (long long)now) : NULL;
                if (!t || PyList_Append(*rest, t) < 0) { Py_XDECREF(t); return -1; }
                Py_DECREF(t);
            }
        }
        limit -= got;
        if (got < batch) return 0;
    }
    return 0;
}

static PyObject *Engine_add_receiver(Engine *e, PyObject *args) {
    int fd, ni;
    if (!PyArg_ParseTuple(args, "ii", &fd, &ni)) return NULL;
    if (check_nic(e, ni) < 0) return NULL;
    if (e->nreceivers == MAX_RECEIVERS) return PyErr_Format(PyExc_ValueError, "at most %d receive sockets", MAX_RECEIVERS);
    e->receivers[e->nreceivers].fd = fd;
    e->receivers[e->nreceivers].events = POLLIN;
    e->receiver_nic[e->nreceivers++] = ni;
    Py_RETURN_NONE;
}

/* The agent's event loop, in C: pump, wait (ppoll) for the receive sockets, the control
 * descriptors or the next deadline, drain what arrived; return to the control plane when it
 * has something to do: the deadline `python_deadline` (monotonic ns or None) came, an event
 * or a datagram for it is pending, or a control descriptor is readable.
 * -> (control_ready, [(nic, src_ip, payload, mono_ns)] or None) */
static PyObject *Engine_run(Engine *e, PyObject *args) {
    PyObject *control_fds, *deadline_obj;
    if (!PyArg_ParseTuple(args, "OO", &control_fds, &deadline_obj)) return NULL;
    int64_t python_deadline = -1;
    if (deadline_obj != Py_None) {
        python_deadline = PyLong_AsLongLong(deadline_obj);
        if (python_deadline == -1 && PyErr_Occurred()) return NULL;
    }
    PyObject *seq = PySequence_Fast(control_fds, "control_fds: must be a sequence of descriptors");
    if (!seq) return NULL;
    Py_ssize_t ncontrol = PySequence_Fast_GET_SIZE(seq);
    size_t nfds = e->nreceivers + (size_t)ncontrol;
    struct pollfd *fds = PyMem_Malloc((nfds ? nfds : 1) * sizeof(struct pollfd));
    if (!fds) { Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < ncontrol; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fd == -1 && PyErr_Occurred()) { Py_DECREF(seq); PyMem_Free(fds); return NULL; }
        fds[e->nreceivers + i] = (struct pollfd){.fd = (int)fd, .events = POLLIN};
    }
    Py_DECREF(seq);
    PyObject *rest = NULL;
    int control = 0;
    for (;;) {
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        if (python_deadline >= 0 && now >= python_deadline) break;
        int64_t next;
        if (pump_all(e, now, clock_ns(CLOCK_REALTIME), &next) < 0) goto fail;
        if (PyList_GET_SIZE(e->events) || rest) break;
        if (python_deadline >= 0 && (next < 0 || python_deadline < next)) next = python_deadline;
        struct timespec timeout, *wait = NULL;
        if (next >= 0) {
            int64_t ns = next - clock_ns(CLOCK_MONOTONIC);
            if (ns < 0) ns = 0;
            timeout = (struct timespec){ns / 1000000000, ns % 1000000000};
            wait = &timeout;
        }
        memcpy(fds, e->receivers, e->nreceivers * sizeof(struct pollfd));
        int ready = ppoll(fds, nfds, wait, NULL);
        if (ready < 0) {
            if (errno != EINTR) { PyErr_SetFromErrno(PyExc_OSError); goto fail; }
            if (PyErr_CheckSignals() < 0) goto fail;  /* SIGTERM: the handler raises */
            continue;
        }
        for (size_t i = 0; ready > 0 && i < e->nreceivers; i++)
            if (fds[i].revents && recv_batch(e, fds[i].fd, e->receiver_nic[i], 256, &rest) < 0) goto fail;
        for (size_t i = e->nreceivers; i < nfds; i++)
            if (fds[i].revents) control = 1;
        if (control || PyList_GET_SIZE(e->events) || rest) break;
    }
    PyMem_Free(fds);
    if (!rest) { Py_INCREF(Py_None); rest = Py_None; }
    return Py_BuildValue("(ON)", control ? Py_True : Py_False, rest);
fail:
    PyMem_Free(fds);
    Py_XDECREF(rest);
    return NULL;
}

static PyObject *Engine_take_events(Engine *e, PyObject *unused) {
    if (PyList_GET_SIZE(e->events) == 0) Py_RETURN_NONE;
    PyObject *events = e->events;
    e->events = PyList_New(0);
    if (!e->events) { e->events = events; return NULL; }
    return events;
}

static PyObject *Engine_expect(Engine *e, PyObject *args) {
    unsigned long long mid, size; int rail;
    if (!PyArg_ParseTuple(args, "KiK", &mid, &rail, &size)) return NULL;
    int32_t di = map_get(&e->delivery_by_id, mid);
    if (di >= 0) { e->deliveries[di].rail = rail; Py_RETURN_NONE; }
    if (grow((void **)&e->deliveries, &e->cap_del, e->ndel + 1, sizeof(Delivery)) < 0) return NULL;
    di = (int32_t)e->ndel++;
    e->deliveries[di] = (Delivery){mid, size, 0, -1, -1, rail, 0};
    if (map_put(&e->delivery_by_id, mid, di) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *opt(int64_t v) { if (v < 0) Py_RETURN_NONE; return PyLong_FromLongLong(v); }

static PyObject *Engine_message_stats(Engine *e, PyObject *args) {
    int slot;
    if (!PyArg_ParseTuple(args, "i", &slot)) return NULL;
    MsgStats *m = stats(e, slot);
    if (!m) return PyErr_Format(PyExc_IndexError, "no message slot %d", slot);
    return Py_BuildValue("(LLLLN)", (long long)m->packets, (long long)m->retransmits, (long long)m->timeouts,
                         (long long)m->naks, opt(m->start_ns));
}

static PyObject *Engine_deliveries(Engine *e, PyObject *unused) {
    PyObject *out = PyList_New((Py_ssize_t)e->ndel);
    if (!out) return NULL;
    for (size_t i = 0; i < e->ndel; i++) {
        Delivery *d = &e->deliveries[i];
        PyObject *t = Py_BuildValue("(KiKKNN)", (unsigned long long)d->id, d->rail, (unsigned long long)d->size,
                                    (unsigned long long)d->bytes, opt(d->first_ns), opt(d->last_ns));
        if (!t) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, (Py_ssize_t)i, t);
    }
    return out;
}

static PyObject *Engine_delays(Engine *e, PyObject *args) {
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "|n", &start)) return NULL;
    if (start < 0 || (size_t)start > e->ndelays) start = (Py_ssize_t)e->ndelays;
    PyObject *out = PyList_New((Py_ssize_t)e->ndelays - start);
    if (!out) return NULL;
    for (size_t i = (size_t)start; i < e->ndelays; i++) {
        Delay *d = &e->delays[i];
        PyObject *t = Py_BuildValue("(LNiL)", (long long)d->wall, ip_text(d->src_ip), d->nic, (long long)d->delay);
        if (!t) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, (Py_ssize_t)(i - (size_t)start), t);
    }
    return out;
}

static PyObject *Engine_receivers(Engine *e, PyObject *unused) {
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out && i < e->rx_by_key.cap; i++) {
        if (e->rx_by_key.vals[i] < 0) continue;
        uint64_t key = e->rx_by_key.keys[i];
        PyObject *t = Py_BuildValue("(NK)", ip_text((uint32_t)(key >> 24)), (unsigned long long)(key & U24));
        if (!t || PyList_Append(out, t) < 0) { Py_XDECREF(t); Py_DECREF(out); return NULL; }
        Py_DECREF(t);
    }
    return out;
}

static PyObject *Engine_counters(Engine *e, PyObject *unused) {
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < C_COUNT; i++) {
        PyObject *v = PyLong_FromLongLong(e->count[i]);
        if (!v || PyDict_SetItemString(out, COUNTER_NAMES[i], v) < 0) { Py_XDECREF(v); Py_DECREF(out); return NULL; }
        Py_DECREF(v);
    }
    return out;
}

static PyMethodDef Engine_methods[] = {
    {"add_nic", (PyCFunction)Engine_add_nic, METH_VARARGS, "add_nic(ip, rail, now) -> NIC index"},
    {"add_qp", (PyCFunction)Engine_add_qp, METH_VARARGS,
     "add_qp(nic, qp, remote_ip, src_port, window, mbps, burst_bytes, timeout_s, now) -> handle"},
    {"add_message", (PyCFunction)Engine_add_message, METH_VARARGS, "add_message(slot): a message's counters, zeroed"},
    {"add_share", (PyCFunction)Engine_add_share, METH_VARARGS,
     "add_share(qp, slot, message_id, message_size, base_offset, length): queue bytes of a message"},
    {"set_rate", (PyCFunction)Engine_set_rate, METH_VARARGS, "set_rate(qp, mbps, timeout_s, now)"},
    {"set_held", (PyCFunction)Engine_set_held, METH_VARARGS, "set_held(qp, held): announce mode holds a QP"},
    {"set_fence", (PyCFunction)Engine_set_fence, METH_VARARGS,
     "set_fence(qp, index): send nothing at or past index until base reaches it (-1: none); PLB"},
    {"set_src_port", (PyCFunction)Engine_set_src_port, METH_VARARGS,
     "set_src_port(qp, port): the QP sends from another UDP source port (a PLB re-path)"},
    {"set_credit", (PyCFunction)Engine_set_credit, METH_VARARGS,
     "set_credit(qp, bytes, now): the QP bucket's tokens from now (capped at its burst)"},
    {"qp_state", (PyCFunction)Engine_qp_state, METH_VARARGS,
     "qp_state(qp) -> (idle, unacked_bytes, rto_deadline_ns or -1, base, next, total, high, pacing_mbps)"},
    {"send_control", (PyCFunction)Engine_send_control, METH_VARARGS,
     "send_control(nic, src_port, dst_ip, payload, is_control): send now or queue (NicPort.send_ack)"},
    {"pump", (PyCFunction)Engine_pump, METH_VARARGS, "pump(now, wall) -> next deadline ns or None"},
    {"on_datagram", (PyCFunction)Engine_on_datagram, METH_VARARGS,
     "on_datagram(nic, src_ip, payload, now, wall) -> True if the datapath handled it"},
    {"add_receiver", (PyCFunction)Engine_add_receiver, METH_VARARGS,
     "add_receiver(fd, nic): a receive socket `run` waits on and drains"},
    {"run", (PyCFunction)Engine_run, METH_VARARGS,
     "run(control_fds, python_deadline) -> (control_ready, [(nic, src_ip, payload, mono_ns)] or None):"
     " pump, wait and receive until the control plane has something to do"},
    {"take_events", (PyCFunction)Engine_take_events, METH_NOARGS, "take_events() -> [(kind, value, mono_ns, wall_ns)] or None"},
    {"expect", (PyCFunction)Engine_expect, METH_VARARGS, "expect(message_id, rail, size)"},
    {"message_stats", (PyCFunction)Engine_message_stats, METH_VARARGS,
     "message_stats(slot) -> (packets, retransmits, timeouts, naks, start_ns)"},
    {"deliveries", (PyCFunction)Engine_deliveries, METH_NOARGS,
     "deliveries() -> [(id, rail, size, bytes, first_ns, last_ns)]"},
    {"delays", (PyCFunction)Engine_delays, METH_VARARGS,
     "delays(start=0) -> [(recv_ns, src_ip, nic, delay_ns)] from sample `start` on"},
    {"receivers", (PyCFunction)Engine_receivers, METH_NOARGS, "receivers() -> [(src_ip, qp)] of every receive QP"},
    {"counters", (PyCFunction)Engine_counters, METH_NOARGS, "counters() -> the datapath's counters"},
    {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fabric.nic._engine.Engine",
    .tp_doc = "One agent's NIC datapath (see the module source).",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "fabric.nic._engine",
                             "The emulated RDMA NIC's compiled datapath.", -1, NULL};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) { Py_DECREF(&EngineType); Py_DECREF(m); return NULL; }
    return m;
}
