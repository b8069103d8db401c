//! Applies the libtorch link flags published by `rankd-kernels` (see its build script).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_RANKD_TORCH_LINK_ARGS");
    if let Ok(args) = std::env::var("DEP_RANKD_TORCH_LINK_ARGS") {
        for arg in args.split_whitespace() {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
