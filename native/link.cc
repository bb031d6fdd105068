// Network devices over rtnetlink (veth pairs, delete, up/MTU, listing), the tc filters under a
// clsact direction, and ethtool features over the SIOCETHTOOL ioctl. libmnl builds and parses the
// netlink messages. Everything acts on the calling thread's network namespace: each call opens
// its own socket there.
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace lbpf {

namespace {

// Large enough for any single dump message the kernel builds (it sizes dump skbs up to 32 KiB
// for a reader with a big buffer); a truncated read is reported as ENOSPC by libmnl.
constexpr size_t kRecvSize = 64 * 1024;

// One request/response exchange on a NETLINK_ROUTE socket of the calling thread's namespace.
struct NlResult {
  int err = 0;         // positive errno, 0 on success
  std::string extack;  // the kernel's NLMSGERR_ATTR_MSG, if it sent one
  const char* step = "";
};

struct RunCtx {
  mnl_cb_t data_cb;
  void* data;
  NlResult* res;
};

int ExtAckAttr(const struct nlattr* attr, void* data) {
  auto* res = static_cast<NlResult*>(data);
  if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0) {
    res->extack = mnl_attr_get_str(attr);
  }
  return MNL_CB_OK;
}

void ParseExtAck(const struct nlmsghdr* nlh, size_t offset, NlResult* res) {
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return;
  if (mnl_nlmsg_get_payload_len(nlh) <= offset) return;
  mnl_attr_parse(nlh, static_cast<unsigned>(offset), ExtAckAttr, res);
}

int OnError(const struct nlmsghdr* nlh, void* data) {
  auto* ctx = static_cast<RunCtx*>(data);
  if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) {
    ctx->res->err = EBADMSG;
    return MNL_CB_ERROR;
  }
  const auto* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  size_t off = sizeof(*e);
  // Without NETLINK_CAP_ACK honoured the request comes back too, before the attributes.
  if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
  if (e->error != 0) ParseExtAck(nlh, off, ctx->res);
  if (e->error == 0) return MNL_CB_STOP;  // the ack
  ctx->res->err = -e->error;
  return MNL_CB_ERROR;
}

int OnDone(const struct nlmsghdr* nlh, void* data) {
  auto* ctx = static_cast<RunCtx*>(data);
  // A dump that failed part way says so in NLMSG_DONE's int payload.
  if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
    int v;
    memcpy(&v, mnl_nlmsg_get_payload(nlh), sizeof(v));
    if (v < 0) {
      ParseExtAck(nlh, sizeof(int), ctx->res);
      ctx->res->err = -v;
      return MNL_CB_ERROR;
    }
  }
  return MNL_CB_STOP;
}

int OnData(const struct nlmsghdr* nlh, void* data) {
  auto* ctx = static_cast<RunCtx*>(data);
  if (ctx->data_cb == nullptr) return MNL_CB_OK;
  return ctx->data_cb(nlh, ctx->data);
}

class Rtnl {
 public:
  Rtnl() : buf_(kRecvSize) {}
  ~Rtnl() {
    if (nl_ != nullptr) mnl_socket_close(nl_);
  }
  Rtnl(const Rtnl&) = delete;
  Rtnl& operator=(const Rtnl&) = delete;

  bool Open(NlResult* res) {
    nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (nl_ == nullptr) return Fail(res, "socket(NETLINK_ROUTE)");
    int one = 1;
    // The kernel's own words on what it refused; not having them is no reason to fail.
    mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &one, sizeof(one));
    mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof(one));
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return Fail(res, "bind(NETLINK_ROUTE)");
    portid_ = mnl_socket_get_portid(nl_);
    seq_ = static_cast<unsigned>(time(nullptr));
    return true;
  }

  char* Buf() { return buf_.data(); }

  // Sends the message in Buf() (a request asks for an ack; a dump gets NLMSG_DONE) and feeds
  // each data message to cb until the exchange ends. false on failure, with res filled.
  bool Run(struct nlmsghdr* nlh, const char* step, mnl_cb_t cb, void* data, NlResult* res) {
    res->step = step;
    nlh->nlmsg_seq = ++seq_;
    if ((nlh->nlmsg_flags & NLM_F_DUMP) != NLM_F_DUMP) nlh->nlmsg_flags |= NLM_F_ACK;
    unsigned seq = nlh->nlmsg_seq;
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) return Fail(res, step);
    RunCtx ctx{cb, data, res};
    mnl_cb_t ctl[NLMSG_MIN_TYPE] = {};
    ctl[NLMSG_ERROR] = OnError;
    ctl[NLMSG_DONE] = OnDone;
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(nl_, buf_.data(), buf_.size());
      if (n < 0) return Fail(res, step);
      errno = 0;
      int ret = mnl_cb_run2(buf_.data(), static_cast<size_t>(n), seq, portid_, OnData, &ctx, ctl, NLMSG_MIN_TYPE);
      if (ret == MNL_CB_ERROR) {
        if (res->err == 0) res->err = ErrFromErrno();
        return false;
      }
      if (ret == MNL_CB_STOP) return true;
    }
  }

 private:
  static bool Fail(NlResult* res, const char* step) {
    res->err = ErrFromErrno();
    res->step = step;
    return false;
  }

  struct mnl_socket* nl_ = nullptr;
  unsigned portid_ = 0;
  unsigned seq_ = 0;
  std::vector<char> buf_;
};

Napi::Value ThrowNl(Napi::Env env, const NlResult& res, const std::string& context) {
  ErrorInfo e;
  e.err = res.err;
  e.context = context;
  e.step = res.step;
  if (!res.extack.empty()) e.log = "Kernel error message: " + res.extack;
  e.notSupported = res.err == EOPNOTSUPP;
  return Throw(env, e);
}

Napi::Value ThrowMessage(Napi::Env env, int err, const char* step, const std::string& message) {
  ErrorInfo e;
  e.err = err;
  e.step = step;
  e.message = message;
  return Throw(env, e);
}

// A device named by its index (a number) or its name (a string): how rtnetlink requests address
// one, and a label for errors.
struct LinkRef {
  uint32_t ifindex = 0;
  std::string name;
  std::string label;
};

bool ArgLink(const Napi::CallbackInfo& info, size_t i, LinkRef* out) {
  if (info[i].IsString()) {
    if (!ArgString(info, i, &out->name)) return false;
    out->label = out->name;
    return true;
  }
  if (info[i].IsNumber()) {
    if (!ArgUint32(info, i, &out->ifindex)) return false;
    if (out->ifindex == 0) {
      Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be an interface index > 0")
          .ThrowAsJavaScriptException();
      return false;
    }
    char name[IF_NAMESIZE] = {0};
    out->label = if_indextoname(out->ifindex, name) != nullptr
                     ? std::string(name) + "(" + std::to_string(out->ifindex) + ")"
                     : "ifindex " + std::to_string(out->ifindex);
    return true;
  }
  Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be an interface name or index")
      .ThrowAsJavaScriptException();
  return false;
}

// A device name the kernel could take; false after throwing.
bool CheckName(Napi::Env env, const std::string& name, const char* what) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos ||
      name.find(' ') != std::string::npos || name == "." || name == "..") {
    ThrowMessage(env, EINVAL, "dev_valid_name",
                 std::string(what) + ": '" + name + "' is not a valid interface name (1 to " +
                     std::to_string(IFNAMSIZ - 1) + " characters, no '/' or spaces)");
    return false;
  }
  return true;
}

// The request's ifinfomsg, addressing `ref` when `address` is set (by index, else by name).
struct ifinfomsg* PutIfinfo(struct nlmsghdr* nlh, const LinkRef& ref, bool address = true) {
  auto* ifi = static_cast<struct ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  if (!address) return ifi;
  ifi->ifi_index = static_cast<int>(ref.ifindex);
  if (ref.ifindex == 0) mnl_attr_put_strz(nlh, IFLA_IFNAME, ref.name.c_str());
  return ifi;
}

// ------------------------------------------------------------------------------ link listing

struct LinkRow {
  uint32_t ifindex = 0;
  std::string name;
  std::string kind;
  uint16_t type = 0;
  uint32_t flags = 0;
  uint32_t mtu = 0;
  uint32_t link = 0;  // IFLA_LINK: a veth's peer, a vlan's lower device
  bool hasLink = false;
};

// an mnl_attr_parse callback: each attribute of a type up to MAX into its slot of the table
template <int MAX>
int TableAttr(const struct nlattr* attr, void* data) {
  auto** tb = static_cast<const struct nlattr**>(data);
  if (mnl_attr_type_valid(attr, MAX) < 0) return MNL_CB_OK;
  tb[mnl_attr_get_type(attr)] = attr;
  return MNL_CB_OK;
}

int OnLink(const struct nlmsghdr* nlh, void* data) {
  auto* rows = static_cast<std::vector<LinkRow>*>(data);
  if (nlh->nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(nlh) < sizeof(struct ifinfomsg)) return MNL_CB_OK;
  const auto* ifi = static_cast<const struct ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  const struct nlattr* tb[IFLA_MAX + 1] = {};
  if (mnl_attr_parse(nlh, sizeof(*ifi), TableAttr<IFLA_MAX>, tb) < 0) return MNL_CB_ERROR;
  LinkRow r;
  r.ifindex = static_cast<uint32_t>(ifi->ifi_index);
  r.type = ifi->ifi_type;
  r.flags = ifi->ifi_flags;
  if (tb[IFLA_IFNAME] != nullptr && mnl_attr_validate(tb[IFLA_IFNAME], MNL_TYPE_NUL_STRING) == 0) {
    r.name = mnl_attr_get_str(tb[IFLA_IFNAME]);
  }
  if (tb[IFLA_MTU] != nullptr && mnl_attr_validate(tb[IFLA_MTU], MNL_TYPE_U32) == 0)
    r.mtu = mnl_attr_get_u32(tb[IFLA_MTU]);
  if (tb[IFLA_LINK] != nullptr && mnl_attr_validate(tb[IFLA_LINK], MNL_TYPE_U32) == 0) {
    r.link = mnl_attr_get_u32(tb[IFLA_LINK]);
    r.hasLink = true;
  }
  if (tb[IFLA_LINKINFO] != nullptr) {
    const struct nlattr* info[IFLA_INFO_MAX + 1] = {};
    if (mnl_attr_parse_nested(tb[IFLA_LINKINFO], TableAttr<IFLA_INFO_MAX>, info) >= 0 &&
        info[IFLA_INFO_KIND] != nullptr && mnl_attr_validate(info[IFLA_INFO_KIND], MNL_TYPE_STRING) == 0) {
      // the kind is NUL-terminated in practice, but its length is what the attribute says
      const char* s = static_cast<const char*>(mnl_attr_get_payload(info[IFLA_INFO_KIND]));
      r.kind.assign(s, strnlen(s, mnl_attr_get_payload_len(info[IFLA_INFO_KIND])));
    }
  }
  rows->push_back(std::move(r));
  return MNL_CB_OK;
}

Napi::Object LinkObject(Napi::Env env, const LinkRow& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ifindex", Napi::Number::New(env, r.ifindex));
  o.Set("name", Napi::String::New(env, r.name));
  if (!r.kind.empty()) o.Set("kind", Napi::String::New(env, r.kind));
  o.Set("type", Napi::Number::New(env, r.type));
  o.Set("flags", Napi::Number::New(env, r.flags));
  o.Set("mtu", Napi::Number::New(env, r.mtu));
  if (r.hasLink) o.Set("link", Napi::Number::New(env, r.link));
  return o;
}

void PutExtMask(struct nlmsghdr* nlh) {
  // counters are not wanted, and would make each message several times larger
  mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
}

// () -> LinkRow[]
Napi::Value LinkList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Rtnl nl;
  NlResult res;
  std::vector<LinkRow> rows;
  if (nl.Open(&res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_GETLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    PutIfinfo(nlh, LinkRef{}, false);
    PutExtMask(nlh);
    if (nl.Run(nlh, "RTM_GETLINK", OnLink, &rows, &res)) {
      Napi::Array out = Napi::Array::New(env, rows.size());
      for (size_t i = 0; i < rows.size(); i++) out.Set(static_cast<uint32_t>(i), LinkObject(env, rows[i]));
      return out;
    }
  }
  return ThrowNl(env, res, "list links");
}

bool GetLink(Rtnl* nl, const LinkRef& ref, LinkRow* out, NlResult* res) {
  struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl->Buf());
  nlh->nlmsg_type = RTM_GETLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST;
  PutIfinfo(nlh, ref);
  PutExtMask(nlh);
  std::vector<LinkRow> rows;
  if (!nl->Run(nlh, "RTM_GETLINK", OnLink, &rows, res)) return false;
  if (rows.empty()) {
    res->err = ENODEV;
    return false;
  }
  *out = rows[0];
  return true;
}

// (dev) -> LinkRow; ENODEV when there is no such device
Napi::Value LinkGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LinkRef ref;
  if (!ArgLink(info, 0, &ref)) return env.Undefined();
  Rtnl nl;
  NlResult res;
  LinkRow row;
  if (nl.Open(&res) && GetLink(&nl, ref, &row, &res)) return LinkObject(env, row);
  return ThrowNl(env, res, "link " + ref.label);
}

// ------------------------------------------------------------------------------ route lookup

struct RouteRow {
  bool found = false;
  uint8_t type = 0;
  uint32_t oif = 0;
  std::string prefsrc, gateway;
};

std::string Ipv4Text(const struct nlattr* a) {
  if (a == nullptr || mnl_attr_get_payload_len(a) != 4) return "";
  char out[INET_ADDRSTRLEN];
  return inet_ntop(AF_INET, mnl_attr_get_payload(a), out, sizeof(out)) != nullptr ? out : "";
}

int OnRoute(const struct nlmsghdr* nlh, void* data) {
  auto* r = static_cast<RouteRow*>(data);
  if (nlh->nlmsg_type != RTM_NEWROUTE || mnl_nlmsg_get_payload_len(nlh) < sizeof(struct rtmsg)) return MNL_CB_OK;
  const auto* rtm = static_cast<const struct rtmsg*>(mnl_nlmsg_get_payload(nlh));
  const struct nlattr* tb[RTA_MAX + 1] = {};
  if (mnl_attr_parse(nlh, sizeof(*rtm), TableAttr<RTA_MAX>, tb) < 0) return MNL_CB_ERROR;
  r->found = true;
  r->type = rtm->rtm_type;
  if (tb[RTA_OIF] != nullptr && mnl_attr_validate(tb[RTA_OIF], MNL_TYPE_U32) == 0)
    r->oif = mnl_attr_get_u32(tb[RTA_OIF]);
  r->prefsrc = Ipv4Text(tb[RTA_PREFSRC]);
  r->gateway = Ipv4Text(tb[RTA_GATEWAY]);
  return MNL_CB_OK;
}

// (dst: string) -> { type, oif, prefsrc?, gateway? } | null: the route the FIB takes to an
// IPv4 address now (as `ip route get`), null when there is none (unreachable)
Napi::Value RouteGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct in_addr dst;
  if (!info[0].IsString() || inet_pton(AF_INET, info[0].As<Napi::String>().Utf8Value().c_str(), &dst) != 1) {
    Napi::TypeError::New(env, "argument 0 must be an IPv4 address").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Rtnl nl;
  NlResult res;
  RouteRow row;
  if (nl.Open(&res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_GETROUTE;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    auto* rtm = static_cast<struct rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct rtmsg)));
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = 32;
    mnl_attr_put(nlh, RTA_DST, sizeof(dst), &dst);
    if (nl.Run(nlh, "RTM_GETROUTE", OnRoute, &row, &res)) {
      if (!row.found) return env.Null();
      Napi::Object o = Napi::Object::New(env);
      o.Set("type", Napi::Number::New(env, row.type));
      o.Set("oif", Napi::Number::New(env, row.oif));
      if (!row.prefsrc.empty()) o.Set("prefsrc", Napi::String::New(env, row.prefsrc));
      if (!row.gateway.empty()) o.Set("gateway", Napi::String::New(env, row.gateway));
      return o;
    }
    if (res.err == ENETUNREACH || res.err == EHOSTUNREACH) return env.Null();
  }
  return ThrowNl(env, res, "route to " + info[0].As<Napi::String>().Utf8Value());
}

// ------------------------------------------------------------------------------ link changes

struct VethEnd {
  std::string name;
  uint32_t mtu = 0, txQueues = 0, rxQueues = 0;
};

bool ArgVethEnd(const Napi::CallbackInfo& info, size_t i, VethEnd* out) {
  Napi::Env env = info.Env();
  if (!info[i].IsObject()) {
    Napi::TypeError::New(env, "argument " + std::to_string(i) + " must be { name, mtu?, txQueues?, rxQueues? }")
        .ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = info[i].As<Napi::Object>();
  Napi::Value name = o.Get("name");
  if (!name.IsString()) {
    Napi::TypeError::New(env, "veth end " + std::to_string(i) + ": name must be a string").ThrowAsJavaScriptException();
    return false;
  }
  out->name = name.As<Napi::String>().Utf8Value();
  const char* keys[] = {"mtu", "txQueues", "rxQueues"};
  uint32_t* dst[] = {&out->mtu, &out->txQueues, &out->rxQueues};
  for (int k = 0; k < 3; k++) {
    Napi::Value v = o.Get(keys[k]);
    if (v.IsUndefined()) continue;
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (d < 1 || d > 0xffffffffu || d != static_cast<double>(static_cast<uint32_t>(d))) {
      Napi::TypeError::New(env, "veth end " + out->name + ": " + keys[k] + " must be a positive integer")
          .ThrowAsJavaScriptException();
      return false;
    }
    *dst[k] = static_cast<uint32_t>(d);
  }
  return true;
}

void PutEndAttrs(struct nlmsghdr* nlh, const VethEnd& end) {
  mnl_attr_put_strz(nlh, IFLA_IFNAME, end.name.c_str());
  if (end.mtu != 0) mnl_attr_put_u32(nlh, IFLA_MTU, end.mtu);
  if (end.txQueues != 0) mnl_attr_put_u32(nlh, IFLA_NUM_TX_QUEUES, end.txQueues);
  if (end.rxQueues != 0) mnl_attr_put_u32(nlh, IFLA_NUM_RX_QUEUES, end.rxQueues);
}

// ({ name, mtu?, txQueues?, rxQueues? }, same for the peer): both ends down, as `ip link add` leaves them
Napi::Value VethCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  VethEnd a, b;
  if (!ArgVethEnd(info, 0, &a) || !ArgVethEnd(info, 1, &b)) return env.Undefined();
  if (!CheckName(env, a.name, "create veth") || !CheckName(env, b.name, "create veth")) return env.Undefined();
  Rtnl nl;
  NlResult res;
  if (nl.Open(&res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
    PutIfinfo(nlh, LinkRef{}, false);
    PutEndAttrs(nlh, a);
    struct nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    struct nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    struct nlattr* peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    // the peer is described as a link of its own: an ifinfomsg, then its attributes
    auto* pifi = static_cast<struct ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg)));
    pifi->ifi_family = AF_UNSPEC;
    PutEndAttrs(nlh, b);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, linkinfo);
    if (nl.Run(nlh, "RTM_NEWLINK", nullptr, nullptr, &res)) return env.Undefined();
  }
  return ThrowNl(env, res, "create veth " + a.name + " (peer " + b.name + ")");
}

// (dev): deleting either end of a veth deletes the pair
Napi::Value LinkDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LinkRef ref;
  if (!ArgLink(info, 0, &ref)) return env.Undefined();
  Rtnl nl;
  NlResult res;
  if (nl.Open(&res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_DELLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    PutIfinfo(nlh, ref);
    if (nl.Run(nlh, "RTM_DELLINK", nullptr, nullptr, &res)) return env.Undefined();
  }
  return ThrowNl(env, res, "delete link " + ref.label);
}

// (dev, up: -1 leave | 0 down | 1 up, mtu: 0 leave)
Napi::Value LinkSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LinkRef ref;
  int64_t up;
  uint32_t mtu;
  if (!ArgLink(info, 0, &ref) || !ArgInt(info, 1, &up) || !ArgUint32(info, 2, &mtu)) return env.Undefined();
  Rtnl nl;
  NlResult res;
  if (nl.Open(&res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    struct ifinfomsg* ifi = PutIfinfo(nlh, ref);
    if (up >= 0) {
      ifi->ifi_change = IFF_UP;
      ifi->ifi_flags = up > 0 ? IFF_UP : 0;
    }
    if (mtu != 0) mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
    if (nl.Run(nlh, "RTM_NEWLINK", nullptr, nullptr, &res)) return env.Undefined();
  }
  return ThrowNl(env, res, "set link " + ref.label);
}

// ------------------------------------------------------------------------------ tc filters

struct FilterRow {
  uint32_t handle = 0;
  uint32_t info = 0;  // TC_H_MAKE(priority << 16, protocol in network order)
  uint32_t chain = 0;
  std::string kind;
};

int OnFilter(const struct nlmsghdr* nlh, void* data) {
  auto* rows = static_cast<std::vector<FilterRow>*>(data);
  if (nlh->nlmsg_type != RTM_NEWTFILTER || mnl_nlmsg_get_payload_len(nlh) < sizeof(struct tcmsg)) return MNL_CB_OK;
  const auto* t = static_cast<const struct tcmsg*>(mnl_nlmsg_get_payload(nlh));
  const struct nlattr* tb[TCA_MAX + 1] = {};
  if (mnl_attr_parse(nlh, sizeof(*t), TableAttr<TCA_MAX>, tb) < 0) return MNL_CB_ERROR;
  FilterRow r;
  r.handle = t->tcm_handle;
  r.info = t->tcm_info;
  if (tb[TCA_KIND] != nullptr && mnl_attr_validate(tb[TCA_KIND], MNL_TYPE_STRING) == 0) {
    const char* s = static_cast<const char*>(mnl_attr_get_payload(tb[TCA_KIND]));
    r.kind.assign(s, strnlen(s, mnl_attr_get_payload_len(tb[TCA_KIND])));
  }
  if (tb[TCA_CHAIN] != nullptr && mnl_attr_validate(tb[TCA_CHAIN], MNL_TYPE_U32) == 0)
    r.chain = mnl_attr_get_u32(tb[TCA_CHAIN]);
  rows->push_back(std::move(r));
  return MNL_CB_OK;
}

// (ifindex, 'ingress'|'egress') -> [{ kind, priority, protocol, handle, chain }], one row per
// message of the dump: each classifier instance (handle 0) and then each of its filters. ENODEV
// when the device is not there: the kernel would answer an empty dump for it.
Napi::Value TcFilterList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ifindex;
  std::string point;
  if (!ArgUint32(info, 0, &ifindex) || !ArgString(info, 1, &point)) return env.Undefined();
  if (point != "ingress" && point != "egress") {
    Napi::TypeError::New(env, "tc attach point must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  LinkRef ref;
  ref.ifindex = ifindex;
  char name[IF_NAMESIZE] = {0};
  ref.label = if_indextoname(ifindex, name) != nullptr ? std::string(name) + "(" + std::to_string(ifindex) + ")"
                                                       : "ifindex " + std::to_string(ifindex);
  Rtnl nl;
  NlResult res;
  std::vector<FilterRow> rows;
  LinkRow before, after;
  if (nl.Open(&res) && GetLink(&nl, ref, &before, &res)) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(nl.Buf());
    nlh->nlmsg_type = RTM_GETTFILTER;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    auto* t = static_cast<struct tcmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct tcmsg)));
    t->tcm_family = AF_UNSPEC;
    t->tcm_ifindex = static_cast<int>(ifindex);
    t->tcm_parent = TC_H_MAKE(TC_H_CLSACT, point == "ingress" ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS);
    // the device must still be there after the dump, or its emptiness proves nothing
    if (nl.Run(nlh, "RTM_GETTFILTER", OnFilter, &rows, &res) && GetLink(&nl, ref, &after, &res)) {
      Napi::Array out = Napi::Array::New(env, rows.size());
      for (size_t i = 0; i < rows.size(); i++) {
        const FilterRow& r = rows[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("kind", Napi::String::New(env, r.kind));
        o.Set("priority", Napi::Number::New(env, TC_H_MAJ(r.info) >> 16));
        o.Set("protocol", Napi::Number::New(env, ntohs(static_cast<uint16_t>(TC_H_MIN(r.info)))));
        o.Set("handle", Napi::Number::New(env, r.handle));
        o.Set("chain", Napi::Number::New(env, r.chain));
        out.Set(static_cast<uint32_t>(i), o);
      }
      return out;
    }
  }
  return ThrowNl(env, res, "tc filters of " + ref.label + "/" + point);
}

// ------------------------------------------------------------------------------ ethtool

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

int Ethtool(int fd, const std::string& dev, void* data) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, dev.c_str(), dev.size());
  ifr.ifr_data = static_cast<char*>(data);
  int ret = ioctl(fd, SIOCETHTOOL, &ifr);
  return ret < 0 ? -ErrFromErrno() : ret;
}

struct Features {
  std::vector<std::string> names;
  std::vector<struct ethtool_get_features_block> blocks;
};

// 0 or a positive errno, with the failing step.
int ReadFeatures(int fd, const std::string& dev, Features* out, const char** step) {
  std::vector<uint8_t> sbuf(sizeof(struct ethtool_sset_info) + sizeof(uint32_t), 0);
  auto* sset = reinterpret_cast<struct ethtool_sset_info*>(sbuf.data());
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ULL << ETH_SS_FEATURES;
  *step = "ETHTOOL_GSSET_INFO";
  int ret = Ethtool(fd, dev, sset);
  if (ret < 0) return -ret;
  if ((sset->sset_mask & (1ULL << ETH_SS_FEATURES)) == 0) return EOPNOTSUPP;
  uint32_t n = sset->data[0];

  std::vector<uint8_t> gbuf(sizeof(struct ethtool_gstrings) + static_cast<size_t>(n) * ETH_GSTRING_LEN, 0);
  auto* gs = reinterpret_cast<struct ethtool_gstrings*>(gbuf.data());
  gs->cmd = ETHTOOL_GSTRINGS;
  gs->string_set = ETH_SS_FEATURES;
  gs->len = n;
  *step = "ETHTOOL_GSTRINGS";
  ret = Ethtool(fd, dev, gs);
  if (ret < 0) return -ret;
  n = gs->len < n ? gs->len : n;

  uint32_t words = (n + 31) / 32;
  std::vector<uint8_t> fbuf(sizeof(struct ethtool_gfeatures) + words * sizeof(struct ethtool_get_features_block), 0);
  auto* gf = reinterpret_cast<struct ethtool_gfeatures*>(fbuf.data());
  gf->cmd = ETHTOOL_GFEATURES;
  gf->size = words;
  *step = "ETHTOOL_GFEATURES";
  ret = Ethtool(fd, dev, gf);
  if (ret < 0) return -ret;

  out->names.clear();
  for (uint32_t i = 0; i < n; i++) {
    const char* s = reinterpret_cast<const char*>(gs->data) + static_cast<size_t>(i) * ETH_GSTRING_LEN;
    out->names.emplace_back(s, strnlen(s, ETH_GSTRING_LEN));
  }
  out->blocks.assign(gf->features, gf->features + words);
  return 0;
}

bool OpenEthtool(Napi::Env env, const std::string& dev, Fd* fd) {
  if (dev.empty() || dev.size() >= IFNAMSIZ) {
    ThrowMessage(env, ENODEV, "SIOCETHTOOL", "ethtool " + dev + ": no such device: '" + dev + "'");
    return false;
  }
  fd->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd->fd < 0) fd->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd->fd < 0) {
    ThrowErrno(env, ErrFromErrno(), "ethtool " + dev, "socket");
    return false;
  }
  return true;
}

// (dev name) -> [{ name, active, requested, available, fixed }] in the kernel's bit order, the
// unnamed bits left out
Napi::Value EthtoolFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dev;
  if (!ArgString(info, 0, &dev)) return env.Undefined();
  Fd fd;
  if (!OpenEthtool(env, dev, &fd)) return env.Undefined();
  Features f;
  const char* step = "";
  int err = ReadFeatures(fd.fd, dev, &f, &step);
  if (err != 0) return ThrowErrno(env, err, "ethtool features of " + dev, step);
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  for (size_t i = 0; i < f.names.size(); i++) {
    if (f.names[i].empty()) continue;  // a bit whose feature the kernel has since removed
    const auto& b = f.blocks[i / 32];
    uint32_t bit = 1u << (i % 32);
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, f.names[i]));
    o.Set("active", Napi::Boolean::New(env, (b.active & bit) != 0));
    o.Set("requested", Napi::Boolean::New(env, (b.requested & bit) != 0));
    o.Set("available", Napi::Boolean::New(env, (b.available & bit) != 0));
    // as ethtool prints "[fixed]": not changeable on this device, or never by anyone
    o.Set("fixed", Napi::Boolean::New(env, (b.available & bit) == 0 || (b.never_changed & bit) != 0));
    out.Set(k++, o);
  }
  return out;
}

// (dev name, names[], values[]) -> ETHTOOL_F_* flags of the answer (0: all applied as asked).
// An unknown name throws EINVAL before anything is changed.
Napi::Value EthtoolSetFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dev;
  if (!ArgString(info, 0, &dev)) return env.Undefined();
  if (!info[1].IsArray() || !info[2].IsArray() ||
      info[1].As<Napi::Array>().Length() != info[2].As<Napi::Array>().Length()) {
    Napi::TypeError::New(env, "ethtoolSetFeatures expects (dev, names[], values[]) of equal length")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array names = info[1].As<Napi::Array>();
  Napi::Array values = info[2].As<Napi::Array>();
  Fd fd;
  if (!OpenEthtool(env, dev, &fd)) return env.Undefined();
  Features f;
  const char* step = "";
  int err = ReadFeatures(fd.fd, dev, &f, &step);
  std::string context = "ethtool set features of " + dev;
  if (err != 0) return ThrowErrno(env, err, context, step);

  uint32_t words = static_cast<uint32_t>(f.blocks.size());
  std::vector<uint8_t> sbuf(sizeof(struct ethtool_sfeatures) + words * sizeof(struct ethtool_set_features_block), 0);
  auto* sf = reinterpret_cast<struct ethtool_sfeatures*>(sbuf.data());
  sf->cmd = ETHTOOL_SFEATURES;
  sf->size = words;
  for (uint32_t i = 0; i < names.Length(); i++) {
    Napi::Value nv = names.Get(i);
    Napi::Value vv = values.Get(i);
    if (!nv.IsString() || !vv.IsBoolean()) {
      Napi::TypeError::New(env, "feature names must be strings and their values booleans").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string name = nv.As<Napi::String>().Utf8Value();
    size_t idx = 0;
    while (idx < f.names.size() && f.names[idx] != name) idx++;
    if (idx == f.names.size() || name.empty()) {
      return ThrowMessage(
          env, EINVAL, "ETHTOOL_GSTRINGS",
          context + ": no feature named '" + name +
              "' (the kernel's names, as `ethtool -k` shows them indented, e.g. rx-gro, tx-tcp-segmentation)");
    }
    uint32_t bit = 1u << (idx % 32);
    sf->features[idx / 32].valid |= bit;
    if (vv.As<Napi::Boolean>().Value()) {
      sf->features[idx / 32].requested |= bit;
    } else {
      sf->features[idx / 32].requested &= ~bit;
    }
  }
  int ret = Ethtool(fd.fd, dev, sf);
  if (ret < 0) return ThrowErrno(env, -ret, context, "ETHTOOL_SFEATURES");
  return Napi::Number::New(env, ret);
}

}  // namespace

void InitLink(Napi::Env env, Napi::Object exports) {
  exports.Set("linkList", Napi::Function::New<LinkList>(env, "linkList"));
  exports.Set("linkGet", Napi::Function::New<LinkGet>(env, "linkGet"));
  exports.Set("routeGet", Napi::Function::New<RouteGet>(env, "routeGet"));
  exports.Set("vethCreate", Napi::Function::New<VethCreate>(env, "vethCreate"));
  exports.Set("linkDelete", Napi::Function::New<LinkDelete>(env, "linkDelete"));
  exports.Set("linkSet", Napi::Function::New<LinkSet>(env, "linkSet"));
  exports.Set("tcFilterList", Napi::Function::New<TcFilterList>(env, "tcFilterList"));
  exports.Set("ethtoolFeatures", Napi::Function::New<EthtoolFeatures>(env, "ethtoolFeatures"));
  exports.Set("ethtoolSetFeatures", Napi::Function::New<EthtoolSetFeatures>(env, "ethtoolSetFeatures"));
}

}  // namespace lbpf
