/* benches/helper.c: the workload programs of the hivesup benchmark (benches/bench.py).
 *
 * Every timestamp the harness reports comes from here: a process records CLOCK_REALTIME
 * itself, right before it execs or right after the event (listen(), an orphan's exit),
 * so no figure depends on a sleep or on when the harness happened to look.
 * Compiled by bench.py into its temporary directory at every run; never committed.
 *
 *   helper stamp FILE LABEL CMD...        append "LABEL NS PID" to FILE, then exec CMD
 *   helper listen-after MS PORT FILE [notify|fd3]
 *                                         sleep MS, listen on 127.0.0.1:PORT, stamp
 *                                         "a_listen", then send READY=1 to $NOTIFY_SOCKET
 *                                         (sd_notify) or write a newline to fd 3 (s6's
 *                                         notification-fd), then wait forever
 *   helper ignore-term                    ignore SIGTERM, wait forever
 *   helper tcpcheck PORT                  exit 0 if 127.0.0.1:PORT accepts, else 1
 *   helper zombies N FILE DEADLINE_MS     make N orphans that exit at once; report when
 *                                         the last one exited, when the last one was
 *                                         reaped, and the peak zombie count; wait forever
 *   helper exec CMD...                    exec CMD (for s6's run.argv)
 *   helper forkexec CMD...                fork, exec CMD in the child, wait: the floor of
 *                                         "exec of the supervisor -> first program"
 *   helper crowd N FILE CMD...            as PID 1: start N idle "bystander" processes,
 *                                         write FILE, then run CMD (the supervisor, not
 *                                         PID 1 here) beside them; reap forever
 * Invoked as ".../run" (s6's service run file is a symlink to this binary) it reads its
 * arguments, one per line, from ./run.argv, so s6 pays one exec like every other peer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "helper: %s: %s\n", what, strerror(errno));
    exit(111);
}

/* One write with O_APPEND: lines from concurrent processes never interleave. */
static void stamp(const char *file, const char *label, int64_t t) {
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld %d\n", label, (long long)t, (int)getpid());
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die("open stamp file");
    if (write(fd, line, n) != n) die("write stamp");
    close(fd);
}

static void forever(void) {
    for (;;) pause();
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static int cmd_listen_after(long ms, int port, const char *file, const char *how) {
    sleep_ms(ms);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 128) < 0) die("listen");
    stamp(file, "a_listen", now_ns());
    if (how && strcmp(how, "notify") == 0) {
        const char *path = getenv("NOTIFY_SOCKET");
        if (!path || !*path) { fprintf(stderr, "helper: NOTIFY_SOCKET not set\n"); exit(111); }
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        size_t len = strlen(path);
        if (len >= sizeof u.sun_path) { fprintf(stderr, "helper: NOTIFY_SOCKET too long\n"); exit(111); }
        memcpy(u.sun_path, path, len);
        if (path[0] == '@') u.sun_path[0] = 0; /* abstract namespace, as sd_notify(3) */
        int n = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (n < 0) die("socket unix");
        const char msg[] = "READY=1";
        if (sendto(n, msg, sizeof msg - 1, 0, (struct sockaddr *)&u,
                   offsetof(struct sockaddr_un, sun_path) + len) < 0)
            die("sendto NOTIFY_SOCKET");
        close(n);
    } else if (how && strcmp(how, "fd3") == 0) {
        if (write(3, "\n", 1) != 1) die("write notification fd 3");
        close(3);
    }
    /* Accept and drop connections so a probe's connect never fills the backlog. */
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c >= 0) close(c);
    }
}

static int cmd_tcpcheck(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : 1;
}

/* A middle process forks N children blocked on a pipe and exits, so the N become orphans
 * of PID 1 while still alive. Closing the pipe's last write end then releases them all
 * at once; each records its exit time in a shared page. This process is not their parent,
 * so it watches with kill(pid, 0): 0 while alive or a zombie, ESRCH once reaped. */
static int cmd_zombies(int n, const char *file, long deadline_ms) {
    size_t sz = (size_t)n * (sizeof(pid_t) + sizeof(int64_t));
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap");
    pid_t *pids = mem;
    volatile int64_t *exited = (int64_t *)(pids + n);
    int p[2];
    if (pipe(p) < 0) die("pipe");
    int64_t t_fork = now_ns();
    pid_t mid = fork();
    if (mid < 0) die("fork");
    if (mid == 0) {
        close(p[1]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c < 0) { pids[i] = -1; continue; }
            if (c == 0) {
                char b;
                while (read(p[0], &b, 1) < 0 && errno == EINTR) {}
                exited[i] = now_ns();
                _exit(0);
            }
            pids[i] = c;
        }
        _exit(0);
    }
    close(p[0]);
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR) {}
    int made = 0;
    for (int i = 0; i < n; i++) made += pids[i] > 0;
    int64_t t_release = now_ns();
    close(p[1]);
    int64_t deadline = t_release + deadline_ms * 1000000LL;
    /* Watch with little CPU of our own (this machine has 2 cores, and a spinning watcher
     * would slow the very reaper it measures): wait for the orphans one by one, 20 us
     * apart, so the loop ends within ~0.1 ms of the last reap; every 20 ms one full pass
     * counts the zombies (exited, not yet reaped) for the peak. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int *left = malloc(sizeof(int) * n), nleft = 0, peak = 0;
    for (int i = 0; i < n; i++) if (pids[i] > 0) left[nleft++] = i;
    int64_t t_gone = 0, t = now_ns(), next_count = t;
    int j = 0;
    struct timespec nap = {0, 20000};
    while (j < nleft) {
        if (kill(pids[left[j]], 0) < 0 && errno == ESRCH) { j++; continue; }
        t = now_ns();
        if (t >= next_count) {
            int zombies = 0;
            for (int k = j; k < nleft; k++) {
                int i = left[k];
                if (exited[i] && !(kill(pids[i], 0) < 0 && errno == ESRCH)) zombies++;
            }
            if (zombies > peak) peak = zombies;
            next_count = t + 20000000LL;
        }
        if (t > deadline) break;
        nanosleep(&nap, NULL);
    }
    t = now_ns();
    if (j == nleft) t_gone = t;
    nleft -= j;
    int64_t t_last_exit = 0;
    int nexit = 0;
    for (int i = 0; i < n; i++) if (pids[i] > 0 && exited[i]) { nexit++; if (exited[i] > t_last_exit) t_last_exit = exited[i]; }
    FILE *f = fopen(file, "w");
    if (!f) die("open result");
    fprintf(f, "made=%d exited=%d left=%d peak=%d fork_ns=%lld release_ns=%lld last_exit_ns=%lld gone_ns=%lld end_ns=%lld\n",
            made, nexit, nleft, peak, (long long)t_fork, (long long)t_release,
            (long long)t_last_exit, (long long)t_gone, (long long)t);
    fclose(f);
    forever();
    return 0;
}

static int cmd_forkexec(char **argv) {
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) { execvp(argv[0], argv); die("exec"); }
    int st;
    for (;;) {
        pid_t w = wait(&st);
        if (w == c) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (w < 0 && errno != EINTR) return 111;
    }
}

/* A supervisor beside N processes that are none of its business, as on a busy host or
 * in a pod with other containers' processes: whatever it does per process on the
 * machine shows in its figures. The bystanders are children of this PID 1, in its
 * session; the supervisor gets a session of its own. */
static int cmd_crowd(int n, const char *file, char **argv) {
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c < 0) die("fork bystander");
        if (c == 0) {
            prctl(PR_SET_NAME, "bystander");
            forever();
        }
    }
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open crowd file");
    close(fd);
    pid_t c = fork();
    if (c < 0) die("fork supervisor");
    if (c == 0) {
        setsid();
        execvp(argv[0], argv);
        die("exec supervisor");
    }
    for (;;) {
        if (wait(NULL) < 0 && errno == ECHILD) pause();
    }
    return 0;
}

static int dispatch(int argc, char **argv);

/* s6's ./run: arguments from ./run.argv, one per line. */
static int run_from_file(void) {
    static char buf[4096];
    int fd = open("run.argv", O_RDONLY);
    if (fd < 0) die("open run.argv");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) die("read run.argv");
    close(fd);
    buf[n] = 0;
    static char *av[64];
    int ac = 0;
    av[ac++] = "helper";
    for (char *s = buf; *s && ac < 63;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        av[ac++] = s;
        if (!e) break;
        s = e + 1;
    }
    av[ac] = NULL;
    return dispatch(ac, av);
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) goto usage;
    const char *m = argv[1];
    if (!strcmp(m, "stamp") && argc >= 5) {
        int64_t t = now_ns();
        stamp(argv[2], argv[3], t);
        execvp(argv[4], argv + 4);
        die("exec");
    }
    if (!strcmp(m, "listen-after") && argc >= 5)
        return cmd_listen_after(atol(argv[2]), atoi(argv[3]), argv[4], argc > 5 ? argv[5] : NULL);
    if (!strcmp(m, "ignore-term")) {
        signal(SIGTERM, SIG_IGN);
        forever();
    }
    if (!strcmp(m, "tcpcheck") && argc >= 3) return cmd_tcpcheck(atoi(argv[2]));
    if (!strcmp(m, "zombies") && argc >= 5) return cmd_zombies(atoi(argv[2]), argv[3], atol(argv[4]));
    if (!strcmp(m, "forkexec") && argc >= 3) return cmd_forkexec(argv + 2);
    if (!strcmp(m, "crowd") && argc >= 5) return cmd_crowd(atoi(argv[2]), argv[3], argv + 4);
    if (!strcmp(m, "exec") && argc >= 3) {
        execvp(argv[2], argv + 2);
        die("exec");
    }
usage:
    fprintf(stderr, "usage: helper stamp|listen-after|ignore-term|tcpcheck|zombies|forkexec|crowd ...\n");
    return 100;
}

int main(int argc, char **argv) {
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (!strcmp(base, "run")) return run_from_file();
    return dispatch(argc, argv);
}
