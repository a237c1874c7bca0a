{
  "targets": [
    {
      "target_name": "cokv_native",
      "sources": ["native/addon.c", "native/kernels.c", "native/qdot.c", "native/qgemm.c"],
      "cflags": ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-pthread", "-Wall", "-Wno-unused-function"],
      "cflags!": ["-O2", "-O0", "-fno-tree-vectorize"],
      "ldflags": ["-pthread"],
      "libraries": ["-lm"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11"] }
    }
  ]
}
