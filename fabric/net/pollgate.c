/* pollgate: preloaded into the run's ovs-vswitchd (LD_PRELOAD), it answers the
 * receive calls that cannot find anything without entering the kernel.
 *
 * OVS's userspace datapath polls every port on every turn of its main loop: one
 * recvmmsg(2) per AF_PACKET port and one accept(2) per bridge management listener,
 * most of them EAGAIN (benchmarks/RESULTS.md, "Profile of the datapath"). Every
 * turn ends in poll(2) over the same descriptors. This library remembers, per
 * thread, which descriptors the thread's last poll() asked about for input and
 * found without any (no POLLIN, POLLERR, POLLHUP or POLLNVAL); until that thread
 * polls again, recvmmsg(), accept() and accept4() on such a descriptor fail with
 * EAGAIN without a system call.
 *
 * Only what the thread's own last poll() saw as idle is answered, so nothing can
 * wait longer than one turn: poll is level-triggered, and a frame that arrived
 * after that poll makes the next one return at once. Calls on descriptors the
 * last poll() did not ask about (blocking sockets, other threads' descriptors)
 * always go to the kernel. close() and dup2()/dup3() forget the descriptor.
 *
 * It also times the main loop: with POLLGATE_STATS naming a file, the thread that
 * polls the most descriptors (ovs-vswitchd's main thread: every port) records each
 * turn, from one poll() returning to the next poll() call (the time poll() then
 * sleeps is not a turn: a frame arriving then wakes it). A frame that reaches a
 * port waits at most about two turns for the datapath. Turns are counted and
 * their time summed per bucket of a log-linear histogram (8 buckets per power of
 * two of microseconds) shared through that file (struct turn_stats, read by
 * fabric/measure/turns.py).
 *
 * The system call is the smaller part of an idle port's cost: around it OVS's
 * netdev-linux allocates and frees a batch of 32 packet buffers per port per turn
 * (about a fifth of the daemon's CPU, benchmarks/RESULTS.md). So at load this
 * library also finds netdev-linux's receive function in OVS's netdev classes
 * ("system", "tap", "internal": struct netdev_class of OVS 3.1, found by their
 * type strings and checked by the three sharing the same receive functions) and
 * puts a gate in front of it that answers EAGAIN for a descriptor the thread's
 * last poll() found idle, before any allocation. Where the classes are not found
 * as expected (another OVS build), nothing is patched and the recvmmsg() gate
 * above still works; POLLGATE_RXQ=0 turns the patch off (to measure it).
 * pollgate_rxq_patched says how many classes were patched.
 *
 * With POLLGATE_MIN_TURN_US set, that thread's turns are paced: its poll() does
 * not look for frames sooner than that after the previous one returned (it
 * sleeps the rest first, and the turn includes that sleep). Interrupt moderation:
 * fewer turns, each polling every port, for a longer wait; measured on rail-2tier
 * it saved little (benchmarks/RESULTS.md). The tests use it to make the datapath
 * late on purpose.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 65536

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*recvmmsg_fn)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*close_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);

static poll_fn real_poll;
static recvmmsg_fn real_recvmmsg;
static accept_fn real_accept;
static accept4_fn real_accept4;
static close_fn real_close;
static dup2_fn real_dup2;
static dup3_fn real_dup3;

/* Per thread: the number of its poll() calls so far, and for each descriptor the
 * number of the call that last found it idle (0: never). Allocated at a thread's
 * first poll() and kept for its life (OVS's threads live as long as the daemon). */
static __thread uint32_t polls;
static __thread uint32_t *idle_at;

/* Calls answered here, all threads (read by the tests). */
uint64_t pollgate_answered;

/* The main loop's turns (fabric/measure/turns.py reads this layout): how many, their
 * total time, how long pacing slept, the pacing asked for, whether the harness holds
 * the count (nonzero ``hold``: it is asking the daemon for a dump between rounds, with
 * no frame in flight, so those turns say nothing of the datapath's lateness) and how
 * many turns began while held (not counted), how many netdev classes have the
 * receive gate, and per bucket how many turns and how
 * much time. Buckets 0-7 hold 0-7 us; above, 8 per power of two: bucket
 * 8 + 8 (e - 3) + m holds [(8 + m) 2^(e-3), (9 + m) 2^(e-3)) us. */
#define TURN_BUCKETS 256
struct turn_stats {
    uint64_t magic, turns, busy_ns, max_nfds, paced_ns, min_turn_us, hold, held, rxq_gated;
    uint64_t count[TURN_BUCKETS];
    uint64_t ns[TURN_BUCKETS];
};
#define TURN_MAGIC 0x34736e7275746770ULL  /* "pgturns4" */
static struct turn_stats *turns;
static __thread uint64_t last_return_ns;
static __thread int turn_held;  /* this turn began while the harness held the count */
static uint64_t min_turn_ns;

/* -- poll() over many descriptors, as epoll ---------------------------------------
 * The kernel's poll() visits every descriptor it is given on every call: for
 * ovs-vswitchd's main thread, every port of the shard on every turn (about a fifth of
 * the daemon's CPU on rail-2tier, benchmarks/RESULTS.md). A call asking about
 * EPOLL_MIN_FDS descriptors or more is answered instead from an epoll set the thread
 * keeps in step with its array (descriptors added, changed or dropped as the array
 * changes): the kernel then visits only the ready ones. Readiness is level-triggered
 * as poll's, the timeout the same, revents filled as poll fills them (POLLIN,
 * POLLOUT, POLLPRI as asked; POLLERR and POLLHUP always). The set is built anew after
 * any close()/dup2()/dup3() in the process (a registration follows the open file, not
 * the number) and every EPOLL_REBUILD_CALLS calls; a call the set cannot answer
 * (a descriptor twice, out of range, or one epoll refuses) goes to poll() itself, and
 * a thread whose set fails for another reason stops using it. POLLGATE_EPOLL=0 turns
 * this off (to measure it). */
#define EPOLL_MIN_FDS 16
#define EPOLL_REBUILD_CALLS 4096
#define REGISTERED 0x8000

static uint64_t closes;        /* close/dup2/dup3 calls so far, all threads */
/* poll() calls answered from an epoll set, all threads (read by the tests). */
uint64_t pollgate_epoll_calls;
static int epoll_off;          /* POLLGATE_EPOLL=0 */
struct epoll_state {
    int ep;                    /* the set (-1: none yet) */
    int disabled;
    uint64_t built_closes;     /* ``closes`` when the set was built */
    uint32_t calls, gen;
    uint16_t reg[MAX_FD];      /* events registered for each descriptor | REGISTERED */
    uint32_t seen[MAX_FD];     /* the ``gen`` of the last call that asked about it */
    int index[MAX_FD];         /* its entry in the current call's array */
    struct pollfd *last;       /* the last call's array (fd and events) */
    nfds_t nlast, cap;
    struct epoll_event *events;
};
static __thread struct epoll_state *eps;

static uint32_t to_epoll(short events) {
    return (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0)
         | (events & POLLPRI ? EPOLLPRI : 0);
}

static short to_poll(uint32_t events, short asked) {
    short r = (events & EPOLLIN ? POLLIN : 0) | (events & EPOLLOUT ? POLLOUT : 0)
            | (events & EPOLLPRI ? POLLPRI : 0);
    return (short)((r & asked) | (events & EPOLLERR ? POLLERR : 0) | (events & EPOLLHUP ? POLLHUP : 0));
}

static void drop_set(struct epoll_state *st) {
    if (st->ep >= 0) real_close(st->ep);
    st->ep = -1;
    st->nlast = 0;
    memset(st->reg, 0, sizeof st->reg);
}

/* Bring the thread's set in step with ``fds``: 0, or -1 when this call must go to
 * poll() (and st->disabled when the thread should stop trying). */
static int sync_set(struct epoll_state *st, struct pollfd *fds, nfds_t nfds) {
    uint64_t now_closes = __atomic_load_n(&closes, __ATOMIC_RELAXED);
    if (st->ep < 0 || now_closes != st->built_closes || ++st->calls >= EPOLL_REBUILD_CALLS) {
        drop_set(st);
        st->ep = epoll_create1(EPOLL_CLOEXEC);
        if (st->ep < 0) { st->disabled = 1; return -1; }
        st->built_closes = now_closes;
        st->calls = 0;
    }
    if (nfds == st->nlast) {
        nfds_t i = 0;
        while (i < nfds && fds[i].fd == st->last[i].fd && fds[i].events == st->last[i].events) i++;
        if (i == nfds) return 0;
    }
    if (nfds > st->cap) {
        struct pollfd *last = realloc(st->last, nfds * sizeof *last);
        struct epoll_event *events = realloc(st->events, nfds * sizeof *events);
        if (last) st->last = last;
        if (events) st->events = events;
        if (!last || !events) { st->disabled = 1; return -1; }
        st->cap = nfds;
    }
    uint32_t gen = ++st->gen ? st->gen : (memset(st->seen, 0, sizeof st->seen), st->gen = 1);
    for (nfds_t i = 0; i < nfds; i++) {
        int fd = fds[i].fd;
        if (fd < 0) continue;  /* poll() ignores it too */
        if (fd >= MAX_FD || st->seen[fd] == gen) return -1;
        st->seen[fd] = gen;
        uint16_t want = (uint16_t)(to_epoll(fds[i].events) | REGISTERED);
        if (st->reg[fd] == want) continue;
        struct epoll_event ev = {.events = want & ~REGISTERED, .data.fd = fd};
        if (epoll_ctl(st->ep, st->reg[fd] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
            if (errno != EBADF) st->disabled = 1;  /* EBADF: poll() reports POLLNVAL */
            drop_set(st);
            return -1;
        }
        st->reg[fd] = want;
    }
    for (nfds_t i = 0; i < st->nlast; i++) {
        int fd = st->last[i].fd;
        if (fd < 0 || st->seen[fd] == gen || !st->reg[fd]) continue;
        epoll_ctl(st->ep, EPOLL_CTL_DEL, fd, NULL);
        st->reg[fd] = 0;
    }
    memcpy(st->last, fds, nfds * sizeof *fds);
    st->nlast = nfds;
    return 0;
}

/* poll(), through the thread's epoll set when it asks about many descriptors. */
static int any_poll(struct pollfd *fds, nfds_t nfds, int timeout) {
    if (nfds < EPOLL_MIN_FDS || epoll_off || (eps && eps->disabled)) return real_poll(fds, nfds, timeout);
    if (!eps) {
        eps = calloc(1, sizeof *eps);
        if (!eps) return real_poll(fds, nfds, timeout);
        eps->ep = -1;
    }
    if (sync_set(eps, fds, nfds) != 0) return real_poll(fds, nfds, timeout);
    for (nfds_t i = 0; i < nfds; i++) {
        fds[i].revents = 0;
        if (fds[i].fd >= 0) eps->index[fds[i].fd] = (int)i;
    }
    __atomic_add_fetch(&pollgate_epoll_calls, 1, __ATOMIC_RELAXED);
    int n = epoll_wait(eps->ep, eps->events, (int)nfds, timeout);
    if (n <= 0) return n;
    int ready = 0;
    for (int k = 0; k < n; k++) {
        int fd = eps->events[k].data.fd;
        if (fd < 0 || fd >= MAX_FD || eps->seen[fd] != eps->gen) continue;
        struct pollfd *p = &fds[eps->index[fd]];
        p->revents = to_poll(eps->events[k].events, p->events);
        if (p->revents) ready++;
    }
    return ready;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void open_turn_stats(void) {
    const char *pace = getenv("POLLGATE_MIN_TURN_US");
    if (pace && *pace) min_turn_ns = strtoull(pace, NULL, 10) * 1000ULL;
    const char *path = getenv("POLLGATE_STATS");
    if (!path || !*path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, sizeof(struct turn_stats)) == 0) {
        void *map = mmap(NULL, sizeof(struct turn_stats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map != MAP_FAILED) {
            turns = map;
            turns->magic = TURN_MAGIC;
            turns->min_turn_us = min_turn_ns / 1000;
        }
    }
    real_close(fd);  /* the mapping stays */
}

static int turn_bucket(uint64_t us) {
    if (us < 8) return (int)us;
    int e = 63 - __builtin_clzll(us);
    int bucket = 8 + 8 * (e - 3) + (int)((us >> (e - 3)) & 7);
    return bucket < TURN_BUCKETS ? bucket : TURN_BUCKETS - 1;
}

/* Is this the timed thread: the one that has polled the most descriptors so far? It
 * stays the timed one when its own count drops for a while (a connection closed). */
static pthread_t timed_thread;
static int timed(nfds_t nfds) {
    if (!turns) return 0;
    if (nfds > turns->max_nfds) {
        turns->max_nfds = nfds;
        timed_thread = pthread_self();
        return 1;
    }
    return turns->max_nfds && pthread_equal(timed_thread, pthread_self());
}

/* The timed thread's turn ended at ``end`` (it could see a new frame again). */
static void count_turn(uint64_t end) {
    if (!last_return_ns) return;
    if (turn_held) {
        turns->held++;
        return;
    }
    uint64_t busy = end - last_return_ns;
    int bucket = turn_bucket(busy / 1000);
    turns->count[bucket]++;
    turns->ns[bucket] += busy;
    turns->busy_ns += busy;
    turns->turns++;
}

/* Pacing: sleep until ``min_turn_ns`` after the last return, even when the caller
 * wants no wait at all (its timers are then up to one pace late); the time left of
 * its timeout (-1 stays -1). */
static int pace(int timeout) {
    uint64_t now = now_ns(), due = last_return_ns + min_turn_ns;
    if (!last_return_ns || now >= due) return timeout;
    uint64_t wait = due - now;
    struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
    nanosleep(&ts, NULL);
    turns->paced_ns += wait;
    if (timeout < 0) return timeout;
    int left = timeout - (int)(wait / 1000000ULL);
    return left > 0 ? left : 0;
}

/* The timed thread's poll: paced; its turn ends here (poll's own scan of the
 * descriptors, about a tenth of a turn on a large fabric, is not in it). */
static int timed_poll(struct pollfd *fds, nfds_t nfds, int timeout) {
    if (min_turn_ns) timeout = pace(timeout);
    count_turn(now_ns());
    int n = any_poll(fds, nfds, timeout);
    last_return_ns = now_ns();
    turn_held = __atomic_load_n(&turns->hold, __ATOMIC_RELAXED) != 0;
    return n;
}

/* Resolve the real calls: at load, and from a wrapper called before that (another
 * library's constructor may call close() before this one's has run). */
static void resolve(void) {
    real_poll = (poll_fn)dlsym(RTLD_NEXT, "poll");
    real_recvmmsg = (recvmmsg_fn)dlsym(RTLD_NEXT, "recvmmsg");
    real_accept = (accept_fn)dlsym(RTLD_NEXT, "accept");
    real_accept4 = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
    real_close = (close_fn)dlsym(RTLD_NEXT, "close");
    real_dup2 = (dup2_fn)dlsym(RTLD_NEXT, "dup2");
    real_dup3 = (dup3_fn)dlsym(RTLD_NEXT, "dup3");
}

static int idle(int fd) {
    return idle_at && fd >= 0 && fd < MAX_FD && polls && idle_at[fd] == polls;
}

static int answer(void) {
    __atomic_add_fetch(&pollgate_answered, 1, __ATOMIC_RELAXED);
    errno = EAGAIN;
    return -1;
}

/* -- The gate in front of netdev-linux's receive ------------------------------------
 * OVS 3.1's struct netdev_class: `const char *type; bool is_pmd;` then function
 * pointers; rxq_construct, rxq_recv and rxq_wait sit at these offsets (x86-64). Its
 * struct netdev_rxq_linux: `struct netdev_rxq up` ({struct netdev *, int}), `bool
 * is_tap`, then the descriptor it polls. */
#define CLASS_RXQ_CONSTRUCT 432
#define CLASS_RXQ_RECV 464
#define CLASS_RXQ_WAIT 472
#define RXQ_LINUX_FD 20
#define GATED_TYPES 3

typedef int (*rxq_recv_fn)(void *rxq, void *batch, int *qfill);
static rxq_recv_fn real_rxq_recv;

/* Classes whose receive goes through the gate (0: none found; also in turn_stats). */
uint64_t pollgate_rxq_patched;

static int gated_rxq_recv(void *rxq, void *batch, int *qfill) {
    if (idle(*(int *)((char *)rxq + RXQ_LINUX_FD))) {
        __atomic_add_fetch(&pollgate_answered, 1, __ATOMIC_RELAXED);
        if (qfill) *qfill = -ENOTSUP;  /* as netdev-linux says: no queue fill level */
        return EAGAIN;                 /* netdev_rxq_recv() empties the batch */
    }
    return real_rxq_recv(rxq, batch, qfill);
}

/* The main program's mapped segments: read-only data, code, and relocated read-only
 * data (where OVS's const structs of pointers live). */
struct range { uintptr_t start, end; };
struct image { struct range ro[4]; int nro; struct range text, relro; };

static int find_image(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct image *im = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        struct range r = {info->dlpi_addr + ph->p_vaddr, info->dlpi_addr + ph->p_vaddr + ph->p_memsz};
        if (ph->p_type == PT_GNU_RELRO) im->relro = r;
        else if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) im->text = r;
        else if (ph->p_type == PT_LOAD && !(ph->p_flags & PF_W) && im->nro < 4) im->ro[im->nro++] = r;
    }
    return 1;  /* the first object is the program itself */
}

static int in_range(const struct range *r, uintptr_t p) { return p >= r->start && p < r->end; }

static int is_type_string(const struct image *im, uintptr_t p, const char *type) {
    for (int i = 0; i < im->nro; i++)
        if (in_range(&im->ro[i], p) && p + strlen(type) < im->ro[i].end)
            return strcmp((const char *)p, type) == 0;
    return 0;
}

/* Same receive functions (rxq_construct through rxq_wait; some may be NULL) in both? */
static int same_receive(uintptr_t a, uintptr_t b) {
    for (int k = CLASS_RXQ_CONSTRUCT; k <= CLASS_RXQ_WAIT; k += 8)
        if (*(uintptr_t *)(a + k) != *(uintptr_t *)(b + k)) return 0;
    return 1;
}

/* The netdev classes of netdev-linux, one per type: structs in the relocated read-only
 * data whose type points to that name, with is_pmd false and receive functions in the
 * code. Other classes share a name ("system" is also a dpif class), so the three are the
 * ones with the same receive functions, and each must be the only such one of its type. */
#define MAX_CANDIDATES 8
static void gate_netdev_linux(void) {
    static const char *types[GATED_TYPES] = {"system", "tap", "internal"};
    const char *off = getenv("POLLGATE_RXQ");
    if (off && strcmp(off, "0") == 0) return;
    struct image im = {0};
    dl_iterate_phdr(find_image, &im);
    if (!im.relro.end || !im.text.end || !im.nro) return;
    uintptr_t cand[GATED_TYPES][MAX_CANDIDATES];
    int ncand[GATED_TYPES] = {0};
    for (uintptr_t at = (im.relro.start + 7) & ~(uintptr_t)7;
         at + CLASS_RXQ_WAIT + 8 <= im.relro.end; at += 8) {
        uintptr_t *field = (uintptr_t *)at;
        if (*(unsigned char *)(at + 8) != 0) continue;  /* is_pmd */
        if (!in_range(&im.text, field[CLASS_RXQ_CONSTRUCT / 8])
            || !in_range(&im.text, field[CLASS_RXQ_RECV / 8])
            || !in_range(&im.text, field[CLASS_RXQ_WAIT / 8]))
            continue;
        for (int t = 0; t < GATED_TYPES; t++)
            if (is_type_string(&im, field[0], types[t])) {
                if (ncand[t] == MAX_CANDIDATES) return;
                cand[t][ncand[t]++] = at;
            }
    }
    uintptr_t chosen[GATED_TYPES] = {0};
    for (int i = 0; i < ncand[1]; i++) {  /* each "tap" class: its kin of the other types */
        uintptr_t match[GATED_TYPES] = {0};
        int unique = 1;
        for (int t = 0; t < GATED_TYPES; t++)
            for (int j = 0; j < ncand[t]; j++)
                if (same_receive(cand[t][j], cand[1][i])) {
                    if (match[t]) unique = 0;
                    match[t] = cand[t][j];
                }
        if (!unique || !match[0] || !match[2]) continue;
        if (chosen[1]) return;  /* two families: not the layout we know */
        for (int t = 0; t < GATED_TYPES; t++) chosen[t] = match[t];
    }
    if (!chosen[1]) return;
    real_rxq_recv = *(rxq_recv_fn *)(chosen[1] + CLASS_RXQ_RECV);
    long page = sysconf(_SC_PAGESIZE);
    for (int t = 0; t < GATED_TYPES; t++) {
        uintptr_t slot = chosen[t] + CLASS_RXQ_RECV, base = slot & ~(uintptr_t)(page - 1);
        if (mprotect((void *)base, (size_t)page, PROT_READ | PROT_WRITE) != 0) return;
        *(rxq_recv_fn *)slot = gated_rxq_recv;
        mprotect((void *)base, (size_t)page, PROT_READ);
        pollgate_rxq_patched++;
    }
}

__attribute__((constructor)) static void pollgate_init(void) {
    resolve();
    const char *epoll_env = getenv("POLLGATE_EPOLL");
    epoll_off = epoll_env && strcmp(epoll_env, "0") == 0;
    open_turn_stats();
    gate_netdev_linux();
    if (turns) turns->rxq_gated = pollgate_rxq_patched;
}

static void forget(int fd) {
    if (idle_at && fd >= 0 && fd < MAX_FD) idle_at[fd] = 0;
    __atomic_add_fetch(&closes, 1, __ATOMIC_RELAXED);  /* every epoll set is built anew */
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout) {
    if (!real_poll) resolve();
    int n = timed(nfds) ? timed_poll(fds, nfds, timeout) : any_poll(fds, nfds, timeout);
    if (!idle_at) idle_at = calloc(MAX_FD, sizeof *idle_at);
    if (!idle_at) return n;
    if (++polls == 0) {  /* wrapped: start over rather than trust old marks */
        for (int i = 0; i < MAX_FD; i++) idle_at[i] = 0;
        polls = 1;
    }
    if (n < 0) return n;  /* EINTR and friends: no marks, everything goes through */
    for (nfds_t i = 0; i < nfds; i++) {
        int fd = fds[i].fd;
        if (fd < 0 || fd >= MAX_FD || !(fds[i].events & POLLIN)) continue;
        if (!(fds[i].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))) idle_at[fd] = polls;
    }
    return n;
}

int recvmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags, struct timespec *timeout) {
    if (!real_recvmmsg) resolve();
    if (idle(fd)) return answer();
    return real_recvmmsg(fd, msgs, n, flags, timeout);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    if (!real_accept) resolve();
    if (idle(fd)) return answer();
    return real_accept(fd, addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    if (!real_accept4) resolve();
    if (idle(fd)) return answer();
    return real_accept4(fd, addr, len, flags);
}

int close(int fd) {
    if (!real_close) resolve();
    forget(fd);
    return real_close(fd);
}

int dup2(int old, int new) {
    if (!real_dup2) resolve();
    forget(new);
    return real_dup2(old, new);
}

int dup3(int old, int new, int flags) {
    if (!real_dup3) resolve();
    forget(new);
    return real_dup3(old, new, flags);
}
