// bpf_object lifecycle: open (unprivileged), pre-load tweaks (globals, map reuse, sizes), load,
// then hand out duplicated program/map fds so JS handles outlive the object if they want to.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <vector>

#include "common.h"

namespace lbpf {

namespace {

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct GlobalLoc {
  struct bpf_map* map = nullptr;
  std::string section;
  uint32_t offset = 0;
  uint32_t size = 0;
};

class NativeObject : public Napi::ObjectWrap<NativeObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeBpfObject",
                       {
                           InstanceMethod<&NativeObject::Name>("name"),
                           InstanceMethod<&NativeObject::ProgramNames>("programNames"),
                           InstanceMethod<&NativeObject::MapNames>("mapNames"),
                           InstanceMethod<&NativeObject::SetGlobal>("setGlobal"),
                           InstanceMethod<&NativeObject::GlobalInfo>("globalInfo"),
                           InstanceMethod<&NativeObject::ReuseMap>("reuseMap"),
                           InstanceMethod<&NativeObject::SetMaxEntries>("setMaxEntries"),
                           InstanceMethod<&NativeObject::Load>("load"),
                           InstanceMethod<&NativeObject::ProgramFd>("programFd"),
                           InstanceMethod<&NativeObject::MapFd>("mapFd"),
                           InstanceMethod<&NativeObject::SetAutoload>("setAutoload"),
                           InstanceMethod<&NativeObject::Close>("close"),
                       });
  }

  explicit NativeObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeObject>(info) {
    Napi::Env env = info.Env();
    if (!ArgString(info, 0, &path_)) return;
    label_ = BaseName(path_);
    // optional: the BTF that CO-RE relocations are resolved against, instead of the kernel's
    std::string btf;
    if (info.Length() > 1 && info[1].IsString()) btf = info[1].As<Napi::String>().Utf8Value();
    LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf.empty() ? nullptr : btf.c_str());
    LogCapture capture;
    struct bpf_object* obj = bpf_object__open_file(path_.c_str(), &opts);
    if (obj == nullptr) {
      ErrorInfo e;
      e.err = ErrFromErrno();
      e.context = "open " + path_;
      e.step = "bpf_object__open_file";
      e.log = capture.text();
      Throw(env, e);
      return;
    }
    obj_ = obj;
  }

  ~NativeObject() override { Release(); }

 private:
  void Release() {
    if (obj_ != nullptr) bpf_object__close(obj_);
    obj_ = nullptr;
  }

  bool Live(Napi::Env env, const char* step) {
    if (obj_ != nullptr) return true;
    ErrorInfo e;
    e.err = EBADF;
    e.step = step;
    e.message = label_ + ": object is closed";
    Throw(env, e);
    return false;
  }

  // Once a load has been attempted libbpf may have remapped .rodata read-only and created the
  // maps, so pre-load mutations would either crash or silently do nothing.
  bool NotLoaded(Napi::Env env, const char* step) {
    if (!Live(env, step)) return false;
    if (!loadAttempted_) return true;
    ErrorInfo e;
    e.err = EBUSY;
    e.step = step;
    e.message = label_ + ": " + step + ": object is already loaded";
    Throw(env, e);
    return false;
  }

  bool Loaded(Napi::Env env, const char* step) {
    if (!Live(env, step)) return false;
    if (loaded_) return true;
    ErrorInfo e;
    e.err = EINVAL;
    e.step = step;
    e.message = label_ + ": " + step + ": object is not loaded";
    Throw(env, e);
    return false;
  }

  std::string ProgramList() {
    std::string s;
    struct bpf_program* p;
    bpf_object__for_each_program(p, obj_) {
      if (!s.empty()) s += ", ";
      s += bpf_program__name(p);
    }
    return s;
  }

  std::string MapList() {
    std::string s;
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj_) {
      if (!s.empty()) s += ", ";
      s += bpf_map__name(m);
    }
    return s;
  }

  Napi::Value NotFound(Napi::Env env, const char* what, const std::string& name, const char* step,
                       const std::string& available) {
    ErrorInfo e;
    e.err = ENOENT;
    e.step = step;
    e.message =
        label_ + ": no " + what + " named \"" + name + "\" (has: " + (available.empty() ? "none" : available) + ")";
    return Throw(env, e);
  }

  struct bpf_map* FindMap(Napi::Env env, const std::string& name, const char* step) {
    // Also matches internal maps by their section (".rodata"), not only by libbpf's name.
    struct bpf_map* m = bpf_object__find_map_by_name(obj_, name.c_str());
    if (m == nullptr) NotFound(env, "map", name, step, MapList());
    return m;
  }

  // Globals are located through the object's BTF rather than the ELF symbol table because the
  // DATASEC records carry exactly the offsets libbpf uses for the internal maps' contents.
  bool FindGlobal(const std::string& name, GlobalLoc* out) {
    const struct btf* btf = bpf_object__btf(obj_);
    if (btf == nullptr) return false;
    uint32_t n = btf__type_cnt(btf);
    for (uint32_t id = 1; id < n; id++) {
      const struct btf_type* t = btf__type_by_id(btf, id);
      if (t == nullptr || !btf_is_datasec(t)) continue;
      const char* sec = btf__name_by_offset(btf, t->name_off);
      if (sec == nullptr) continue;
      struct bpf_map* map = bpf_object__find_map_by_name(obj_, sec);
      if (map == nullptr || !bpf_map__is_internal(map)) continue;
      const struct btf_var_secinfo* vi = btf_var_secinfos(t);
      for (int i = 0; i < btf_vlen(t); i++, vi++) {
        const struct btf_type* var = btf__type_by_id(btf, vi->type);
        if (var == nullptr || !btf_is_var(var)) continue;
        const char* vname = btf__name_by_offset(btf, var->name_off);
        if (vname == nullptr || name != vname) continue;
        out->map = map;
        out->section = sec;
        out->offset = vi->offset;
        out->size = vi->size;
        return true;
      }
    }
    return false;
  }

  Napi::Value Name(const Napi::CallbackInfo& info) {
    if (!Live(info.Env(), "bpf_object__name")) return info.Env().Undefined();
    return Napi::String::New(info.Env(), bpf_object__name(obj_));
  }

  Napi::Value ProgramNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "bpf_object__next_program")) return env.Undefined();
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    struct bpf_program* p;
    bpf_object__for_each_program(p, obj_) out.Set(i++, Napi::String::New(env, bpf_program__name(p)));
    return out;
  }

  Napi::Value MapNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "bpf_object__next_map")) return env.Undefined();
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj_) out.Set(i++, Napi::String::New(env, bpf_map__name(m)));
    return out;
  }

  Napi::Value GlobalInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!ArgString(info, 0, &name) || !Live(env, "bpf_object__btf")) return env.Undefined();
    GlobalLoc loc;
    if (!FindGlobal(name, &loc)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("section", Napi::String::New(env, loc.section));
    o.Set("offset", Napi::Number::New(env, loc.offset));
    o.Set("size", Napi::Number::New(env, loc.size));
    return o;
  }

  Napi::Value SetGlobal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    Napi::Buffer<uint8_t> value;
    if (!ArgString(info, 0, &name) || !ArgBuffer(info, 1, &value)) return env.Undefined();
    if (!NotLoaded(env, "bpf_map__set_initial_value")) return env.Undefined();
    GlobalLoc loc;
    if (!FindGlobal(name, &loc)) {
      ErrorInfo e;
      e.err = ENOENT;
      e.step = "bpf_object__btf";
      e.message = label_ + ": no global variable named \"" + name + "\" in .data/.rodata/.bss";
      return Throw(env, e);
    }
    if (value.Length() != loc.size) {
      ErrorInfo e;
      e.err = EINVAL;
      e.step = "bpf_map__set_initial_value";
      e.message = label_ + ": global \"" + name + "\" is " + std::to_string(loc.size) + " bytes, value has " +
                  std::to_string(value.Length());
      return Throw(env, e);
    }
    size_t size = 0;
    const void* cur = bpf_map__initial_value(loc.map, &size);
    if (cur == nullptr || static_cast<size_t>(loc.offset) + loc.size > size) {
      ErrorInfo e;
      e.err = cur == nullptr ? ErrFromErrno() : ERANGE;
      e.step = "bpf_map__initial_value";
      e.context = "set global \"" + name + "\" in " + label_;
      return Throw(env, e);
    }
    std::vector<uint8_t> image(static_cast<const uint8_t*>(cur), static_cast<const uint8_t*>(cur) + size);
    memcpy(image.data() + loc.offset, value.Data(), loc.size);
    int ret = bpf_map__set_initial_value(loc.map, image.data(), image.size());
    if (ret != 0) {
      return ThrowErrno(env, ErrFromRet(ret), "set global \"" + name + "\" in " + label_, "bpf_map__set_initial_value");
    }
    return env.Undefined();
  }

  Napi::Value ReuseMap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    int64_t fd;
    if (!ArgString(info, 0, &name) || !ArgInt(info, 1, &fd)) return env.Undefined();
    if (!NotLoaded(env, "bpf_map__reuse_fd")) return env.Undefined();
    struct bpf_map* m = FindMap(env, name, "bpf_object__find_map_by_name");
    if (m == nullptr) return env.Undefined();
    int ret = bpf_map__reuse_fd(m, static_cast<int>(fd));
    if (ret != 0) {
      return ThrowErrno(env, ErrFromRet(ret), "reuse map \"" + name + "\" in " + label_, "bpf_map__reuse_fd");
    }
    return env.Undefined();
  }

  Napi::Value SetMaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    uint32_t n;
    if (!ArgString(info, 0, &name) || !ArgUint32(info, 1, &n)) return env.Undefined();
    if (!NotLoaded(env, "bpf_map__set_max_entries")) return env.Undefined();
    struct bpf_map* m = FindMap(env, name, "bpf_object__find_map_by_name");
    if (m == nullptr) return env.Undefined();
    int ret = bpf_map__set_max_entries(m, n);
    if (ret != 0) {
      return ThrowErrno(env, ErrFromRet(ret), "resize map \"" + name + "\" in " + label_, "bpf_map__set_max_entries");
    }
    return env.Undefined();
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!NotLoaded(env, "bpf_object__load")) return env.Undefined();
    LogCapture capture;
    loadAttempted_ = true;
    int ret = bpf_object__load(obj_);
    if (ret != 0) {
      ErrorInfo e;
      e.err = ErrFromRet(ret);
      e.context = "load " + label_;
      e.step = "bpf_object__load";
      e.log = capture.text();
      return Throw(env, e);
    }
    loaded_ = true;
    return env.Undefined();
  }

  Napi::Value ProgramFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!ArgString(info, 0, &name) || !Live(env, "bpf_object__find_program_by_name")) return env.Undefined();
    struct bpf_program* p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (p == nullptr) return NotFound(env, "program", name, "bpf_object__find_program_by_name", ProgramList());
    if (!Loaded(env, "bpf_program__fd")) return env.Undefined();
    int fd = bpf_program__fd(p);
    if (fd < 0) {
      ErrorInfo e;
      e.err = ENOENT;
      e.step = "bpf_program__fd";
      e.message = label_ + ": program \"" + name + "\" was not loaded (autoload disabled?)";
      return Throw(env, e);
    }
    int dup = DupFd(fd);
    if (dup < 0)
      return ThrowErrno(env, ErrFromErrno(), "program \"" + name + "\" in " + label_, "fcntl(F_DUPFD_CLOEXEC)");
    return Napi::Number::New(env, dup);
  }

  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!ArgString(info, 0, &name) || !Live(env, "bpf_object__find_map_by_name")) return env.Undefined();
    struct bpf_map* m = FindMap(env, name, "bpf_object__find_map_by_name");
    if (m == nullptr) return env.Undefined();
    if (!Loaded(env, "bpf_map__fd")) return env.Undefined();
    int fd = bpf_map__fd(m);
    if (fd < 0) {
      ErrorInfo e;
      e.err = ENOENT;
      e.step = "bpf_map__fd";
      e.message = label_ + ": map \"" + name + "\" was not created";
      return Throw(env, e);
    }
    int dup = DupFd(fd);
    if (dup < 0) return ThrowErrno(env, ErrFromErrno(), "map \"" + name + "\" in " + label_, "fcntl(F_DUPFD_CLOEXEC)");
    Napi::Object o = Napi::Object::New(env);
    o.Set("fd", Napi::Number::New(env, dup));
    // The kernel truncates map names to 15 bytes; callers want the name they asked libbpf for.
    o.Set("name", Napi::String::New(env, bpf_map__name(m)));
    return o;
  }

  Napi::Value SetAutoload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name;
    bool on;
    if (!ArgString(info, 0, &name) || !ArgBool(info, 1, &on)) return env.Undefined();
    if (!NotLoaded(env, "bpf_program__set_autoload")) return env.Undefined();
    struct bpf_program* p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (p == nullptr) return NotFound(env, "program", name, "bpf_object__find_program_by_name", ProgramList());
    int ret = bpf_program__set_autoload(p, on);
    if (ret != 0)
      return ThrowErrno(env, ErrFromRet(ret), "autoload \"" + name + "\" in " + label_, "bpf_program__set_autoload");
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  struct bpf_object* obj_ = nullptr;
  std::string path_;
  std::string label_;
  bool loadAttempted_ = false;
  bool loaded_ = false;
};

// linkObjects(out, inputs): libbpf's static linker (what `bpftool gen object` runs) writes one
// object of `inputs`, their globals resolved (a strong definition wins over weak ones).
Napi::Value LinkObjects(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string out;
  if (!ArgString(info, 0, &out)) return env.Undefined();
  if (!info[1].IsArray()) {
    Napi::TypeError::New(env, "linkObjects expects an array of paths").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array in = info[1].As<Napi::Array>();
  LogCapture capture;
  struct bpf_linker* l = bpf_linker__new(out.c_str(), nullptr);
  if (l == nullptr) return ThrowErrno(env, ErrFromErrno(), "link " + out, "bpf_linker__new");
  for (uint32_t i = 0; i < in.Length(); i++) {
    std::string path = in.Get(i).ToString().Utf8Value();
    int ret = bpf_linker__add_file(l, path.c_str(), nullptr);
    if (ret != 0) {
      bpf_linker__free(l);
      ErrorInfo e;
      e.err = ErrFromRet(ret);
      e.context = "link " + BaseName(path) + " into " + BaseName(out);
      e.step = "bpf_linker__add_file";
      e.log = capture.text();
      return Throw(env, e);
    }
  }
  int ret = bpf_linker__finalize(l);
  bpf_linker__free(l);
  if (ret != 0) {
    ErrorInfo e;
    e.err = ErrFromRet(ret);
    e.context = "link " + BaseName(out);
    e.step = "bpf_linker__finalize";
    e.log = capture.text();
    return Throw(env, e);
  }
  return env.Undefined();
}

}  // namespace

void InitObject(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeBpfObject", NativeObject::Define(env));
  exports.Set("linkObjects", Napi::Function::New<LinkObjects>(env, "linkObjects"));
}

}  // namespace lbpf
