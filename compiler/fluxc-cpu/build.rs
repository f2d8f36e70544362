//! Builds `fluxc-kernels` as a static library for x86-64-v3, which `fluxc build` links into
//! every shared library it writes (`library.rs` embeds the archive). A nested cargo with its
//! own target directory: the outer build's lock and flags are not touched.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("../..");
    let kernels = root.join("runtime/kernels");
    println!("cargo:rerun-if-changed={}", kernels.join("src").display());
    println!("cargo:rerun-if-changed={}", kernels.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", root.join("Cargo.lock").display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let target_dir = out.join("kernels-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["rustc", "--release", "--locked", "-p", "fluxc-kernels", "--lib", "--crate-type", "staticlib"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's wrappers and flags (clippy, coverage, its target CPU) must not leak in.
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-cpu=x86-64-v3");
    let status = cmd.status();
    let archive = target_dir.join("release/libfluxc_kernels.a");
    match status {
        Ok(s) if s.success() && archive.exists() => {}
        Ok(s) => panic!("building the kernels' static library failed ({s})"),
        Err(e) => panic!("could not run cargo to build the kernels' static library: {e}"),
    }
    let dest = out.join("libfluxc_kernels.a");
    if let Err(e) = std::fs::copy(&archive, &dest) {
        panic!("copying {}: {e}", archive.display());
    }
}
