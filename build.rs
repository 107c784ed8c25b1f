//! Compiles the XDP program of the af_xdp driver (`bpf/xdp_vip.c`) into
//! `$OUT_DIR/xdp_vip.o` with clang.
//!
//! A machine without clang (or without the BPF headers of libbpf-dev)
//! still builds the crate: the object is left empty and the reason is
//! passed in `CUTOVER_XDP_BUILD_ERROR`, which the driver reports when a
//! port is opened. `CLANG` names another compiler binary.
//!
//! With the `dpdk` feature (`CARGO_FEATURE_DPDK`) it also generates the
//! bindings of `src/io/dpdk_shim.h` (bindgen) and compiles the shim
//! (`cc`), with the flags `pkg-config libdpdk` gives; without the feature
//! nothing of DPDK is needed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    #[cfg(feature = "dpdk")]
    if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        dpdk::build();
    }
    build_xdp();
}

fn build_xdp() {
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

/// The `dpdk` feature: bindings and shim, flags from `pkg-config libdpdk`.
#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;
    use std::process::Command;

    const HEADER: &str = "src/io/dpdk_shim.h";
    const SHIM: &str = "src/io/dpdk_shim.c";

    fn pkg_config(arg: &str) -> Vec<String> {
        let out = Command::new("pkg-config")
            .args([arg, "libdpdk"])
            .output()
            .unwrap_or_else(|e| panic!("pkg-config not runnable ({e}); install pkg-config"));
        if !out.status.success() {
            panic!(
                "pkg-config {arg} libdpdk failed: {}; install libdpdk-dev (scripts/install-deps.sh)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    pub(super) fn build() {
        println!("cargo:rerun-if-changed={HEADER}");
        println!("cargo:rerun-if-changed={SHIM}");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        let cflags = pkg_config("--cflags");
        for flag in pkg_config("--libs") {
            if let Some(lib) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={lib}");
            } else if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }

        let mut shim = cc::Build::new();
        shim.file(SHIM).warnings(true).extra_warnings(true);
        for flag in &cflags {
            shim.flag(flag);
        }
        shim.compile("cutover_dpdk_shim");

        // `-march` is for the C compiler; clang parsing for bindgen needs
        // only the include paths and the forced include of rte_config.h.
        let clang_args = cflags.iter().filter(|f| !f.starts_with("-march"));
        let bindings = bindgen::Builder::default()
            // DPDK's header comments hold C snippets that rustdoc would
            // compile as doctests.
            .generate_comments(false)
            .header(HEADER)
            .clang_args(clang_args)
            .allowlist_function("cutover_.*")
            .allowlist_function("rte_eal_init")
            .allowlist_function("rte_dev_probe")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_socket_id")
            .allowlist_function("rte_eth_dev_get_port_by_name")
            .allowlist_function("rte_eth_dev_get_name_by_port")
            .allowlist_function("rte_eth_dev_is_valid_port")
            .allowlist_function("rte_eth_dev_socket_id")
            .allowlist_function("rte_eth_dev_start")
            .allowlist_function("rte_eth_dev_stop")
            .allowlist_function("rte_eth_macaddr_get")
            .allowlist_function("rte_eth_stats_get")
            .allowlist_function("rte_pktmbuf_pool_create")
            .allowlist_type("rte_mbuf")
            .allowlist_type("rte_ether_addr")
            .allowlist_type("rte_eth_stats")
            .allowlist_var("RTE_ETH_NAME_MAX_LEN")
            .allowlist_var("RTE_MEMPOOL_NAMESIZE")
            .opaque_type("rte_mempool")
            .derive_default(true)
            .layout_tests(true)
            .generate()
            .unwrap_or_else(|e| panic!("bindgen over {HEADER}: {e}; install libclang-dev"));
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings
            .write_to_file(out.join("dpdk_bindings.rs"))
            .expect("write dpdk_bindings.rs to OUT_DIR");
    }
}
