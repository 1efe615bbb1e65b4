// One umbrella header for every C library Ferry links: liblz4, libzstd, libcrypto (OpenSSL),
// libcurl, liburing and zlib. They must live in one module: curl.h and liburing.h both include
// <sys/select.h>, and two system modules that do so fail to build together.
//
// Variadic C functions are not imported into Swift (curl_easy_setopt, curl_easy_getinfo,
// ioctl, fcntl), so each gets a `static inline` non-variadic wrapper per argument type here.
// Symbols are prefixed `cferry_`. Nothing in this header is public API of Ferry.
#ifndef CFERRY_H
#define CFERRY_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netdb.h>
#include <sys/uio.h>
#include <sys/fanotify.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <poll.h>
#include <dirent.h>
#include <signal.h>

#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>
#include <zlib.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <curl/curl.h>
#include <liburing.h>

// MARK: libcurl (curl_easy_setopt / curl_easy_getinfo are variadic)
static inline CURLcode cferry_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_write(CURL *h, CURLoption o, size_t (*f)(char *, size_t, size_t, void *)) { return curl_easy_setopt(h, o, f); }
static inline CURLcode cferry_curl_setopt_read(CURL *h, CURLoption o, size_t (*f)(char *, size_t, size_t, void *)) { return curl_easy_setopt(h, o, f); }
static inline CURLcode cferry_curl_setopt_opensocket(CURL *h, curl_socket_t (*f)(void *, curlsocktype, struct curl_sockaddr *)) { return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, f); }
static inline CURLcode cferry_curl_setopt_closesocket(CURL *h, int (*f)(void *, curl_socket_t)) { return curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, f); }
static inline CURLcode cferry_curl_setopt_xferinfo(CURL *h, CURLoption o, int (*f)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t)) { return curl_easy_setopt(h, o, f); }
static inline CURLcode cferry_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cferry_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cferry_curl_getinfo_str(CURL *h, CURLINFO i, char **v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cferry_curl_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLMcode cferry_curl_multi_setopt_long(CURLM *h, CURLMoption o, long v) { return curl_multi_setopt(h, o, v); }
static inline CURLSHcode cferry_curl_share_setopt_long(CURLSH *h, CURLSHoption o, long v) { return curl_share_setopt(h, o, v); }
static inline CURLcode cferry_curl_setopt_share(CURL *h, CURLoption o, CURLSH *v) { return curl_easy_setopt(h, o, v); }

// MARK: ioctl / fcntl (variadic)
static inline int cferry_ioctl_ulong(int fd, unsigned long req, unsigned long arg) { return ioctl(fd, req, arg); }
static inline int cferry_ioctl_ptr(int fd, unsigned long req, void *arg) { return ioctl(fd, req, arg); }
static inline int cferry_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
static inline int cferry_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }
static inline int cferry_openat(int dirfd, const char *path, int flags, mode_t mode) { return openat(dirfd, path, flags, mode); }
// O_PATH needs _GNU_SOURCE in glibc's headers; its value is fixed by the kernel ABI.
static const int cferry_O_PATH = 010000000;
// openat2(2) (Linux >= 5.6) has no glibc wrapper: the raw syscall with a struct open_how.
static inline int cferry_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

// MARK: errno (a macro in glibc)
static inline int cferry_errno(void) { return errno; }
static inline void cferry_set_errno(int e) { errno = e; }

// MARK: device numbers (macros in glibc)
static inline unsigned int cferry_major(dev_t d) { return major(d); }
static inline unsigned int cferry_minor(dev_t d) { return minor(d); }
static inline dev_t cferry_makedev(unsigned int ma, unsigned int mi) { return makedev(ma, mi); }

// MARK: wait status macros
static inline int cferry_wifexited(int s) { return WIFEXITED(s); }
static inline int cferry_wexitstatus(int s) { return WEXITSTATUS(s); }

// MARK: zlib (inflateInit2 is a macro)
static inline int cferry_inflate_init2(z_stream *s, int windowBits) { return inflateInit2(s, windowBits); }
static inline int cferry_deflate_init2(z_stream *s, int level, int windowBits) {
    return deflateInit2(s, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY);
}

// MARK: kernel interfaces for the daemon backends (fanotify, cachefiles, mount, io_uring)
#include <linux/cachefiles.h>
// The ioctl number exactly as the uapi header computes it (_IOW(0x98, 1, int)); Swift checks
// its own constant against this in a test.
static inline unsigned long cferry_cachefiles_ioc_read_complete(void) { return CACHEFILES_IOC_READ_COMPLETE; }
// posix_memalign through a shim so Swift sees one non-optional out pointer.
static inline int cferry_posix_memalign(void **out, size_t alignment, size_t size) { return posix_memalign(out, alignment, size); }


// MARK: calls glibc declares only under _GNU_SOURCE
#include <sys/syscall.h>
static inline int cferry_fallocate(int fd, int mode, off_t offset, off_t len) {
    return (int)syscall(SYS_fallocate, fd, mode, offset, len);
}
// splice(2): moves up to len bytes between a pipe and another descriptor inside the kernel;
// off_out (may be NULL) is the file offset to write at, advanced by the call.
static inline long cferry_splice(int fd_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    return syscall(SYS_splice, fd_in, (int64_t *)0, fd_out, off_out, len, flags);
}
static inline int cferry_pipe2(int fds[2], int flags) { return (int)syscall(SYS_pipe2, fds, flags); }
#define CFERRY_SPLICE_F_MOVE 1
#define CFERRY_SPLICE_F_NONBLOCK 2
#define CFERRY_F_SETPIPE_SZ 1031
#define CFERRY_F_GETPIPE_SZ 1032
// madvise(MADV_POPULATE_READ), Linux 5.14+: map a range's pages in one call (older kernels: EINVAL).
#define CFERRY_MADV_POPULATE_READ 22


// MARK: file descriptor passing (CMSG_* are macros)
static inline int cferry_send_fd(int sock, int fd, unsigned char tag) {
    struct msghdr msg = {0};
    struct iovec iov = { .iov_base = &tag, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    memset(&u, 0, sizeof(u));
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    msg.msg_control = u.buf; msg.msg_controllen = sizeof(u.buf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return (int)sendmsg(sock, &msg, MSG_NOSIGNAL);
}
/* Receives one byte and at most one fd; *fd_out is -1 when no fd came. Returns bytes read. */
static inline int cferry_recv_fd(int sock, int *fd_out, unsigned char *tag) {
    struct msghdr msg = {0};
    struct iovec iov = { .iov_base = tag, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    memset(&u, 0, sizeof(u));
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    msg.msg_control = u.buf; msg.msg_controllen = sizeof(u.buf);
    *fd_out = -1;
    int n = (int)recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) { memcpy(fd_out, CMSG_DATA(c), sizeof(int)); }
    }
    return n;
}

#endif
