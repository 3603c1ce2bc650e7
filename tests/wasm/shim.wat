;; Each wasm_bpf import behind an export of the same shape, so a test can
;; call the host through a real module and look at the module's memory.
(module
  (import "wasm_bpf" "wasm_load_bpf_object" (func $load (param i32 i32) (result i64)))
  (import "wasm_bpf" "wasm_attach_bpf_program" (func $attach (param i64 i32 i32) (result i32)))
  (import "wasm_bpf" "wasm_bpf_buffer_poll"
    (func $poll (param i64 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasm_bpf" "wasm_bpf_map_fd_by_name" (func $fd (param i64 i32) (result i32)))
  (import "wasm_bpf" "wasm_bpf_map_operate"
    (func $operate (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "wasm_bpf" "wasm_close_bpf_object" (func $close (param i64) (result i32)))

  (memory (export "memory") 4)
  (table (export "__indirect_function_table") 4 funcref)
  ;; 1: records samples; 2: traps; 3: the wrong type for a sample callback
  (elem (i32.const 1) $record $crash $wrong)

  ;; A sample log at ctx: a u32 count, then per sample a u32 size and its
  ;; first 32 bytes; at most 1000 samples are kept.
  (func $record (param $ctx i32) (param $data i32) (param $size i32) (result i32)
    (local $n i32) (local $rec i32)
    (local.set $n (i32.load (local.get $ctx)))
    (if (i32.lt_u (local.get $n) (i32.const 1000))
      (then
        (local.set $rec (i32.add (i32.add (local.get $ctx) (i32.const 4))
                                 (i32.mul (local.get $n) (i32.const 36))))
        (i32.store (local.get $rec) (local.get $size))
        (memory.copy (i32.add (local.get $rec) (i32.const 4)) (local.get $data)
          (select (local.get $size) (i32.const 32)
                  (i32.lt_u (local.get $size) (i32.const 32))))))
    (i32.store (local.get $ctx) (i32.add (local.get $n) (i32.const 1)))
    (i32.const 0))
  (func $crash (param i32 i32 i32) (result i32) unreachable)
  (func $wrong (param i32) (result i32) (i32.const 0))

  (func (export "load") (param i32 i32) (result i64)
    (call $load (local.get 0) (local.get 1)))
  (func (export "attach") (param i64 i32 i32) (result i32)
    (call $attach (local.get 0) (local.get 1) (local.get 2)))
  (func (export "poll") (param i64 i32 i32 i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
                (local.get 5) (local.get 6)))
  (func (export "fd") (param i64 i32) (result i32)
    (call $fd (local.get 0) (local.get 1)))
  (func (export "operate") (param i32 i32 i32 i32 i32 i64) (result i32)
    (call $operate (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
                   (local.get 5)))
  (func (export "close") (param i64) (result i32)
    (call $close (local.get 0)))
)
