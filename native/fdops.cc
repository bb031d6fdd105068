// Operations on raw program and map fds. Each function takes a `label` describing the object so
// errors can name it; the TypeScript wrapper owns the fds and passes sizes it read from the kernel.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <unordered_set>
#include <vector>

#include "common.h"

namespace lbpf {

namespace {

constexpr int kENOTSUPP = 524;

Napi::Buffer<uint8_t> CopyBuffer(Napi::Env env, const uint8_t* p, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, p, n);
}

// Key and value buffers go straight to the kernel, which reads/writes exactly the map's sizes:
// a short buffer would be an out-of-bounds access, so sizes are enforced here, not in JS.
bool CheckSize(Napi::Env env, const std::string& label, const char* step, const char* what, size_t got, uint32_t want) {
  if (got == want) return true;
  ErrorInfo e;
  e.err = EINVAL;
  e.step = step;
  e.message =
      label + ": " + step + ": " + what + " is " + std::to_string(got) + " bytes, map expects " + std::to_string(want);
  Throw(env, e);
  return false;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return info.Env().Undefined();
  if (fd >= 0) close(static_cast<int>(fd));
  return info.Env().Undefined();
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return env.Undefined();
  int d = DupFd(static_cast<int>(fd));
  if (d < 0) return ThrowErrno(env, ErrFromErrno(), "fd " + std::to_string(fd), "fcntl(F_DUPFD_CLOEXEC)");
  return Napi::Number::New(env, d);
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, &path)) return env.Undefined();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return ThrowErrno(env, ErrFromRet(fd), "open pinned " + path, "bpf_obj_get");
  return Napi::Number::New(env, fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label, path;
  int64_t fd;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgString(info, 2, &path)) return env.Undefined();
  int ret = bpf_obj_pin(static_cast<int>(fd), path.c_str());
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), "pin " + label + " at " + path, "bpf_obj_pin");
  return env.Undefined();
}

Napi::Value ProgFdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return env.Undefined();
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return ThrowErrno(env, ErrFromRet(fd), "program id " + std::to_string(id), "bpf_prog_get_fd_by_id");
  return Napi::Number::New(env, fd);
}

Napi::Value MapFdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return env.Undefined();
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) return ThrowErrno(env, ErrFromRet(fd), "map id " + std::to_string(id), "bpf_map_get_fd_by_id");
  return Napi::Number::New(env, fd);
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return env.Undefined();
  struct bpf_prog_info pi;
  memset(&pi, 0, sizeof(pi));
  uint32_t len = sizeof(pi);
  int ret = bpf_obj_get_info_by_fd(static_cast<int>(fd), &pi, &len);
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), "program fd " + std::to_string(fd), "bpf_obj_get_info_by_fd");
  static const char hex[] = "0123456789abcdef";
  std::string tag;
  for (uint8_t b : pi.tag) {
    tag += hex[b >> 4];
    tag += hex[b & 15];
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, pi.id));
  o.Set("type", Napi::Number::New(env, pi.type));
  o.Set("name", Napi::String::New(env, std::string(pi.name, strnlen(pi.name, sizeof(pi.name)))));
  o.Set("tag", Napi::String::New(env, tag));
  return o;
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return env.Undefined();
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof(mi));
  uint32_t len = sizeof(mi);
  int ret = bpf_obj_get_info_by_fd(static_cast<int>(fd), &mi, &len);
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), "map fd " + std::to_string(fd), "bpf_obj_get_info_by_fd");
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, mi.id));
  o.Set("type", Napi::Number::New(env, mi.type));
  o.Set("name", Napi::String::New(env, std::string(mi.name, strnlen(mi.name, sizeof(mi.name)))));
  o.Set("keySize", Napi::Number::New(env, mi.key_size));
  o.Set("valueSize", Napi::Number::New(env, mi.value_size));
  o.Set("maxEntries", Napi::Number::New(env, mi.max_entries));
  o.Set("flags", Napi::Number::New(env, mi.map_flags));
  return o;
}

// (label, fd, data, repeat, ctx | undefined, dataSizeOut, ctxSizeOut)
Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd, repeat;
  uint32_t dataOutSize, ctxOutSize;
  Napi::Buffer<uint8_t> data, ctx;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgBuffer(info, 2, &data) || !ArgInt(info, 3, &repeat) ||
      !ArgUint32(info, 5, &dataOutSize) || !ArgUint32(info, 6, &ctxOutSize)) {
    return env.Undefined();
  }
  bool haveCtx = !info[4].IsUndefined() && !info[4].IsNull();
  if (haveCtx && !ArgBuffer(info, 4, &ctx)) return env.Undefined();

  std::vector<uint8_t> dataOut(dataOutSize);
  std::vector<uint8_t> ctxOut(ctxOutSize);
  struct bpf_test_run_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  if (data.Length() > 0) {
    opts.data_in = data.Data();
    opts.data_size_in = static_cast<uint32_t>(data.Length());
  }
  if (dataOutSize > 0) {
    opts.data_out = dataOut.data();
    opts.data_size_out = dataOutSize;
  }
  if (haveCtx && ctx.Length() > 0) {
    opts.ctx_in = ctx.Data();
    opts.ctx_size_in = static_cast<uint32_t>(ctx.Length());
  }
  if (ctxOutSize > 0) {
    opts.ctx_out = ctxOut.data();
    opts.ctx_size_out = ctxOutSize;
  }
  opts.repeat = static_cast<int>(repeat);
  int ret = bpf_prog_test_run_opts(static_cast<int>(fd), &opts);
  if (ret < 0) {
    int err = ErrFromRet(ret);
    ErrorInfo e;
    e.err = err;
    e.context = "test run " + label;
    e.step = "bpf_prog_test_run_opts";
    if (err == ENOSPC) {
      e.message = e.context + ": " + e.step + ": output needs " + std::to_string(opts.data_size_out) +
                  " bytes of data / " + std::to_string(opts.ctx_size_out) + " of ctx (ENOSPC)";
    }
    return Throw(env, e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("retval", Napi::Number::New(env, opts.retval));
  o.Set("duration", Napi::Number::New(env, opts.duration));
  o.Set("data", CopyBuffer(env, dataOut.data(), std::min<size_t>(opts.data_size_out, dataOutSize)));
  if (ctxOutSize > 0) {
    o.Set("ctx", CopyBuffer(env, ctxOut.data(), std::min<size_t>(opts.ctx_size_out, ctxOutSize)));
  }
  return o;
}

// (type, name, keySize, valueSize, maxEntries, flags, innerMapFd)
Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t type, keySize, valueSize, maxEntries, flags, innerMapFd;
  std::string name;
  if (!ArgUint32(info, 0, &type) || !ArgString(info, 1, &name) || !ArgUint32(info, 2, &keySize) ||
      !ArgUint32(info, 3, &valueSize) || !ArgUint32(info, 4, &maxEntries) || !ArgUint32(info, 5, &flags) ||
      !ArgUint32(info, 6, &innerMapFd)) {
    return env.Undefined();
  }
  struct bpf_map_create_opts opts;
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.map_flags = flags;
  opts.inner_map_fd = innerMapFd;
  int fd = bpf_map_create(static_cast<enum bpf_map_type>(type), name.empty() ? nullptr : name.c_str(), keySize,
                          valueSize, maxEntries, &opts);
  if (fd < 0) {
    return ThrowErrno(env, ErrFromRet(fd), "create map" + (name.empty() ? std::string() : " \"" + name + "\""),
                      "bpf_map_create");
  }
  return Napi::Number::New(env, fd);
}

const void* KeyPtr(const Napi::Buffer<uint8_t>& key) { return key.Length() > 0 ? key.Data() : nullptr; }

// (label, fd, key, keySize, valueSize)
Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  Napi::Buffer<uint8_t> key;
  uint32_t keySize, valueSize;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgBuffer(info, 2, &key) ||
      !ArgUint32(info, 3, &keySize) || !ArgUint32(info, 4, &valueSize)) {
    return env.Undefined();
  }
  if (!CheckSize(env, label, "bpf_map_lookup_elem", "key", key.Length(), keySize)) return env.Undefined();
  std::vector<uint8_t> value(std::max<uint32_t>(valueSize, 1));
  int ret = bpf_map_lookup_elem(static_cast<int>(fd), KeyPtr(key), value.data());
  if (ret < 0) {
    int err = ErrFromRet(ret);
    if (err == ENOENT) return env.Undefined();
    return ThrowErrno(env, err, "lookup in " + label, "bpf_map_lookup_elem");
  }
  return CopyBuffer(env, value.data(), valueSize);
}

// (label, fd, key, value, keySize, valueSize, flags)
Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  Napi::Buffer<uint8_t> key, value;
  uint32_t keySize, valueSize, flags;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgBuffer(info, 2, &key) ||
      !ArgBuffer(info, 3, &value) || !ArgUint32(info, 4, &keySize) || !ArgUint32(info, 5, &valueSize) ||
      !ArgUint32(info, 6, &flags)) {
    return env.Undefined();
  }
  if (!CheckSize(env, label, "bpf_map_update_elem", "key", key.Length(), keySize) ||
      !CheckSize(env, label, "bpf_map_update_elem", "value", value.Length(), valueSize)) {
    return env.Undefined();
  }
  int ret = bpf_map_update_elem(static_cast<int>(fd), KeyPtr(key), value.Data(), flags);
  if (ret < 0) return ThrowErrno(env, ErrFromRet(ret), "update " + label, "bpf_map_update_elem");
  return env.Undefined();
}

// (label, fd, key, keySize)
Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  Napi::Buffer<uint8_t> key;
  uint32_t keySize;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgBuffer(info, 2, &key) ||
      !ArgUint32(info, 3, &keySize)) {
    return env.Undefined();
  }
  if (!CheckSize(env, label, "bpf_map_delete_elem", "key", key.Length(), keySize)) return env.Undefined();
  int ret = bpf_map_delete_elem(static_cast<int>(fd), KeyPtr(key));
  if (ret < 0) {
    int err = ErrFromRet(ret);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, err, "delete from " + label, "bpf_map_delete_elem");
  }
  return Napi::Boolean::New(env, true);
}

// Walks the map with get_next_key. When the cursor key is deleted underneath us, hash-like maps
// restart from the first key; deduplicating keeps the result a set and the budget bounds the walk
// even under continuous churn.
bool CollectKeys(Napi::Env env, const std::string& label, int fd, uint32_t keySize, uint32_t maxEntries,
                 std::vector<std::string>* out) {
  std::vector<uint8_t> cur(std::max<uint32_t>(keySize, 1)), next(std::max<uint32_t>(keySize, 1));
  std::unordered_set<std::string> seen;
  uint64_t budget = static_cast<uint64_t>(maxEntries) * 4 + 1024;
  bool first = true;
  while (budget-- > 0) {
    int ret = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (ret < 0) {
      int err = ErrFromRet(ret);
      if (err == ENOENT) break;
      ThrowErrno(env, err, "iterate " + label, "bpf_map_get_next_key");
      return false;
    }
    std::string k(reinterpret_cast<const char*>(next.data()), keySize);
    if (seen.insert(k).second) out->push_back(std::move(k));
    cur.swap(next);
    first = false;
  }
  return true;
}

// (label, fd, keySize, maxEntries)
Napi::Value MapKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  uint32_t keySize, maxEntries;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgUint32(info, 2, &keySize) ||
      !ArgUint32(info, 3, &maxEntries)) {
    return env.Undefined();
  }
  std::vector<std::string> keys;
  if (!CollectKeys(env, label, static_cast<int>(fd), keySize, maxEntries, &keys)) return env.Undefined();
  Napi::Array out = Napi::Array::New(env, keys.size());
  for (size_t i = 0; i < keys.size(); i++) {
    out.Set(static_cast<uint32_t>(i),
            CopyBuffer(env, reinterpret_cast<const uint8_t*>(keys[i].data()), keys[i].size()));
  }
  return out;
}

Napi::Array Pair(Napi::Env env, const uint8_t* k, size_t kn, const uint8_t* v, size_t vn) {
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, CopyBuffer(env, k, kn));
  pair.Set(1u, CopyBuffer(env, v, vn));
  return pair;
}

// (label, fd, keySize, valueSize, maxEntries)
Napi::Value MapEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd64;
  uint32_t keySize, valueSize, maxEntries;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd64) || !ArgUint32(info, 2, &keySize) ||
      !ArgUint32(info, 3, &valueSize) || !ArgUint32(info, 4, &maxEntries)) {
    return env.Undefined();
  }
  int fd = static_cast<int>(fd64);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;

  // The batch cursor is opaque: a bucket index for hash maps, a key for the generic walker.
  std::vector<uint8_t> inBatch(std::max<uint32_t>(keySize, 8)), outBatch(inBatch.size());
  uint32_t chunk = std::clamp<uint32_t>(maxEntries, 1, 256);
  std::vector<uint8_t> keys, values;
  bool first = true;
  bool fallback = false;
  for (;;) {
    keys.resize(static_cast<size_t>(chunk) * keySize);
    values.resize(static_cast<size_t>(chunk) * valueSize);
    uint32_t count = chunk;
    struct bpf_map_batch_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.sz = sizeof(opts);
    int ret = bpf_map_lookup_batch(fd, first ? nullptr : inBatch.data(), outBatch.data(), keys.data(), values.data(),
                                   &count, &opts);
    int err = ret < 0 ? ErrFromRet(ret) : 0;
    if (err == ENOSPC && count == 0) {
      // A single hash bucket holds more elements than fit in one chunk.
      if (chunk >= (1u << 20)) return ThrowErrno(env, err, "read " + label, "bpf_map_lookup_batch");
      chunk *= 2;
      continue;
    }
    if (first && (err == EINVAL || err == kENOTSUPP || err == EOPNOTSUPP || (err == ENOENT && count == 0))) {
      fallback = true;
      break;
    }
    if (err != 0 && err != ENOENT) return ThrowErrno(env, err, "read " + label, "bpf_map_lookup_batch");
    for (uint32_t i = 0; i < count; i++) {
      out.Set(n++, Pair(env, keys.data() + static_cast<size_t>(i) * keySize, keySize,
                        values.data() + static_cast<size_t>(i) * valueSize, valueSize));
    }
    if (err == ENOENT) break;
    inBatch = outBatch;
    first = false;
  }
  if (!fallback) return out;

  std::vector<std::string> keyList;
  if (!CollectKeys(env, label, fd, keySize, maxEntries, &keyList)) return env.Undefined();
  std::vector<uint8_t> value(std::max<uint32_t>(valueSize, 1));
  for (const std::string& k : keyList) {
    int ret = bpf_map_lookup_elem(fd, k.data(), value.data());
    if (ret < 0) {
      int err = ErrFromRet(ret);
      if (err == ENOENT) continue;  // deleted since it was listed
      return ThrowErrno(env, err, "read " + label, "bpf_map_lookup_elem");
    }
    out.Set(n++, Pair(env, reinterpret_cast<const uint8_t*>(k.data()), k.size(), value.data(), valueSize));
  }
  return out;
}

// (label, fd, size): the memory of an mmapable array map (BPF_F_MMAPABLE), shared with the kernel
// and every process that maps it; unmapped when the buffer is collected.
Napi::Value MapMmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string label;
  int64_t fd;
  uint32_t size;
  if (!ArgString(info, 0, &label) || !ArgInt(info, 1, &fd) || !ArgUint32(info, 2, &size)) return env.Undefined();
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
  if (p == MAP_FAILED) return ThrowErrno(env, ErrFromErrno(), "map the memory of " + label, "mmap");
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), size,
                                    [size](Napi::Env, uint8_t* q) { munmap(q, size); });
}

// The 8-byte word at `off` of a buffer, checked to be in it and aligned (atomics need both).
uint64_t* Word(const Napi::CallbackInfo& info, const char* what) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> buf;
  uint32_t off;
  if (!ArgBuffer(info, 0, &buf) || !ArgUint32(info, 1, &off)) return nullptr;
  uint8_t* p = buf.Data() + off;
  if (static_cast<size_t>(off) + 8 > buf.Length() || reinterpret_cast<uintptr_t>(p) % 8 != 0) {
    Napi::RangeError::New(
        env, std::string(what) + ": offset " + std::to_string(off) + " is not an aligned 8-byte word of the buffer")
        .ThrowAsJavaScriptException();
    return nullptr;
  }
  return reinterpret_cast<uint64_t*>(p);
}

bool ArgU64(const Napi::CallbackInfo& info, size_t i, uint64_t* out) {
  bool lossless = true;
  if (!info[i].IsBigInt()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a bigint")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    Napi::RangeError::New(info.Env(), "argument " + std::to_string(i) + " is not a 64-bit unsigned value")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// (buf, off, delta): adds atomically; returns the value before
Napi::Value AtomicAddU64(const Napi::CallbackInfo& info) {
  uint64_t* w = Word(info, "atomicAddU64");
  uint64_t d;
  if (w == nullptr || !ArgU64(info, 2, &d)) return info.Env().Undefined();
  return Napi::BigInt::New(info.Env(), __atomic_fetch_add(w, d, __ATOMIC_SEQ_CST));
}

// (buf, off, value): raises the word to `value` if it is below, atomically; true if it did
Napi::Value AtomicRaiseU64(const Napi::CallbackInfo& info) {
  uint64_t* w = Word(info, "atomicRaiseU64");
  uint64_t v;
  if (w == nullptr || !ArgU64(info, 2, &v)) return info.Env().Undefined();
  uint64_t old = __atomic_load_n(w, __ATOMIC_SEQ_CST);
  while (old < v) {
    if (__atomic_compare_exchange_n(w, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return Napi::Boolean::New(info.Env(), true);
  }
  return Napi::Boolean::New(info.Env(), false);
}

}  // namespace

void InitFdOps(Napi::Env env, Napi::Object exports) {
  exports.Set("closeFd", Napi::Function::New<CloseFd>(env, "closeFd"));
  exports.Set("dupFd", Napi::Function::New<Dup>(env, "dupFd"));
  exports.Set("objGet", Napi::Function::New<ObjGet>(env, "objGet"));
  exports.Set("objPin", Napi::Function::New<ObjPin>(env, "objPin"));
  exports.Set("progFdById", Napi::Function::New<ProgFdById>(env, "progFdById"));
  exports.Set("mapFdById", Napi::Function::New<MapFdById>(env, "mapFdById"));
  exports.Set("progInfo", Napi::Function::New<ProgInfo>(env, "progInfo"));
  exports.Set("mapInfo", Napi::Function::New<MapInfo>(env, "mapInfo"));
  exports.Set("progTestRun", Napi::Function::New<ProgTestRun>(env, "progTestRun"));
  exports.Set("mapCreate", Napi::Function::New<MapCreate>(env, "mapCreate"));
  exports.Set("mapLookup", Napi::Function::New<MapLookup>(env, "mapLookup"));
  exports.Set("mapUpdate", Napi::Function::New<MapUpdate>(env, "mapUpdate"));
  exports.Set("mapDelete", Napi::Function::New<MapDelete>(env, "mapDelete"));
  exports.Set("mapKeys", Napi::Function::New<MapKeys>(env, "mapKeys"));
  exports.Set("mapEntries", Napi::Function::New<MapEntries>(env, "mapEntries"));
  exports.Set("mapMmap", Napi::Function::New<MapMmap>(env, "mapMmap"));
  exports.Set("atomicAddU64", Napi::Function::New<AtomicAddU64>(env, "atomicAddU64"));
  exports.Set("atomicRaiseU64", Napi::Function::New<AtomicRaiseU64>(env, "atomicRaiseU64"));
}

}  // namespace lbpf
