#include "common.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace lbpf {

namespace {

// Kernel-internal errno values that leak out of the bpf() syscall but that glibc has no names
// for; ENOTSUPP in particular is how the verifier and batch ops say "not implemented".
constexpr int kENOTSUPP = 524;

const char* LibbpfErrnoName(int err) {
  switch (err) {
    case LIBBPF_ERRNO__LIBELF:
      return "LIBBPF_ERRNO__LIBELF";
    case LIBBPF_ERRNO__FORMAT:
      return "LIBBPF_ERRNO__FORMAT";
    case LIBBPF_ERRNO__KVERSION:
      return "LIBBPF_ERRNO__KVERSION";
    case LIBBPF_ERRNO__ENDIAN:
      return "LIBBPF_ERRNO__ENDIAN";
    case LIBBPF_ERRNO__INTERNAL:
      return "LIBBPF_ERRNO__INTERNAL";
    case LIBBPF_ERRNO__RELOC:
      return "LIBBPF_ERRNO__RELOC";
    case LIBBPF_ERRNO__LOAD:
      return "LIBBPF_ERRNO__LOAD";
    case LIBBPF_ERRNO__VERIFY:
      return "LIBBPF_ERRNO__VERIFY";
    case LIBBPF_ERRNO__PROG2BIG:
      return "LIBBPF_ERRNO__PROG2BIG";
    case LIBBPF_ERRNO__KVER:
      return "LIBBPF_ERRNO__KVER";
    case LIBBPF_ERRNO__PROGTYPE:
      return "LIBBPF_ERRNO__PROGTYPE";
    case LIBBPF_ERRNO__WRNGPID:
      return "LIBBPF_ERRNO__WRNGPID";
    case LIBBPF_ERRNO__INVSEQ:
      return "LIBBPF_ERRNO__INVSEQ";
    case LIBBPF_ERRNO__NLPARSE:
      return "LIBBPF_ERRNO__NLPARSE";
    default:
      return nullptr;
  }
}

thread_local std::string* t_capture = nullptr;

int PrintHook(enum libbpf_print_level level, const char* fmt, va_list ap) {
  // Debug chatter would bury the verifier log that callers actually need.
  if (t_capture == nullptr || level == LIBBPF_DEBUG) return 0;
  va_list probe;
  va_copy(probe, ap);
  int n = vsnprintf(nullptr, 0, fmt, probe);
  va_end(probe);
  if (n <= 0) return 0;
  size_t old = t_capture->size();
  t_capture->resize(old + static_cast<size_t>(n) + 1);
  vsnprintf(&(*t_capture)[old], static_cast<size_t>(n) + 1, fmt, ap);
  t_capture->resize(old + static_cast<size_t>(n));
  return n;
}

}  // namespace

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

int ErrFromErrno() { return errno > 0 ? errno : EINVAL; }

std::string ErrnoCode(int err) {
  if (const char* n = LibbpfErrnoName(err)) return n;
  if (err == kENOTSUPP) return "ENOTSUPP";
  if (const char* n = strerrorname_np(err)) return n;
  return "E" + std::to_string(err);
}

std::string ErrnoDescription(int err) {
  if (err == kENOTSUPP) return "Operation not supported";
  char buf[256];
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return "Unknown error " + std::to_string(err);
}

Napi::Value Throw(Napi::Env env, const ErrorInfo& e) {
  int err = e.err > 0 ? e.err : EINVAL;
  std::string code = ErrnoCode(err);
  std::string desc = ErrnoDescription(err);
  AddonData* data = Data(env);
  if (data != nullptr && !data->errorFactory.IsEmpty()) {
    Napi::Object info = Napi::Object::New(env);
    info.Set("errno", Napi::Number::New(env, err));
    info.Set("code", Napi::String::New(env, code));
    info.Set("description", Napi::String::New(env, desc));
    info.Set("step", Napi::String::New(env, e.step));
    info.Set("context", Napi::String::New(env, e.context));
    if (!e.log.empty()) info.Set("log", Napi::String::New(env, e.log));
    if (!e.message.empty()) info.Set("message", Napi::String::New(env, e.message));
    if (e.notSupported) info.Set("notSupported", Napi::Boolean::New(env, true));
    Napi::Value obj = data->errorFactory.Call({info});
    if (env.IsExceptionPending()) return env.Undefined();
    napi_throw(env, obj);
    return env.Undefined();
  }
  // Without a registered factory (the addon used on its own) still throw something with the
  // same shape, just not of the BpfError class.
  std::string msg = !e.message.empty() ? e.message : e.context + ": " + e.step + ": " + desc + " (" + code + ")";
  Napi::Error error = Napi::Error::New(env, msg);
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("step", Napi::String::New(env, e.step));
  if (!e.log.empty()) error.Set("log", Napi::String::New(env, e.log));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& context, const char* step) {
  ErrorInfo e;
  e.err = err;
  e.context = context;
  e.step = step;
  return Throw(env, e);
}

LogCapture::LogCapture() : prev_(t_capture) { t_capture = &buf_; }
LogCapture::~LogCapture() { t_capture = prev_; }

void InstallPrintHook() { libbpf_set_print(PrintHook); }

static void TypeError(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be " + what).ThrowAsJavaScriptException();
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (!info[i].IsString()) {
    TypeError(info, i, "a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  // libbpf takes C strings: an embedded NUL would silently name a different object.
  if (out->find('\0') != std::string::npos) {
    TypeError(info, i, "a string without NUL characters");
    return false;
  }
  return true;
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  if (!info[i].IsNumber()) {
    TypeError(info, i, "a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d))) {
    TypeError(info, i, "an integer");
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgUint32(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  int64_t v;
  if (!ArgInt(info, i, &v)) return false;
  if (v < 0 || v > 0xffffffffLL) {
    TypeError(info, i, "an unsigned 32-bit integer");
    return false;
  }
  *out = static_cast<uint32_t>(v);
  return true;
}

bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, Napi::Buffer<uint8_t>* out) {
  if (!info[i].IsBuffer()) {
    TypeError(info, i, "a Buffer");
    return false;
  }
  *out = info[i].As<Napi::Buffer<uint8_t>>();
  return true;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, bool* out) {
  if (!info[i].IsBoolean()) {
    TypeError(info, i, "a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

int DupFd(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 0); }

}  // namespace lbpf
