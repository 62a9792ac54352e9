//! The manager program under a test name, so end-to-end tests can run it
//! as a process and kill it.

fn main() -> std::process::ExitCode {
    palisade_manager::cli::main()
}
