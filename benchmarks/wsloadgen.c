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
 *   fanout open the connections as idle does, then connection 0 sends broadcast
 *          triggers: text frames of -B bytes that start with "B" and a sequence
 *          number; the server is expected to send each one to every connection
 *          (a Gateway's send_to_all). First -r rounds of one broadcast at a time: the
 *          time from the trigger's send until the last connection has it. Then
 *          DURATION seconds with -W broadcasts in flight: broadcasts completed per
 *          second (a broadcast completes when every connection has it).
 *   chat   open the connections as idle does (with -P join, say, so that the server
 *          puts each one in a group), then -s of them send: each sends a text frame
 *          "C<its index>..." and sends the next once that message came back to it
 *          (the server sends it to the sender's group, the sender included). Every
 *          frame any connection receives is a delivery; deliveries and messages per
 *          second are counted after the warm-up.
 *
 * -L adds latency percentiles (µs) to the output: the round trip of each echo (long)
 * or of each sender's message back to it (chat), in the measured window.
 *
 * Output: one JSON line on stdout (idle, fanout and chat first print a line when the
 * connections are open). With -M, "measure start" / "measure end" go to stderr at
 * the edges of the measured window (for sampling server CPU over it).
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

enum mode { MODE_LONG, MODE_IDLE, MODE_FANOUT, MODE_CHAT };
enum state { S_FREE, S_CONNECTING, S_HANDSHAKE, S_WAITING, S_IDLE, S_SENDER, S_FAILED };

#define BUF_MAX 4096
#define IDLE_HANDSHAKES 256
#define HIST_BUCKETS 4096
#define RING 4096              /* broadcasts tracked at once (fanout) */
#define TRIGGER_MAX 1024
/* RFC 6455 section 1.3: the sample key and its accept value. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

struct conn {
    int fd;
    enum state state;
    int index;                 /* position among all connections */
    size_t have;
    uint64_t sent_ns;          /* when the message in flight was sent (-L, chat) */
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
    int latency;              /* -L */
    int rounds;               /* -r: fanout latency rounds */
    int window;               /* -W: fanout broadcasts in flight */
    int broadcast_size;       /* -B: fanout trigger/broadcast size */
    int senders;              /* -s: chat senders */
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
    int ready;                /* idle-style opening finished (fanout, chat) */
    uint64_t frames, frames_at_start, frames_at_end;  /* frames received (chat) */
    uint64_t hist[HIST_BUCKETS];
};

static struct options opt = {
    .host = "127.0.0.1", .port = 0, .connections = 100, .threads = 1, .duration = 10.0,
    .warmup = 2.0, .mode = MODE_LONG, .payload = "ping", .path = "/", .markers = 0,
    .latency = 0, .rounds = 20, .window = 1, .broadcast_size = 100, .senders = 100};
static struct sockaddr_in target;
static char request[512];
static size_t request_len;
static unsigned char frame[256];
static size_t frame_len;
static unsigned char reply[256];
static size_t reply_len;
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_int phase;   /* 0 warm-up, 1 measuring, 2 finished */
static atomic_int threads_ready;
static int total_opened;   /* fanout: connections that must get each broadcast */
/* fanout: per broadcast (sequence number % RING), how many connections have it, when
 * its trigger was sent, when the first and the last connection got it. */
static atomic_int bc_count[RING];
static uint64_t bc_sent_ns[RING];
static _Atomic uint64_t bc_first_ns[RING], bc_last_ns[RING];
static atomic_ulong bc_completed;
static atomic_ulong bc_unexpected;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Latency histogram in microseconds: exact below 128 µs, then 64 buckets per power of
 * two (under 1.6% error). */
static int hist_index(uint64_t us) {
    if (us < 128)
        return (int)us;
    int top_bit = 63 - __builtin_clzll(us);
    int shift = top_bit - 6;
    int index = 128 + (shift - 1) * 64 + (int)((us >> shift) - 64);
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

static double hist_value(int index) {
    if (index < 128)
        return index;
    int shift = (index - 128) / 64 + 1;
    uint64_t low = (uint64_t)((index - 128) % 64 + 64) << shift;
    return (double)low + (double)(1ull << shift) / 2;
}

static void record(struct thread *t, uint64_t sent_ns) {
    t->hist[hist_index((now_ns() - sent_ns) / 1000)]++;
}

static double percentile(const uint64_t *hist, uint64_t total, double share) {
    uint64_t wanted = (uint64_t)(share * (double)total), seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > wanted)
            return hist_value(i);
    }
    return 0;
}

static void print_latency(struct thread *threads) {
    static uint64_t merged[HIST_BUCKETS];
    uint64_t total = 0;
    int highest = 0;
    for (int i = 0; i < opt.threads; i++)
        for (int b = 0; b < HIST_BUCKETS; b++) {
            merged[b] += threads[i].hist[b];
            total += threads[i].hist[b];
            if (threads[i].hist[b] && b > highest)
                highest = b;
        }
    printf(", \"latency_us\": {\"samples\": %llu, \"p50\": %.0f, \"p90\": %.0f, "
           "\"p99\": %.0f, \"p999\": %.0f, \"max\": %.0f}", (unsigned long long)total,
           percentile(merged, total, 0.5), percentile(merged, total, 0.9),
           percentile(merged, total, 0.99), percentile(merged, total, 0.999),
           total ? hist_value(highest) : 0.0);
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

/* A masked text frame of PAYLOAD (at most 125 bytes) into OUT; returns its size. */
static size_t masked_frame(unsigned char *out, const char *payload, size_t size) {
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    out[0] = 0x81;
    out[1] = 0x80 | (unsigned char)size;
    memcpy(out + 2, mask, 4);
    for (size_t i = 0; i < size; i++)
        out[6 + i] = (unsigned char)payload[i] ^ mask[i & 3];
    return 6 + size;
}

/* "<letter><8 digits>" then 'x' up to opt.broadcast_size bytes. */
static size_t tagged_frame(unsigned char *out, char letter, unsigned long number) {
    char text[TRIGGER_MAX];
    size_t size = (size_t)opt.broadcast_size;
    memset(text, 'x', size);
    char head[16];
    snprintf(head, sizeof head, "%c%08lu", letter, number % 100000000ul);
    memcpy(text, head, 9);
    return masked_frame(out, text, size);
}

static long tag_number(const char *payload, size_t size) {
    if (size < 9)
        return -1;
    long value = 0;
    for (int i = 1; i < 9; i++) {
        if (payload[i] < '0' || payload[i] > '9')
            return -1;
        value = value * 10 + (payload[i] - '0');
    }
    return value;
}

static atomic_int group_has_sender[1024];
static atomic_int senders_chosen;
static atomic_int chat_go;

static void send_chat(struct thread *t, struct conn *c) {
    unsigned char out[TRIGGER_MAX + 8];
    size_t size = tagged_frame(out, 'C', (unsigned long)c->index);
    c->sent_ns = now_ns();
    if (send_all(c->fd, out, size))
        fail(t, c);
}

/* The first frame on a connection that is opening (fanout, chat): it is open. In chat
 * mode a reply "joined G" names its group; the first connection of each group sends
 * (up to -s senders). */
static void opened(struct thread *t, struct conn *c, const char *payload, size_t size) {
    c->state = S_IDLE;
    t->opened++;
    if (opt.mode != MODE_CHAT)
        return;
    int group = -1;
    if (size > 7 && !memcmp(payload, "joined ", 7)) {
        group = 0;   /* the payload is not NUL-terminated: read its digits only */
        for (size_t i = 7; i < size && payload[i] >= '0' && payload[i] <= '9'; i++)
            group = (group * 10 + (payload[i] - '0')) & 1023;
    }
    int first = group < 0 ? c->index < opt.senders
                          : !atomic_exchange(&group_has_sender[group], 1);
    if (first && atomic_fetch_add(&senders_chosen, 1) < opt.senders)
        c->state = S_SENDER;
}

static void on_frame(struct thread *t, struct conn *c, const char *payload, size_t size) {
    if (c->state == S_WAITING) {
        opened(t, c, payload, size);
        return;
    }
    t->frames++;
    if (opt.mode == MODE_FANOUT) {
        long number = payload[0] == 'B' ? tag_number(payload, size) : -1;
        if (number < 0) {
            atomic_fetch_add(&bc_unexpected, 1);
            return;
        }
        int slot = (int)(number % RING);
        uint64_t now = now_ns(), none = 0;
        atomic_compare_exchange_strong(&bc_first_ns[slot], &none, now);
        if (atomic_fetch_add(&bc_count[slot], 1) + 1 == total_opened) {
            atomic_store(&bc_last_ns[slot], now);
            atomic_fetch_add(&bc_completed, 1);
        }
        return;
    }
    /* chat: a sender whose own message came back sends the next */
    if (c->state == S_SENDER && payload[0] == 'C' && tag_number(payload, size) == c->index) {
        t->done++;
        if (opt.latency && atomic_load(&phase) == 1)
            record(t, c->sent_ns);
        send_chat(t, c);
    }
}

/* Every whole frame in the buffer (server frames are not masked). */
static void on_frames(struct thread *t, struct conn *c) {
    size_t at = 0;
    while (c->have - at >= 2 && c->state != S_FAILED) {
        const unsigned char *p = (const unsigned char *)c->buf + at;
        size_t size = p[1] & 0x7f, head = 2;
        if (size == 126) {
            if (c->have - at < 4)
                break;
            size = ((size_t)p[2] << 8) | p[3];
            head = 4;
        } else if (size == 127 || (p[1] & 0x80)) {
            fail(t, c);
            return;
        }
        if (c->have - at < head + size)
            break;
        if (size > 0)
            on_frame(t, c, (const char *)p + head, size);
        at += head + size;
    }
    if (c->state == S_FAILED)
        return;
    memmove(c->buf, c->buf + at, c->have - at);
    c->have -= at;
    if (c->have == BUF_MAX)
        fail(t, c);
}

static void on_event(struct thread *t, struct conn *c, uint32_t events) {
    if (c->state == S_FAILED)
        return;
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
        c->sent_ns = now_ns();
        if (send_all(c->fd, frame, frame_len))
            fail(t, c);
        return;
    }
    if (opt.mode == MODE_FANOUT || opt.mode == MODE_CHAT) {
        on_frames(t, c);
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
    if (opt.latency && atomic_load(&phase) == 1)
        record(t, c->sent_ns);
    c->sent_ns = now_ns();
    if (send_all(c->fd, frame, frame_len))
        fail(t, c);
}

static void *run_thread(void *arg) {
    struct thread *t = arg;
    struct epoll_event events[256];
    int next = 0, in_flight = 0, chatting = 0;
    int opening_only = opt.mode != MODE_LONG;   /* at most IDLE_HANDSHAKES at once */
    t->epfd = epoll_create1(0);
    if (t->epfd < 0)
        die("epoll_create1");
    for (;;) {
        if (!opening_only) {
            for (; next < t->count; next++)
                open_conn(t, &t->conns[next]);
        } else {
            in_flight = t->attempts - t->opened - t->failed;
            for (; next < t->count && in_flight < IDLE_HANDSHAKES; next++, in_flight++)
                open_conn(t, &t->conns[next]);
        }
        int ready = epoll_wait(t->epfd, events, 256, opt.mode == MODE_LONG ? 100 : 5);
        for (int i = 0; i < ready; i++)
            on_event(t, events[i].data.ptr, events[i].events);
        int p = atomic_load(&phase);
        if (p >= 1 && !t->marked) {
            t->done_at_start = t->done;
            t->frames_at_start = t->frames;
            t->marked = 1;
        }
        if (p == 2) {
            t->done_at_end = t->done;
            t->frames_at_end = t->frames;
            break;
        }
        if (opening_only && !t->ready && t->opened + t->failed == t->count &&
            next == t->count) {
            if (opt.mode == MODE_IDLE)
                break;
            t->ready = 1;
            atomic_fetch_add(&threads_ready, 1);
        }
        if (opt.mode == MODE_CHAT && !chatting && atomic_load(&chat_go)) {
            chatting = 1;
            for (int i = 0; i < t->count; i++)
                if (t->conns[i].state == S_SENDER)
                    send_chat(t, &t->conns[i]);
        }
    }
    return NULL;
}

static void usage(void) {
    fprintf(stderr, "usage: wsloadgen -p PORT [-h HOST] [-c CONNECTIONS] [-t THREADS] "
                    "[-d SECONDS] [-w WARMUP] [-m long|idle|fanout|chat] [-P PAYLOAD] "
                    "[-u PATH] [-M] [-L] [-r ROUNDS] [-W WINDOW] [-B SIZE] [-s SENDERS]\n");
    exit(2);
}

static void sleep_s(double seconds) {
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Wait until every thread opened its connections; print the "open" JSON line. */
static int wait_open(struct thread *threads) {
    while (atomic_load(&threads_ready) < opt.threads)
        sleep_s(0.01);
    int opened = 0, failed = 0;
    for (int i = 0; i < opt.threads; i++) {
        opened += threads[i].opened;
        failed += threads[i].failed;
    }
    printf("{\"mode\": \"open\", \"opened\": %d, \"failed\": %d, \"seconds\": %.3f}\n",
           opened, failed, (double)(now_ns() - t_start_ns) / 1e9);
    fflush(stdout);
    return opened;
}

static struct conn *first_open(struct conn *conns) {
    for (int i = 0; i < opt.connections; i++)
        if (conns[i].state == S_IDLE)
            return &conns[i];
    fprintf(stderr, "wsloadgen: no connection is open\n");
    exit(1);
}

static int trigger(struct conn *sender, unsigned long number) {
    unsigned char out[TRIGGER_MAX + 8];
    int slot = (int)(number % RING);
    atomic_store(&bc_count[slot], 0);
    atomic_store(&bc_first_ns[slot], 0);
    atomic_store(&bc_last_ns[slot], 0);
    size_t size = tagged_frame(out, 'B', number);
    bc_sent_ns[slot] = now_ns();
    return send(sender->fd, out, size, MSG_NOSIGNAL) == (ssize_t)size ? 0 : -1;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_series(const char *name, double *values, int count) {
    qsort(values, (size_t)count, sizeof *values, compare_double);
    printf(", \"%s\": {\"min\": %.2f, \"p50\": %.2f, \"max\": %.2f}", name,
           count ? values[0] : 0.0, count ? values[count / 2] : 0.0,
           count ? values[count - 1] : 0.0);
}

/* fanout: rounds of one broadcast, then DURATION seconds with WINDOW in flight. */
static int run_fanout(struct thread *threads, struct conn *conns) {
    total_opened = wait_open(threads);
    struct conn *sender = first_open(conns);
    double *last = calloc((size_t)opt.rounds + 1, sizeof *last);
    double *first = calloc((size_t)opt.rounds + 1, sizeof *first);
    unsigned long number = 0;
    int done = 0, timeouts = 0;
    for (int r = 0; r < opt.rounds; r++, number++) {
        unsigned long before = atomic_load(&bc_completed);
        if (trigger(sender, number))
            die("send trigger");
        uint64_t give_up = now_ns() + 10000000000ull;
        while (atomic_load(&bc_completed) == before && now_ns() < give_up)
            sleep_s(0.0002);
        int slot = (int)(number % RING);
        if (atomic_load(&bc_completed) == before) {
            timeouts++;
            continue;
        }
        last[done] = (double)(atomic_load(&bc_last_ns[slot]) - bc_sent_ns[slot]) / 1e6;
        first[done] = (double)(atomic_load(&bc_first_ns[slot]) - bc_sent_ns[slot]) / 1e6;
        done++;
        sleep_s(0.05);   /* let the servers settle between rounds */
    }
    unsigned long completed_start = atomic_load(&bc_completed), sent_start = number;
    if (opt.markers)
        fprintf(stderr, "measure start\n");
    t_measure_ns = now_ns();
    uint64_t stop = t_measure_ns + (uint64_t)(opt.duration * 1e9);
    while (now_ns() < stop) {
        while (number - sent_start - (atomic_load(&bc_completed) - completed_start)
               < (unsigned long)opt.window) {
            if (trigger(sender, number++))
                die("send trigger");
        }
        sleep_s(0.0001);
    }
    unsigned long completed = atomic_load(&bc_completed) - completed_start;
    t_end_ns = now_ns();
    if (opt.markers)
        fprintf(stderr, "measure end\n");
    atomic_store(&phase, 2);
    uint64_t frames = 0;
    for (int i = 0; i < opt.threads; i++) {
        pthread_join(threads[i].id, NULL);
        frames += threads[i].frames;
    }
    double seconds = (double)(t_end_ns - t_measure_ns) / 1e9;
    printf("{\"mode\": \"fanout\", \"connections\": %d, \"size\": %d, \"rounds\": %d, "
           "\"timeouts\": %d", total_opened, opt.broadcast_size, done, timeouts);
    print_series("last_ms", last, done);
    print_series("first_ms", first, done);
    printf(", \"window\": %d, \"sent\": %lu, \"completed\": %lu, \"seconds\": %.3f, "
           "\"rate\": %.1f, \"deliveries\": %llu, \"unexpected\": %lu}\n", opt.window,
           number - sent_start, completed, seconds, (double)completed / seconds,
           (unsigned long long)frames, atomic_load(&bc_unexpected));
    return timeouts ? 1 : 0;
}

static int run_chat(struct thread *threads) {
    int open = wait_open(threads);
    atomic_store(&chat_go, 1);
    sleep_s(opt.warmup);
    if (opt.markers)
        fprintf(stderr, "measure start\n");
    t_measure_ns = now_ns();
    atomic_store(&phase, 1);
    sleep_s(opt.duration);
    atomic_store(&phase, 2);
    t_end_ns = now_ns();
    if (opt.markers)
        fprintf(stderr, "measure end\n");
    uint64_t messages = 0, frames = 0, errors = 0;
    for (int i = 0; i < opt.threads; i++) {
        pthread_join(threads[i].id, NULL);
        messages += threads[i].done_at_end - threads[i].done_at_start;
        frames += threads[i].frames_at_end - threads[i].frames_at_start;
        errors += threads[i].errors;
    }
    double seconds = (double)(t_end_ns - t_measure_ns) / 1e9;
    int senders = atomic_load(&senders_chosen);
    printf("{\"mode\": \"chat\", \"connections\": %d, \"senders\": %d, \"messages\": %llu, "
           "\"deliveries\": %llu, \"seconds\": %.3f, \"rate\": %.1f, "
           "\"delivery_rate\": %.1f, \"errors\": %llu", open,
           senders < opt.senders ? senders : opt.senders, (unsigned long long)messages,
           (unsigned long long)frames, seconds, (double)messages / seconds,
           (double)frames / seconds, (unsigned long long)errors);
    if (opt.latency)
        print_latency(threads);
    printf("}\n");
    return 0;
}

int main(int argc, char **argv) {
    int ch;
    while ((ch = getopt(argc, argv, "h:p:c:t:d:w:m:P:u:MLr:W:B:s:")) != -1) {
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
        case 'L': opt.latency = 1; break;
        case 'r': opt.rounds = atoi(optarg); break;
        case 'W': opt.window = atoi(optarg); break;
        case 'B': opt.broadcast_size = atoi(optarg); break;
        case 's': opt.senders = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "long")) opt.mode = MODE_LONG;
            else if (!strcmp(optarg, "idle")) opt.mode = MODE_IDLE;
            else if (!strcmp(optarg, "fanout")) opt.mode = MODE_FANOUT;
            else if (!strcmp(optarg, "chat")) opt.mode = MODE_CHAT;
            else usage();
            break;
        default: usage();
        }
    }
    if (!opt.port || opt.connections < 1 || opt.threads < 1 || opt.window < 1 ||
        opt.window >= RING || opt.broadcast_size < 9 || opt.broadcast_size > 125)
        usage();
    struct rlimit limit = {.rlim_cur = (rlim_t)opt.connections + 64,
                           .rlim_max = (rlim_t)opt.connections + 64};
    struct rlimit current;
    getrlimit(RLIMIT_NOFILE, &current);
    if (current.rlim_max > limit.rlim_max)
        limit.rlim_max = current.rlim_max;
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
    for (int i = 0; i < opt.connections; i++)
        conns[i].index = i;
    int per = opt.connections / opt.threads, extra = opt.connections % opt.threads, first = 0;
    t_start_ns = now_ns();
    for (int i = 0; i < opt.threads; i++) {
        threads[i].count = per + (i < extra);
        threads[i].conns = conns + first;
        first += threads[i].count;
        if (pthread_create(&threads[i].id, NULL, run_thread, &threads[i]))
            die("pthread_create");
    }
    if (opt.mode == MODE_FANOUT)
        return run_fanout(threads, conns);
    if (opt.mode == MODE_CHAT)
        return run_chat(threads);
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
        sleep_s(opt.duration);
        return failed ? 1 : 0;
    }
    sleep_s(opt.warmup);
    if (opt.markers)
        fprintf(stderr, "measure start\n");
    t_measure_ns = now_ns();
    atomic_store(&phase, 1);
    sleep_s(opt.duration);
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
           "\"rate\": %.1f, \"errors\": %llu", opt.connections, (unsigned long long)total,
           seconds, (double)total / seconds, (unsigned long long)errors);
    if (opt.latency)
        print_latency(threads);
    printf("}\n");
    return 0;
}
