// Host facts the binding needs: bpffs detection/mounting, possible CPUs, and the UAPI enum values
// the headers were built with (exported so the TypeScript constants can be checked against them).
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/statfs.h>

#include "common.h"

namespace lbpf {

namespace {

// Not every libc exposes this through <linux/magic.h> at a usable version; the value is ABI.
constexpr unsigned long kBpfFsMagic = 0xcafe4a11UL;

Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, &path)) return env.Undefined();
  struct statfs st;
  if (statfs(path.c_str(), &st) != 0) {
    int err = ErrFromErrno();
    if (err == ENOENT || err == ENOTDIR) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, err, "check bpffs at " + path, "statfs");
  }
  return Napi::Boolean::New(env, static_cast<unsigned long>(st.f_type) == kBpfFsMagic);
}

Napi::Value MountBpffs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, &path)) return env.Undefined();
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0) {
    return ThrowErrno(env, ErrFromErrno(), "mount bpffs at " + path, "mount");
  }
  return env.Undefined();
}

// (path, timeoutMs) -> fd holding an exclusive flock(2); the kernel drops it when the fd closes,
// also when the process dies, so a crashed holder never leaves a stale lock behind.
Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  uint32_t timeoutMs;
  if (!ArgString(info, 0, &path) || !ArgUint32(info, 1, &timeoutMs)) return env.Undefined();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ThrowErrno(env, ErrFromErrno(), "lock " + path, "open");
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Number::New(env, fd);
    int err = ErrFromErrno();
    clock_gettime(CLOCK_MONOTONIC, &now);
    long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if ((err != EWOULDBLOCK && err != EINTR) || waited >= static_cast<long>(timeoutMs)) {
      close(fd);
      return ThrowErrno(env, err, "lock " + path, "flock");
    }
    usleep(10000);
  }
}

// The cookie of the calling thread's network namespace: unique for the life of the system, unlike
// the namespace's inode number, which the kernel reuses.
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, ErrFromErrno(), "read the network namespace cookie", "socket");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
  int rc = getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int err = rc ? ErrFromErrno() : 0;
  close(s);
  if (rc) return ThrowErrno(env, err, "read the network namespace cookie", "getsockopt(SO_NETNS_COOKIE)");
  return Napi::BigInt::New(env, cookie);
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = libbpf_num_possible_cpus();
  if (n < 0) return ThrowErrno(env, ErrFromRet(n), "count possible CPUs", "libbpf_num_possible_cpus");
  return Napi::Number::New(env, n);
}

Napi::Value Constants(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object maps = Napi::Object::New(env);
#define M(x) maps.Set(#x, Napi::Number::New(env, BPF_MAP_TYPE_##x))
  M(UNSPEC);
  M(HASH);
  M(ARRAY);
  M(PROG_ARRAY);
  M(PERF_EVENT_ARRAY);
  M(PERCPU_HASH);
  M(PERCPU_ARRAY);
  M(STACK_TRACE);
  M(CGROUP_ARRAY);
  M(LRU_HASH);
  M(LRU_PERCPU_HASH);
  M(LPM_TRIE);
  M(ARRAY_OF_MAPS);
  M(HASH_OF_MAPS);
  M(DEVMAP);
  M(SOCKMAP);
  M(CPUMAP);
  M(XSKMAP);
  M(SOCKHASH);
  M(CGROUP_STORAGE);
  M(REUSEPORT_SOCKARRAY);
  M(PERCPU_CGROUP_STORAGE);
  M(QUEUE);
  M(STACK);
  M(SK_STORAGE);
  M(DEVMAP_HASH);
  M(STRUCT_OPS);
  M(RINGBUF);
  M(INODE_STORAGE);
  M(TASK_STORAGE);
  M(BLOOM_FILTER);
  M(USER_RINGBUF);
#undef M
  Napi::Object progs = Napi::Object::New(env);
#define P(x) progs.Set(#x, Napi::Number::New(env, BPF_PROG_TYPE_##x))
  P(UNSPEC);
  P(SOCKET_FILTER);
  P(KPROBE);
  P(SCHED_CLS);
  P(SCHED_ACT);
  P(TRACEPOINT);
  P(XDP);
  P(PERF_EVENT);
  P(CGROUP_SKB);
  P(CGROUP_SOCK);
  P(LWT_IN);
  P(LWT_OUT);
  P(LWT_XMIT);
  P(SOCK_OPS);
  P(SK_SKB);
  P(CGROUP_DEVICE);
  P(SK_MSG);
  P(RAW_TRACEPOINT);
  P(CGROUP_SOCK_ADDR);
  P(LWT_SEG6LOCAL);
  P(LIRC_MODE2);
  P(SK_REUSEPORT);
  P(FLOW_DISSECTOR);
  P(CGROUP_SYSCTL);
  P(RAW_TRACEPOINT_WRITABLE);
  P(CGROUP_SOCKOPT);
  P(TRACING);
  P(STRUCT_OPS);
  P(EXT);
  P(LSM);
  P(SK_LOOKUP);
  P(SYSCALL);
#undef P
  Napi::Object xdp = Napi::Object::New(env);
  xdp.Set("UPDATE_IF_NOEXIST", Napi::Number::New(env, XDP_FLAGS_UPDATE_IF_NOEXIST));
  xdp.Set("SKB_MODE", Napi::Number::New(env, XDP_FLAGS_SKB_MODE));
  xdp.Set("DRV_MODE", Napi::Number::New(env, XDP_FLAGS_DRV_MODE));
  xdp.Set("HW_MODE", Napi::Number::New(env, XDP_FLAGS_HW_MODE));
  xdp.Set("ATTACHED_NONE", Napi::Number::New(env, XDP_ATTACHED_NONE));
  xdp.Set("ATTACHED_DRV", Napi::Number::New(env, XDP_ATTACHED_DRV));
  xdp.Set("ATTACHED_SKB", Napi::Number::New(env, XDP_ATTACHED_SKB));
  xdp.Set("ATTACHED_HW", Napi::Number::New(env, XDP_ATTACHED_HW));
  xdp.Set("ATTACHED_MULTI", Napi::Number::New(env, XDP_ATTACHED_MULTI));
  Napi::Object update = Napi::Object::New(env);
  update.Set("ANY", Napi::Number::New(env, BPF_ANY));
  update.Set("NOEXIST", Napi::Number::New(env, BPF_NOEXIST));
  update.Set("EXIST", Napi::Number::New(env, BPF_EXIST));
  Napi::Object mapFlags = Napi::Object::New(env);
#define F(x) mapFlags.Set(#x, Napi::Number::New(env, BPF_F_##x))
  F(NO_PREALLOC);
  F(NO_COMMON_LRU);
  F(NUMA_NODE);
  F(RDONLY);
  F(WRONLY);
  F(RDONLY_PROG);
  F(WRONLY_PROG);
  F(MMAPABLE);
#undef F
  Napi::Object o = Napi::Object::New(env);
  o.Set("mapTypes", maps);
  o.Set("mapFlags", mapFlags);
  o.Set("progTypes", progs);
  o.Set("xdp", xdp);
  o.Set("update", update);
  return o;
}

}  // namespace

void InitSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("isBpffs", Napi::Function::New<IsBpffs>(env, "isBpffs"));
  exports.Set("mountBpffs", Napi::Function::New<MountBpffs>(env, "mountBpffs"));
  exports.Set("lockFile", Napi::Function::New<LockFile>(env, "lockFile"));
  exports.Set("netnsCookie", Napi::Function::New<NetnsCookie>(env, "netnsCookie"));
  exports.Set("numPossibleCpus", Napi::Function::New<NumPossibleCpus>(env, "numPossibleCpus"));
  exports.Set("constants", Napi::Function::New<Constants>(env, "constants"));
}

}  // namespace lbpf
