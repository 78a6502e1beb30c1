//! Links libzkpkcs11.so with `-z nodelete`: `dlclose` leaves it loaded.
//!
//! Its statics outlive any one `C_Initialize`/`C_Finalize` (the loaded Zymkey
//! library, fork handlers, the log subscriber, modules still in use by another
//! thread), and hosts unload modules from their exit paths; unmapping the
//! code and data behind them would turn those into dangling pointers and leaks.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
