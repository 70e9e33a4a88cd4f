/*
 * loadgen: a line-echo load generator that should never be the bottleneck.
 *
 * Each thread owns an epoll instance and its share of the connections; nothing is
 * shared between threads but the phase clock, so the client costs a few syscalls per
 * request (one send, one recv, an epoll_wait amortised over the ready connections).
 *
 * Modes
 *   long   every connection sends PAYLOAD "\n" and waits for one "\n"-terminated
 *          reply before sending the next; replies are counted after the warm-up.
 *   short  connect, send one line, read the reply, close, repeat; completed exchanges
 *          are counted, failures are sorted into refused / reset / eof / timeout /
 *          addrnotavail / other.
 *   idle   open the connections (at most 256 handshakes in flight), do one exchange
 *          on each so the server has surely accepted and set it up, print the JSON
 *          line, then hold every connection open until killed or DURATION ends.
 *
 * Output: one JSON line on stdout. With -M, the lines "measure start" and
 * "measure end" are written to stderr at the edges of the measured window, so a
 * caller can sample server CPU over exactly that window.
 *
 * Short mode on loopback: the client closes first, so the client side holds the
 * TIME_WAIT sockets. With -S N the connections are bound to N source addresses
 * 127.0.0.1..127.0.0.N (IP_BIND_ADDRESS_NO_PORT, the port is picked at connect), which
 * multiplies the ephemeral port space by N so that it is not what limits the rate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
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

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum mode { MODE_LONG, MODE_SHORT, MODE_IDLE };
enum state { S_FREE, S_CONNECTING, S_WAITING, S_IDLE };
enum error { E_REFUSED, E_RESET, E_EOF, E_TIMEOUT, E_ADDRNOTAVAIL, E_MISMATCH, E_OTHER, E_COUNT };
static const char *error_names[E_COUNT] = {
    "refused", "reset", "eof", "timeout", "addrnotavail", "mismatch", "other"};

#define REPLY_MAX 4096
#define IDLE_HANDSHAKES 256

struct conn {
    int fd;
    enum state state;
    uint64_t deadline_ns;
    uint32_t source;
    size_t written;
    size_t have;
    char reply[REPLY_MAX];
};

struct options {
    const char *host;
    int port;
    int connections;
    int threads;
    double duration;
    double warmup;
    double timeout;
    enum mode mode;
    char *line;          /* payload + "\n" */
    size_t line_len;
    int sources;
    int markers;
};

struct thread {
    pthread_t id;
    int index;
    int epfd;
    int count;
    struct conn *conns;
    uint64_t done;            /* exchanges completed since the start */
    uint64_t done_at_start;   /* ... when the measured window opened */
    uint64_t done_at_end;
    uint64_t errors[E_COUNT];
    uint64_t errors_at_start[E_COUNT];
    uint64_t errors_at_end[E_COUNT];
    int opened;               /* idle mode: connections that finished their exchange */
    int attempts;             /* idle mode: connections started */
    int failed;               /* idle mode: connections that failed */
};

static struct options opt = {
    .host = "127.0.0.1", .port = 0, .connections = 100, .threads = 1,
    .duration = 10.0, .warmup = 2.0, .timeout = 5.0, .mode = MODE_LONG,
    .sources = 1, .markers = 0};
static struct sockaddr_in target;
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_int phase;      /* 0 warm-up, 1 measuring, 2 finished */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -p PORT [-h HOST] [-c CONNECTIONS] [-d SECONDS] [-w WARMUP]\n"
            "               [-m long|short|idle] [-P PAYLOAD] [-t THREADS] [-T TIMEOUT]\n"
            "               [-S SOURCES] [-M]\n");
    exit(64);
}

static void raise_nofile(int needed) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        die("getrlimit");
    if (limit.rlim_cur >= (rlim_t)needed)
        return;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
        die("setrlimit");
    if (limit.rlim_cur < (rlim_t)needed)
        fprintf(stderr, "loadgen: RLIMIT_NOFILE hard limit %llu < %d needed\n",
                (unsigned long long)limit.rlim_max, needed);
}

static void count_error(struct thread *t, int err) {
    enum error kind = E_OTHER;
    switch (err) {
    case ECONNREFUSED: kind = E_REFUSED; break;
    case ECONNRESET: case EPIPE: kind = E_RESET; break;
    case ETIMEDOUT: kind = E_TIMEOUT; break;
    case EADDRNOTAVAIL: kind = E_ADDRNOTAVAIL; break;
    case 0: kind = E_EOF; break;
    case -1: kind = E_MISMATCH; break;
    }
    t->errors[kind]++;
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0)
        close(c->fd);   /* also drops it from the epoll set: the fd is never dup'ed */
    c->fd = -1;
    c->state = S_FREE;
}

static int watch(struct thread *t, struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(t->epfd, op, c->fd, &ev);
}

/* Start a non-blocking connect. Returns 0, or -1 with the error counted. */
static int conn_open(struct thread *t, struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        count_error(t, errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.sources > 1) {
        struct sockaddr_in source = {.sin_family = AF_INET};
        source.sin_addr.s_addr = htonl(0x7f000001u + (c->source % (uint32_t)opt.sources));
        c->source++;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&source, sizeof source) != 0) {
            count_error(t, errno);
            close(fd);
            return -1;
        }
    }
    c->fd = fd;
    c->written = c->have = 0;
    c->deadline_ns = now_ns() + (uint64_t)(opt.timeout * 1e9);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0 && errno != EINPROGRESS) {
        count_error(t, errno);
        close(fd);
        c->fd = -1;
        return -1;
    }
    c->state = S_CONNECTING;
    if (watch(t, c, EPOLL_CTL_ADD, EPOLLOUT) != 0)
        die("epoll_ctl");
    return 0;
}

/* Write (the rest of) the request line. Returns 0 or the errno. */
static int conn_write(struct thread *t, struct conn *c) {
    while (c->written < opt.line_len) {
        ssize_t n = send(c->fd, opt.line + c->written, opt.line_len - c->written, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return watch(t, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT) ? errno : 0;
            return errno;
        }
        c->written += (size_t)n;
    }
    return 0;
}

static void conn_failed(struct thread *t, struct conn *c, int err) {
    count_error(t, err);
    conn_close(c);
    if (opt.mode == MODE_IDLE)
        t->failed++;
}

/* The connect finished (EPOLLOUT in S_CONNECTING). */
static void on_connected(struct thread *t, struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        conn_failed(t, c, err);
        return;
    }
    c->state = S_WAITING;
    if (watch(t, c, EPOLL_CTL_MOD, EPOLLIN) != 0)
        die("epoll_ctl");
    err = conn_write(t, c);
    if (err)
        conn_failed(t, c, err);
}

/* One reply line arrived whole. */
static void on_reply(struct thread *t, struct conn *c) {
    t->done++;
    if (opt.mode == MODE_LONG) {
        c->written = 0;
        int err = conn_write(t, c);
        if (err)
            conn_failed(t, c, err);
    } else if (opt.mode == MODE_SHORT) {
        conn_close(c);
    } else {
        c->state = S_IDLE;
        t->opened++;
    }
}

static void on_readable(struct thread *t, struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->reply + c->have, REPLY_MAX - c->have, 0);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            conn_failed(t, c, errno);
            return;
        }
        if (n == 0) {
            conn_failed(t, c, 0);
            return;
        }
        c->have += (size_t)n;
        char *end = memchr(c->reply, '\n', c->have);
        if (end == NULL) {
            if (c->have == REPLY_MAX)
                conn_failed(t, c, -1);
            continue;
        }
        size_t got = (size_t)(end - c->reply) + 1;
        if (got != opt.line_len || memcmp(c->reply, opt.line, got) != 0 || got != c->have) {
            conn_failed(t, c, -1);   /* not our echo, or more than one reply */
            return;
        }
        c->have = 0;
        on_reply(t, c);
        return;
    }
}

static void on_event(struct thread *t, struct epoll_event *ev) {
    struct conn *c = ev->data.ptr;
    if (c->fd < 0)
        return;
    if (c->state == S_CONNECTING) {
        on_connected(t, c);
        return;
    }
    if ((ev->events & EPOLLOUT) && c->written < opt.line_len) {
        int err = conn_write(t, c);
        if (err) {
            conn_failed(t, c, err);
            return;
        }
        if (c->written == opt.line_len && watch(t, c, EPOLL_CTL_MOD, EPOLLIN) != 0)
            die("epoll_ctl");
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(t, c);
}

/* Reopen free slots (long, short), open the next batch (idle), expire slow exchanges. */
static void housekeeping(struct thread *t, uint64_t now) {
    for (int i = 0; i < t->count; i++) {
        struct conn *c = &t->conns[i];
        if (c->state == S_CONNECTING || c->state == S_WAITING) {
            if (opt.mode != MODE_LONG && now > c->deadline_ns) {
                conn_failed(t, c, ETIMEDOUT);
            }
        }
        if (c->state == S_FREE && opt.mode != MODE_IDLE)
            conn_open(t, c);   /* short: the next exchange; long: replace a failed one */
        if (c->state == S_FREE && opt.mode == MODE_IDLE && t->attempts < t->count &&
            t->attempts - t->opened - t->failed < IDLE_HANDSHAKES && i == t->attempts) {
            t->attempts++;
            if (conn_open(t, c) != 0)
                t->failed++;
        }
    }
}

static void snapshot(struct thread *t, uint64_t *done, uint64_t *errors) {
    *done = t->done;
    memcpy(errors, t->errors, sizeof t->errors);
}

static void *run_thread(void *arg) {
    struct thread *t = arg;
    struct epoll_event events[512];
    int seen_phase = 0;
    if (opt.mode == MODE_LONG) {
        for (int i = 0; i < t->count; i++)
            conn_open(t, &t->conns[i]);
    }
    for (;;) {
        int n = epoll_wait(t->epfd, events, 512, 5);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++)
            on_event(t, &events[i]);
        uint64_t now = now_ns();
        housekeeping(t, now);
        if (opt.mode == MODE_IDLE) {
            if (t->opened + t->failed >= t->count && seen_phase == 0) {
                seen_phase = 1;
                atomic_fetch_add(&phase, 1);
            }
            if (now >= t_end_ns)
                break;
            continue;
        }
        if (seen_phase == 0 && now >= t_measure_ns) {
            seen_phase = 1;
            snapshot(t, &t->done_at_start, t->errors_at_start);
        }
        if (now >= t_end_ns) {
            snapshot(t, &t->done_at_end, t->errors_at_end);
            break;
        }
    }
    return NULL;
}

static void sleep_until(uint64_t when) {
    struct timespec ts = {.tv_sec = (time_t)(when / 1000000000ull),
                          .tv_nsec = (long)(when % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void print_errors(struct thread *threads, int from_start, uint64_t *total) {
    printf("\"errors\":{");
    *total = 0;
    for (int e = 0; e < E_COUNT; e++) {
        uint64_t sum = 0;
        for (int i = 0; i < opt.threads; i++) {
            struct thread *t = &threads[i];
            sum += from_start ? t->errors[e] : t->errors_at_end[e] - t->errors_at_start[e];
        }
        *total += sum;
        printf("%s\"%s\":%llu", e ? "," : "", error_names[e], (unsigned long long)sum);
    }
    printf("}");
}

static void report_idle(struct thread *threads) {
    int opened = 0, failed = 0;
    uint64_t total;
    for (int i = 0; i < opt.threads; i++) {
        opened += threads[i].opened;
        failed += threads[i].failed;
    }
    printf("{\"mode\":\"idle\",\"host\":\"%s\",\"port\":%d,\"connections\":%d,"
           "\"opened\":%d,\"failed\":%d,\"seconds\":%.3f,",
           opt.host, opt.port, opt.connections, opened, failed,
           (double)(now_ns() - t_start_ns) / 1e9);
    print_errors(threads, 1, &total);
    printf(",\"errors_total\":%llu}\n", (unsigned long long)total);
    fflush(stdout);
}

static void report_load(struct thread *threads) {
    uint64_t done = 0, total;
    for (int i = 0; i < opt.threads; i++)
        done += threads[i].done_at_end - threads[i].done_at_start;
    double seconds = (double)(t_end_ns - t_measure_ns) / 1e9;
    printf("{\"mode\":\"%s\",\"host\":\"%s\",\"port\":%d,\"connections\":%d,\"threads\":%d,"
           "\"warmup\":%.3f,\"duration\":%.3f,\"requests\":%llu,\"rps\":%.1f,",
           opt.mode == MODE_LONG ? "long" : "short", opt.host, opt.port, opt.connections,
           opt.threads, opt.warmup, seconds, (unsigned long long)done, (double)done / seconds);
    print_errors(threads, 0, &total);
    printf(",\"errors_total\":%llu}\n", (unsigned long long)total);
    fflush(stdout);
}

static void parse_options(int argc, char **argv) {
    const char *payload = "ping";
    int ch;
    while ((ch = getopt(argc, argv, "h:p:c:d:w:m:P:t:T:S:M")) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.connections = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'P': payload = optarg; break;
        case 't': opt.threads = atoi(optarg); break;
        case 'T': opt.timeout = atof(optarg); break;
        case 'S': opt.sources = atoi(optarg); break;
        case 'M': opt.markers = 1; break;
        case 'm':
            if (strcmp(optarg, "long") == 0) opt.mode = MODE_LONG;
            else if (strcmp(optarg, "short") == 0) opt.mode = MODE_SHORT;
            else if (strcmp(optarg, "idle") == 0) opt.mode = MODE_IDLE;
            else usage();
            break;
        default: usage();
        }
    }
    if (opt.port <= 0 || opt.connections <= 0 || opt.threads <= 0 || opt.duration <= 0 ||
        opt.warmup < 0 || opt.sources <= 0 || strchr(payload, '\n'))
        usage();
    if (opt.threads > opt.connections)
        opt.threads = opt.connections;
    opt.line_len = strlen(payload) + 1;
    if (opt.line_len > REPLY_MAX)
        usage();
    opt.line = malloc(opt.line_len);
    memcpy(opt.line, payload, opt.line_len - 1);
    opt.line[opt.line_len - 1] = '\n';
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found;
        if (getaddrinfo(opt.host, NULL, &hints, &found) != 0)
            usage();
        target.sin_addr = ((struct sockaddr_in *)found->ai_addr)->sin_addr;
        freeaddrinfo(found);
    }
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(opt.connections + 64);
    struct thread *threads = calloc((size_t)opt.threads, sizeof *threads);
    for (int i = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        t->index = i;
        t->count = opt.connections / opt.threads + (i < opt.connections % opt.threads);
        t->conns = calloc((size_t)t->count, sizeof *t->conns);
        for (int j = 0; j < t->count; j++) {
            t->conns[j].fd = -1;
            t->conns[j].source = (uint32_t)(i + j * opt.threads);
        }
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (t->epfd < 0)
            die("epoll_create1");
    }
    t_start_ns = now_ns();
    t_measure_ns = t_start_ns + (uint64_t)(opt.warmup * 1e9);
    t_end_ns = t_measure_ns + (uint64_t)(opt.duration * 1e9);
    if (opt.mode == MODE_IDLE)
        t_end_ns = t_start_ns + (uint64_t)(opt.duration * 1e9);
    for (int i = 0; i < opt.threads; i++)
        if (pthread_create(&threads[i].id, NULL, run_thread, &threads[i]) != 0)
            die("pthread_create");
    if (opt.mode == MODE_IDLE) {
        while (atomic_load(&phase) < opt.threads && now_ns() < t_end_ns)
            usleep(2000);
        report_idle(threads);
    } else {
        sleep_until(t_measure_ns);
        if (opt.markers)
            fprintf(stderr, "measure start\n");
        sleep_until(t_end_ns);
        if (opt.markers)
            fprintf(stderr, "measure end\n");
    }
    for (int i = 0; i < opt.threads; i++)
        pthread_join(threads[i].id, NULL);
    if (opt.mode != MODE_IDLE)
        report_load(threads);
    return 0;
}
