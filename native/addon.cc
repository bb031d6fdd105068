// Entry point of the libbpf binding. The addon is context-aware (per-environment state only) so
// it can be loaded from worker threads as well as the main thread.
#include "common.h"

namespace lbpf {

void InitXsk(Napi::Env env, Napi::Object exports);  // xsk.cc

namespace {

// The TypeScript wrapper hands over a function that turns an error description into an
// instance of its own error class; until then errors are plain Errors with the same fields.
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    Napi::TypeError::New(env, "setErrorFactory expects a function").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Data(env)->errorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  InstallPrintHook();
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  InitObject(env, exports);
  InitFdOps(env, exports);
  InitNetlink(env, exports);
  InitLink(env, exports);
  InitSystem(env, exports);
  InitTcx(env, exports);
  InitXsk(env, exports);
  return exports;
}

}  // namespace lbpf

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return lbpf::Init(env, exports); }

NODE_API_MODULE(itm_native, InitAddon)
