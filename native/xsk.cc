// AF_XDP sockets through libxdp's xsk.h: one UMEM per socket, its fill/completion rings and the
// socket's rx/tx rings. Nothing here loads XDP programs: the caller attaches its own and puts the
// socket fd into its XSKMAP.
//
// Frame accounting. Every frame of the UMEM is in exactly one state at any time:
//   kFill  owned by the kernel for reception: in the fill ring, in the kernel's buffer pool or in
//          the rx ring waiting to be read
//   kHeld  owned by the caller: returned by receive() or allocTx(), not yet released/transmitted
//   kTx    owned by the kernel for transmission: in the tx ring, in flight or in the completion ring
//   kFree  owned by this socket, in the free list (what allocTx hands out)
// The per-frame state array is the source of truth; every transition checks the old state, so a
// frame released or transmitted twice is an error instead of a corrupted UMEM.
//
// Threading. Everything runs on the JS thread except the wait worker's poll(2), which reads only
// the two fds. Teardown is deferred while a wait is in flight (close() wakes it via an eventfd),
// so that poll never sees a closed (and possibly reused) fd number.
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace lbpf {

namespace {

enum FrameState : uint8_t { kFill = 0, kHeld = 1, kTx = 2, kFree = 3, kMarked = 4 };

const char* StateName(uint8_t s) {
  switch (s) {
    case kFill:
      return "owned by the kernel for reception";
    case kHeld:
      return "held by the caller";
    case kTx:
      return "owned by the kernel for transmission";
    case kFree:
      return "in the free list";
    case kMarked:
      return "listed twice";
    default:
      return "in an unknown state";
  }
}

// libxdp has its own print callback; like libbpf's, its messages are only kept while a capture is
// active on this thread (and then attached to the error), otherwise dropped.
thread_local std::string* t_xdpCapture = nullptr;

int XdpPrintHook(enum libxdp_print_level level, const char* fmt, va_list ap) {
  if (t_xdpCapture == nullptr || level == LIBXDP_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  if (n > 0) t_xdpCapture->append(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
  return n;
}

class XdpLogCapture {
 public:
  XdpLogCapture() : prev_(t_xdpCapture) { t_xdpCapture = &buf_; }
  ~XdpLogCapture() { t_xdpCapture = prev_; }
  XdpLogCapture(const XdpLogCapture&) = delete;
  XdpLogCapture& operator=(const XdpLogCapture&) = delete;
  const std::string& text() const { return buf_; }

 private:
  std::string buf_;
  std::string* prev_;
};

uint32_t NextPow2(uint32_t v) {
  uint32_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

bool IsPow2(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The UMEM memory is shared by the socket and the external Buffer JS sees; it is unmapped when
// both are done with it, or at once when close() managed to detach the Buffer.
struct Area {
  void* mem = nullptr;
  size_t size = 0;
  std::atomic<int> refs{1};
  std::atomic<bool> unmapped{false};
  std::atomic<bool> detached{false};  // the Buffer was detached: no JS view can reach the memory

  void Unmap() {
    if (!unmapped.exchange(true)) munmap(mem, size);
  }
  void Unref() {
    if (refs.fetch_sub(1) == 1) {
      Unmap();
      delete this;
    }
  }
};

// The socket proper. Shared between the JS wrapper and in-flight wait workers.
class Core {
 public:
  std::string label;
  uint32_t frames = 0;
  uint32_t frameSize = 0;
  uint32_t fillTarget = 0;  // frames the kernel gets for reception when they are available
  Area* area = nullptr;
  struct xsk_umem* umem = nullptr;
  struct xsk_socket* xsk = nullptr;
  struct xsk_ring_prod fill {};
  struct xsk_ring_cons comp {};
  struct xsk_ring_cons rx {};
  struct xsk_ring_prod tx {};
  int fd = -1;
  int wakeFd = -1;
  std::vector<uint8_t> state;
  std::vector<uint32_t> freeList;  // frame indices, used as a stack
  uint32_t nFill = 0, nHeld = 0, nTx = 0;
  int waiters = 0;
  bool closed = false;  // no more operations; teardown may still be pending
  bool torn = false;

  ~Core() { Teardown(); }

  uint8_t* Mem() const { return static_cast<uint8_t*>(area->mem); }

  void Teardown() {
    if (torn) return;
    torn = true;
    if (xsk != nullptr) xsk_socket__delete(xsk);
    xsk = nullptr;
    if (umem != nullptr) xsk_umem__delete(umem);
    umem = nullptr;
    fd = -1;
    if (wakeFd >= 0) close(wakeFd);
    wakeFd = -1;
    if (area != nullptr) {
      if (area->detached) area->Unmap();
      area->Unref();
    }
    area = nullptr;
  }

  // Stops everything; the resources go now, or when the last in-flight wait returns.
  void Close() {
    if (closed) return;
    closed = true;
    if (waiters > 0) {
      uint64_t one = 1;
      if (write(wakeFd, &one, sizeof(one)) < 0) {
        // The counter cannot overflow with one write; nothing else can fail on an eventfd.
      }
      return;
    }
    Teardown();
  }

  bool RxReady() { return !closed && xsk_cons_nb_avail(&rx, 1) > 0; }

  void WakeFillIfNeeded() {
    if (xsk_ring_prod__needs_wakeup(&fill)) recvfrom(fd, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
  }

  // Frames coming back to the socket (released, or completed after transmission) go to the fill
  // ring while the kernel has fewer than fillTarget for reception, the rest to the free list.
  // `frameIdx` are frame indices whose state the caller has already cleared from kHeld/kTx.
  void GiveBack(const uint32_t* frameIdx, uint32_t n) {
    uint32_t toFill = nFill < fillTarget ? std::min(n, fillTarget - nFill) : 0;
    uint32_t idx = 0;
    if (toFill > 0 && xsk_ring_prod__reserve(&fill, toFill, &idx) != toFill)
      toFill = 0;  // cannot happen: ring >= frames
    for (uint32_t i = 0; i < toFill; i++) {
      *xsk_ring_prod__fill_addr(&fill, idx + i) = static_cast<uint64_t>(frameIdx[i]) * frameSize;
      state[frameIdx[i]] = kFill;
    }
    if (toFill > 0) {
      xsk_ring_prod__submit(&fill, toFill);
      nFill += toFill;
      WakeFillIfNeeded();
    }
    for (uint32_t i = toFill; i < n; i++) {
      state[frameIdx[i]] = kFree;
      freeList.push_back(frameIdx[i]);
    }
  }

  // Frames from the free list to the fill ring, up to the target (after the caller took frames
  // out of the kernel's hands by receiving them).
  void TopUpFill() {
    if (nFill >= fillTarget || freeList.empty()) return;
    uint32_t k = std::min<uint32_t>(fillTarget - nFill, static_cast<uint32_t>(freeList.size()));
    uint32_t idx = 0;
    if (xsk_ring_prod__reserve(&fill, k, &idx) != k) return;
    for (uint32_t i = 0; i < k; i++) {
      uint32_t f = freeList.back();
      freeList.pop_back();
      state[f] = kFill;
      *xsk_ring_prod__fill_addr(&fill, idx + i) = static_cast<uint64_t>(f) * frameSize;
    }
    xsk_ring_prod__submit(&fill, k);
    nFill += k;
    WakeFillIfNeeded();
  }

  uint32_t Receive(uint32_t max, uint32_t* addrs, uint32_t* lens) {
    uint32_t idx = 0;
    uint32_t n = xsk_ring_cons__peek(&rx, max, &idx);
    for (uint32_t i = 0; i < n; i++) {
      const struct xdp_desc* d = xsk_ring_cons__rx_desc(&rx, idx + i);
      addrs[i] = static_cast<uint32_t>(d->addr);
      lens[i] = d->len;
      uint32_t f = static_cast<uint32_t>(d->addr / frameSize);
      if (f < frames) state[f] = kHeld;
    }
    if (n > 0) {
      xsk_ring_cons__release(&rx, n);
      nFill -= n;
      nHeld += n;
      TopUpFill();
    }
    return n;
  }

  bool TxPending() const { return __atomic_load_n(tx.consumer, __ATOMIC_ACQUIRE) != *tx.producer; }

  // In copy mode the kernel transmits only inside sendto(), at most 32 descriptors per call, and
  // says EAGAIN while more are left. Returns 0 or an errno that is not a transient condition.
  int Kick() {
    uint32_t budget = tx.size / 32 + 8;
    while (budget-- > 0 && TxPending()) {
      if (!xsk_ring_prod__needs_wakeup(&tx)) return 0;  // the driver picks them up by itself
      if (sendto(fd, nullptr, 0, MSG_DONTWAIT, nullptr, 0) >= 0) continue;
      int err = errno;
      if (err == EAGAIN || err == EBUSY || err == EINTR) continue;
      if (err == ENOBUFS || err == ENETDOWN) return 0;  // retried by the next kick
      return err;
    }
    return 0;
  }

  uint32_t Reclaim() {
    uint32_t total = 0;
    uint32_t batch[256];
    for (;;) {
      uint32_t idx = 0;
      uint32_t n = xsk_ring_cons__peek(&comp, 256, &idx);
      if (n == 0) break;
      uint32_t k = 0;
      for (uint32_t i = 0; i < n; i++) {
        uint32_t f = static_cast<uint32_t>(*xsk_ring_cons__comp_addr(&comp, idx + i) / frameSize);
        if (f < frames && state[f] == kTx) batch[k++] = f;
      }
      xsk_ring_cons__release(&comp, n);
      nTx -= k;
      GiveBack(batch, k);
      total += k;
    }
    return total;
  }
};

class NativeXsk : public Napi::ObjectWrap<NativeXsk> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeXsk",
                       {
                           InstanceMethod<&NativeXsk::Fd>("fd"),
                           InstanceMethod<&NativeXsk::Umem>("umem"),
                           InstanceMethod<&NativeXsk::Receive>("receive"),
                           InstanceMethod<&NativeXsk::ReceiveInto>("receiveInto"),
                           InstanceMethod<&NativeXsk::Release>("release"),
                           InstanceMethod<&NativeXsk::Transmit>("transmit"),
                           InstanceMethod<&NativeXsk::Reclaim>("reclaim"),
                           InstanceMethod<&NativeXsk::AllocTx>("allocTx"),
                           InstanceMethod<&NativeXsk::Wait>("wait"),
                           InstanceMethod<&NativeXsk::Stats>("stats"),
                           InstanceMethod<&NativeXsk::Counts>("counts"),
                           InstanceMethod<&NativeXsk::Close>("close"),
                       });
  }

  // (ifindex, queue, frames, frameSize, zerocopy, rxSize, txSize)
  explicit NativeXsk(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeXsk>(info) {
    Napi::Env env = info.Env();
    uint32_t ifindex, queue, frames, frameSize, rxSize, txSize;
    bool zerocopy;
    if (!ArgUint32(info, 0, &ifindex) || !ArgUint32(info, 1, &queue) || !ArgUint32(info, 2, &frames) ||
        !ArgUint32(info, 3, &frameSize) || !ArgBool(info, 4, &zerocopy) || !ArgUint32(info, 5, &rxSize) ||
        !ArgUint32(info, 6, &txSize)) {
      return;
    }
    std::string where = " queue " + std::to_string(queue);
    if ((frameSize != 2048 && frameSize != 4096) || frames < 2 ||
        static_cast<uint64_t>(frames) * frameSize > (1ull << 31) || !IsPow2(rxSize) || !IsPow2(txSize)) {
      ErrorInfo e;
      e.err = EINVAL;
      e.step = "xsk_umem__create";
      e.message = "XSK on ifindex " + std::to_string(ifindex) + where +
                  ": frameSize must be 2048 or 4096, frames at least 2 with a UMEM of at most 2 GiB, and rxSize/txSize "
                  "powers of two (EINVAL)";
      Throw(env, e);
      return;
    }
    char ifname[IF_NAMESIZE] = {0};
    if (if_indextoname(ifindex, ifname) == nullptr) {
      ThrowErrno(env, ErrFromErrno(), "XSK on ifindex " + std::to_string(ifindex) + where, "if_indextoname");
      return;
    }

    auto core = std::make_shared<Core>();
    core->label = "XSK on " + std::string(ifname) + where;
    core->frames = frames;
    core->frameSize = frameSize;
    core->fillTarget = frames / 2;
    size_t size = static_cast<size_t>(frames) * frameSize;
    void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      ThrowErrno(env, ErrFromErrno(), core->label, "mmap");
      return;
    }
    core->area = new Area();
    core->area->mem = mem;
    core->area->size = size;

    LogCapture bpfLog;
    XdpLogCapture xdpLog;
    struct xsk_umem_config ucfg;
    memset(&ucfg, 0, sizeof(ucfg));
    // Rings at least as large as the UMEM: the fill and completion rings can then always take
    // every frame we own, so handing frames back never fails.
    ucfg.fill_size = NextPow2(frames);
    ucfg.comp_size = NextPow2(frames);
    ucfg.frame_size = frameSize;
    ucfg.frame_headroom = 0;
    ucfg.flags = 0;
    int ret = xsk_umem__create(&core->umem, mem, size, &core->fill, &core->comp, &ucfg);
    if (ret != 0) {
      core->umem = nullptr;
      ThrowCreate(env, core->label, "xsk_umem__create", ErrFromRet(ret), false, bpfLog.text() + xdpLog.text());
      return;
    }

    struct xsk_socket_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.rx_size = rxSize;
    cfg.tx_size = txSize;
    cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
    cfg.xdp_flags = 0;
    cfg.bind_flags = static_cast<uint16_t>((zerocopy ? XDP_ZEROCOPY : XDP_COPY) | XDP_USE_NEED_WAKEUP);
    ret = xsk_socket__create(&core->xsk, ifname, queue, core->umem, &core->rx, &core->tx, &cfg);
    if (ret != 0) {
      core->xsk = nullptr;
      ThrowCreate(env, core->label, "xsk_socket__create", ErrFromRet(ret), zerocopy, bpfLog.text() + xdpLog.text());
      return;
    }
    core->fd = xsk_socket__fd(core->xsk);
    core->wakeFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (core->wakeFd < 0) {
      ThrowErrno(env, ErrFromErrno(), core->label, "eventfd");
      return;
    }

    // Half the frames to the kernel for reception, the other half free for transmission.
    core->state.assign(frames, kFree);
    core->freeList.reserve(frames);
    for (uint32_t f = frames; f-- > core->fillTarget;) core->freeList.push_back(f);
    uint32_t idx = 0;
    if (xsk_ring_prod__reserve(&core->fill, core->fillTarget, &idx) != core->fillTarget) {
      ThrowErrno(env, ENOSPC, core->label, "xsk_ring_prod__reserve");
      return;
    }
    for (uint32_t f = 0; f < core->fillTarget; f++) {
      *xsk_ring_prod__fill_addr(&core->fill, idx + f) = static_cast<uint64_t>(f) * frameSize;
      core->state[f] = kFill;
    }
    xsk_ring_prod__submit(&core->fill, core->fillTarget);
    core->nFill = core->fillTarget;
    core->WakeFillIfNeeded();

    // The Buffer over the UMEM holds its own reference on the memory.
    core->area->refs.fetch_add(1);
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(
        env, static_cast<uint8_t*>(mem), size, [](Napi::Env, uint8_t*, Area* a) { a->Unref(); }, core->area);
    if (env.IsExceptionPending()) {
      core->area->Unref();
      return;
    }
    umem_ = Napi::Persistent(buf);
    core_ = std::move(core);
  }

  ~NativeXsk() override {
    // Dropped without close(): the socket goes now (or after a pending wait); the UMEM memory
    // stays mapped for as long as the Buffer is reachable.
    if (core_) core_->Close();
  }

 private:
  std::shared_ptr<Core> core_;
  Napi::Reference<Napi::Buffer<uint8_t>> umem_;  // strong until close(), so it can be detached then

  static void ThrowCreate(Napi::Env env, const std::string& label, const char* step, int err, bool zerocopy,
                          const std::string& log) {
    ErrorInfo e;
    e.err = err;
    e.context = label;
    e.step = step;
    e.log = log;
    if (zerocopy && (err == EOPNOTSUPP || err == 524 /* ENOTSUPP */)) {
      e.notSupported = true;
      e.message = label + ": " + step + ": zero-copy mode is not supported by this device or driver (" +
                  ErrnoCode(err) + "); use mode 'copy'";
    }
    Throw(env, e);
  }

  Core* Live(Napi::Env env, const char* step) {
    if (core_ && !core_->closed) return core_.get();
    ErrorInfo e;
    e.err = EBADF;
    e.step = step;
    e.message = (core_ ? core_->label : std::string("XSK")) + ": " + step + ": socket is closed (EBADF)";
    Throw(env, e);
    return nullptr;
  }

  static bool ArgU32Array(const Napi::CallbackInfo& info, size_t i, Napi::Uint32Array* out) {
    if (info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == napi_uint32_array) {
      *out = info[i].As<Napi::Uint32Array>();
      return true;
    }
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a Uint32Array")
        .ThrowAsJavaScriptException();
    return false;
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ && !core_->closed ? core_->fd : -1);
  }

  Napi::Value Umem(const Napi::CallbackInfo& info) {
    if (umem_.IsEmpty()) return info.Env().Undefined();
    return umem_.Value();
  }

  // (max) -> Uint32Array of 2*count: addrs then lens, or undefined when nothing is there.
  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t max;
    if (!ArgUint32(info, 0, &max)) return env.Undefined();
    Core* c = Live(env, "receive");
    if (c == nullptr) return env.Undefined();
    uint32_t avail = xsk_cons_nb_avail(&c->rx, max);
    if (avail == 0) return env.Undefined();
    Napi::Uint32Array out = Napi::Uint32Array::New(env, static_cast<size_t>(avail) * 2);
    uint32_t n = c->Receive(avail, out.Data(), out.Data() + avail);
    // n == avail: nothing else consumes the rx ring.
    (void)n;
    return out;
  }

  // (addrs, lens) -> count, filling at most min(addrs.length, lens.length) entries.
  Napi::Value ReceiveInto(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint32Array addrs, lens;
    if (!ArgU32Array(info, 0, &addrs) || !ArgU32Array(info, 1, &lens)) return env.Undefined();
    Core* c = Live(env, "receive");
    if (c == nullptr) return env.Undefined();
    size_t max = std::min(addrs.ElementLength(), lens.ElementLength());
    uint32_t n = c->Receive(static_cast<uint32_t>(std::min<size_t>(max, 0xffffffffu)), addrs.Data(), lens.Data());
    return Napi::Number::New(env, n);
  }

  // Marks the listed frames (which must all be held by the caller, each once) and returns their
  // indices; on failure restores every mark and throws, so a rejected call changes nothing.
  bool TakeHeld(Napi::Env env, Core* c, const char* step, const uint32_t* addrs, const uint32_t* lens, size_t n,
                std::vector<uint32_t>* out) {
    out->resize(n);
    for (size_t i = 0; i < n; i++) {
      uint32_t a = addrs[i];
      uint32_t f = a / c->frameSize;
      std::string bad;
      if (f >= c->frames) {
        bad = "address " + std::to_string(a) + " is outside the UMEM (" + std::to_string(c->frames) + " frames of " +
              std::to_string(c->frameSize) + " bytes)";
      } else if (c->state[f] != kHeld) {
        bad = "address " + std::to_string(a) + " (frame " + std::to_string(f) + ") is not held by the caller: it is " +
              StateName(c->state[f]);
      } else if (lens != nullptr &&
                 (lens[i] == 0 || a % c->frameSize + static_cast<uint64_t>(lens[i]) > c->frameSize)) {
        bad = "packet " + std::to_string(i) + " (address " + std::to_string(a) + ", length " + std::to_string(lens[i]) +
              ") is empty or crosses the end of its " + std::to_string(c->frameSize) + "-byte frame";
      }
      if (!bad.empty()) {
        for (size_t j = 0; j < i; j++) c->state[(*out)[j]] = kHeld;
        ErrorInfo e;
        e.err = EINVAL;
        e.step = step;
        e.message = c->label + ": " + step + ": " + bad + " (EINVAL)";
        Throw(env, e);
        return false;
      }
      c->state[f] = kMarked;
      (*out)[i] = f;
    }
    return true;
  }

  // (addrs: Uint32Array)
  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint32Array addrs;
    if (!ArgU32Array(info, 0, &addrs)) return env.Undefined();
    Core* c = Live(env, "release");
    if (c == nullptr) return env.Undefined();
    std::vector<uint32_t> idx;
    if (!TakeHeld(env, c, "release", addrs.Data(), nullptr, addrs.ElementLength(), &idx)) return env.Undefined();
    c->nHeld -= static_cast<uint32_t>(idx.size());
    c->GiveBack(idx.data(), static_cast<uint32_t>(idx.size()));
    return env.Undefined();
  }

  // (addrs: Uint32Array, lens: Uint32Array) -> queued
  Napi::Value Transmit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint32Array addrs, lens;
    if (!ArgU32Array(info, 0, &addrs) || !ArgU32Array(info, 1, &lens)) return env.Undefined();
    Core* c = Live(env, "transmit");
    if (c == nullptr) return env.Undefined();
    if (addrs.ElementLength() != lens.ElementLength()) {
      ErrorInfo e;
      e.err = EINVAL;
      e.step = "transmit";
      e.message = c->label + ": transmit: " + std::to_string(addrs.ElementLength()) + " addresses but " +
                  std::to_string(lens.ElementLength()) + " lengths (EINVAL)";
      return Throw(env, e);
    }
    size_t n = addrs.ElementLength();
    std::vector<uint32_t> idx;
    if (!TakeHeld(env, c, "transmit", addrs.Data(), lens.Data(), n, &idx)) return env.Undefined();
    // Room in the tx ring; completions free slots in it only after they are reaped.
    uint32_t room = xsk_prod_nb_free(&c->tx, static_cast<uint32_t>(n));
    if (room < n) {
      c->Reclaim();
      room = xsk_prod_nb_free(&c->tx, static_cast<uint32_t>(n));
    }
    uint32_t k = static_cast<uint32_t>(std::min<size_t>(n, room));
    uint32_t ti = 0;
    if (k > 0 && xsk_ring_prod__reserve(&c->tx, k, &ti) != k) k = 0;
    for (uint32_t i = 0; i < k; i++) {
      struct xdp_desc* d = xsk_ring_prod__tx_desc(&c->tx, ti + i);
      d->addr = addrs.Data()[i];
      d->len = lens.Data()[i];
      d->options = 0;
      c->state[idx[i]] = kTx;
    }
    for (size_t i = k; i < n; i++) c->state[idx[i]] = kHeld;  // not queued: still the caller's
    if (k > 0) {
      xsk_ring_prod__submit(&c->tx, k);
      c->nHeld -= k;
      c->nTx += k;
    }
    int err = c->Kick();
    if (err != 0) {
      ErrorInfo e;
      e.err = err;
      e.step = "sendto";
      e.message = c->label + ": transmit: sendto: " + ErrnoDescription(err) + " (" + ErrnoCode(err) + "); " +
                  std::to_string(k) + " packets were queued and stay owned by the socket";
      return Throw(env, e);
    }
    return Napi::Number::New(env, k);
  }

  Napi::Value Reclaim(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Core* c = Live(env, "reclaim");
    if (c == nullptr) return env.Undefined();
    uint32_t n = c->Reclaim();
    int err = c->TxPending() ? c->Kick() : 0;
    if (err != 0) return ThrowErrno(env, err, c->label, "sendto");
    return Napi::Number::New(env, n);
  }

  // -> frame address, or -1 when no frame is free
  Napi::Value AllocTx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Core* c = Live(env, "allocTx");
    if (c == nullptr) return env.Undefined();
    if (c->freeList.empty()) c->Reclaim();
    if (c->freeList.empty()) return Napi::Number::New(env, -1);
    uint32_t f = c->freeList.back();
    c->freeList.pop_back();
    c->state[f] = kHeld;
    c->nHeld++;
    return Napi::Number::New(env, static_cast<double>(f) * c->frameSize);
  }

  class WaitWorker : public Napi::AsyncWorker {
   public:
    WaitWorker(Napi::Env env, std::shared_ptr<Core> core, int timeoutMs)
        : Napi::AsyncWorker(env, "XskWait"),
          deferred_(Napi::Promise::Deferred::New(env)),
          core_(std::move(core)),
          fd_(core_->fd),
          wakeFd_(core_->wakeFd),
          timeoutMs_(timeoutMs) {
      core_->waiters++;
    }
    Napi::Promise Promise() const { return deferred_.Promise(); }

    void Execute() override {
      struct pollfd p[2];
      p[0].fd = fd_;
      p[0].events = POLLIN;
      p[0].revents = 0;
      p[1].fd = wakeFd_;
      p[1].events = POLLIN;
      p[1].revents = 0;
      if (poll(p, 2, timeoutMs_) < 0 && errno != EINTR) err_ = errno;
    }

    void OnOK() override {
      Napi::Env env = Env();
      core_->waiters--;
      if (core_->closed) {
        if (core_->waiters == 0) core_->Teardown();
        deferred_.Resolve(Napi::Boolean::New(env, false));
        return;
      }
      if (err_ != 0) {
        ThrowErrno(env, err_, core_->label, "poll");
        Napi::Value e = env.IsExceptionPending() ? env.GetAndClearPendingException().Value() : env.Undefined();
        deferred_.Reject(e);
        return;
      }
      deferred_.Resolve(Napi::Boolean::New(env, core_->RxReady()));
    }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<Core> core_;
    int fd_;
    int wakeFd_;
    int timeoutMs_;
    int err_ = 0;
  };

  // (timeoutMs) -> Promise<boolean>: resolves at once when rx already has packets.
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t timeout;
    if (!ArgInt(info, 0, &timeout)) return env.Undefined();
    Core* c = Live(env, "wait");
    if (c == nullptr) return env.Undefined();
    if (timeout <= 0 || c->RxReady()) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
      d.Resolve(Napi::Boolean::New(env, c->RxReady()));
      return d.Promise();
    }
    auto* w = new WaitWorker(env, core_, static_cast<int>(std::min<int64_t>(timeout, 0x7fffffff)));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Core* c = Live(env, "getsockopt(XDP_STATISTICS)");
    if (c == nullptr) return env.Undefined();
    struct xdp_statistics st;
    memset(&st, 0, sizeof(st));
    socklen_t len = sizeof(st);
    if (getsockopt(c->fd, SOL_XDP, XDP_STATISTICS, &st, &len) < 0) {
      return ThrowErrno(env, ErrFromErrno(), c->label, "getsockopt(XDP_STATISTICS)");
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("rxDropped", Napi::Number::New(env, static_cast<double>(st.rx_dropped)));
    o.Set("rxInvalid", Napi::Number::New(env, static_cast<double>(st.rx_invalid_descs)));
    o.Set("txInvalid", Napi::Number::New(env, static_cast<double>(st.tx_invalid_descs)));
    o.Set("rxRingFull", Napi::Number::New(env, static_cast<double>(st.rx_ring_full)));
    o.Set("fillRingEmpty", Napi::Number::New(env, static_cast<double>(st.rx_fill_ring_empty_descs)));
    o.Set("txRingEmpty", Napi::Number::New(env, static_cast<double>(st.tx_ring_empty_descs)));
    return o;
  }

  // Frame accounting from the per-frame states (O(frames); for tests and debugging).
  Napi::Value Counts(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Core* c = Live(env, "counts");
    if (c == nullptr) return env.Undefined();
    uint32_t n[5] = {0, 0, 0, 0, 0};
    for (uint8_t s : c->state) n[s < 5 ? s : 4]++;
    Napi::Object o = Napi::Object::New(env);
    o.Set("frames", Napi::Number::New(env, c->frames));
    o.Set("fill", Napi::Number::New(env, n[kFill]));
    o.Set("held", Napi::Number::New(env, n[kHeld]));
    o.Set("tx", Napi::Number::New(env, n[kTx]));
    o.Set("free", Napi::Number::New(env, n[kFree]));
    // The running counters and the free list must agree with the states.
    bool consistent =
        n[4] == 0 && c->nFill == n[kFill] && c->nHeld == n[kHeld] && c->nTx == n[kTx] && c->freeList.size() == n[kFree];
    o.Set("consistent", Napi::Boolean::New(env, consistent));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!core_ || core_->closed) return env.Undefined();
    if (!umem_.IsEmpty()) {
      // Detaching empties the Buffer and every view on it, so no JS code can touch the memory
      // after close(); it is then unmapped with the socket instead of when the Buffer is collected.
      Napi::Buffer<uint8_t> buf = umem_.Value();
      if (!buf.IsEmpty() && core_->area != nullptr) {
        napi_value ab = buf.ArrayBuffer();
        if (napi_detach_arraybuffer(env, ab) == napi_ok) core_->area->detached = true;
      }
      if (env.IsExceptionPending()) env.GetAndClearPendingException();
      umem_.Reset();
    }
    core_->Close();
    return env.Undefined();
  }
};

}  // namespace

void InitXsk(Napi::Env env, Napi::Object exports) {
  libxdp_set_print(XdpPrintHook);
  exports.Set("NativeXsk", NativeXsk::Define(env));
}

}  // namespace lbpf
