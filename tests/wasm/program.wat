;; A wasm-bpf program for the host tests. The test puts the BPF object in
;; place of OBJECT_BYTES and its length in place of OBJECT_SIZE. It loads the
;; object, attaches wh_sys_enter by section, then does what the first letter
;; of its first argument says:
;;   p  print "ready", then poll the ring buffer (100 ms waits) for ever
;;   w  print "ready", then poll the ring buffer with no time limit, for ever
;;   b  print "ready", then spin without calling the host
;;   t  print "ready", then trap
;;   s  print "ready", then sleep 60 s (WASI poll_oneoff on a clock), exit 8
;;   z  sleep 0.3 s: exit 0 when the clock event came back as it should, else 6
;;   x  exit with status 7          r  return from _start
;;   f  load a bogus object instead: exit 3 when the host refuses it
;; Exit 2: the object did not load; 5: attaching failed; 9: bad arguments.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasm_bpf" "wasm_load_bpf_object" (func $load (param i32 i32) (result i64)))
  (import "wasm_bpf" "wasm_attach_bpf_program" (func $attach (param i64 i32 i32) (result i32)))
  (import "wasm_bpf" "wasm_bpf_buffer_poll"
    (func $poll (param i64 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasm_bpf" "wasm_bpf_map_fd_by_name" (func $fd (param i64 i32) (result i32)))

  (memory (export "memory") 2)
  (table (export "__indirect_function_table") 2 funcref)
  (elem (i32.const 1) $on_sample)

  (data (i32.const 16) "wh_sys_enter\00")
  (data (i32.const 48) "\00")
  (data (i32.const 64) "events\00")
  (data (i32.const 80) "ready\n")
  ;; iovec {80, 6} at 96; nwritten at 104; argc at 112, argv size at 116;
  ;; argv pointers from 128, argv strings from 256; sample buffer at 2048.
  (data (i32.const 96) "\50\00\00\00\06\00\00\00")
  (data (i32.const 4096) "OBJECT_BYTES")

  (func $on_sample (param i32 i32 i32) (result i32) (i32.const 0))

  ;; Sleep on the monotonic clock: one subscription at 1536 (userdata 42),
  ;; its event at 1600, the event count at 1640; returns poll_oneoff's errno.
  (func $sleep (param $ns i64) (result i32)
    (i64.store (i32.const 1536) (i64.const 42))
    (i32.store8 (i32.const 1544) (i32.const 0))
    (i32.store (i32.const 1552) (i32.const 1))
    (i64.store (i32.const 1560) (local.get $ns))
    (i64.store (i32.const 1568) (i64.const 0))
    (i32.store16 (i32.const 1576) (i32.const 0))
    (call $poll_oneoff (i32.const 1536) (i32.const 1600) (i32.const 1) (i32.const 1640)))

  (func $mode (result i32)
    (drop (call $args_sizes (i32.const 112) (i32.const 116)))
    (if (i32.lt_u (i32.load (i32.const 112)) (i32.const 2)) (then (return (i32.const 0))))
    (if (i32.gt_u (i32.load (i32.const 112)) (i32.const 16)) (then (call $exit (i32.const 9))))
    (if (i32.gt_u (i32.load (i32.const 116)) (i32.const 1500)) (then (call $exit (i32.const 9))))
    (drop (call $args_get (i32.const 128) (i32.const 256)))
    (i32.load8_u (i32.load (i32.const 132))))

  (func (export "_start") (local $h i64) (local $m i32) (local $map i32)
    (local.set $m (call $mode))
    (if (i32.eq (local.get $m) (i32.const 122))  ;; z
      (then
        (if (call $sleep (i64.const 300000000)) (then (call $exit (i32.const 6))))
        (if (i32.ne (i32.load (i32.const 1640)) (i32.const 1)) (then (call $exit (i32.const 6))))
        (if (i64.ne (i64.load (i32.const 1600)) (i64.const 42)) (then (call $exit (i32.const 6))))
        (if (i32.load16_u (i32.const 1608)) (then (call $exit (i32.const 6))))
        (call $exit (i32.const 0))))
    (if (i32.eq (local.get $m) (i32.const 102))  ;; f
      (then
        (if (i64.eqz (call $load (i32.const 16) (i32.const 12))) (then (call $exit (i32.const 3))))
        (call $exit (i32.const 4))))
    (local.set $h (call $load (i32.const 4096) (i32.const OBJECT_SIZE)))
    (if (i64.eqz (local.get $h)) (then (call $exit (i32.const 2))))
    (if (call $attach (local.get $h) (i32.const 16) (i32.const 48))
      (then (call $exit (i32.const 5))))
    (local.set $map (call $fd (local.get $h) (i32.const 64)))
    (if (i32.eq (local.get $m) (i32.const 120)) (then (call $exit (i32.const 7))))  ;; x
    (if (i32.eq (local.get $m) (i32.const 114)) (then (return)))  ;; r
    (drop (call $fd_write (i32.const 1) (i32.const 96) (i32.const 1) (i32.const 104)))
    (if (i32.eq (local.get $m) (i32.const 116)) (then (unreachable)))  ;; t
    (if (i32.eq (local.get $m) (i32.const 115))  ;; s
      (then
        (drop (call $sleep (i64.const 60000000000)))
        (call $exit (i32.const 8))))
    (if (i32.eq (local.get $m) (i32.const 98)) (then (loop $spin (br $spin))))  ;; b
    (if (i32.eq (local.get $m) (i32.const 119))  ;; w
      (then
        (loop $wait
          (drop (call $poll (local.get $h) (local.get $map) (i32.const 1) (i32.const 0)
                            (i32.const 2048) (i32.const 64) (i32.const -1)))
          (br $wait))))
    (loop $again
      (drop (call $poll (local.get $h) (local.get $map) (i32.const 1) (i32.const 0)
                        (i32.const 2048) (i32.const 64) (i32.const 100)))
      (br $again)))
)
