/* A guest init's first act against the supervisor's sd_notify socket (NOTIFY_SOCKET):
   floods it with datagrams that carry descriptors (SCM_RIGHTS: its own root, the
   socket itself), oversized and junk datagrams, then says READY=1 and execs argv[1..].
   Built static by tests/test_escape_suite.py. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NFDS 250

int main(int argc, char **argv) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || argc < 2) return 111;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int fds[NFDS];
    for (int i = 0; i < NFDS; i++)
        fds[i] = i % 2 ? s : open("/", O_PATH);
    char cbuf[CMSG_SPACE(sizeof fds)];
    static char big[200000];
    memset(big, 'x', sizeof big);
    int sent = 0;
    for (int n = 0; n < 3000; n++) {
        char msg[] = "STATUS=flood\nREADY=0";
        struct iovec iov = {.iov_base = n % 7 ? msg : big,
                            .iov_len = n % 7 ? sizeof msg - 1 : sizeof big};
        struct msghdr mh = {.msg_name = &sa, .msg_namelen = sizeof sa, .msg_iov = &iov,
                            .msg_iovlen = 1, .msg_control = cbuf,
                            .msg_controllen = sizeof cbuf};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof fds);
        memcpy(CMSG_DATA(c), fds, sizeof fds);
        if (sendmsg(s, &mh, 0) >= 0) sent++;
        else usleep(1000);
    }
    printf("notify_flood sent %d\n", sent);
    fflush(stdout);
    usleep(200000);
    int r = -1;
    for (int tries = 0; tries < 2000 && r < 0; tries++) {
        r = sendto(s, "READY=1\nSTATUS=up", 17, 0, (struct sockaddr *)&sa, sizeof sa);
        if (r < 0) usleep(5000);
    }
    execv(argv[1], argv + 1);
    return 112;
}
