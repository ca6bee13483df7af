//! Link options of libchainsocks.so that keep its load cost low in every process it is
//! preloaded into (most of which never connect): lazy binding of its imports.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,lazy");
}
