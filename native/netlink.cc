// tc (clsact + direct-action filters) and XDP attachment through libbpf's netlink helpers, plus
// interface name/index translation. Everything acts on the calling thread's network namespace.
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <string.h>

#include "common.h"

namespace lbpf {

namespace {

std::string IfLabel(uint32_t ifindex) {
  char name[IF_NAMESIZE] = {0};
  std::string s = if_indextoname(ifindex, name) != nullptr ? std::string(name) : std::string("?");
  return s + "(" + std::to_string(ifindex) + ")";
}

bool ArgPoint(const Napi::CallbackInfo& info, size_t i, enum bpf_tc_attach_point* out, std::string* label) {
  std::string p;
  if (!ArgString(info, i, &p)) return false;
  if (p == "ingress") {
    *out = BPF_TC_INGRESS;
  } else if (p == "egress") {
    *out = BPF_TC_EGRESS;
  } else {
    Napi::TypeError::New(info.Env(), "tc attach point must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return false;
  }
  *label = p;
  return true;
}

// libbpf logs the kernel's extended ack ("Kernel error message: ...") rather than returning it;
// it is the only place that says which of the many EINVAL causes applied, so it rides along.
Napi::Value ThrowNetlink(Napi::Env env, int ret, const std::string& context, const char* step,
                         const LogCapture& capture, bool notSupported = false) {
  ErrorInfo e;
  e.err = ErrFromRet(ret);
  e.context = context;
  e.step = step;
  e.log = capture.text();
  e.notSupported = notSupported;
  return Throw(env, e);
}

struct bpf_tc_hook MakeHook(uint32_t ifindex, enum bpf_tc_attach_point point) {
  struct bpf_tc_hook hook;
  memset(&hook, 0, sizeof(hook));
  hook.sz = sizeof(hook);
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = point;
  return hook;
}

struct bpf_tc_opts MakeTcOpts(uint32_t handle, uint32_t priority) {
  struct bpf_tc_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.handle = handle;
  opts.priority = priority;
  return opts;
}

// (ifindex, point) -> created
Napi::Value TcHookCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex;
  enum bpf_tc_attach_point point;
  std::string pl;
  if (!ArgUint32(info, 0, &ifindex) || !ArgPoint(info, 1, &point, &pl)) return env.Undefined();
  struct bpf_tc_hook hook = MakeHook(ifindex, point);
  LogCapture capture;
  int ret = bpf_tc_hook_create(&hook);
  if (ret == -EEXIST) return Napi::Boolean::New(env, false);
  if (ret < 0) return ThrowNetlink(env, ret, "tc hook " + IfLabel(ifindex) + "/" + pl, "bpf_tc_hook_create", capture);
  return Napi::Boolean::New(env, true);
}

// (ifindex): both directions at once is what makes libbpf delete the clsact qdisc itself.
Napi::Value TcHookDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex;
  if (!ArgUint32(info, 0, &ifindex)) return env.Undefined();
  struct bpf_tc_hook hook = MakeHook(ifindex, static_cast<enum bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  LogCapture capture;
  int ret = bpf_tc_hook_destroy(&hook);
  if (ret < 0) return ThrowNetlink(env, ret, "tc hook " + IfLabel(ifindex), "bpf_tc_hook_destroy", capture);
  return env.Undefined();
}

// (ifindex, point, progFd, handle, priority, replace) -> progId
Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, handle, priority;
  int64_t fd;
  bool replace;
  enum bpf_tc_attach_point point;
  std::string pl;
  if (!ArgUint32(info, 0, &ifindex) || !ArgPoint(info, 1, &point, &pl) || !ArgInt(info, 2, &fd) ||
      !ArgUint32(info, 3, &handle) || !ArgUint32(info, 4, &priority) || !ArgBool(info, 5, &replace)) {
    return env.Undefined();
  }
  struct bpf_tc_hook hook = MakeHook(ifindex, point);
  struct bpf_tc_opts opts = MakeTcOpts(handle, priority);
  opts.prog_fd = static_cast<int>(fd);
  opts.flags = replace ? BPF_TC_F_REPLACE : 0;
  LogCapture capture;
  int ret = bpf_tc_attach(&hook, &opts);
  if (ret < 0) return ThrowNetlink(env, ret, "tc attach " + IfLabel(ifindex) + "/" + pl, "bpf_tc_attach", capture);
  return Napi::Number::New(env, opts.prog_id);
}

// (ifindex, point, handle, priority)
Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, handle, priority;
  enum bpf_tc_attach_point point;
  std::string pl;
  if (!ArgUint32(info, 0, &ifindex) || !ArgPoint(info, 1, &point, &pl) || !ArgUint32(info, 2, &handle) ||
      !ArgUint32(info, 3, &priority)) {
    return env.Undefined();
  }
  struct bpf_tc_hook hook = MakeHook(ifindex, point);
  struct bpf_tc_opts opts = MakeTcOpts(handle, priority);
  LogCapture capture;
  int ret = bpf_tc_detach(&hook, &opts);
  if (ret < 0) return ThrowNetlink(env, ret, "tc detach " + IfLabel(ifindex) + "/" + pl, "bpf_tc_detach", capture);
  return env.Undefined();
}

// (ifindex, point, handle, priority) -> progId | undefined
Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, handle, priority;
  enum bpf_tc_attach_point point;
  std::string pl;
  if (!ArgUint32(info, 0, &ifindex) || !ArgPoint(info, 1, &point, &pl) || !ArgUint32(info, 2, &handle) ||
      !ArgUint32(info, 3, &priority)) {
    return env.Undefined();
  }
  struct bpf_tc_hook hook = MakeHook(ifindex, point);
  struct bpf_tc_opts opts = MakeTcOpts(handle, priority);
  LogCapture capture;
  int ret = bpf_tc_query(&hook, &opts);
  if (ret == -ENOENT) return env.Undefined();
  // Without a clsact qdisc, or before its first filter creates chain 0, the kernel answers EINVAL
  // rather than ENOENT; only its extended ack tells these apart from a malformed request. Either
  // way nothing is attached there.
  if (ret == -EINVAL && (capture.text().find("Cannot find specified filter chain") != std::string::npos ||
                         capture.text().find("Parent Qdisc doesn't exist") != std::string::npos)) {
    return env.Undefined();
  }
  if (ret < 0) return ThrowNetlink(env, ret, "tc query " + IfLabel(ifindex) + "/" + pl, "bpf_tc_query", capture);
  return Napi::Number::New(env, opts.prog_id);
}

// (ifindex, progFd, flags)
Napi::Value XdpAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, flags;
  int64_t fd;
  if (!ArgUint32(info, 0, &ifindex) || !ArgInt(info, 1, &fd) || !ArgUint32(info, 2, &flags)) return env.Undefined();
  LogCapture capture;
  int ret = bpf_xdp_attach(static_cast<int>(ifindex), static_cast<int>(fd), flags, nullptr);
  if (ret < 0) {
    // Offload requires a device that implements it; anything else answers EINVAL.
    bool unsupported = (flags & XDP_FLAGS_HW_MODE) != 0 && ret == -EINVAL;
    return ThrowNetlink(env, ret, "xdp attach " + IfLabel(ifindex), "bpf_xdp_attach", capture, unsupported);
  }
  return env.Undefined();
}

// (ifindex, flags)
Napi::Value XdpDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex, flags;
  if (!ArgUint32(info, 0, &ifindex) || !ArgUint32(info, 1, &flags)) return env.Undefined();
  LogCapture capture;
  int ret = bpf_xdp_detach(static_cast<int>(ifindex), flags, nullptr);
  if (ret < 0) return ThrowNetlink(env, ret, "xdp detach " + IfLabel(ifindex), "bpf_xdp_detach", capture);
  return env.Undefined();
}

// (ifindex) -> { attachMode, progId, drvProgId, skbProgId, hwProgId }
Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex;
  if (!ArgUint32(info, 0, &ifindex)) return env.Undefined();
  struct bpf_xdp_query_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  LogCapture capture;
  int ret = bpf_xdp_query(static_cast<int>(ifindex), 0, &opts);
  if (ret < 0) return ThrowNetlink(env, ret, "xdp query " + IfLabel(ifindex), "bpf_xdp_query", capture);
  Napi::Object o = Napi::Object::New(env);
  o.Set("attachMode", Napi::Number::New(env, opts.attach_mode));
  o.Set("progId", Napi::Number::New(env, opts.prog_id));
  o.Set("drvProgId", Napi::Number::New(env, opts.drv_prog_id));
  o.Set("skbProgId", Napi::Number::New(env, opts.skb_prog_id));
  o.Set("hwProgId", Napi::Number::New(env, opts.hw_prog_id));
  return o;
}

Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!ArgString(info, 0, &name)) return env.Undefined();
  unsigned idx = if_nametoindex(name.c_str());
  if (idx == 0) {
    ErrorInfo e;
    // if_nametoindex reports ENODEV for unknown names but also fails that way for names that
    // are too long; both mean "no such device" to a caller.
    e.err = ENODEV;
    e.step = "if_nametoindex";
    e.message = "no such device: " + name;
    return Throw(env, e);
  }
  return Napi::Number::New(env, idx);
}

Napi::Value IfIndexToName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t idx;
  if (!ArgUint32(info, 0, &idx)) return env.Undefined();
  char name[IF_NAMESIZE] = {0};
  if (if_indextoname(idx, name) == nullptr) {
    int err = ErrFromErrno();
    if (err == ENXIO || err == ENODEV) return env.Undefined();
    return ThrowErrno(env, err, "interface index " + std::to_string(idx), "if_indextoname");
  }
  return Napi::String::New(env, name);
}

}  // namespace

void InitNetlink(Napi::Env env, Napi::Object exports) {
  exports.Set("tcHookCreate", Napi::Function::New<TcHookCreate>(env, "tcHookCreate"));
  exports.Set("tcHookDestroy", Napi::Function::New<TcHookDestroy>(env, "tcHookDestroy"));
  exports.Set("tcAttach", Napi::Function::New<TcAttach>(env, "tcAttach"));
  exports.Set("tcDetach", Napi::Function::New<TcDetach>(env, "tcDetach"));
  exports.Set("tcQuery", Napi::Function::New<TcQuery>(env, "tcQuery"));
  exports.Set("xdpAttach", Napi::Function::New<XdpAttach>(env, "xdpAttach"));
  exports.Set("xdpDetach", Napi::Function::New<XdpDetach>(env, "xdpDetach"));
  exports.Set("xdpQuery", Napi::Function::New<XdpQuery>(env, "xdpQuery"));
  exports.Set("ifNameToIndex", Napi::Function::New<IfNameToIndex>(env, "ifNameToIndex"));
  exports.Set("ifIndexToName", Napi::Function::New<IfIndexToName>(env, "ifIndexToName"));
}

}  // namespace lbpf
