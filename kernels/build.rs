//! Keeps `libtorch_cuda` linked into every binary that uses this crate.
//!
//! torch-sys asks for `-ltorch_cuda`, but with the linker's default `--as-needed` the library
//! is dropped because nothing references its symbols directly, and libtorch then reports no
//! CUDA even on a GPU machine. A library crate's `rustc-link-arg` does not reach downstream
//! binaries, so this script publishes the flags as `links` metadata
//! (`DEP_RANKD_TORCH_LINK_ARGS`, `DEP_RANKD_TORCH_LIB_DIR`) and each binary crate's build
//! script applies them, together with an rpath to the torch libraries.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // torch-sys publishes its library directory as `cargo:libtorch_lib`; we depend on it
    // directly so that this metadata reaches us.
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let mut args = vec![format!("-Wl,-rpath,{lib_dir}")];
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        args.push(format!("-L{lib_dir}"));
        args.push("-Wl,--no-as-needed".into());
        args.push("-ltorch_cuda".into());
        args.push("-Wl,--as-needed".into());
    }
    // This crate's own test binaries need the same flags.
    for arg in &args {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:lib_dir={lib_dir}");
    println!("cargo:link_args={}", args.join(" "));
}
