//! Compiles the XDP program of the af_xdp driver (`bpf/xdp_vip.c`) into
//! `$OUT_DIR/xdp_vip.o` with clang.
//!
//! A machine without clang (or without the BPF headers of libbpf-dev)
//! still builds the crate: the object is left empty and the reason is
//! passed in `CUTOVER_XDP_BUILD_ERROR`, which the driver reports when a
//! port is opened. `CLANG` names another compiler binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/xdp_vip.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("xdp_vip.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // Debian keeps <asm/types.h> in the multiarch directory, which a BPF
    // target does not search by itself.
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg("bpf/xdp_vip.c")
        .arg("-o")
        .arg(&obj)
        .output();
    let error = match result {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{clang} failed on bpf/xdp_vip.c: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!(
            "{clang} not runnable ({e}); install clang and libbpf-dev"
        )),
    };
    match error {
        None => println!("cargo:rustc-env=CUTOVER_XDP_BUILD_ERROR="),
        Some(msg) => {
            let msg = msg.replace('\n', " ");
            println!("cargo:warning=af_xdp driver disabled: {msg}");
            println!("cargo:rustc-env=CUTOVER_XDP_BUILD_ERROR={msg}");
            std::fs::write(&obj, b"").expect("write empty BPF object to OUT_DIR");
        }
    }
}
