//! The npm package's wasm: the bindings crate, linked with this workspace's lockfile.
#![no_std]
#![forbid(unsafe_code)]

// Links the bindings in: their `#[wasm_bindgen]` exports become this module's.
pub use erpnet_auth_wasm as bindings;
