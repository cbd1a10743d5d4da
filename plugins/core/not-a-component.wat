;; A plain core WebAssembly module: valid wasm, but not a component.
;; Charter must refuse it at load with a clear error (and never run `run`).
(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 42)))
