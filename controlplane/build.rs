//! Rebuilds the control plane when a migration changes: `sqlx::migrate!` embeds `migrations/` at compile time
//! and, on stable Rust, cannot tell cargo to watch that directory itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
