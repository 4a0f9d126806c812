//! Compiles the proxy's eBPF program (bpf/forward.bpf.c) when the `kernel-forwarding` feature is
//! on; without it there is nothing to build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/forward.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_KERNEL_FORWARDING").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h>, which <linux/bpf.h> includes, lives under the host's multiarch directory.
    let multiarch = Command::new(&clang)
        .arg("-print-multiarch")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/forward.bpf.c", "-o"])
        .arg(out.join("forward.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed on bpf/forward.bpf.c ({s})"),
        Err(e) => panic!(
            "the kernel-forwarding feature needs clang to build bpf/forward.bpf.c ({clang}: {e}); \
             install it (apt-get install clang) or build without the feature"
        ),
    }
}
