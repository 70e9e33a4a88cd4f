/*
 * wsloadgen: a WebSocket echo load generator that should never be the bottleneck.
 *
 * Each thread owns an epoll instance and its share of the connections. A connection
 * does the opening handshake once (RFC 6455 section 4.1, fixed key, the 101 and its
 * Sec-WebSocket-Accept are checked), then sends one masked text frame and waits for
 * the echo (an unmasked text frame with the same payload) before sending the next.
 * The frame is built once, so the client costs one send, one recv and a share of an
 * epoll_wait per message.
 *
 * Modes
 *   long   echo over long connections; replies are counted after the warm-up.
 *   idle   open the connections (at most 256 handshakes in flight), do one echo on
 *          each, print the JSON line, then hold them open until killed or DURATION ends.
 *
 * Output: one JSON line on stdout. With -M, "measure start" / "measure end" go to
 * stderr at the edges of the measured window (for sampling server CPU over it).
 *
 * Build: gcc -O2 -pthread -o wsloadgen wsloadgen.c (benchmarks/ws_bench.py does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_LONG, MODE_IDLE };
enum state { S_FREE, S_CONNECTING, S_HANDSHAKE, S_WAITING, S_IDLE, S_FAILED };

#define BUF_MAX 4096
#define IDLE_HANDSHAKES 256
/* RFC 6455 section 1.3: the sample key and its accept value. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

struct conn {
    int fd;
    enum state state;
    size_t have;
    char buf[BUF_MAX];
};

struct options {
    const char *host;
    int port;
    int connections;
    int threads;
    double duration;
    double warmup;
    enum mode mode;
    const char *payload;
    const char *path;
    int markers;
};

struct thread {
    pthread_t id;
    int epfd;
    int count;
    struct conn *conns;
    uint64_t done, done_at_start, done_at_end;
    uint64_t errors;
    int marked;               /* done_at_start was taken */
    int opened, attempts, failed;
};

static struct options opt = {
    .host = "127.0.0.1", .port = 0, .connections = 100, .threads = 1, .duration = 10.0,
    .warmup = 2.0, .mode = MODE_LONG, .payload = "ping", .path = "/", .markers = 0};
static struct sockaddr_in target;
static char request[512];
static size_t request_len;
static unsigned char frame[256];
static size_t frame_len;
static unsigned char reply[256];
static size_t reply_len;
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_int phase;   /* 0 warm-up, 1 measuring, 2 finished */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void build_messages(void) {
    size_t size = strlen(opt.payload);
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    if (size > 125) {
        fprintf(stderr, "payload must be at most 125 bytes\n");
        exit(2);
    }
    request_len = (size_t)snprintf(request, sizeof request,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
        opt.path, opt.host, opt.port);
    frame[0] = 0x81;
    frame[1] = 0x80 | (unsigned char)size;
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < size; i++)
        frame[6 + i] = (unsigned char)opt.payload[i] ^ mask[i & 3];
    frame_len = 6 + size;
    reply[0] = 0x81;
    reply[1] = (unsigned char)size;
    memcpy(reply + 2, opt.payload, size);
    reply_len = 2 + size;
}

static void watch(struct thread *t, struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(t->epfd, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void open_conn(struct thread *t, struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->have = 0;
    t->attempts++;
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        c->state = S_FAILED;
        t->failed++;
        close(c->fd);
        return;
    }
    c->state = S_CONNECTING;
    watch(t, c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void fail(struct thread *t, struct conn *c) {
    epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = S_FAILED;
    t->errors++;
    t->failed++;
}

static int send_all(int fd, const void *data, size_t size) {
    /* Small writes on a fresh socket: the kernel takes them whole or the peer is gone. */
    return send(fd, data, size, MSG_NOSIGNAL) == (ssize_t)size ? 0 : -1;
}

static void on_event(struct thread *t, struct conn *c, uint32_t events) {
    if (c->state == S_CONNECTING) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error || (events & (EPOLLERR | EPOLLHUP)) || send_all(c->fd, request, request_len)) {
            fail(t, c);
            return;
        }
        c->state = S_HANDSHAKE;
        watch(t, c, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    ssize_t got = recv(c->fd, c->buf + c->have, BUF_MAX - c->have, 0);
    if (got <= 0) {
        if (got < 0 && errno == EAGAIN)
            return;
        fail(t, c);
        return;
    }
    c->have += (size_t)got;
    if (c->state == S_HANDSHAKE) {
        char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
        if (!end) {
            if (c->have == BUF_MAX)
                fail(t, c);
            return;
        }
        if (c->have < 13 || memcmp(c->buf, "HTTP/1.1 101 ", 13) ||
            !memmem(c->buf, (size_t)(end - c->buf), ACCEPT, strlen(ACCEPT))) {
            fail(t, c);
            return;
        }
        size_t head = (size_t)(end - c->buf) + 4;
        memmove(c->buf, c->buf + head, c->have - head);
        c->have -= head;
        c->state = S_WAITING;
        if (send_all(c->fd, frame, frame_len))
            fail(t, c);
        return;
    }
    if (c->state != S_WAITING || c->have < reply_len)
        return;
    if (c->have > reply_len || memcmp(c->buf, reply, reply_len)) {
        fail(t, c);   /* not the echo of what was sent */
        return;
    }
    c->have = 0;
    t->done++;
    if (opt.mode == MODE_IDLE) {
        c->state = S_IDLE;
        t->opened++;
        return;
    }
    if (send_all(c->fd, frame, frame_len))
        fail(t, c);
}

static void *run_thread(void *arg) {
    struct thread *t = arg;
    struct epoll_event events[256];
    int next = 0, in_flight = 0;
    t->epfd = epoll_create1(0);
    if (t->epfd < 0)
        die("epoll_create1");
    for (;;) {
        if (opt.mode == MODE_LONG) {
            for (; next < t->count; next++)
                open_conn(t, &t->conns[next]);
        } else {
            in_flight = t->attempts - t->opened - t->failed;
            for (; next < t->count && in_flight < IDLE_HANDSHAKES; next++, in_flight++)
                open_conn(t, &t->conns[next]);
        }
        int ready = epoll_wait(t->epfd, events, 256, 100);
        for (int i = 0; i < ready; i++)
            on_event(t, events[i].data.ptr, events[i].events);
        int p = atomic_load(&phase);
        if (p >= 1 && !t->marked) {
            t->done_at_start = t->done;
            t->marked = 1;
        }
        if (p == 2) {
            t->done_at_end = t->done;
            break;
        }
        if (opt.mode == MODE_IDLE && t->opened + t->failed == t->count && next == t->count)
            break;
    }
    return NULL;
}

static void usage(void) {
    fprintf(stderr, "usage: wsloadgen -p PORT [-h HOST] [-c CONNECTIONS] [-t THREADS] "
                    "[-d SECONDS] [-w WARMUP] [-m long|idle] [-P PAYLOAD] [-u PATH] [-M]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int ch;
    while ((ch = getopt(argc, argv, "h:p:c:t:d:w:m:P:u:M")) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.connections = atoi(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'P': opt.payload = optarg; break;
        case 'u': opt.path = optarg; break;
        case 'M': opt.markers = 1; break;
        case 'm':
            if (!strcmp(optarg, "long")) opt.mode = MODE_LONG;
            else if (!strcmp(optarg, "idle")) opt.mode = MODE_IDLE;
            else usage();
            break;
        default: usage();
        }
    }
    if (!opt.port || opt.connections < 1 || opt.threads < 1)
        usage();
    struct rlimit limit = {.rlim_cur = (rlim_t)opt.connections + 64,
                           .rlim_max = (rlim_t)opt.connections + 64};
    struct rlimit current;
    getrlimit(RLIMIT_NOFILE, &current);
    if (current.rlim_cur < limit.rlim_cur && setrlimit(RLIMIT_NOFILE, &limit) < 0)
        die("setrlimit");
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1)
        usage();
    build_messages();

    struct thread *threads = calloc((size_t)opt.threads, sizeof *threads);
    struct conn *conns = calloc((size_t)opt.connections, sizeof *conns);
    if (!threads || !conns)
        die("calloc");
    int per = opt.connections / opt.threads, extra = opt.connections % opt.threads, first = 0;
    t_start_ns = now_ns();
    for (int i = 0; i < opt.threads; i++) {
        threads[i].count = per + (i < extra);
        threads[i].conns = conns + first;
        first += threads[i].count;
        if (pthread_create(&threads[i].id, NULL, run_thread, &threads[i]))
            die("pthread_create");
    }
    if (opt.mode == MODE_IDLE) {
        int opened = 0, failed = 0;
        for (int i = 0; i < opt.threads; i++) {
            pthread_join(threads[i].id, NULL);
            opened += threads[i].opened;
            failed += threads[i].failed;
        }
        printf("{\"mode\": \"idle\", \"opened\": %d, \"failed\": %d, \"seconds\": %.3f}\n",
               opened, failed, (double)(now_ns() - t_start_ns) / 1e9);
        fflush(stdout);
        struct timespec hold = {.tv_sec = (time_t)opt.duration, .tv_nsec = 0};
        nanosleep(&hold, NULL);
        return failed ? 1 : 0;
    }
    struct timespec warm = {.tv_sec = (time_t)opt.warmup,
                            .tv_nsec = (long)((opt.warmup - (time_t)opt.warmup) * 1e9)};
    nanosleep(&warm, NULL);
    if (opt.markers)
        fprintf(stderr, "measure start\n");
    t_measure_ns = now_ns();
    atomic_store(&phase, 1);
    struct timespec run = {.tv_sec = (time_t)opt.duration,
                           .tv_nsec = (long)((opt.duration - (time_t)opt.duration) * 1e9)};
    nanosleep(&run, NULL);
    atomic_store(&phase, 2);
    t_end_ns = now_ns();
    if (opt.markers)
        fprintf(stderr, "measure end\n");
    uint64_t total = 0, errors = 0;
    for (int i = 0; i < opt.threads; i++) {
        pthread_join(threads[i].id, NULL);
        total += threads[i].done_at_end - threads[i].done_at_start;
        errors += threads[i].errors;
    }
    double seconds = (double)(t_end_ns - t_measure_ns) / 1e9;
    printf("{\"mode\": \"long\", \"connections\": %d, \"messages\": %llu, \"seconds\": %.3f, "
           "\"rate\": %.1f, \"errors\": %llu}\n", opt.connections, (unsigned long long)total,
           seconds, (double)total / seconds, (unsigned long long)errors);
    return 0;
}
