/* Static test program placed inside a vserver by the entry and seccomp tests.
 * Each subcommand tries one thing from inside and prints "<what> ok" or
 * "<what> <ERRNO name>"; the tests read those words. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EPERM: return "EPERM"; case ENOSYS: return "ENOSYS"; case EACCES: return "EACCES";
    case EINVAL: return "EINVAL"; case EFAULT: return "EFAULT"; case EBADF: return "EBADF";
    case ENOENT: return "ENOENT"; case ESRCH: return "ESRCH"; case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOMEM: return "ENOMEM"; case ENOEXEC: return "ENOEXEC";
    default: return "EOTHER";
    }
}

static void report(const char *what, long r) {
    if (r >= 0) printf("%s ok\n", what);
    else printf("%s %s\n", what, ename(errno));
}

/* open_by_handle_at through the 32-bit ABI: int 0x80 with i386 number 342 */
static long int80_open_by_handle_at(void) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(342L), "b"(-100L), "c"(0L), "d"(0L)
                      : "memory");
    return ret;
}

struct fh { unsigned int bytes; int type; unsigned char h[8]; };

static int steal(const char *logpath, int seconds) {
    /* scan for new pids; try pidfd_getfd(3..20) and PTRACE_ATTACH on each */
    FILE *log = fopen(logpath, "a");
    if (!log) return 1;
    setvbuf(log, NULL, _IOLBF, 0);
    pid_t self = getpid();
    fprintf(log, "started %d\n", self);
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            pid_t pid = atoi(e->d_name);
            if (pid <= self) continue;
            int pfd = syscall(SYS_pidfd_open, pid, 0);
            if (pfd < 0) continue;
            for (int fd = 3; fd <= 20; fd++) {
                int got = syscall(SYS_pidfd_getfd, pfd, fd, 0);
                if (got >= 0) {
                    char p[64], t[256] = "";
                    snprintf(p, sizeof p, "/proc/self/fd/%d", got);
                    ssize_t n = readlink(p, t, sizeof t - 1);
                    if (n > 0) t[n] = 0;
                    fprintf(log, "GOTFD pid %d fd %d -> %s\n", pid, fd, t);
                    close(got);
                }
            }
            close(pfd);
            if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
                int st = 0;
                waitpid(pid, &st, __WALL);
                /* stopped now (or gone): which program it runs cannot change under us */
                char p[64], exe[256] = "";
                snprintf(p, sizeof p, "/proc/%d/exe", pid);
                ssize_t n = readlink(p, exe, sizeof exe - 1);
                if (n > 0) exe[n] = 0;
                else snprintf(exe, sizeof exe, "(%s)", ename(errno));
                char cmd[200] = "";
                snprintf(p, sizeof p, "/proc/%d/cmdline", pid);
                int c = open(p, O_RDONLY);
                if (c >= 0) {
                    ssize_t m = read(c, cmd, sizeof cmd - 1);
                    for (ssize_t i = 0; i < m; i++) if (!cmd[i] || cmd[i] == '\n') cmd[i] = ' ';
                    if (m > 0) cmd[m] = 0;
                    close(c);
                }
                fprintf(log, "CMDLINE pid %d %s\n", pid, cmd);
                fprintf(log, "ATTACHED pid %d status %#x exe %s\n", pid, st, exe);
                /* a stop other than our SIGSTOP leaves that one pending: pass it on as 0 */
                ptrace(PTRACE_DETACH, pid, 0, 0);
                if (WIFSTOPPED(st) && WSTOPSIG(st) != SIGSTOP) kill(pid, SIGCONT);
            }
        }
        if (d) closedir(d);
    }
    fprintf(log, "done\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *c = argv[1];
    if (!strcmp(c, "open_by_handle_at")) {
        struct fh h = { 8, 1, {2, 0, 0, 0, 0, 0, 0, 0} };   /* FILEID_INO32_GEN, ino 2 */
        int root = open("/", O_RDONLY | O_DIRECTORY);
        report(c, syscall(SYS_open_by_handle_at, root, &h, O_RDONLY));
    } else if (!strcmp(c, "name_to_handle_at")) {
        struct fh h = { 8, 0, {0} }; int mid;
        report(c, syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &h, &mid, 0));
    } else if (!strcmp(c, "keyctl")) {
        report(c, syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    } else if (!strcmp(c, "add_key")) {
        report(c, syscall(SYS_add_key, "user", "vcdtest", "x", 1, -3));
    } else if (!strcmp(c, "bpf")) {
        char attr[128] = {0};
        report(c, syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    } else if (!strcmp(c, "perf_event_open")) {
        char attr[128] = {0}; *(unsigned int *)(attr + 4) = 128;
        report(c, syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
    } else if (!strcmp(c, "kexec_load")) {
        report(c, syscall(SYS_kexec_load, 0, 0, NULL, 0));
    } else if (!strcmp(c, "init_module")) {
        report(c, syscall(SYS_init_module, NULL, 0, ""));
    } else if (!strcmp(c, "finit_module")) {
        report(c, syscall(SYS_finit_module, 0, "", 0));
    } else if (!strcmp(c, "userfaultfd")) {
        report(c, syscall(SYS_userfaultfd, 0));
    } else if (!strcmp(c, "io_uring_setup")) {
        char params[120] = {0};
        report(c, syscall(SYS_io_uring_setup, 1, params));
    } else if (!strcmp(c, "int80")) {
        long r = int80_open_by_handle_at();
        if (r < 0) { errno = -r; r = -1; }
        report("int80_open_by_handle_at", r);
    } else if (!strcmp(c, "mount")) {
        report(c, mount("none", "/mnt", "tmpfs", 0, "size=64k"));
        umount("/mnt");
    } else if (!strcmp(c, "unshare")) {
        report(c, unshare(CLONE_NEWNS | CLONE_NEWUTS));
    } else if (!strcmp(c, "mknod_block")) {
        report(c, mknod("/tmp/vcdtest-blk", S_IFBLK | 0600, makedev(8, 0)));
        unlink("/tmp/vcdtest-blk");
    } else if (!strcmp(c, "euid")) {
        printf("euid %d\n", (int)geteuid());
    } else if (!strcmp(c, "as")) {
        /* probe as UID PROGRAM ARGS...: drop to UID, then exec PROGRAM */
        int uid = atoi(argv[2]);
        if (setresgid(uid, uid, uid) || setresuid(uid, uid, uid)) { perror("setresuid"); return 1; }
        execv(argv[3], argv + 3);
        perror("execv");
        return 127;
    } else if (!strcmp(c, "udp")) {
        /* probe udp SRC DST PORT: one datagram from source address SRC */
        struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        inet_pton(AF_INET, argv[2], &src.sin_addr);
        inet_pton(AF_INET, argv[3], &dst.sin_addr);
        dst.sin_port = htons(atoi(argv[4]));
        report("bind", bind(s, (struct sockaddr *)&src, sizeof src));
        report("sendto", sendto(s, argv[2], strlen(argv[2]), 0, (struct sockaddr *)&dst, sizeof dst));
    } else if (!strcmp(c, "udp6")) {
        /* probe udp6 SRC DST PORT: one datagram from IPv6 source address SRC */
        struct sockaddr_in6 src = { .sin6_family = AF_INET6 }, dst = { .sin6_family = AF_INET6 };
        int s = socket(AF_INET6, SOCK_DGRAM, 0), one = 1;
        inet_pton(AF_INET6, argv[2], &src.sin6_addr);
        char *scope = strchr(argv[3], '%');     /* fe80::1%eth0: a link-local address */
        if (scope) {
            *scope++ = 0;
            dst.sin6_scope_id = if_nametoindex(scope);
        }
        inet_pton(AF_INET6, argv[3], &dst.sin6_addr);
        dst.sin6_port = htons(atoi(argv[4]));
        setsockopt(s, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
        report("bind", bind(s, (struct sockaddr *)&src, sizeof src));
        report("sendto", sendto(s, argv[2], strlen(argv[2]), 0, (struct sockaddr *)&dst, sizeof dst));
    } else if (!strcmp(c, "steal")) {
        return steal(argv[2], atoi(argv[3]));
    } else if (!strcmp(c, "evilinit")) {
        /* PID 1 that widens its own bounding set: a new user namespace gets every
           capability; then it idles like an init */
        sleep(atoi(argv[2]));
        report("unshare_user", unshare(CLONE_NEWUSER));
        for (;;) { pause(); while (waitpid(-1, NULL, WNOHANG) > 0) ; }
    } else {
        return 2;
    }
    return 0;
}
