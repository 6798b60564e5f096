/*
 * vsinit: the native init forker.  Clones the PID 1 ("G") of an unprivileged context
 * for the supervisor and runs G's setup up to the execve of init, in C.
 *
 * Why C: a G cloned from a Python process pays for being Python, not for its system
 * calls: clone3 copies the page tables of a ~16 MiB interpreter (0.6 ms), G takes ~500
 * copy-on-write faults while its interpreter runs the setup (~1 ms), the setup's
 * Python code itself, and execve tears the interpreter's memory down again (~1 ms).
 * That was a third of a vx.start (issue 13).
 *
 * What it does is initforker.py's serve() and spawn.run_init()/rootfs.setup_unprivileged()
 * for the plans that use none of their rarer parts: the supervisor sends only an
 * unprivileged context with the default seccomp filter, no veth pair, no spec mounts,
 * no API filesystems, no notify socket and no shared template here (supervisor.py,
 * NativeForker.takes); everything else goes to the Python forker or the in-process
 * fork as before.  Every list (masked paths, devices, links, rlimits, sysctls, mount
 * options) comes in the plan from the Python modules that own it (rootfs.py,
 * limits.py, seccomp.py): this file holds the order of the steps, not their data.
 *
 * Protocol (SOCK_SEQPACKET, one datagram each way): the request is NUL-separated
 * "key=value" entries with the descriptors in SCM_RIGHTS ("fd.NAME=INDEX" names them);
 * the answer is "PID" (then, when asked for, "\n" and the forker's phases as JSON) or
 * "E:message".  G reports like spawn.run_init: one "Kind: message" line on the
 * close-on-exec error pipe, "@phases [...]" first when asked; end of file means init
 * was exec'd.
 *
 * Started as `vsinit --serve FD SUPERVISOR_PID` (posix_spawn); exits at the end of file
 * on FD, and with its supervisor (parent death signal).
 *
 * `vsinit --enter FD` is the entry server's C twin (entercore.serve, enter.EntryServer):
 * it clones E1 (CLONE_PARENT, born in the context's cgroup2 group), and E1 and E2 run
 * entercore.run_e1/_e2's steps in C: join the v1 groups, setns into the kept handles,
 * become the guest's root, bounding set, seccomp filter, capabilities, fork E2 into the
 * PID namespace; E2: session, stdio, controlling terminal, rlimits, exec.  Same
 * protocol as above; the plan is entercore.Plan's fields (enter.NativeEntryServer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <linux/capability.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_IN_ROOT 0x10

#define REQUEST_MAX (1 << 20)
#define ENTRIES_MAX 1024
#define FDS_MAX 64
#define PHASES_MAX 40

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

struct open_how_v0 {
    uint64_t flags, mode, resolve;
};

static const char *load_filter(void);

/* --- the request --------------------------------------------------------------------- */

static char *entries[ENTRIES_MAX];
static int n_entries;
static int fds[FDS_MAX];
static int n_fds;

static const char *get(const char *key) {
    size_t k = strlen(key);
    for (int i = 0; i < n_entries; i++)
        if (strncmp(entries[i], key, k) == 0 && entries[i][k] == '=')
            return entries[i] + k + 1;
    return NULL;
}

/* the i-th value of a repeated key, NULL past the last */
static const char *get_nth(const char *key, int nth) {
    size_t k = strlen(key);
    for (int i = 0; i < n_entries; i++)
        if (strncmp(entries[i], key, k) == 0 && entries[i][k] == '=' && nth-- == 0)
            return entries[i] + k + 1;
    return NULL;
}

static long long get_int(const char *key, long long dflt) {
    const char *v = get(key);
    return v ? strtoll(v, NULL, 10) : dflt;
}

/* descriptor "fd.NAME" (the nth of a repeated name), -1 if none */
static int get_fd(const char *name, int nth) {
    char key[64];
    snprintf(key, sizeof key, "fd.%s", name);
    const char *v = get_nth(key, nth);
    if (!v)
        return -1;
    long i = strtol(v, NULL, 10);
    return i >= 0 && i < n_fds ? fds[i] : -1;
}

/* --- phases (phases.py: [name, begin, end], seconds since the epoch) ------------------ */

static struct { const char *name; double begin, end; } phases[PHASES_MAX];
static int n_phases, phases_on;
static double last_mark;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mark(const char *name) {
    if (!phases_on)
        return;
    double t = now();
    if (n_phases < PHASES_MAX) {
        phases[n_phases].name = name;
        phases[n_phases].begin = last_mark;
        phases[n_phases].end = t;
        n_phases++;
    }
    last_mark = t;
}

static int phases_json(char *out, size_t size) {
    size_t n = 0;
    n += snprintf(out + n, size - n, "[");
    for (int i = 0; i < n_phases && n < size; i++)
        n += snprintf(out + n, size - n, "%s[\"%s\", %.6f, %.6f]", i ? ", " : "",
                      phases[i].name, phases[i].begin, phases[i].end);
    if (n < size)
        n += snprintf(out + n, size - n, "]");
    return n < size ? (int)n : -1;
}

/* --- G's error reports ------------------------------------------------------------------ */

static int err_w = -1;
static const char *vdir = "";

static void fail(const char *kind, const char *fmt, ...) {
    char msg[4000];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(msg, sizeof msg, "%s: ", kind);
    vsnprintf(msg + n, sizeof msg - n - 1, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    size_t len = strlen(msg);
    msg[len++] = '\n';
    if (write(err_w, msg, len) < 0) { /* nobody left to tell */ }
    _exit(127);
}

/* a failed step of the /proc, /sys, /dev set-up, as rootfs.setup_unprivileged says it */
static void fail_mount(const char *what) {
    fail("MountError", "cannot set up /proc, /sys or /dev in %s: %s: %s", vdir, what,
         strerror(errno));
}

static void write_all(int fd, const char *s, size_t n, const char *what) {
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fail("StartError", "%s: %s", what, strerror(errno));
        }
        s += w;
        n -= w;
    }
}

static void expect_byte(int fd, char want) {
    char c = 0;
    ssize_t r;
    do
        r = read(fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r != 1 || c != want)
        fail("StartError", "the supervisor gave up on this context");
}

/* --- paths inside the vserver's root (confine.py) --------------------------------------- */

static char fdpath_buf[4][32];
static int fdpath_next;

static const char *fdpath(int fd) {
    char *b = fdpath_buf[fdpath_next++ % 4];
    snprintf(b, 32, "/proc/self/fd/%d", fd);
    return b;
}

static int open_in_root(int rootfd, const char *path, int flags) {
    struct open_how_v0 how = {
        .flags = (uint64_t)(flags | O_CLOEXEC), .mode = 0,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    while (*path == '/')
        path++;
    if (!*path)
        path = ".";
    int fd;
    do
        fd = syscall(SYS_openat2, rootfd, path, &how, sizeof how);
    while (fd < 0 && errno == EAGAIN);
    return fd;
}

#define SYMLINKS_MAX 40

/* "a/b/c" of the first n of parts into out (size PATH_MAX); -1 (ENAMETOOLONG) if too long */
static int join_parts(char *const *parts, int n, char *out) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        int w = snprintf(out + len, PATH_MAX - len, "%s%s", i ? "/" : "", parts[i]);
        if (w < 0 || (size_t)w >= PATH_MAX - len) {
            errno = ENAMETOOLONG;
            return -1;
        }
        len += w;
    }
    return 0;
}

/* O_PATH fd of directory `path` inside rootfd, making missing components (mode 0755):
 * confine.ensure_dir.  Every prefix is resolved from rootfd, so a symlink (a guest's
 * own, also a dangling one, whose target is made) is followed as if rootfd were "/". */
static int ensure_dir_at(int rootfd, const char *path, int depth) {
    static char bufs[SYMLINKS_MAX + 2][PATH_MAX];
    char *buf = bufs[depth], *parts[PATH_MAX / 2];
    char prefix[PATH_MAX], target[PATH_MAX];
    int n = 0;
    if (strlen(path) >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    char *save = NULL;
    for (char *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (strcmp(t, "..") == 0) {
            if (n)
                n--;   /* ".." at the root stays at the root, as RESOLVE_IN_ROOT does */
        } else if (strcmp(t, ".") != 0) {
            parts[n++] = t;
        }
    }
    for (int i = 0; i < n; i++) {
        if (join_parts(parts, i + 1, prefix) < 0)
            return -1;
        int fd = open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
        if (fd >= 0) {
            close(fd);
            continue;
        }
        if (errno != ENOENT || join_parts(parts, i, prefix) < 0)
            return -1;
        int parent = open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
        if (parent < 0)
            return -1;
        if (mkdirat(parent, parts[i], 0755) == 0) {
            close(parent);
            continue;
        }
        if (errno != EEXIST) {
            int e = errno;
            close(parent);
            errno = e;
            return -1;
        }
        /* a dangling symlink: make what it points to, inside the root */
        ssize_t len = readlinkat(parent, parts[i], target, sizeof target - 1);
        int e = errno;
        close(parent);
        if (len < 0) {
            errno = e == EINVAL ? EEXIST : e;   /* not a symlink after all */
            return -1;
        }
        if (depth > SYMLINKS_MAX) {     /* confine.ensure_dir's count */
            errno = ELOOP;
            return -1;
        }
        target[len] = '\0';
        char next[PATH_MAX], rest[PATH_MAX];
        if ((target[0] == '/' ? (prefix[0] = '\0', 0) : join_parts(parts, i, prefix)) < 0 ||
            join_parts(parts + i + 1, n - i - 1, rest) < 0)
            return -1;
        int w = snprintf(next, sizeof next, "%s/%s/%s", prefix, target, rest);
        if (w < 0 || (size_t)w >= sizeof next) {
            errno = ENAMETOOLONG;
            return -1;
        }
        return ensure_dir_at(rootfd, next, depth + 1);
    }
    if (join_parts(parts, n, prefix) < 0)
        return -1;
    return open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
}

static int ensure_dir(int rootfd, const char *path) {
    return ensure_dir_at(rootfd, path, 0);
}

static int ensure_file(int rootfd, const char *path) {
    int fd = open_in_root(rootfd, path, O_PATH);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    char dir[256];
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof dir) {
        errno = EINVAL;
        return -1;
    }
    memcpy(dir, path, slash - path);
    dir[slash - path] = '\0';
    int pfd = ensure_dir(rootfd, dir);
    if (pfd < 0)
        return -1;
    fd = openat(pfd, slash + 1, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    int e = errno;
    close(pfd);
    if (fd < 0) {
        errno = e;
        return -1;
    }
    close(fd);
    return open_in_root(rootfd, path, O_PATH);
}

static void mount_at(int rootfd, const char *rel, const char *src, const char *fstype,
                     unsigned long flags, const char *data, int file) {
    int fd = file ? ensure_file(rootfd, rel) : ensure_dir(rootfd, rel);
    if (fd < 0)
        fail_mount(rel);
    if (mount(src, fdpath(fd), fstype, flags, data) < 0)
        fail_mount(rel);
    close(fd);
}

static void remount_ro(int rootfd, const char *rel, unsigned long flags) {
    int fd = open_in_root(rootfd, rel, O_PATH);
    if (fd < 0 || mount(NULL, fdpath(fd), NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        fail_mount(rel);
    close(fd);
}

static void bind_self(int rootfd, const char *rel, unsigned long flags) {
    int fd = open_in_root(rootfd, rel, O_PATH);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        fail_mount(rel);
    }
    const char *p = fdpath(fd);
    if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0)
        fail_mount(rel);
    close(fd);
    if (flags)
        remount_ro(rootfd, rel, flags);   /* looked up again: the fd names the mount below */
}

/* --- steps G and E1/E2 share (limits.py, creds.drop_bounding_set) --------------------- */

/* the plan's "rlimit=RESOURCE:SOFT:HARD" entries (negative: unlimited); 0, or -1 with
 * errno and the failed entry in *what */
static int apply_rlimits(const char **what) {
    const char *kv;
    for (int i = 0; (kv = get_nth("rlimit", i)); i++) {
        long long res = 0, soft = 0, hard = 0;
        *what = kv;
        if (sscanf(kv, "%lld:%lld:%lld", &res, &soft, &hard) != 3) {
            errno = EINVAL;
            return -1;
        }
        struct rlimit rl = {soft < 0 ? RLIM_INFINITY : (rlim_t)soft,
                            hard < 0 ? RLIM_INFINITY : (rlim_t)hard};
        if (setrlimit((int)res, &rl) < 0)
            return -1;
    }
    return 0;
}

/* leave exactly the capabilities of the bit mask `keep` in the bounding set, clear the
 * ambient set; 0, or -1 with errno and the failed call in *what */
static int drop_bounding_set(unsigned long long keep, const char **what) {
    for (int cap = 0; cap < 64; cap++) {
        if (keep >> cap & 1)
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break;  /* past the kernel's last capability */
            *what = "prctl(PR_CAPBSET_DROP)";
            return -1;
        }
    }
    *what = "prctl(PR_CAP_AMBIENT_CLEAR_ALL)";
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ? -1 : 0;
}

/* --- G's steps (spawn.run_init, rootfs.setup_unprivileged) ------------------------------ */

static void make_dev(int rootfd, int console) {
    mount_at(rootfd, "dev", "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC, get("dev_opts"), 0);
    int devfd = open_in_root(rootfd, "dev", O_PATH | O_DIRECTORY);
    if (devfd < 0)
        fail_mount("dev");
    const char *name, *first = get_nth("device", 0);
    /* A mount sits on a name, not on an inode: the mount points (and /dev/console's)
     * are hard links of one empty file (rootfs._make_dev), all linked before the first
     * bind: link(2) does not cross it */
    if (first) {
        int fd = openat(devfd, first, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0)
            fail_mount(first);
        close(fd);
        for (int i = 1; (name = get_nth("device", i)); i++)
            if (linkat(devfd, first, devfd, name, 0) < 0)
                fail_mount(name);
        if (console && linkat(devfd, first, devfd, "console", 0) < 0)
            fail_mount("console");
    }
    for (int i = 0; (name = get_nth("device", i)); i++) {
        char src[64];
        int fd = openat(devfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        snprintf(src, sizeof src, "/dev/%s", name);
        if (fd < 0 || mount(src, fdpath(fd), NULL, MS_BIND, NULL) < 0)
            fail_mount(src);
        close(fd);
    }
    for (int i = 0; (name = get_nth("link", i)); i++) {
        const char *tab = strchr(name, '\t');
        char link[64];
        if (!tab || (size_t)(tab - name) >= sizeof link) {
            errno = EINVAL;
            fail_mount(name);
        }
        memcpy(link, name, tab - name);
        link[tab - name] = '\0';
        if (symlinkat(tab + 1, devfd, link) < 0)
            fail_mount(link);
    }
    if (mkdirat(devfd, "pts", 0755) < 0 || mkdirat(devfd, "shm", 0777) < 0 ||
        fchmodat(devfd, "shm", 01777, 0) < 0)
        fail_mount("dev/pts, dev/shm");
    close(devfd);
    mount_at(rootfd, "dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, get("devpts_opts"), 0);
    bind_self(rootfd, "dev/shm", MS_NOSUID | MS_NODEV);
}

static void mask_kernel_interfaces(int rootfd, int new_net) {
    const unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    const char *source = get("mask_source");
    int devfd = open_in_root(rootfd, "dev", O_PATH | O_DIRECTORY);
    if (devfd < 0 || !source)
        fail_mount("dev");
    int empty = -1, made = 0;
    const char *rel;
    for (int i = 0; (rel = get_nth("mask", i)); i++) {
        int fd = open_in_root(rootfd, rel, O_PATH);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                continue;
            fail_mount(rel);
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
            fail_mount(rel);
        if (!S_ISDIR(st.st_mode)) {
            if (mount("/dev/null", fdpath(fd), NULL, MS_BIND, NULL) < 0)
                fail_mount(rel);
        } else if (empty < 0) {
            if (mkdirat(devfd, source, 0555) < 0)
                fail_mount(source);
            made = 1;
            int src = openat(devfd, source, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (src < 0 || mount(fdpath(src), fdpath(fd), NULL, MS_BIND, NULL) < 0)
                fail_mount(rel);
            close(src);
            remount_ro(rootfd, rel, ro);
            empty = open_in_root(rootfd, rel, O_PATH);
            if (empty < 0)
                fail_mount(rel);
        } else if (mount(fdpath(empty), fdpath(fd), NULL, MS_BIND, NULL) < 0) {
            /* a bind copies the read-only flags of its source: no remount each */
            fail_mount(rel);
        }
        close(fd);
    }
    if (empty >= 0)
        close(empty);
    if (made && unlinkat(devfd, source, AT_REMOVEDIR) < 0)
        fail_mount(source);
    close(devfd);
    if (new_net)
        /* a bind copies the flags of its source: take /proc/sys/net before /proc/sys goes ro */
        bind_self(rootfd, "proc/sys/net", 0);
    for (int i = 0; (rel = get_nth("ro", i)); i++)
        bind_self(rootfd, rel, ro);
}

static void recv_root_fds(int sock, int want, int *out) {
    char c = 0;
    struct iovec iov = {&c, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t r;
    do
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    int got = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); r == 1 && cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (int i = 0; i < n; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (got < want)
                    out[got] = fd;
                else
                    close(fd);  /* more than asked for: none of them may reach init */
                got++;
            }
        }
    if (r != 1 || c != 'f' || got != want || (msg.msg_flags & MSG_CTRUNC))
        fail("StartError", "the supervisor gave up on this context");
}

static void pivot(void) {
    if (syscall(SYS_pivot_root, ".", ".") == 0) {
        if (umount2(".", MNT_DETACH) < 0)
            fail("MountError", "pivot_root into %s: %s", vdir, strerror(errno));
    } else if (errno == EINVAL) {
        /* the old root is not a mount (initramfs rootfs): move and chroot instead */
        if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0)
            fail("MountError", "pivot_root into %s: %s", vdir, strerror(errno));
    } else {
        fail("MountError", "pivot_root into %s: %s", vdir, strerror(errno));
    }
    if (chdir("/") < 0)
        fail("MountError", "chdir / in %s: %s", vdir, strerror(errno));
}

static void g_main(int mapped_r) {
    err_w = get_fd("err_w", 0);
    int ready_w = get_fd("ready_w", 0), go_r = get_fd("go_r", 0), sock = get_fd("sock", 0);
    int console = get_fd("console", 0), memcg = get_fd("memcg", 0);
    int new_net = get_int("new_net", 0), new_time = get_int("new_time", 0);
    int host_sys = get_int("host_sys", 0);
    vdir = get("vdir") ? get("vdir") : "";
    n_phases = 0;
    last_mark = now();
    if (memcg >= 0) {
        /* before anything else: what G allocates from here on is the context's */
        write_all(memcg, "0", 1, "join the memory cgroup");
        close(memcg);
    }
    int j;
    for (int i = 0; (j = get_fd("join", i)) >= 0; i++) {
        write_all(j, "0", 1, "join a v1 cgroup");
        close(j);
    }
    if (get_fd("join", 0) >= 0)
        mark("init: join the v1 groups");
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    umask(0);
    expect_byte(mapped_r, 'm');
    close(mapped_r);
    mark("init: wait for the id maps");
    if (unshare((int)get_int("unshare", 0)) < 0)
        fail("StartError", "unshare: %s", strerror(errno));
    if (new_time) {
        /* before any process is in it, with our uid still the host's (spawn.py) */
        struct timespec mono, boot;
        char off[128];
        clock_gettime(CLOCK_MONOTONIC, &mono);
        clock_gettime(CLOCK_BOOTTIME, &boot);
        int n = snprintf(off, sizeof off, "monotonic -%ld 0\nboottime -%ld 0\n",
                         (long)mono.tv_sec, (long)boot.tv_sec);
        int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail("StartError", "/proc/self/timens_offsets: %s", strerror(errno));
        write_all(fd, off, n, "/proc/self/timens_offsets");
        close(fd);
    }
    mark(new_net ? "init: unshare mnt uts ipc net" : "init: unshare mnt uts ipc");
    int vdir_fd = open(vdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (vdir_fd < 0)
        fail("StartError", "cannot open %s: %s", vdir, strerror(errno));
    if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0)
        fail("StartError", "cannot become uid/gid 0 in the vserver's user namespace: %s",
             strerror(errno));
    write_all(ready_w, "r", 1, "ready");
    close(ready_w);
    const char *kv;
    for (int i = 0; (kv = get_nth("sysctl", i)); i++) {
        const char *tab = strchr(kv, '\t');
        char path[128];
        if (!tab || (size_t)(tab - kv) >= sizeof path)
            fail("StartError", "a malformed sysctl %s", kv);
        memcpy(path, kv, tab - kv);
        path[tab - kv] = '\0';
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail("StartError", "%s: %s", path, strerror(errno));
        write_all(fd, tab + 1, strlen(tab + 1), path);
        close(fd);
    }
    const char *name = get("hostname");
    if (name && sethostname(name, strlen(name)) < 0)
        fail("StartError", "sethostname: %s", strerror(errno));
    name = get("domainname");
    if (name && setdomainname(name, strlen(name)) < 0)
        fail("StartError", "setdomainname: %s", strerror(errno));
    mark("init: ids, sysctls, hostname");
    if (get_int("loopback", 0)) {
        /* netns.loopback_up: an ioctl, not netlink */
        struct ifreq ifr;
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
            fail("StartError", "loopback: %s", strerror(errno));
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            fail("StartError", "loopback up: %s", strerror(errno));
        close(s);
        mark("init: loopback up");
    }
    int got[2] = {-1, -1};
    recv_root_fds(sock, host_sys ? 2 : 1, got);
    close(sock);
    mark("init: wait for the idmapped root");
    int rootfd = got[0], sys_fd = got[1];
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        fail("MountError", "cannot mount the root of %s: %s", vdir, strerror(errno));
    if (syscall(SYS_move_mount, rootfd, "", vdir_fd, "",
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        fail("MountError", "cannot mount the root of %s: %s", vdir, strerror(errno));
    mark("init: move the idmapped root into place");
    /* the mount fd is the new root itself: no lookup of the vdir's host path needed */
    mount_at(rootfd, "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0);
    if (sys_fd >= 0) {
        int fd = ensure_dir(rootfd, "sys");
        if (fd < 0 || syscall(SYS_move_mount, sys_fd, "", fd, "",
                              MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            fail_mount("sys");
        close(fd);
    } else {
        mount_at(rootfd, "sys", "sysfs", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 NULL, 0);
    }
    mark("init: mount /proc /sys");
    make_dev(rootfd, console >= 0);
    if (console >= 0) {
        /* by name: a descriptor opened before unshare(CLONE_NEWNS) names a mount of the
         * host's namespace, which bind refuses */
        const char *tty = ttyname(console);
        if (!tty)
            fail_mount("dev/console");
        mount_at(rootfd, "dev/console", tty, NULL, MS_BIND, NULL, 1);
    }
    mark("init: /dev, console");
    mask_kernel_interfaces(rootfd, new_net);
    mark("init: masks");
    mark("init: spec mounts");
    if (fchdir(rootfd) < 0)
        fail("MountError", "chdir into %s: %s", vdir, strerror(errno));
    close(rootfd);
    close(vdir_fd);
    if (sys_fd >= 0)
        close(sys_fd);
    pivot();
    mark("init: pivot_root, detach the old root");
    umask(022);
    const char *step = "";
    if (apply_rlimits(&step) < 0)
        fail("StartError", "setrlimit %s: %s", step, strerror(errno));
    unsigned long long keep = strtoull(get("keep_caps") ? get("keep_caps") : "0", NULL, 10);
    if (drop_bounding_set(keep, &step) < 0)
        fail("StartError", "%s: %s", step, strerror(errno));
    mark("init: rlimits, bounding set");
    expect_byte(go_r, 'g');
    close(go_r);
    mark("init: wait for go (cgroups)");
    int stdio = console >= 0 ? console : open("/dev/null", O_RDWR | O_CLOEXEC);
    if (stdio < 0)
        fail("StartError", "/dev/null: %s", strerror(errno));
    if (err_w <= 2) {
        int moved = fcntl(err_w, F_DUPFD_CLOEXEC, 3);
        if (moved < 0)
            fail("StartError", "dup: %s", strerror(errno));
        err_w = moved;
    }
    for (int fd = 0; fd < 3; fd++)
        if (stdio != fd && dup2(stdio, fd) < 0)
            fail("StartError", "dup2: %s", strerror(errno));
        else if (stdio == fd)
            fcntl(fd, F_SETFD, 0);
    /* every number, not up to a guess */
    if ((err_w > 3 && syscall(SYS_close_range, 3, err_w - 1, 0) < 0) ||
        syscall(SYS_close_range, err_w + 1, ~0U, 0) < 0)
        fail("StartError", "close_range: %s", strerror(errno));
    mark("init: stdio, close fds");
    if (phases_on) {
        static char line[8192];
        int n = snprintf(line, sizeof line, "@phases ");
        int m = phases_json(line + n, sizeof line - n - 1);
        if (m > 0) {
            line[n + m] = '\n';
            write_all(err_w, line, n + m + 1, "phases");
        }
    }
    /* every entry of the plan fits: no argument or variable is dropped */
    static char *argv[ENTRIES_MAX + 1], *envp[ENTRIES_MAX + 1];
    int argc = 0, envc = 0;
    for (int i = 0; i < n_entries; i++)
        if (strncmp(entries[i], "argv=", 5) == 0)
            argv[argc++] = entries[i] + 5;
        else if (strncmp(entries[i], "env=", 4) == 0)
            envp[envc++] = entries[i] + 4;
    argv[argc] = NULL;
    envp[envc] = NULL;
    if (argc == 0)
        fail("StartError", "no init to execute");
    execve(argv[0], argv, envp);
    if (errno == ENOENT || errno == EACCES || errno == ENOEXEC || errno == ENOTDIR)
        fail("InitMissing", "init %s cannot be executed in %s: %s", argv[0], vdir,
             strerror(errno));
    fail("StartError", "execve %s: %s", argv[0], strerror(errno));
}

/* --- entering a running context (entercore.run_e1, _e2) -------------------------------- */

static int e_err = 2;   /* stdio[2]: where E1 and E2 say why they failed */

/* "A: B: strerror(errno)\n" on e_err whole, however long A and B are (an argv[0] of
 * the tenant's: a message cut into a fixed buffer was written with its uncut length,
 * and the bytes after the buffer, E2's stack, went to the command's output) */
static void say(const char *a, const char *b) {
    const char *why = strerror(errno);
    struct iovec iov[6] = {{(void *)a, strlen(a)}, {": ", 2}, {(void *)(b ? b : ""),
                           b ? strlen(b) : 0}, {": ", b ? 2 : 0}, {(void *)why, strlen(why)},
                           {"\n", 1}};
    if (writev(e_err, iov, 6) < 0) { /* nobody left to tell */ }
}

static void e1_fail(const char *what) {
    say("cannot enter the context", what);
    _exit(126);
}

/* execve of argv with `path`, or argv[0] looked up in the PATH of envp (as Python's
 * os.execvpe: the first error other than ENOENT/ENOTDIR wins) */
static void exec_one(const char *path, char **argv, char **envp) {
    if (path && *path) {
        execve(path, argv, envp);
        return;
    }
    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, envp);
        return;
    }
    const char *search = "/bin:/usr/bin";   /* os.defpath */
    for (char **e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            search = *e + 5;
    int saved = 0;
    char full[4096];
    for (const char *dir = search;; ) {
        const char *end = strchr(dir, ':');
        size_t len = end ? (size_t)(end - dir) : strlen(dir);
        /* "DIR/argv0\0" (an empty DIR is ".") must fit */
        if ((len ? len : 1) + strlen(argv[0]) + 2 > sizeof full) {
            if (!saved)
                saved = ENAMETOOLONG;   /* what execve says of a path past PATH_MAX */
        } else {
            memcpy(full, dir, len);
            if (len == 0)
                full[len++] = '.';
            full[len] = '/';
            strcpy(full + len + 1, argv[0]);
            execve(full, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR && !saved)
                saved = errno;
        }
        if (!end)
            break;
        dir = end + 1;
    }
    errno = saved ? saved : ENOENT;
}

static void e2_main(int pid_w) {
    int stdio[3] = {get_fd("stdio", 0), get_fd("stdio", 1), get_fd("stdio", 2)};
    char *argv0 = (char *)(get("exe.0.argv") ? get("exe.0.argv") : "?");
    if (pid_w >= 0)
        close(pid_w);
    setsid();
    /* stdio to 0-2 without one dup2 clobbering another source */
    int high[3];
    for (int i = 0; i < 3; i++)
        if ((high[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3)) < 0)
            goto fail;
    for (int i = 0; i < 3; i++)
        if (dup2(high[i], i) < 0)
            goto fail;
    e_err = 2;
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0)
        goto fail;
    if (get_int("ctty", 0) && ioctl(0, TIOCSCTTY, 0) < 0)
        goto fail;
    if (chdir("/") < 0)
        goto fail;
    const char *step;
    if (apply_rlimits(&step) < 0)
        goto fail;
    for (int sig = 1; sig < _NSIG; sig++)
        signal(sig, SIG_DFL);
    /* every entry of the plan fits: none is cut (the plan holds at most ENTRIES_MAX) */
    static char *argv[ENTRIES_MAX + 1], *envp[ENTRIES_MAX + 1];
    for (int n = 0; n < ENTRIES_MAX; n++) {
        char key[32];
        int argc = 0, envc = 0;
        const char *a;
        snprintf(key, sizeof key, "exe.%d.argv", n);
        for (int i = 0; argc < ENTRIES_MAX && (a = get_nth(key, i)); i++)
            argv[argc++] = (char *)a;
        if (!argc)
            break;
        argv[argc] = NULL;
        snprintf(key, sizeof key, "exe.%d.env", n);
        for (int i = 0; envc < ENTRIES_MAX && (a = get_nth(key, i)); i++)
            envp[envc++] = (char *)a;
        envp[envc] = NULL;
        snprintf(key, sizeof key, "exe.%d.path", n);
        exec_one(get(key), argv, envp);
        /* the next candidate only while this one does not exist (a login's shells) */
        if (errno != ENOENT)
            break;
    }
fail:
    say(argv0, NULL);
    _exit(127);
}

static void e1_main(void) {
    e_err = get_fd("stdio", 2);
    int pid_w = get_fd("pid_w", 0);
    /* a caller that stopped reading costs E1 a write (EPIPE), never the relay of E2's
     * status (E2 sets every signal to its default before its exec) */
    signal(SIGPIPE, SIG_IGN);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        e1_fail("prctl(PR_SET_DUMPABLE)");
    const char *path;
    for (int i = 0; (path = get_nth("cgroup_tasks", i)); i++) {
        /* a thread moving itself takes no global lock */
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
            e1_fail(path);
        close(fd);
    }
    if ((path = get("cgroup_v2_join"))) {
        /* the clone into the group failed (entercore._clone_e1): migrate */
        char procs[4200], pid[32];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", path);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        int n = snprintf(pid, sizeof pid, "%d", getpid());
        if (fd < 0 || write(fd, pid, n) != n)
            e1_fail(procs);
        close(fd);
    }
    int keep = get("keep") != NULL;
    if (keep && setgroups(0, NULL) < 0)
        e1_fail("setgroups");
    const char *ns;
    for (int i = 0; (ns = get_nth("ns", i)); i++) {
        int type = 0, slot = -1;
        if (sscanf(ns, "%d:%d", &type, &slot) != 2 || slot < 0 || slot >= n_fds) {
            errno = EINVAL;
            e1_fail("a namespace handle");
        }
        if (setns(fds[slot], type) < 0)
            e1_fail("setns");
        close(fds[slot]);
    }
    if (keep) {
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            e1_fail(get_int("userns", 0) ? "cannot become uid/gid 0 in the vserver's user "
                    "namespace" : "cannot become uid/gid 0 on the host");
        const char *step;
        if (drop_bounding_set(strtoull(get("keep"), NULL, 10), &step) < 0)
            e1_fail(step);
    }
    if (get("seccomp")) {
        /* still holding CAP_SYS_ADMIN (no NO_NEW_PRIVS) */
        const char *err = load_filter();
        if (err) {
            errno = EINVAL;
            e1_fail(err);
        }
    }
    if (keep) {
        /* effective, permitted and inheritable := keep (what is held of it) */
        unsigned long long mask = strtoull(get("keep"), NULL, 10);
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        if (syscall(SYS_capget, &hdr, data) < 0)
            e1_fail("capget");
        for (int i = 0; i < 2; i++) {
            unsigned held = data[i].permitted & (unsigned)(mask >> (32 * i));
            data[i].effective = data[i].permitted = data[i].inheritable = held;
        }
        if (syscall(SYS_capset, &hdr, data) < 0)
            e1_fail("capset");
    }
    /* again: each change of credentials above set the flag to fs.suid_dumpable, and
     * E2 sits in the guest's PID namespace until its exec */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        e1_fail("prctl(PR_SET_DUMPABLE)");
    pid_t e2 = fork();     /* a PID namespace applies to children only */
    if (e2 < 0)
        e1_fail("fork");
    if (e2 == 0)
        e2_main(pid_w);
    for (int i = 0; i < 3; i++)
        close(get_fd("stdio", i));
    if (pid_w >= 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "%d\n", e2);
        if (write(pid_w, line, n) < 0) { /* the caller stopped listening */ }
        close(pid_w);
    }
    int status = 0;
    while (waitpid(e2, &status, 0) < 0)
        if (errno != EINTR)
            _exit(126);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

/* E1 for the request in hand (CLONE_PARENT: the caller's child, never ours), born in
 * the context's cgroup2 group where it can be (entercore._clone_e1) */
static void enter_one(int sock, char *reply, size_t size) {
    const char *v2 = get("cgroup_v2");
    int cg = v2 ? open(v2, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    struct clone_args_v2 args = {.flags = CLONE_PARENT, .exit_signal = 0};
    pid_t pid = -1;
    int born_in = 0;
    if (cg >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cg;
        pid = syscall(SYS_clone3, &args, sizeof args);
        born_in = pid >= 0;
    }
    if (pid < 0) {
        args.flags &= ~CLONE_INTO_CGROUP;
        pid = syscall(SYS_clone3, &args, sizeof args);
    }
    if (pid == 0 && v2 && !born_in) {
        /* E1 migrates itself, and says why it cannot: also where the group could not
         * even be opened (a stop removed it), never running on in the server's group */
        static char join[4200];
        snprintf(join, sizeof join, "cgroup_v2_join=%s", v2);
        if (n_entries < ENTRIES_MAX)
            entries[n_entries++] = join;
        else
            _exit(126);
    }
    if (pid == 0) {
        close(sock);
        if (cg >= 0)
            close(cg);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* keep only the plan's descriptors (close_range over the gaps) */
        int sorted[FDS_MAX], n = n_fds;
        memcpy(sorted, fds, sizeof(int) * n);
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
                int t = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = t;
            }
        unsigned lo = 0;
        for (int i = 0; i <= n; i++) {
            unsigned hi = i < n ? (unsigned)sorted[i] : ~0U;
            if (hi > lo && syscall(SYS_close_range, lo, i < n ? hi - 1 : hi, 0) < 0)
                _exit(126);
            if (i < n)
                lo = hi + 1;
        }
        e1_main();
        _exit(126);
    }
    if (cg >= 0)
        close(cg);
    if (pid < 0)
        snprintf(reply, size, "E:clone3: %s", strerror(errno));
    else
        snprintf(reply, size, "%d", pid);
}

/* --- the forker -------------------------------------------------------------------------- */

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* the default seccomp filter, once for good: every G is born with it (seccomp.py) */
static const char *load_filter(void) {
    static unsigned char prog[65536];
    const char *hex = get("seccomp");
    size_t len = hex ? strlen(hex) : 0;
    if (!len || len % 16 || len / 2 > sizeof prog)
        return "no whole seccomp program in the plan";
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return "a seccomp program that is not hexadecimal";
        prog[i] = (unsigned char)(hi << 4 | lo);
    }
    struct sock_fprog fprog = {(unsigned short)(len / 16), (struct sock_filter *)prog};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) < 0)
        return strerror(errno);
    return NULL;
}

static int write_map(pid_t pid, const char *file, const char *line) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, line, strlen(line));
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t)strlen(line) ? 0 : -1;
}

/* Clone G and write its id maps: the answer's text in `reply`. */
static void serve_one(int sock, int own_mnt, int *filtered, char *reply, size_t size) {
    phases_on = get_int("phases", 0) != 0;
    n_phases = 0;
    if (!*filtered) {
        const char *err = load_filter();
        if (err) {
            snprintf(reply, size, "E:seccomp: %s", err);
            return;
        }
        *filtered = 1;
    }
    mark("forker: parse the plan");
    const char *map = get("idmap");
    int cgroup = get_fd("cgroup", 0), base = get_fd("base", 0);
    if (!map || cgroup < 0 || get_fd("err_w", 0) < 0 || get_fd("sock", 0) < 0) {
        snprintf(reply, size, "E:an incomplete plan");
        return;
    }
    int mapped[2];
    if (pipe2(mapped, O_CLOEXEC) < 0) {
        snprintf(reply, size, "E:pipe: %s", strerror(errno));
        return;
    }
    if (base >= 0 && setns(base, CLONE_NEWNS) < 0) {
        snprintf(reply, size, "E:setns into the base mount namespace: %s", strerror(errno));
        close(mapped[0]);
        close(mapped[1]);
        return;
    }
    /* CLONE_PARENT: G is the supervisor's child (its waitpid, its pipes); clone3 wants
     * exit_signal 0 with it */
    struct clone_args_v2 args = {
        .flags = CLONE_PARENT | CLONE_NEWUSER | CLONE_NEWPID | CLONE_INTO_CGROUP,
        .exit_signal = 0, .cgroup = (uint64_t)cgroup};
    pid_t pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        close(mapped[1]);
        close(sock);
        close(own_mnt);
        if (base >= 0)
            close(base);
        close(cgroup);
        g_main(mapped[0]);
        _exit(127);
    }
    int clone_errno = errno;
    if (base >= 0 && setns(own_mnt, CLONE_NEWNS) < 0)
        _exit(1);   /* in the wrong namespace for good: the supervisor starts another */
    close(mapped[0]);
    if (pid < 0) {
        close(mapped[1]);
        snprintf(reply, size, "E:clone3: %s", strerror(clone_errno));
        return;
    }
    mark("forker: setns, clone, setns back");
    /* as its privileged parent would (setgroups stays "allow"); on failure G reads the
     * end of file and gives up */
    if (write_map(pid, "uid_map", map) < 0 || write_map(pid, "gid_map", map) < 0) {
        snprintf(reply, size, "E:id maps of %d: %s", pid, strerror(errno));
        close(mapped[1]);
        return;
    }
    if (write(mapped[1], "m", 1) != 1) { /* G died: the supervisor learns it from G */ }
    close(mapped[1]);
    mark("forker: id maps");
    int n = snprintf(reply, size, "%d", pid);
    if (phases_on && n > 0 && (size_t)n < size - 2) {
        reply[n] = '\n';
        if (phases_json(reply + n + 1, size - n - 1) < 0)
            reply[n] = '\0';
    }
}

/* One request at a time: parse it into entries and fds, answer with `handle`'s text. */
static void serve_loop(int sock, void (*handle)(int sock, char *reply, size_t size)) {
    ssize_t last_len = 0;
    static char buf[REQUEST_MAX];
    static char reply[8192];
    for (;;) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
            struct cmsghdr align;
        } u;
        struct iovec iov = {buf, sizeof buf - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf};
        /* close-on-exec: the error pipe must end at init's exec */
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        n_fds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (int i = 0; i < k && n_fds < FDS_MAX; i++)
                    memcpy(&fds[n_fds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            }
        last_mark = now();
        /* a child is a copy of this process until its exec: no earlier plan in it */
        if (n < last_len)
            memset(buf + n, 0, last_len - n);
        last_len = n;
        buf[n] = '\0';
        n_entries = 0;
        int too_many = 0;
        for (char *p = buf; p < buf + n; p += strlen(p) + 1)
            if (n_entries < ENTRIES_MAX)
                entries[n_entries++] = p;
            else
                too_many = 1;
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
            snprintf(reply, sizeof reply, "E:a plan too large");
        else if (too_many)
            /* none dropped silently (an argument of init): the Python forker takes it */
            snprintf(reply, sizeof reply, "E:a plan of more than %d entries", ENTRIES_MAX);
        else
            handle(sock, reply, sizeof reply);
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        if (send(sock, reply, strlen(reply), 0) < 0)
            _exit(0);
    }
}

static int forker_mnt = -1, forker_filtered;

static void fork_one(int sock, char *reply, size_t size) {
    serve_one(sock, forker_mnt, &forker_filtered, reply, size);
}

int main(int argc, char **argv) {
    int enter = argc == 3 && strcmp(argv[1], "--enter") == 0;
    if (!enter && (argc != 4 || strcmp(argv[1], "--serve") != 0)) {
        fprintf(stderr, "usage: vsinit --serve FD SUPERVISOR_PID | --enter FD\n");
        return 2;
    }
    int sock = atoi(argv[2]);
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (enter) {
        /* holds nothing but the plan in hand, and is not dumpable (entercore.serve); it
         * exits when its caller closes the socket */
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        for (int s = 1; s < _NSIG; s++)
            signal(s, SIG_DFL);
        signal(SIGINT, SIG_IGN);
        signal(SIGQUIT, SIG_IGN);
        signal(SIGTSTP, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        serve_loop(sock, enter_one);
    }
    pid_t supervisor = atoi(argv[3]);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != supervisor)
        _exit(0);   /* the supervisor died before the signal was set */
    /* what init inherits from us: default dispositions, no blocked signal (posix_spawn
     * passed on the supervisor's ignored ones) */
    for (int s = 1; s < _NSIG; s++)
        signal(s, SIG_DFL);
    forker_mnt = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (forker_mnt < 0)
        return 1;
    serve_loop(sock, fork_one);
}
