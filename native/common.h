// Shared plumbing for the libbpf binding: per-environment state, error reporting and the libbpf
// log capture. Kept free of any application concepts so the binding stays a general libbpf layer.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace lbpf {

// Per-environment state. Worker threads load their own copy of the addon, so nothing here may be
// a process-wide static.
struct AddonData {
  // JS function (info object) -> Error instance. Registered by the TypeScript wrapper so that
  // every native failure surfaces as its BpfError class rather than a bare Error.
  Napi::FunctionReference errorFactory;
};

AddonData* Data(Napi::Env env);

struct ErrorInfo {
  int err = 0;                // positive errno (or libbpf's own 4000+ codes)
  std::string context;        // what was being done to what, e.g. "load x.bpf.o"
  std::string step;           // the libbpf/syscall entry point that failed
  std::string log;            // captured libbpf output, if any
  std::string message;        // overrides the composed message when non-empty
  bool notSupported = false;  // the caller knows this errno means "the kernel cannot do this"
};

// Throws the error into JS and returns undefined so call sites can `return Throw(...)`.
Napi::Value Throw(Napi::Env env, const ErrorInfo& info);
Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& context, const char* step);

// libbpf 1.x returns -errno from int-returning calls but may leave errno unrelated; pointer
// returning calls give NULL and set errno. Both collapse to a positive error number here.
inline int ErrFromRet(int ret) { return ret < 0 ? -ret : ret; }
int ErrFromErrno();

std::string ErrnoCode(int err);
std::string ErrnoDescription(int err);

// While alive, libbpf's warnings and info messages emitted on this thread are appended to the
// capture buffer instead of being printed; outside a capture libbpf stays silent.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  const std::string& text() const { return buf_; }

 private:
  std::string buf_;
  std::string* prev_;
};

void InstallPrintHook();

// Argument helpers: each returns false after throwing a TypeError.
bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out);
bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out);
bool ArgUint32(const Napi::CallbackInfo& info, size_t i, uint32_t* out);
bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, Napi::Buffer<uint8_t>* out);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, bool* out);

// Duplicates with CLOEXEC so handles given to JS never leak into child processes.
int DupFd(int fd);

void InitObject(Napi::Env env, Napi::Object exports);
void InitFdOps(Napi::Env env, Napi::Object exports);
void InitNetlink(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitSystem(Napi::Env env, Napi::Object exports);
void InitTcx(Napi::Env env, Napi::Object exports);

}  // namespace lbpf
