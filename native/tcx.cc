// tcx (the multi-program tc hooks of kernel 6.6 and later) and BPF links: link create at
// BPF_TCX_INGRESS/EGRESS, the query of a tcx hook, and the link operations (update, detach,
// info, by id). The system headers are Linux 6.1's and libbpf is 1.1: neither knows tcx, so the
// attach types, flags and the attr layouts of BPF_LINK_CREATE and BPF_PROG_QUERY are spelled
// out here as the 6.6 UAPI (include/uapi/linux/bpf.h) has them, and sent with the raw syscall.
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <string>

#include "common.h"

namespace lbpf {

namespace {

// enum bpf_attach_type, 6.6
constexpr uint32_t kTcxIngress = 46;
constexpr uint32_t kTcxEgress = 47;
// enum bpf_link_type, 6.6
constexpr uint32_t kLinkTypeTcx = 11;
// the BPF_F_* of bpf_mprog (attach flags)
constexpr uint32_t kFBefore = 1U << 3;
constexpr uint32_t kFAfter = 1U << 4;
constexpr uint32_t kFId = 1U << 5;
constexpr uint32_t kFLink = 1U << 13;
// at most this many programs on one tcx hook (BPF_MPROG_MAX)
constexpr uint32_t kMprogMax = 64;

// union bpf_attr's link_create, with its tcx member
struct LinkCreateAttr {
  uint32_t prog_fd;
  uint32_t target_ifindex;
  uint32_t attach_type;
  uint32_t flags;
  uint32_t relative;  // relative_fd, or relative_id with BPF_F_ID
  uint32_t pad;
  uint64_t expected_revision;
};
static_assert(offsetof(LinkCreateAttr, relative) == 16, "link_create.tcx.relative_fd");
static_assert(offsetof(LinkCreateAttr, expected_revision) == 24, "link_create.tcx.expected_revision");

// union bpf_attr's query, with the fields 6.6 added
struct QueryAttr {
  uint32_t target_ifindex;
  uint32_t attach_type;
  uint32_t query_flags;
  uint32_t attach_flags;
  uint64_t prog_ids;
  uint32_t count;
  uint32_t pad;
  uint64_t prog_attach_flags;
  uint64_t link_ids;
  uint64_t link_attach_flags;
  uint64_t revision;
};
static_assert(offsetof(QueryAttr, count) == 24, "query.count");
static_assert(offsetof(QueryAttr, link_ids) == 40, "query.link_ids");
static_assert(offsetof(QueryAttr, revision) == 56, "query.revision");

long SysBpf(int cmd, void* attr, size_t size) { return syscall(__NR_bpf, cmd, attr, size); }

std::string IfLabel(uint32_t ifindex) {
  char name[IF_NAMESIZE] = {0};
  std::string s = if_indextoname(ifindex, name) != nullptr ? std::string(name) : std::string("?");
  return s + "(" + std::to_string(ifindex) + ")";
}

bool ArgDirection(const Napi::CallbackInfo& info, size_t i, uint32_t* type, std::string* label) {
  std::string p;
  if (!ArgString(info, i, &p)) return false;
  if (p == "ingress") {
    *type = kTcxIngress;
  } else if (p == "egress") {
    *type = kTcxEgress;
  } else {
    Napi::TypeError::New(info.Env(), "tcx direction must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return false;
  }
  *label = p;
  return true;
}

// A revision is a u64; JS passes a BigInt (0n: no expectation).
bool ArgU64(const Napi::CallbackInfo& info, size_t i, uint64_t* out) {
  if (!info[i].IsBigInt()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a bigint")
        .ThrowAsJavaScriptException();
    return false;
  }
  bool lossless = false;
  *out = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must fit in 64 bits")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// (ifindex, direction, progFd, where: 'first'|'last'|'before'|'after'|'append', relativeKind:
// 'none'|'fd'|'id'|'linkFd'|'linkId', relative, expectedRevision: bigint) -> link fd
Napi::Value TcxLinkCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, type, relative;
  int64_t fd;
  std::string dl, where, rel;
  uint64_t revision;
  if (!ArgUint32(info, 0, &ifindex) || !ArgDirection(info, 1, &type, &dl) || !ArgInt(info, 2, &fd) ||
      !ArgString(info, 3, &where) || !ArgString(info, 4, &rel) || !ArgUint32(info, 5, &relative) ||
      !ArgU64(info, 6, &revision)) {
    return env.Undefined();
  }
  LinkCreateAttr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_fd = static_cast<uint32_t>(fd);
  attr.target_ifindex = ifindex;
  attr.attach_type = type;
  attr.expected_revision = revision;
  // with no anchor, BPF_F_BEFORE is the head of the hook and BPF_F_AFTER its tail; no flag at all
  // appends
  if (where == "first" || where == "before") {
    attr.flags = kFBefore;
  } else if (where == "last" || where == "after") {
    attr.flags = kFAfter;
  } else if (where != "append") {
    Napi::TypeError::New(env, "tcx position must be first, last, before, after or append").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (rel == "fd") {
    attr.relative = relative;
  } else if (rel == "id") {
    attr.flags |= kFId;
    attr.relative = relative;
  } else if (rel == "linkFd") {
    attr.flags |= kFLink;
    attr.relative = relative;
  } else if (rel == "linkId") {
    attr.flags |= kFLink | kFId;
    attr.relative = relative;
  } else if (rel != "none") {
    Napi::TypeError::New(env, "tcx anchor must be none, fd, id, linkFd or linkId").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  long ret = SysBpf(BPF_LINK_CREATE, &attr, sizeof(attr));
  if (ret < 0) {
    return ThrowErrno(env, ErrFromErrno(), "tcx attach " + IfLabel(ifindex) + "/" + dl, "BPF_LINK_CREATE");
  }
  // the kernel makes every bpf fd O_CLOEXEC
  return Napi::Number::New(env, static_cast<double>(ret));
}

// (ifindex, direction) -> { revision: bigint, progIds: number[], linkIds: number[] } in run order
// (a link id of 0: attached without a link, by BPF_PROG_ATTACH)
Napi::Value TcxQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, type;
  std::string dl;
  if (!ArgUint32(info, 0, &ifindex) || !ArgDirection(info, 1, &type, &dl)) return env.Undefined();
  uint32_t progs[kMprogMax] = {0}, links[kMprogMax] = {0};
  QueryAttr attr;
  memset(&attr, 0, sizeof(attr));
  attr.target_ifindex = ifindex;
  attr.attach_type = type;
  attr.prog_ids = reinterpret_cast<uint64_t>(progs);
  attr.link_ids = reinterpret_cast<uint64_t>(links);
  attr.count = kMprogMax;
  if (SysBpf(BPF_PROG_QUERY, &attr, sizeof(attr)) < 0) {
    return ThrowErrno(env, ErrFromErrno(), "tcx query " + IfLabel(ifindex) + "/" + dl, "BPF_PROG_QUERY");
  }
  uint32_t n = attr.count < kMprogMax ? attr.count : kMprogMax;
  Napi::Array p = Napi::Array::New(env, n), l = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) {
    p.Set(i, Napi::Number::New(env, progs[i]));
    l.Set(i, Napi::Number::New(env, links[i]));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("revision", Napi::BigInt::New(env, static_cast<uint64_t>(attr.revision)));
  o.Set("progIds", p);
  o.Set("linkIds", l);
  return o;
}

// () -> whether the kernel has tcx: a query of this namespace's loopback, which every namespace
// has, succeeds (empty) on 6.6 and later and is EINVAL before
Napi::Value TcxSupported(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  QueryAttr attr;
  memset(&attr, 0, sizeof(attr));
  attr.target_ifindex = 1;
  attr.attach_type = kTcxIngress;
  if (SysBpf(BPF_PROG_QUERY, &attr, sizeof(attr)) == 0) return Napi::Boolean::New(env, true);
  int err = ErrFromErrno();
  if (err == EINVAL) return Napi::Boolean::New(env, false);
  return ThrowErrno(env, err, "tcx probe on ifindex 1", "BPF_PROG_QUERY");
}

// (label, linkFd, newProgFd, oldProgFd | -1): with an old program, only if it is the one attached
Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd, prog, old;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgInt(info, 2, &prog) || !ArgInt(info, 3, &old)) {
    return env.Undefined();
  }
  struct bpf_link_update_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  if (old >= 0) {
    opts.flags = BPF_F_REPLACE;
    opts.old_prog_fd = static_cast<uint32_t>(old);
  }
  int ret = bpf_link_update(static_cast<int>(fd), static_cast<int>(prog), &opts);
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), label, "bpf_link_update");
  return env.Undefined();
}

// (label, linkFd): the link stays, attached to nothing (defunct), until its last fd and pin go
Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd)) return env.Undefined();
  int ret = bpf_link_detach(static_cast<int>(fd));
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), label, "bpf_link_detach");
  return env.Undefined();
}

// (fd) -> { id, type, progId, ifindex?, attachType? } (ifindex and attachType for a tcx link;
// ifindex 0 once it is detached, or its device gone)
Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return env.Undefined();
  // struct bpf_link_info: type, id, prog_id, then a union at 16 whose tcx member is
  // { ifindex, attach_type }; the 6.1 struct is larger than that, and the kernel fills what fits
  struct bpf_link_info li;
  memset(&li, 0, sizeof(li));
  uint32_t len = sizeof(li);
  int ret = bpf_obj_get_info_by_fd(static_cast<int>(fd), &li, &len);
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), "link fd " + std::to_string(fd), "bpf_obj_get_info_by_fd");
  const auto* raw = reinterpret_cast<const uint8_t*>(&li);
  uint32_t tcx[2];
  memcpy(tcx, raw + 16, sizeof(tcx));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, li.id));
  o.Set("type", Napi::Number::New(env, li.type));
  o.Set("progId", Napi::Number::New(env, li.prog_id));
  if (li.type == kLinkTypeTcx) {
    o.Set("ifindex", Napi::Number::New(env, tcx[0]));
    o.Set("attachType", Napi::Number::New(env, tcx[1]));
  }
  return o;
}

Napi::Value LinkFdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return env.Undefined();
  int fd = bpf_link_get_fd_by_id(id);
  if (fd < 0) return ThrowErrno(env, ErrFromRet(fd), "link id " + std::to_string(id), "bpf_link_get_fd_by_id");
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitTcx(Napi::Env env, Napi::Object exports) {
  exports.Set("tcxLinkCreate", Napi::Function::New<TcxLinkCreate>(env, "tcxLinkCreate"));
  exports.Set("tcxQuery", Napi::Function::New<TcxQuery>(env, "tcxQuery"));
  exports.Set("tcxSupported", Napi::Function::New<TcxSupported>(env, "tcxSupported"));
  exports.Set("linkUpdate", Napi::Function::New<LinkUpdate>(env, "linkUpdate"));
  exports.Set("linkDetach", Napi::Function::New<LinkDetach>(env, "linkDetach"));
  exports.Set("linkInfo", Napi::Function::New<LinkInfo>(env, "linkInfo"));
  exports.Set("linkFdById", Napi::Function::New<LinkFdById>(env, "linkFdById"));
}

}  // namespace lbpf
