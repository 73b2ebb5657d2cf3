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
 * polls the most descriptors (ovs-vswitchd's main thread: every port) records how
 * long each turn took from one poll() returning to the next poll() call, in a
 * log2 histogram of microseconds shared through that file (struct turn_stats).
 * A frame that reaches a port waits at most about two turns for the datapath.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
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
 * total time, and how many took [2^(i-1), 2^i) us (bucket 0: under 1 us). */
#define TURN_BUCKETS 32
struct turn_stats {
    uint64_t magic, turns, busy_ns, max_nfds;
    uint64_t hist[TURN_BUCKETS];
};
#define TURN_MAGIC 0x736e727574677070ULL  /* "ppgturns" */
static struct turn_stats *turns;
static __thread uint64_t last_return_ns;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void open_turn_stats(void) {
    const char *path = getenv("POLLGATE_STATS");
    if (!path || !*path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, sizeof(struct turn_stats)) == 0) {
        void *map = mmap(NULL, sizeof(struct turn_stats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map != MAP_FAILED) {
            turns = map;
            turns->magic = TURN_MAGIC;
        }
    }
    real_close(fd);  /* the mapping stays */
}

/* One turn of a poll()ing thread ended (it polls again): count it if this thread polls
 * at least as many descriptors as any thread so far. */
static void count_turn(nfds_t nfds, uint64_t enter) {
    if (!turns || !last_return_ns) return;
    if (nfds < turns->max_nfds) return;
    turns->max_nfds = nfds;
    uint64_t busy = enter - last_return_ns, us = busy / 1000;
    int bucket = us ? 64 - __builtin_clzll(us) : 0;
    if (bucket >= TURN_BUCKETS) bucket = TURN_BUCKETS - 1;
    turns->hist[bucket]++;
    turns->busy_ns += busy;
    turns->turns++;
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

__attribute__((constructor)) static void pollgate_init(void) { resolve(); open_turn_stats(); }

static int idle(int fd) {
    return idle_at && fd >= 0 && fd < MAX_FD && polls && idle_at[fd] == polls;
}

static int answer(void) {
    __atomic_add_fetch(&pollgate_answered, 1, __ATOMIC_RELAXED);
    errno = EAGAIN;
    return -1;
}

static void forget(int fd) {
    if (idle_at && fd >= 0 && fd < MAX_FD) idle_at[fd] = 0;
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout) {
    if (!real_poll) resolve();
    if (turns) count_turn(nfds, now_ns());
    int n = real_poll(fds, nfds, timeout);
    if (turns) last_return_ns = now_ns();
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
