//! Link the `relspec` executable as a non-PIE binary on Linux/glibc.
//!
//! A position-independent executable of this size (DataFusion's vtables and
//! function tables) carries ~250,000 relative relocations, which the dynamic
//! loader applies at every start by writing ~1,100 pages of `.data.rel.ro`:
//! about 3 ms and 1,100 page faults per process, a tenth of a no-op build.
//! A non-PIE executable has them resolved at link time. Only the final link
//! changes (objects stay PIC), so no dependency is rebuilt.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RELSPEC_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("RELSPEC_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
