{
  "targets": [
    {
      "target_name": "itm_native",
      "sources": [
        "native/addon.cc",
        "native/common.cc",
        "native/object.cc",
        "native/fdops.cc",
        "native/link.cc",
        "native/netlink.cc",
        "native/system.cc",
        "native/tcx.cc",
        "native/xsk.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-fno-exceptions"],
      "libraries": ["<!@(pkg-config --libs libbpf)", "<!@(pkg-config --libs libxdp)", "<!@(pkg-config --libs libmnl)"]
    }
  ]
}
